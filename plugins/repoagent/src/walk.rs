//! Walking a repository the way ripgrep does (the `ignore` crate's standard filters):
//! `.gitignore` (also outside a git checkout), `.ignore`, `.git/info/exclude`, the global git
//! excludes, hidden files and folders left out; symbolic links are never followed nor read
//! (one could lead out of the allowed roots); files larger than `max_file_bytes` are counted
//! and left out. Binary files are told apart when read (`index.rs`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use bkg_abi::Error;
use ignore::WalkBuilder;

/// A file the walk took.
#[derive(Debug, Clone)]
pub struct WalkedFile {
    /// Relative to the repository's root, `/` separators.
    pub rel: String,
    pub abs: PathBuf,
    pub bytes: u64,
    /// Modified (ns since the Unix epoch) and inode, as the walk saw them: with `bytes`, what
    /// tells a saved index's entry is still the file's (`index::refresh`).
    pub mtime_ns: i128,
    pub inode: u64,
}

/// A file's modification time (ns since the Unix epoch, 0 when unknown) and inode.
pub fn stamp(m: &std::fs::Metadata) -> (i128, u64) {
    use std::os::unix::fs::MetadataExt;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (mtime, m.ino())
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walked {
    pub files: Vec<WalkedFile>,
    /// The folders the walk went into (relative, `""` is the root): a change in a folder that
    /// is not here is in an ignored or hidden one.
    pub dirs: BTreeSet<String>,
    /// Files left out for being larger than `max_file_bytes` (relative paths).
    pub large: Vec<String>,
}

/// `path` relative to `root` with `/` separators; None when it is not under `root` or a
/// component is not UTF-8.
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for c in rest.components() {
        match c {
            Component::Normal(s) => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s.to_str()?);
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn builder(start: &Path) -> WalkBuilder {
    let mut b = WalkBuilder::new(start);
    b.standard_filters(true).require_git(false).follow_links(false);
    b
}

/// Walk `start` (the repository's `root` or a folder under it) with the standard filters.
/// `cancelled` is asked between entries.
pub fn walk(
    root: &Path,
    start: &Path,
    max_file_bytes: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Walked, Error> {
    let mut out = Walked::default();
    for entry in builder(start).build() {
        if cancelled() {
            return Err(Error::cancelled());
        }
        let entry = match entry {
            Ok(e) => e,
            // An unreadable folder or a broken ignore file: leave it out, keep walking.
            Err(_) => continue,
        };
        let Some(ft) = entry.file_type() else { continue };
        let Some(rel) = relative(root, entry.path()) else { continue };
        if ft.is_dir() {
            out.dirs.insert(rel);
        } else if ft.is_file() {
            let meta = entry.metadata().ok();
            let bytes = meta.as_ref().map_or(0, |m| m.len());
            if bytes > max_file_bytes {
                out.large.push(rel);
                continue;
            }
            let (mtime_ns, inode) = meta.as_ref().map_or((0, 0), stamp);
            let abs = entry.path().to_path_buf();
            out.files.push(WalkedFile { rel, abs, bytes, mtime_ns, inode });
        }
        // Symbolic links and special files are left out.
    }
    Ok(out)
}

/// Whether the walk would take `name`, a direct child of the folder `parent` (itself taken):
/// `parent` walked one level deep with the same filters, so `.gitignore` files in it and above
/// it count as they do in a whole walk.
pub fn child_admitted(parent: &Path, name: &std::ffi::OsStr) -> bool {
    let mut b = builder(parent);
    b.max_depth(Some(1));
    b.build().filter_map(Result::ok).any(|e| e.depth() == 1 && e.path().file_name() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_honours_gitignore_hidden_size_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn a() {}\n").unwrap();
        std::fs::write(root.join("src/deep/x.py"), "def x(): pass\n").unwrap();
        std::fs::write(root.join("target/debug/gen.rs"), "fn gen() {}\n").unwrap();
        std::fs::write(root.join("run.log"), "log\n").unwrap();
        std::fs::write(root.join(".hidden/h.rs"), "fn h() {}\n").unwrap();
        std::fs::write(root.join("big.txt"), vec![b'a'; 2000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        let w = walk(root, root, 1000, &|| false).unwrap();
        let rels: BTreeSet<&str> = w.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, BTreeSet::from(["src/lib.rs", "src/deep/x.py"]));
        assert_eq!(w.large, ["big.txt"]);
        assert!(w.dirs.contains("") && w.dirs.contains("src/deep"), "{:?}", w.dirs);
        assert!(!w.dirs.contains("target") && !w.dirs.contains(".hidden"), "{:?}", w.dirs);
        assert!(child_admitted(&root.join("src"), "lib.rs".as_ref()));
        assert!(!child_admitted(root, "run.log".as_ref()));
        assert!(!child_admitted(root, "target".as_ref()));
        assert!(!child_admitted(root, ".hidden".as_ref()));
        assert!(walk(root, root, 1000, &|| true).is_err());
    }

    #[test]
    fn relative_paths_use_slashes_and_refuse_outside() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/c/d.rs")).as_deref(),
            Some("c/d.rs")
        );
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b")).as_deref(), Some(""));
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/c")), None);
    }
}

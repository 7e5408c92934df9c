//! One repository's index: per file its language, tokei's counts and its symbols (metrics on
//! first use). No file contents are kept: search and metrics read the file again from disk.
//!
//! Built on the plugin's own pool (`build`, from a pool job) and updated file by file by the
//! watcher (`apply_changes`, inside `Pool::install`): tokei and rayon never run elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bkg_abi::Error;
use rayon::prelude::*;

use crate::lang::Lang;
use crate::walk::{self, Walked};
use crate::{metrics, stats, symbols};

/// How many leading bytes are looked at for a NUL (git's and ripgrep's binary test).
pub const BINARY_PROBE: usize = 8192;

/// One file of the index.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// Its language for symbols and metrics (tree-sitter), if one of ours.
    pub lang: Option<Lang>,
    /// tokei's language, if tokei knows the file.
    pub tokei: Option<tokei::LanguageType>,
    pub bytes: u64,
    pub mtime_ns: i128,
    /// With `bytes` and `mtime_ns`: what a restart compares to tell the file unchanged.
    pub inode: u64,
    /// tokei's counts (files tokei does not know have none).
    pub counts: Option<stats::Counts>,
    pub symbols: Arc<symbols::FileSymbols>,
    /// Computed on the first `code.metrics` that needs it; a change to the file makes a new
    /// entry without it.
    pub metrics: Option<Arc<metrics::FileMetrics>>,
}

/// One repository's index.
#[derive(Clone, Debug)]
pub struct RepoIndex {
    pub name: String,
    /// Canonical.
    pub root: PathBuf,
    /// By relative path (`/` separators).
    pub files: BTreeMap<String, FileEntry>,
    /// Bumped on every change.
    pub generation: u64,
    /// The folders the walk went into (relative, `""` is the root).
    pub dirs: BTreeSet<String>,
    /// Files left out for their size (> `max_file_bytes`) or as binary, by relative path.
    pub skipped_large: BTreeSet<String>,
    pub skipped_binary: BTreeSet<String>,
    /// When the index was built (ms since the Unix epoch) and how long that took.
    pub indexed_at: u64,
    pub indexed_ms: u64,
}

impl RepoIndex {
    /// Record what reading the file at `rel` gave: an entry, or the reason it is left out.
    fn put(&mut self, rel: String, read: Read) {
        match read {
            Read::Entry(e) => {
                self.files.insert(rel, e);
            }
            Read::Binary => {
                self.skipped_binary.insert(rel);
            }
            Read::TooLarge => {
                self.skipped_large.insert(rel);
            }
            Read::Gone => {}
        }
    }

    /// Whether a change at `rel` can change this index: not when it is inside a folder the
    /// walk leaves out and not in the index itself (a build writing into `target/`, say).
    pub fn may_change(&self, rel: &str) -> bool {
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        rel.is_empty()
            || self.dirs.contains(parent)
            || self.dirs.contains(rel)
            || self.files.contains_key(rel)
    }

    /// The absolute path of a file of the index.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Files per language (tokei's names), files tokei does not know left out.
    pub fn languages(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.files.values() {
            if let Some(t) = e.tokei {
                *out.entry(t.name().to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    fn remove_under(&mut self, rel: &str) -> bool {
        let prefix = format!("{rel}/");
        let mut changed = self.files.remove(rel).is_some();
        let under: Vec<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        changed |= !under.is_empty();
        for k in under {
            self.files.remove(&k);
        }
        for set in [&mut self.skipped_large, &mut self.skipped_binary, &mut self.dirs] {
            set.remove(rel);
            set.retain(|k| !k.starts_with(&prefix));
        }
        changed
    }

    fn forget_skips(&mut self, rel: &str) {
        self.skipped_large.remove(rel);
        self.skipped_binary.remove(rel);
    }
}

/// What reading one file gave.
#[derive(Debug)]
pub enum Read {
    Entry(FileEntry),
    Binary,
    TooLarge,
    /// Gone or unreadable since the walk.
    Gone,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What reading a file into its entry needs: the symbol queries and the line-count rules,
/// each built on first use and owned by the plugin (dropped with it).
#[derive(Default)]
pub struct Reader {
    pub extractor: symbols::Extractor,
    pub counter: stats::Counter,
}

/// Read one file and make its entry (on the plugin's pool: tokei may use rayon).
pub fn read_file(abs: &Path, max_file_bytes: u64, reader: &Reader) -> Read {
    let Ok(meta) = std::fs::symlink_metadata(abs) else { return Read::Gone };
    if !meta.is_file() {
        return Read::Gone;
    }
    if meta.len() > max_file_bytes {
        return Read::TooLarge;
    }
    // The first bytes alone first: a binary file is told apart without reading the rest.
    let Ok(mut file) = std::fs::File::open(abs) else { return Read::Gone };
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    if (&mut file).take(BINARY_PROBE as u64).read_to_end(&mut bytes).is_err() {
        return Read::Gone;
    }
    if bytes.contains(&0) {
        return Read::Binary;
    }
    let rest = (max_file_bytes + 1).saturating_sub(bytes.len() as u64);
    if file.take(rest).read_to_end(&mut bytes).is_err() {
        return Read::Gone;
    }
    if bytes.len() as u64 > max_file_bytes {
        return Read::TooLarge;
    }
    let (mtime_ns, inode) = walk::stamp(&meta);
    let lang = Lang::of_path(abs);
    let tokei = stats::language_of(abs);
    let counts = tokei.map(|t| reader.counter.count(t, &bytes));
    let symbols = match lang {
        // A file whose symbols cannot be extracted is still indexed (counts, search).
        Some(l) => reader.extractor.extract(l, &bytes).unwrap_or_default(),
        None => symbols::FileSymbols::default(),
    };
    Read::Entry(FileEntry {
        lang,
        tokei,
        bytes: bytes.len() as u64,
        mtime_ns,
        inode,
        counts,
        symbols: Arc::new(symbols),
        metrics: None,
    })
}

/// Build an index from a walk (call it on the plugin's pool). `done` counts the files read.
pub fn build(
    name: &str,
    root: &Path,
    walked: Walked,
    max_file_bytes: u64,
    reader: &Reader,
    done: &AtomicUsize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<RepoIndex, Error> {
    let started = std::time::Instant::now();
    let read: Option<Vec<(String, Read)>> = walked
        .files
        .par_iter()
        .map(|f| {
            if cancelled() {
                return None;
            }
            let r = read_file(&f.abs, max_file_bytes, reader);
            done.fetch_add(1, Ordering::Relaxed);
            Some((f.rel.clone(), r))
        })
        .collect();
    let read = read.ok_or_else(Error::cancelled)?;
    let mut index = RepoIndex {
        name: name.to_string(),
        root: root.to_path_buf(),
        files: BTreeMap::new(),
        generation: 1,
        dirs: walked.dirs,
        skipped_large: BTreeSet::new(),
        skipped_binary: BTreeSet::new(),
        indexed_at: now_ms(),
        indexed_ms: 0,
    };
    index.skipped_large.extend(walked.large);
    for (rel, r) in read {
        index.put(rel, r);
    }
    index.indexed_ms = started.elapsed().as_millis() as u64;
    Ok(index)
}

/// What `refresh` found.
#[derive(Debug)]
pub struct Refreshed {
    /// The index brought up to date; None when nothing changed (the saved one stands).
    pub index: Option<RepoIndex>,
    /// Files of the index whose size, modification time or inode differ (read again).
    pub changed: usize,
    /// Files new to the index (read).
    pub added: usize,
    /// Files of the index gone from the walk.
    pub removed: usize,
}

/// Bring a loaded index (`old`, saved before a restart or a swap) up to date with a new walk of
/// its repository: a file whose (size, mtime, inode) the walk sees unchanged keeps its entry,
/// every other one is read (on the pool: call it there), files gone are dropped. Binary files
/// (not in `files`) are probed again: their first bytes only.
pub fn refresh(
    old: &RepoIndex,
    walked: Walked,
    max_file_bytes: u64,
    reader: &Reader,
    done: &AtomicUsize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Refreshed, Error> {
    let started = Instant::now();
    let mut index = RepoIndex {
        name: old.name.clone(),
        root: old.root.clone(),
        files: BTreeMap::new(),
        generation: old.generation,
        dirs: walked.dirs,
        skipped_large: walked.large.into_iter().collect(),
        skipped_binary: BTreeSet::new(),
        indexed_at: old.indexed_at,
        indexed_ms: old.indexed_ms,
    };
    let (mut changed, mut added) = (0, 0);
    let mut to_read = Vec::new();
    for f in walked.files {
        match old.files.get(&f.rel) {
            Some(e) if (e.bytes, e.mtime_ns, e.inode) == (f.bytes, f.mtime_ns, f.inode) => {
                index.files.insert(f.rel, e.clone());
            }
            Some(_) => {
                changed += 1;
                to_read.push(f);
            }
            None => {
                if !old.skipped_binary.contains(&f.rel) {
                    added += 1;
                }
                to_read.push(f);
            }
        }
    }
    let read: Option<Vec<(String, Read)>> = to_read
        .into_par_iter()
        .map(|f| {
            if cancelled() {
                return None;
            }
            let r = read_file(&f.abs, max_file_bytes, reader);
            done.fetch_add(1, Ordering::Relaxed);
            Some((f.rel, r))
        })
        .collect();
    let read = read.ok_or_else(Error::cancelled)?;
    // A binary file read again and binary still changes nothing.
    let mut entries_read = 0;
    for (rel, r) in read {
        entries_read += usize::from(matches!(r, Read::Entry(_)));
        index.put(rel, r);
    }
    let removed = old.files.keys().filter(|k| !index.files.contains_key(*k)).count();
    let same = entries_read == 0
        && index.files.len() == old.files.len()
        && index.dirs == old.dirs
        && index.skipped_large == old.skipped_large
        && index.skipped_binary == old.skipped_binary;
    if same {
        return Ok(Refreshed { index: None, changed, added, removed });
    }
    index.generation = old.generation + 1;
    index.indexed_at = now_ms();
    index.indexed_ms = started.elapsed().as_millis() as u64;
    Ok(Refreshed { index: Some(index), changed, added, removed })
}

/// What `apply_changes` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Changed,
    /// An ignore file changed: the whole repository must be walked again.
    NeedsRebuild,
    /// The repository's folder itself is gone (deleted or moved away).
    RootGone,
}

/// Bring the index up to date with these changed paths (absolute, under the root): files
/// re-read, removed ones dropped, new folders walked. Call it on the plugin's pool.
pub fn apply_changes(
    index: &mut RepoIndex,
    paths: &BTreeSet<PathBuf>,
    max_file_bytes: u64,
    reader: &Reader,
) -> Applied {
    let root = index.root.clone();
    let mut changed = false;
    for abs in paths {
        let Some(rel) = walk::relative(&root, abs) else { continue };
        if rel.is_empty() {
            if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
                return Applied::RootGone;
            }
            continue;
        }
        let name = abs.file_name().unwrap_or_default();
        let parent_rel = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if !index.dirs.contains(parent_rel) {
            // Inside a folder the walk leaves out (ignored or hidden) or not there any more.
            changed |= index.remove_under(&rel);
            continue;
        }
        // An ignore file in a folder the walk takes (not one in `target/`, say).
        if name == ".gitignore" || name == ".ignore" {
            return Applied::NeedsRebuild;
        }
        let parent = abs.parent().unwrap_or(&root);
        let meta = std::fs::symlink_metadata(abs);
        let admitted = meta.is_ok() && walk::child_admitted(parent, name);
        match meta {
            Ok(m) if m.is_dir() && admitted => {
                if !index.dirs.contains(&rel) {
                    let Ok(walked) = walk::walk(&root, abs, max_file_bytes, &|| false) else {
                        continue;
                    };
                    for f in &walked.files {
                        index.forget_skips(&f.rel);
                        index.put(f.rel.clone(), read_file(&f.abs, max_file_bytes, reader));
                    }
                    index.dirs.extend(walked.dirs);
                    changed = true;
                }
            }
            Ok(m) if m.is_file() && admitted => {
                index.forget_skips(&rel);
                index.files.remove(&rel);
                index.put(rel, read_file(abs, max_file_bytes, reader));
                changed = true;
            }
            // Gone, ignored now, a symbolic link or a special file.
            _ => changed |= index.remove_under(&rel),
        }
    }
    if changed {
        index.generation += 1;
        Applied::Changed
    } else {
        Applied::Unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(root: &Path, reader: &Reader) -> RepoIndex {
        let walked = walk::walk(root, root, 1000, &|| false).unwrap();
        let done = AtomicUsize::new(0);
        let index = build("t", root, walked, 1000, reader, &done, &|| false).unwrap();
        assert_eq!(done.load(Ordering::SeqCst), index.files.len() + index.skipped_binary.len());
        index
    }

    #[test]
    fn refresh_reads_only_the_files_that_differ_from_a_loaded_index() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}\n").unwrap();
        std::fs::write(root.join("src/b.rs"), "fn b() {}\n").unwrap();
        std::fs::write(root.join("src/c.rs"), "fn c() {}\n").unwrap();
        std::fs::write(root.join("bin.dat"), b"ab\0cd").unwrap();
        let reader = Reader::default();
        let old = index_of(&root, &reader);
        let refresh_now = |old: &RepoIndex| {
            let walked = walk::walk(&root, &root, 1000, &|| false).unwrap();
            let done = AtomicUsize::new(0);
            let r = refresh(old, walked, 1000, &reader, &done, &|| false).unwrap();
            (r, done.load(Ordering::SeqCst))
        };
        // Nothing changed: no new index; only the binary file is probed again.
        let (r, read) = refresh_now(&old);
        assert!(r.index.is_none());
        assert_eq!((r.changed, r.added, r.removed, read), (0, 0, 0, 1));
        // An edit, a deletion, a new file.
        std::fs::write(root.join("src/a.rs"), "fn a() {}\nfn a2() {}\n").unwrap();
        std::fs::remove_file(root.join("src/b.rs")).unwrap();
        std::fs::write(root.join("src/d.rs"), "fn d() {}\n").unwrap();
        let (r, read) = refresh_now(&old);
        assert_eq!((r.changed, r.added, r.removed, read), (1, 1, 1, 3));
        let new = r.index.unwrap();
        assert_eq!(new.generation, old.generation + 1);
        assert_eq!(new.files.keys().collect::<Vec<_>>(), ["src/a.rs", "src/c.rs", "src/d.rs"]);
        assert_eq!(new.files["src/a.rs"].symbols.defs.len(), 2);
        assert!(Arc::ptr_eq(&new.files["src/c.rs"].symbols, &old.files["src/c.rs"].symbols));
        assert!(new.skipped_binary.contains("bin.dat"));
    }

    #[test]
    fn changes_are_applied_file_by_file_and_ignore_files_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("repo");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}\n").unwrap();
        std::fs::write(root.join("bin.dat"), b"ab\0cd").unwrap();
        let reader = Reader::default();
        let mut index = index_of(&root, &reader);
        assert_eq!(index.files.keys().collect::<Vec<_>>(), ["src/a.rs"]);
        assert!(index.skipped_binary.contains("bin.dat"));
        let a = &index.files["src/a.rs"];
        assert_eq!((a.lang, a.bytes), (Some(Lang::Rust), 10));
        assert_eq!(a.counts.map(|c| c.code), Some(1));

        let apply = |index: &mut RepoIndex, paths: &[&str]| {
            let paths = paths.iter().map(|p| root.join(p)).collect();
            apply_changes(index, &paths, 1000, &reader)
        };
        // An edit, a new file, a file in an ignored folder, a hidden one.
        std::fs::write(root.join("src/a.rs"), "fn a() {}\n\nfn b() {}\n").unwrap();
        std::fs::write(root.join("src/c.py"), "x = 1\n").unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join("target/t.rs"), "fn t() {}\n").unwrap();
        std::fs::write(root.join("src/.h.rs"), "fn h() {}\n").unwrap();
        let g = index.generation;
        let paths = ["src/a.rs", "src/c.py", "target", "target/t.rs", "src/.h.rs"];
        assert_eq!(apply(&mut index, &paths), Applied::Changed);
        assert_eq!(index.generation, g + 1);
        assert_eq!(index.files.keys().collect::<Vec<_>>(), ["src/a.rs", "src/c.py"]);
        assert_eq!(index.files["src/a.rs"].counts.map(|c| c.code), Some(2));
        // A folder moved in is walked; a big file is counted out; deletions are dropped.
        std::fs::create_dir_all(root.join("src/m/n")).unwrap();
        std::fs::write(root.join("src/m/n/d.go"), "package n\n").unwrap();
        std::fs::write(root.join("src/big.rs"), vec![b'a'; 2000]).unwrap();
        assert_eq!(apply(&mut index, &["src/m", "src/big.rs"]), Applied::Changed);
        assert!(index.files.contains_key("src/m/n/d.go") && index.dirs.contains("src/m/n"));
        assert!(index.skipped_large.contains("src/big.rs"));
        std::fs::remove_dir_all(root.join("src/m")).unwrap();
        std::fs::remove_file(root.join("src/c.py")).unwrap();
        assert_eq!(apply(&mut index, &["src/m", "src/c.py"]), Applied::Changed);
        assert_eq!(index.files.keys().collect::<Vec<_>>(), ["src/a.rs"]);
        assert!(!index.dirs.contains("src/m/n"));
        // Nothing to do for a path that changed nothing the index holds, an ignore file in an
        // ignored folder included.
        assert_eq!(apply(&mut index, &["target/t.rs"]), Applied::Unchanged);
        std::fs::write(root.join("target/.gitignore"), "*\n").unwrap();
        assert_eq!(apply(&mut index, &["target/.gitignore"]), Applied::Unchanged);
        assert!(!index.may_change("target/t.rs") && !index.may_change("target/.gitignore"));
        assert!(index.may_change("src/new.rs") && index.may_change("src") && index.may_change(""));
        // An ignore file changed: everything is walked again.
        assert_eq!(apply(&mut index, &[".gitignore"]), Applied::NeedsRebuild);
        // The folder itself went away.
        assert_eq!(apply(&mut index, &[""]), Applied::Unchanged);
        std::fs::rename(&root, root.with_extension("moved")).unwrap();
        assert_eq!(apply(&mut index, &["", "src/a.rs"]), Applied::RootGone);
    }
}

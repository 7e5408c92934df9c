//! Churn from the git history: per file, the commits that touched it and the lines they added
//! and deleted, read from `git log --numstat` on the repository (std::process::Command; the
//! output goes to a temporary file, so no thread reads a pipe, and a `git` still running at
//! the deadline is killed and reaped). Hotspots rank files by churn times complexity.
//!
//! - The last `max_commits` commits reachable from HEAD (`--max-count`), merges excluded (git
//!   lists no numstat for them without `-m`).
//! - Paths are relative to the repository's root as repoagent knows it (`--relative`: a repo
//!   added at a subfolder of a git work tree counts that subfolder's history only).
//! - Renames are followed best effort (`-M`, git's similarity detection per commit): the
//!   history of the old path is added to the new one. Binary files count commits, no lines.
//! - Nothing from the repository's config can run a program: external diff drivers and
//!   textconv filters are switched off (`--no-ext-diff --no-textconv`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileChurn {
    pub commits: u32,
    /// Lines added plus lines deleted.
    pub lines_changed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Churn {
    pub files: HashMap<String, FileChurn>,
    /// Commits read (at most the limit asked for).
    pub commits: u32,
}

/// The hotspot score of a file: commits touching it times its cyclomatic complexity (the sum
/// over its functions), Adam Tornhill's "change frequency x complexity". A file never changed,
/// or without functions, scores 0 and is not a hotspot.
pub fn score(churn: FileChurn, complexity: u32) -> u64 {
    u64::from(churn.commits) * u64::from(complexity)
}

/// A temporary file that is removed when dropped.
struct TempOut(PathBuf);

impl TempOut {
    fn new(tag: &str) -> std::io::Result<(TempOut, File)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "bkg-repoagent-{tag}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((TempOut(path), file))
    }

    fn read(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(&self.0)?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why `read` gave up early: the caller's `cancelled` said so.
pub const CANCELLED: &str = "cancelled";

/// Reads the churn of the repository at `root`. Errors say why there is none: `git` missing,
/// not a git repository, an empty history, the deadline passed, or [`CANCELLED`] (`git` is
/// then killed at once).
pub fn read(
    root: &Path,
    max_commits: u32,
    timeout: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<Churn, String> {
    let io = |e: std::io::Error| format!("cannot run git: {e}");
    let (out_path, out_file) = TempOut::new("git-out").map_err(io)?;
    let (err_path, err_file) = TempOut::new("git-err").map_err(io)?;
    let spawned = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "-c",
            "core.fsmonitor=false",
            "log",
            "--numstat",
            "-z",
            "-M",
            "--relative",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--format=%x1e%H",
        ])
        .arg(format!("--max-count={max_commits}"))
        // The repository is `root`'s, whatever the host's environment says.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_NAMESPACE")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("git is not installed on the host (no `git` on PATH)".into())
        }
        Err(e) => return Err(io(e)),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CANCELLED.into());
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "git log did not finish within {} s (lower `churn_commits`)",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io(e));
            }
        }
    };
    if !status.success() {
        let err = err_path.read().unwrap_or_default();
        let err = String::from_utf8_lossy(&err);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(if err.contains("not a git repository") {
            format!("{} is not in a git repository", root.display())
        } else if err.contains("does not have any commits") {
            "the git repository has no commits yet".into()
        } else {
            format!("git log failed ({status}): {line}")
        });
    }
    let out = out_path.read().map_err(|e| format!("cannot read git's output: {e}"))?;
    Ok(parse(&out))
}

/// Parses `git log --numstat -z --format=%x1e%H` output.
fn parse(out: &[u8]) -> Churn {
    let mut churn = Churn::default();
    // An old path -> the name its history goes to (commits come newest first).
    let mut renamed: HashMap<String, String> = HashMap::new();
    let current = |renamed: &HashMap<String, String>, p: &str| -> String {
        let mut p = p.to_string();
        for _ in 0..64 {
            match renamed.get(&p) {
                Some(next) if *next != p => p = next.clone(),
                _ => break,
            }
        }
        p
    };
    for commit in out.split(|b| *b == 0x1e).filter(|c| !c.is_empty()) {
        churn.commits += 1;
        let mut tokens = commit.split(|b| *b == 0).skip(1); // the hash
        let mut touched: Vec<String> = Vec::new();
        while let Some(tok) = tokens.next() {
            let tok = String::from_utf8_lossy(tok);
            let tok = tok.trim_start_matches('\n');
            if tok.is_empty() {
                continue;
            }
            let mut parts = tok.splitn(3, '\t');
            let (Some(a), Some(d), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let lines = a.parse::<u64>().unwrap_or(0) + d.parse::<u64>().unwrap_or(0);
            let path = if path.is_empty() {
                // a rename: the old and the new path follow
                let (Some(old), Some(new)) = (tokens.next(), tokens.next()) else {
                    break;
                };
                let old = String::from_utf8_lossy(old).into_owned();
                let new = current(&renamed, &String::from_utf8_lossy(new));
                renamed.insert(old, new.clone());
                new
            } else {
                current(&renamed, path)
            };
            let e = churn.files.entry(path.clone()).or_default();
            e.lines_changed += lines;
            if !touched.contains(&path) {
                e.commits += 1;
                touched.push(path);
            }
        }
    }
    churn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_counts_commits_lines_binaries_and_follows_renames() {
        // newest first: 3 adds bin.dat; 2 renames d/x.rs -> d/y.rs (+1); 1 adds d/x.rs, a b.rs
        let out = b"\x1e2515\0\n-\t-\tbin.dat\0\x1ec5b4\0\n1\t0\t\0d/x.rs\0d/y.rs\0\x1edc6b\0\n2\t0\td/x.rs\0\x31\t0\tsp ace.rs\0";
        let c = parse(out);
        assert_eq!(c.commits, 3);
        assert_eq!(c.files["bin.dat"], FileChurn { commits: 1, lines_changed: 0 });
        assert_eq!(c.files["d/y.rs"], FileChurn { commits: 2, lines_changed: 3 });
        assert_eq!(c.files["sp ace.rs"], FileChurn { commits: 1, lines_changed: 1 });
        assert!(!c.files.contains_key("d/x.rs"));
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_WORK_TREE")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn a_real_history_is_read_and_a_cancelled_read_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}\nfn b() {}\n").unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "one"]);
        std::fs::write(root.join("src/a.rs"), "fn a() {}\n").unwrap();
        git(root, &["commit", "-q", "-am", "two"]);
        let c = read(root, 10, Duration::from_secs(60), &|| false).unwrap();
        assert_eq!(c.commits, 2);
        assert_eq!(c.files["src/a.rs"], FileChurn { commits: 2, lines_changed: 3 });
        // --max-count
        assert_eq!(read(root, 1, Duration::from_secs(60), &|| false).unwrap().commits, 1);
        // --relative: a subfolder's own paths
        let sub = read(&root.join("src"), 10, Duration::from_secs(60), &|| false).unwrap();
        assert_eq!(sub.files["a.rs"].commits, 2);
        let err = read(root, 10, Duration::from_secs(60), &|| true).unwrap_err();
        assert_eq!(err, CANCELLED);
        // an empty repository
        let empty = tempfile::tempdir().unwrap();
        git(empty.path(), &["init", "-q"]);
        let err = read(empty.path(), 10, Duration::from_secs(60), &|| false).unwrap_err();
        assert!(err.contains("no commits"), "{err}");
    }

    #[test]
    fn a_folder_outside_git_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path(), 10, Duration::from_secs(60), &|| false).unwrap_err();
        assert!(err.contains("not in a git repository"), "{err}");
    }
}

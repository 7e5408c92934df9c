//! What the crate's integration tests share: where real code written by nobody here lies.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's Cargo.lock version of a crate, unpacked in the registry.
pub fn registry_crate(name: &str) -> PathBuf {
    let lock_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).expect("the workspace's Cargo.lock");
    let mut versions = Vec::new();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == format!("name = \"{name}\"") {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \"")) {
                versions.push(v.trim_end_matches('"').to_string());
            }
        }
    }
    assert!(!versions.is_empty(), "{name} is not in Cargo.lock");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let src = home.join("registry/src");
    for index in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        for v in &versions {
            let dir = index.as_ref().unwrap().path().join(format!("{name}-{v}"));
            if dir.is_dir() {
                return dir;
            }
        }
    }
    panic!("{name} {versions:?} not unpacked under {} (build the workspace first)", src.display());
}

/// CPython's standard library, as python3 names it.
pub fn python_stdlib() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig;print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

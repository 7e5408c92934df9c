//! Real code nobody here wrote, for repoagent's tests: crate sources from the cargo registry
//! (at the versions this workspace's Cargo.lock pins, so any build of the workspace has
//! downloaded them) and CPython's standard library (python3's own), copied into folders the
//! tests own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::lib_name;

/// The repoagent plugin's library file name.
pub(crate) fn repoagent_lib() -> String {
    lib_name("bkg_plugin_repoagent")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The source folder of `name` at the version this workspace's Cargo.lock pins, in the cargo
/// registry.
pub(crate) fn registry_crate(name: &str) -> PathBuf {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    let needle = format!("name = \"{name}\"\nversion = \"");
    let at = lock.find(&needle).unwrap_or_else(|| panic!("{name} is not in Cargo.lock"));
    let rest = &lock[at + needle.len()..];
    let version = &rest[..rest.find('"').unwrap()];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let src = cargo_home.join("registry/src");
    for index in std::fs::read_dir(&src).unwrap().flatten() {
        let dir = index.path().join(format!("{name}-{version}"));
        if dir.join("Cargo.toml").is_file() {
            return dir;
        }
    }
    panic!("{name}-{version} not found under {}", src.display());
}

/// CPython's standard library folder (python3's own, from sysconfig), or a folder in it.
pub(crate) fn stdlib_dir(sub: &str) -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig;print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(sub);
    assert!(dir.is_dir(), "{} is not a folder", dir.display());
    dir
}

/// Copy a tree of regular files (symbolic links and `__pycache__` left out).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    copy(from, to, true);
}

/// Copy a tree's regular files, hidden ones left out too (a registry crate's VCS info).
pub(crate) fn copy_visible_tree(from: &Path, to: &Path) {
    copy(from, to, false);
}

fn copy(from: &Path, to: &Path, hidden: bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let kind = entry.file_type().unwrap();
        let name = entry.file_name();
        if !hidden && name.to_string_lossy().starts_with('.') {
            continue;
        }
        if kind.is_dir() && name != "__pycache__" {
            copy(&entry.path(), &to.join(&name), hidden);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

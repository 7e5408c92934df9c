//! The models folder on disk: one folder per model, `<models-dir>/<repo id>/`, holding the
//! model's files and a manifest (`.bkg-model.json`, an [`InstalledModel`]). A model appears
//! there whole or not at all: it is assembled in a staging folder and renamed into place.
//! A folder without a manifest was put there by someone else and is never replaced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::InstalledModel;

/// The manifest's file name inside a model folder.
pub const MANIFEST: &str = ".bkg-model.json";
/// The host's working folder inside the models folder (hub cache, staging, trash).
pub const WORK_DIR: &str = ".downloads";

/// Where the model of `repo` lives.
pub fn model_dir(models_dir: &Path, repo: &str) -> PathBuf {
    repo.split('/').fold(models_dir.to_path_buf(), |p, part| p.join(part))
}

/// Why a model cannot be installed at its folder.
pub fn check_target(models_dir: &Path, repo: &str) -> Result<(), String> {
    let dir = model_dir(models_dir, repo);
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot inspect {}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Err(format!(
            "{} exists and is not a folder; remove it to install {repo}",
            dir.display()
        )),
        Ok(_) if !dir.join(MANIFEST).is_file() => Err(format!(
            "{} exists and was not installed by bkg (it has no {MANIFEST}); it is left alone: \
             move it away to install {repo} there",
            dir.display()
        )),
        Ok(_) => Ok(()),
    }
}

/// Link (or, across file systems, copy) a downloaded file into the staging folder.
pub fn stage_file(staging: &Path, name: &str, blob: &Path) -> io::Result<()> {
    let dest = name.split('/').fold(staging.to_path_buf(), |p, part| p.join(part));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::hard_link(blob, &dest).is_err() {
        fs::copy(blob, &dest)?;
    }
    Ok(())
}

/// Write the manifest into `staging` and move `staging` to the model's folder, replacing an
/// earlier install of the same repo (only one made by bkg: [`check_target`] is asked again).
pub fn commit(
    models_dir: &Path,
    staging: &Path,
    trash: &Path,
    model: &InstalledModel,
) -> Result<PathBuf, String> {
    let manifest = serde_json::to_vec_pretty(model).map_err(|e| e.to_string())?;
    let manifest_path = staging.join(MANIFEST);
    fs::write(&manifest_path, manifest)
        .and_then(|_| fs::File::open(&manifest_path)?.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
    check_target(models_dir, &model.repo)?;
    let target = model_dir(models_dir, &model.repo);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let replaced = target.exists();
    if replaced {
        // Files written beside the earlier install (a quantized copy, notes) are the user's:
        // they move into the new folder unless the new model brings a file of that name.
        let ours: std::collections::HashSet<&str> =
            model.files.iter().map(|f| f.name.as_str()).collect();
        carry_over(&target, staging, "", &ours)
            .map_err(|e| format!("cannot keep the files beside {}: {e}", target.display()))?;
        fs::rename(&target, trash)
            .map_err(|e| format!("cannot move the earlier {} aside: {e}", target.display()))?;
    }
    if let Err(e) = fs::rename(staging, &target) {
        if replaced {
            // Put the earlier install back: it was working.
            let _ = fs::rename(trash, &target);
        }
        return Err(format!("cannot move the model into {}: {e}", target.display()));
    }
    if replaced {
        let _ = fs::remove_dir_all(trash);
    }
    Ok(target)
}

/// Link what `from` holds beyond `ours` (and the manifest) into the same place under `to`.
fn carry_over(
    from: &Path,
    to: &Path,
    prefix: &str,
    ours: &std::collections::HashSet<&str>,
) -> io::Result<()> {
    for e in fs::read_dir(from)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if rel == MANIFEST || ours.contains(rel.as_str()) {
            continue;
        }
        let dest = to.join(&name);
        if e.file_type()?.is_dir() {
            fs::create_dir_all(&dest)?;
            carry_over(&e.path(), &dest, &rel, ours)?;
        } else if !dest.exists() && fs::hard_link(e.path(), &dest).is_err() {
            // Linked (or copied), not moved: until the swap succeeds the earlier folder is whole.
            fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// The manifests of every model folder (`<repo>` one or two levels deep), for the registry
/// to learn models laid out by other tools (e.g. `scripts/fetch-models.sh`).
pub fn scan(models_dir: &Path) -> Vec<InstalledModel> {
    let mut found = Vec::new();
    let Ok(level1) = fs::read_dir(models_dir) else { return found };
    for a in level1.flatten() {
        let name = a.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !a.path().is_dir() {
            continue;
        }
        let mut candidates = vec![a.path()];
        if let Ok(level2) = fs::read_dir(a.path()) {
            candidates.extend(level2.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for dir in candidates {
            if let Some(m) = read_manifest(models_dir, &dir) {
                found.push(m);
            }
        }
    }
    found.sort_by(|a, b| a.repo.cmp(&b.repo));
    found
}

fn read_manifest(models_dir: &Path, dir: &Path) -> Option<InstalledModel> {
    let path = dir.join(MANIFEST);
    let bytes = fs::read(&path).ok()?;
    match serde_json::from_slice::<InstalledModel>(&bytes) {
        // A manifest only speaks for the folder it is in.
        Ok(mut m) if model_dir(models_dir, &m.repo) == dir => {
            // Manifests written by other tools may leave out what follows from the rest.
            if m.path.is_empty() {
                m.path = m.repo.clone();
            }
            if m.total_bytes == 0 {
                m.total_bytes = m.files.iter().map(|f| f.size).sum();
            }
            Some(m)
        }
        Ok(m) => {
            tracing::warn!(manifest = %path.display(), repo = %m.repo, "model manifest names another folder; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(manifest = %path.display(), "unreadable model manifest ignored: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ModelFile;

    fn model(repo: &str) -> InstalledModel {
        InstalledModel {
            repo: repo.into(),
            revision: "main".into(),
            commit: None,
            path: repo.into(),
            source: "test".into(),
            files: vec![ModelFile { name: "a/b.txt".into(), size: 2, sha256: "00".into() }],
            total_bytes: 2,
            plugin: None,
            installed_at_ms: 0,
        }
    }

    #[test]
    fn commit_replaces_own_install_and_never_a_foreign_folder() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let blob = root.join("blob");
        fs::write(&blob, "v1").unwrap();
        let staging = root.join(".downloads/s1");
        stage_file(&staging, "a/b.txt", &blob).unwrap();
        let target = commit(root, &staging, &root.join(".downloads/t1"), &model("org/m")).unwrap();
        assert_eq!(fs::read_to_string(target.join("a/b.txt")).unwrap(), "v1");
        assert_eq!(scan(root), vec![model("org/m")]);

        // A second install of the same repo replaces the first.
        fs::write(root.join("blob2"), "v2").unwrap();
        let staging = root.join(".downloads/s2");
        stage_file(&staging, "a/b.txt", &root.join("blob2")).unwrap();
        // A file written beside the first install (e.g. a quantized copy) is kept.
        fs::write(target.join("model-q8_0.gguf"), "mine").unwrap();
        fs::write(target.join("a/notes.txt"), "also mine").unwrap();
        commit(root, &staging, &root.join(".downloads/t2"), &model("org/m")).unwrap();
        assert_eq!(fs::read_to_string(target.join("a/b.txt")).unwrap(), "v2");
        assert_eq!(fs::read_to_string(target.join("model-q8_0.gguf")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(target.join("a/notes.txt")).unwrap(), "also mine");
        assert!(!root.join(".downloads/t2").exists());

        // A folder someone else made is left alone.
        fs::create_dir_all(root.join("org/mine")).unwrap();
        fs::write(root.join("org/mine/notes.txt"), "keep").unwrap();
        let staging = root.join(".downloads/s3");
        stage_file(&staging, "a/b.txt", &blob).unwrap();
        let err = commit(root, &staging, &root.join(".downloads/t3"), &model("org/mine"));
        assert!(err.unwrap_err().contains("not installed by bkg"));
        assert_eq!(fs::read_to_string(root.join("org/mine/notes.txt")).unwrap(), "keep");
    }

    #[test]
    fn scan_accepts_the_minimal_manifest_of_fetch_models() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("org/m");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(MANIFEST),
            r#"{"repo":"org/m","revision":"main","commit":null,"source":"pypi:x==1",
               "files":[{"name":"a","size":3,"sha256":"00"},{"name":"b","size":4,"sha256":"11"}],
               "installed_at_ms":5}"#,
        )
        .unwrap();
        let found = scan(d.path());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].path.as_str(), found[0].total_bytes), ("org/m", 7));
        assert_eq!(found[0].plugin, None);
    }

    #[test]
    fn scan_ignores_manifests_for_other_folders() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("org/a");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&model("org/b")).unwrap()).unwrap();
        fs::create_dir_all(d.path().join("solo")).unwrap();
        fs::write(
            d.path().join("solo").join(MANIFEST),
            serde_json::to_vec(&model("solo")).unwrap(),
        )
        .unwrap();
        fs::write(d.path().join("org/broken.json"), "x").unwrap();
        assert_eq!(scan(d.path()), vec![model("solo")]);
    }
}

//! The models folder on disk: one folder per model, `<models-dir>/<repo id>/`, holding the
//! model's files and a manifest (`.bkg-model.json`, an [`InstalledModel`]). A model appears
//! there whole or not at all: it is assembled in a staging folder and renamed into place.
//! A folder without a manifest was put there by someone else and is never replaced.
//!
//! Replacing an install is a journaled sequence of renames, each made durable (fsync of the
//! files and of the folders whose entries changed) before the next, so that a kill or a power
//! loss at any point leaves either the earlier or the new install in place, never neither:
//!
//! 1. `staged`: the new model is complete in `.downloads/staging-<job>/` (files linked, the
//!    user's files beside the earlier install linked in, manifest written, all flushed);
//! 2. `moved_aside`: the earlier install is renamed to `.downloads/previous-<job>/`;
//! 3. `renamed`: the staging folder is renamed to `<models-dir>/<repo>/`;
//! 4. `registered`: the database row is written;
//! 5. the previous install is renamed to `.downloads/discard-<job>/` and deleted.
//!
//! [`recover`], at start, finishes what a crash interrupted: staging and discard folders are
//! deleted; a previous install is deleted when its model folder holds a complete install (one
//! with a manifest) and renamed back into place when the model folder is missing. The model
//! registry then takes each folder's manifest as the truth.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::InstalledModel;

/// The manifest's file name inside a model folder.
pub const MANIFEST: &str = ".bkg-model.json";
/// The host's working folder inside the models folder (hub cache, staging, previous installs).
pub const WORK_DIR: &str = ".downloads";
/// Work folders: a model being assembled, an earlier install moved aside while the new one
/// goes into place, and a folder on its way out.
const STAGING: &str = "staging-";
const PREVIOUS: &str = "previous-";
const DISCARD: &str = "discard-";
/// What hosts before the journaled replacement called the earlier install moved aside; a
/// crash of such a host may have left the only copy of a model there.
const LEGACY_TRASH: &str = "trash-";

/// The environment variable of the crash-test hook (see [`Failpoint`]).
pub const FAILPOINT_ENV: &str = "BKG_FAILPOINT";

/// Test hook for the crash tests: a host started with `BKG_FAILPOINT=model_install:<step>`
/// aborts (`std::process::abort`: no destructors, no cleanup, like a kill) when an install
/// reaches `<step>`, one of `staged`, `moved_aside`, `renamed`, `registered` (see the module
/// docs). Read once per install (one environment lookup); unset, it does nothing.
struct Failpoint(Option<String>);

impl Failpoint {
    fn from_env() -> Self {
        let value = std::env::var(FAILPOINT_ENV).ok();
        Self(value.and_then(|v| v.strip_prefix("model_install:").map(str::to_string)))
    }

    fn reached(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            tracing::error!("{FAILPOINT_ENV}: aborting at failpoint model_install:{step}");
            std::process::abort();
        }
    }
}

/// The work folders of one install, in `<models-dir>/.downloads/`, named after its job.
pub struct Work {
    pub staging: PathBuf,
    previous: PathBuf,
    discard: PathBuf,
}

impl Work {
    pub fn new(models_dir: &Path, job: &str) -> Self {
        let work = models_dir.join(WORK_DIR);
        Self {
            staging: work.join(format!("{STAGING}{job}")),
            previous: work.join(format!("{PREVIOUS}{job}")),
            discard: work.join(format!("{DISCARD}{job}")),
        }
    }
}

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

/// Flush a folder's entries (names created, renamed or removed in it) to disk. Windows has no
/// such call (and needs none for the same guarantee on NTFS): there it does nothing.
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// [`sync_dir`] after a rename has already happened: a failure is logged, not returned, since
/// the step it would report cannot be taken back.
fn sync_dir_after(dir: &Path) {
    if let Err(e) = sync_dir(dir) {
        tracing::warn!(dir = %dir.display(), "cannot flush the folder to disk: {e}");
    }
}

/// Flush every file and folder under `dir` (and `dir` itself) to disk.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let kind = e.file_type()?;
        if kind.is_dir() {
            sync_tree(&e.path())?;
        } else if kind.is_file() {
            fs::File::open(e.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Write the manifest into `work.staging` and move the staging folder to the model's folder,
/// replacing an earlier install of the same repo (only one made by bkg: [`check_target`] is
/// asked again), then `register` the model (write it to the database). A failed `register`
/// takes the install back: the earlier one returns. See the module docs for the steps and
/// what a crash between them leaves.
pub fn commit(
    models_dir: &Path,
    work: &Work,
    model: &InstalledModel,
    register: impl FnOnce() -> Result<(), String>,
) -> Result<PathBuf, String> {
    let fail = Failpoint::from_env();
    let staging = work.staging.as_path();
    let manifest = serde_json::to_vec_pretty(model).map_err(|e| e.to_string())?;
    let manifest_path = staging.join(MANIFEST);
    fs::write(&manifest_path, manifest)
        .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
    check_target(models_dir, &model.repo)?;
    let target = model_dir(models_dir, &model.repo);
    let parent = parent_of(&target);
    if !parent.is_dir() {
        fs::create_dir_all(parent)
            .and_then(|_| sync_dir(parent_of(parent)))
            .and_then(|_| sync_dir(models_dir))
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
    }
    sync_tree(staging)
        .and_then(|_| sync_dir(parent_of(staging)))
        .map_err(|e| format!("cannot flush {} to disk: {e}", staging.display()))?;
    fail.reached("staged");

    if replaced {
        fs::rename(&target, &work.previous)
            .map_err(|e| format!("cannot move the earlier {} aside: {e}", target.display()))?;
        sync_dir_after(parent);
        sync_dir_after(parent_of(&work.previous));
        fail.reached("moved_aside");
    }
    if let Err(e) = fs::rename(staging, &target) {
        if replaced {
            // Put the earlier install back: it was working.
            put_back(&work.previous, &target);
        }
        return Err(format!("cannot move the model into {}: {e}", target.display()));
    }
    sync_dir_after(parent);
    sync_dir_after(parent_of(staging));
    fail.reached("renamed");

    if let Err(e) = register() {
        // Take the new install back out, and the earlier one back in.
        match fs::rename(&target, &work.discard) {
            Ok(()) => {
                sync_dir_after(parent);
                if replaced {
                    put_back(&work.previous, &target);
                }
                let _ = fs::remove_dir_all(&work.discard);
            }
            Err(undo) => tracing::warn!(
                target = %target.display(),
                "cannot take back the install that could not be registered: {undo}"
            ),
        }
        return Err(e);
    }
    fail.reached("registered");

    if replaced {
        // Renamed first, so that a half-deleted folder never carries the `previous-` name.
        match fs::rename(&work.previous, &work.discard) {
            Ok(()) => {
                sync_dir_after(parent_of(&work.discard));
                let _ = fs::remove_dir_all(&work.discard);
            }
            Err(e) => tracing::warn!(
                previous = %work.previous.display(),
                "cannot remove the replaced install (the next start will): {e}"
            ),
        }
    }
    Ok(target)
}

/// Rename an install moved aside back to its folder.
fn put_back(previous: &Path, target: &Path) {
    match fs::rename(previous, target) {
        Ok(()) => sync_dir_after(parent_of(target)),
        Err(e) => tracing::error!(
            previous = %previous.display(),
            target = %target.display(),
            "cannot put the earlier install back (the next start will try again): {e}"
        ),
    }
}

/// Finish what a crash left in the work folder (see the module docs): delete staging and
/// discard folders, and for each earlier install moved aside either delete it (its model
/// folder holds a complete install) or rename it back (its model folder is missing).
pub fn recover(models_dir: &Path) -> io::Result<()> {
    let work = models_dir.join(WORK_DIR);
    for e in fs::read_dir(&work)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(STAGING) || name.starts_with(DISCARD) {
            let _ = fs::remove_dir_all(&path);
        } else if name.starts_with(PREVIOUS) || name.starts_with(LEGACY_TRASH) {
            recover_previous(models_dir, &path);
        }
    }
    sync_dir(&work)
}

fn recover_previous(models_dir: &Path, previous: &Path) {
    let repo = fs::read(previous.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|m| m["repo"].as_str().map(str::to_string))
        .filter(|repo| super::names::check_repo(repo).is_ok());
    let Some(repo) = repo else {
        // Only a folder half-way through its deletion lacks its manifest.
        tracing::info!(folder = %previous.display(), "removing an earlier install without a manifest");
        let _ = fs::remove_dir_all(previous);
        return;
    };
    let target = model_dir(models_dir, &repo);
    if target.join(MANIFEST).is_file() {
        tracing::info!(%repo, "removing the install a finished replacement left behind");
        let _ = fs::remove_dir_all(previous);
    } else if fs::symlink_metadata(&target).is_err() {
        let restored =
            fs::create_dir_all(parent_of(&target)).and_then(|_| fs::rename(previous, &target));
        match restored {
            Ok(()) => {
                sync_dir_after(parent_of(&target));
                tracing::warn!(%repo, "an interrupted replacement was undone: the earlier install is back");
            }
            Err(e) => tracing::error!(
                %repo,
                folder = %previous.display(),
                "cannot put the earlier install back: {e}"
            ),
        }
    } else {
        tracing::warn!(
            %repo,
            folder = %previous.display(),
            "an earlier install is kept aside: {} holds a folder bkg did not make",
            target.display()
        );
    }
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

    fn ok() -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn commit_replaces_own_install_and_never_a_foreign_folder() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let blob = root.join("blob");
        fs::write(&blob, "v1").unwrap();
        let work = Work::new(root, "1");
        stage_file(&work.staging, "a/b.txt", &blob).unwrap();
        let target = commit(root, &work, &model("org/m"), ok).unwrap();
        assert_eq!(fs::read_to_string(target.join("a/b.txt")).unwrap(), "v1");
        assert_eq!(scan(root), vec![model("org/m")]);

        // A second install of the same repo replaces the first.
        fs::write(root.join("blob2"), "v2").unwrap();
        let work = Work::new(root, "2");
        stage_file(&work.staging, "a/b.txt", &root.join("blob2")).unwrap();
        // A file written beside the first install (e.g. a quantized copy) is kept.
        fs::write(target.join("model-q8_0.gguf"), "mine").unwrap();
        fs::write(target.join("a/notes.txt"), "also mine").unwrap();
        commit(root, &work, &model("org/m"), ok).unwrap();
        assert_eq!(fs::read_to_string(target.join("a/b.txt")).unwrap(), "v2");
        assert_eq!(fs::read_to_string(target.join("model-q8_0.gguf")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(target.join("a/notes.txt")).unwrap(), "also mine");
        assert!(!work.previous.exists() && !work.discard.exists() && !work.staging.exists());

        // A folder someone else made is left alone.
        fs::create_dir_all(root.join("org/mine")).unwrap();
        fs::write(root.join("org/mine/notes.txt"), "keep").unwrap();
        let work = Work::new(root, "3");
        stage_file(&work.staging, "a/b.txt", &blob).unwrap();
        let err = commit(root, &work, &model("org/mine"), ok);
        assert!(err.unwrap_err().contains("not installed by bkg"));
        assert_eq!(fs::read_to_string(root.join("org/mine/notes.txt")).unwrap(), "keep");
    }

    #[test]
    fn a_failed_registration_puts_the_earlier_install_back() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::write(root.join("blob1"), "v1").unwrap();
        fs::write(root.join("blob2"), "v2").unwrap();
        let work = Work::new(root, "1");
        stage_file(&work.staging, "a/b.txt", &root.join("blob1")).unwrap();
        let target = commit(root, &work, &model("org/m"), ok).unwrap();

        let work = Work::new(root, "2");
        stage_file(&work.staging, "a/b.txt", &root.join("blob2")).unwrap();
        let err = commit(root, &work, &model("org/m"), || Err("database is locked".into()));
        assert_eq!(err.unwrap_err(), "database is locked");
        assert_eq!(fs::read_to_string(target.join("a/b.txt")).unwrap(), "v1");
        assert!(!work.previous.exists() && !work.discard.exists());

        // A first install that cannot be registered leaves no folder.
        let work = Work::new(root, "3");
        stage_file(&work.staging, "a/b.txt", &root.join("blob2")).unwrap();
        assert!(commit(root, &work, &model("org/new"), || Err("no".into())).is_err());
        assert!(!root.join("org/new").exists());
    }

    /// The state each crash point of a replacement leaves, rebuilt by hand: `recover` must
    /// end with exactly one complete install and no work folders. (The integration tests kill
    /// a real host at each step.)
    #[test]
    fn recover_keeps_a_complete_install_after_a_crash_at_any_step() {
        let install = |dir: &Path, content: &str| {
            fs::create_dir_all(dir.join("a")).unwrap();
            fs::write(dir.join("a/b.txt"), content).unwrap();
            fs::write(dir.join(MANIFEST), serde_json::to_vec(&model("org/m")).unwrap()).unwrap();
        };
        // (what is at the model folder, what is in previous-1, expected content after)
        for (at_target, at_previous, legacy, expected) in [
            (None, Some("v1"), false, "v1"), // killed after moving the earlier one aside
            (Some("v2"), Some("v1"), false, "v2"), // killed after the rename, before cleanup
            (None, Some("v1"), true, "v1"),  // an older host's trash- folder
            (Some("v2"), None, false, "v2"), // finished
        ] {
            let d = tempfile::tempdir().unwrap();
            let root = d.path();
            let work = root.join(WORK_DIR);
            fs::create_dir_all(work.join("staging-2/a")).unwrap();
            fs::create_dir_all(work.join("discard-0")).unwrap();
            fs::create_dir_all(work.join("hub")).unwrap();
            if let Some(v) = at_target {
                install(&root.join("org/m"), v);
            }
            if let Some(v) = at_previous {
                let name = if legacy { "trash-1" } else { "previous-1" };
                install(&work.join(name), v);
            }
            recover(root).unwrap();
            assert_eq!(fs::read_to_string(root.join("org/m/a/b.txt")).unwrap(), expected);
            assert!(root.join("org/m").join(MANIFEST).is_file());
            let left: Vec<String> = fs::read_dir(&work)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(left, ["hub"], "{at_target:?} {at_previous:?}");
        }

        // A folder of someone else's where the model was: the earlier install stays aside.
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("org/m")).unwrap();
        install(&root.join(WORK_DIR).join("previous-1"), "v1");
        recover(root).unwrap();
        assert!(root.join(WORK_DIR).join("previous-1").join(MANIFEST).is_file());
        assert!(!root.join("org/m").join(MANIFEST).exists());
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

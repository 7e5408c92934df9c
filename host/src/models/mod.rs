//! Model downloads and the model registry. Owns the models folder: the hub cache and staging
//! area under `<models-dir>/.downloads/`, and each installed model's folder `<models-dir>/<repo>/`.
//!
//! A download is a job on its own thread: each requested file is fetched through `hf-hub`
//! (resuming a partial file), checked against its SHA-256, and, once every file is there, the
//! model is assembled in a staging folder and renamed into place, then recorded in SQLite. A
//! failed or cancelled job installs nothing and leaves an earlier install of the repo untouched;
//! a crash or a kill at any moment of a replacement leaves the earlier or the new install in
//! place (see [`install`]), and the registry follows what is on disk at the next start.
//! Progress goes to subscribers (the plugin's WebSocket) at most every 100 ms per job.

pub mod fetch;
pub mod install;
pub mod names;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::logs::{Level, LogHub};
use crate::store::{InstalledModel, ModelFile, Store, StoreResult};
use fetch::{FetchError, HubSettings, RepoFetcher, Watch};

/// Downloads running at once; more are refused until one ends.
pub const MAX_ACTIVE: usize = 4;
/// Finished jobs kept for `GET /api/core/models`.
const KEEP_FINISHED: usize = 50;
/// Files one request may name.
pub const MAX_FILES: usize = 256;
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a client asks for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    /// Hub repo id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub repo: String,
    /// Branch, tag or commit (default `main`).
    #[serde(default)]
    pub revision: Option<String>,
    /// Files to fetch, as named in the repo (e.g. `model.safetensors`, `1_Pooling/config.json`).
    pub files: Vec<String>,
    /// Expected SHA-256 per file (optional; files the hub keeps in git-lfs are checked against
    /// the hub's own hash anyway).
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Downloading,
    Installing,
    Installed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Installed | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    Pending,
    Downloading,
    Verified,
    Failed,
    /// The job was cancelled while this file was being fetched.
    Cancelled,
}

/// One file of a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileProgress {
    pub name: String,
    pub state: FileState,
    /// Bytes in the file so far (a resumed transfer starts at what was kept).
    pub bytes_done: u64,
    /// The file's size, once the hub said it.
    pub bytes_total: Option<u64>,
    pub sha256: Option<String>,
}

/// A download job as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    /// The plugin the download is for.
    pub plugin: String,
    pub repo: String,
    pub revision: String,
    pub state: JobState,
    pub files: Vec<FileProgress>,
    pub error: Option<String>,
    /// Where the model was installed (relative to the models folder), once installed.
    pub path: Option<String>,
    pub actor: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

struct Job {
    view: Mutex<JobView>,
    cancel: AtomicBool,
    last_sent: Mutex<Instant>,
}

impl Job {
    fn view(&self) -> MutexGuard<'_, JobView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a request was refused before a job started.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no download job '{0}'")]
    NoJob(String),
    #[error("{MAX_ACTIVE} downloads are running; wait for one to finish")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

/// Where models go and where they come from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub endpoint: String,
    pub retries: usize,
    pub token: Option<String>,
}

/// The model downloads and registry; shared behind an `Arc`.
pub struct Models {
    settings: Settings,
    store: Arc<Store>,
    logs: Arc<LogHub>,
    jobs: Mutex<Vec<Arc<Job>>>,
    events: broadcast::Sender<JobView>,
}

/// An installed model and whether its folder is still there.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    #[serde(flatten)]
    pub model: InstalledModel,
    /// False when the folder or its manifest was removed behind the host's back.
    pub present: bool,
}

impl Models {
    /// Prepare the models folder: finish what interrupted installs left (see
    /// [`install::recover`]: an earlier install a crash left moved aside goes back in place),
    /// and register the models whose folders carry a manifest but that the database lacks
    /// (laid out by `scripts/fetch-models.sh`, or copied from another host).
    pub fn open(settings: Settings, store: Arc<Store>, logs: Arc<LogHub>) -> anyhow::Result<Self> {
        let work = settings.dir.join(install::WORK_DIR);
        std::fs::create_dir_all(work.join("hub"))?;
        install::recover(&settings.dir)?;
        for found in install::scan(&settings.dir) {
            if store.model(&found.repo)?.as_ref() != Some(&found) {
                tracing::info!(repo = %found.repo, "registering model found in the models folder");
                store.put_model(&found)?;
            }
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Self { settings, store, logs, jobs: Mutex::new(Vec::new()), events })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.settings.dir
    }

    fn jobs(&self) -> MutexGuard<'_, Vec<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobView> {
        self.events.subscribe()
    }

    /// Every job still kept, oldest first, optionally only those of one plugin.
    pub fn job_views(&self, plugin: Option<&str>) -> Vec<JobView> {
        self.jobs()
            .iter()
            .map(|j| j.view().clone())
            .filter(|v| plugin.is_none_or(|p| v.plugin == p))
            .collect()
    }

    pub fn job(&self, id: &str) -> Option<JobView> {
        self.jobs().iter().map(|j| j.view().clone()).find(|v| v.id == id)
    }

    /// The registry, with whether each model's folder is still in place.
    pub fn installed(&self) -> StoreResult<Vec<ModelView>> {
        Ok(self
            .store
            .models()?
            .into_iter()
            .map(|model| {
                let dir = install::model_dir(&self.settings.dir, &model.repo);
                let present = dir.join(install::MANIFEST).is_file();
                ModelView { model, present }
            })
            .collect())
    }

    /// Check a request and start its job.
    pub fn start(
        self: &Arc<Self>,
        plugin: &str,
        actor: &str,
        req: DownloadRequest,
    ) -> Result<JobView, ModelError> {
        let revision = req.revision.clone().unwrap_or_else(|| "main".to_string());
        names::check_repo(&req.repo).map_err(ModelError::Invalid)?;
        names::check_revision(&revision).map_err(ModelError::Invalid)?;
        if req.files.is_empty() || req.files.len() > MAX_FILES {
            return Err(ModelError::Invalid(format!(
                "name 1 to {MAX_FILES} files to download, not {}",
                req.files.len()
            )));
        }
        let mut seen = HashSet::new();
        for f in &req.files {
            names::check_file(f).map_err(ModelError::Invalid)?;
            if !seen.insert(f.as_str()) {
                return Err(ModelError::Invalid(format!("file '{f}' is named twice")));
            }
        }
        let mut expected = BTreeMap::new();
        for (f, hex) in &req.sha256 {
            if !seen.contains(f.as_str()) {
                return Err(ModelError::Invalid(format!(
                    "a sha256 is given for '{f}', which is not among the files"
                )));
            }
            expected.insert(f.clone(), names::check_sha256(f, hex).map_err(ModelError::Invalid)?);
        }
        install::check_target(&self.settings.dir, &req.repo).map_err(ModelError::Conflict)?;

        let job = {
            let mut jobs = self.jobs();
            let active: Vec<JobView> =
                jobs.iter().map(|j| j.view().clone()).filter(|v| !v.state.finished()).collect();
            if let Some(other) = active.iter().find(|v| v.repo == req.repo) {
                return Err(ModelError::Conflict(format!(
                    "a download of {} is already running (job {}); cancel it or wait",
                    req.repo, other.id
                )));
            }
            if active.len() >= MAX_ACTIVE {
                return Err(ModelError::Busy);
            }
            let view = JobView {
                id: new_job_id(),
                plugin: plugin.to_string(),
                repo: req.repo.clone(),
                revision: revision.clone(),
                state: JobState::Downloading,
                files: req
                    .files
                    .iter()
                    .map(|name| FileProgress {
                        name: name.clone(),
                        state: FileState::Pending,
                        bytes_done: 0,
                        bytes_total: None,
                        sha256: None,
                    })
                    .collect(),
                error: None,
                path: None,
                actor: actor.to_string(),
                started_at_ms: now_ms(),
                finished_at_ms: None,
            };
            let job = Arc::new(Job {
                view: Mutex::new(view),
                cancel: AtomicBool::new(false),
                last_sent: Mutex::new(Instant::now()),
            });
            jobs.push(job.clone());
            let finished = jobs.iter().filter(|j| j.view().state.finished()).count();
            if finished > KEEP_FINISHED {
                let mut drop_n = finished - KEEP_FINISHED;
                jobs.retain(|j| {
                    let old = drop_n > 0 && j.view().state.finished();
                    drop_n -= usize::from(old);
                    !old
                });
            }
            job
        };
        let view = job.view().clone();
        self.log(
            &view.plugin,
            Level::Info,
            &format!(
                "model download {} started: {}@{} ({} files)",
                view.id,
                view.repo,
                view.revision,
                view.files.len()
            ),
        );
        self.send(&job, true);
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bkg-model-{}", &view.id[..8]))
            .spawn(move || this.run(job, expected));
        if let Err(e) = spawned {
            return Err(ModelError::Internal(format!("cannot start a download thread: {e}")));
        }
        Ok(view)
    }

    /// Ask a running job to stop. It ends `cancelled` as soon as its transfer moves again
    /// (at once when it is between files); nothing of it is installed, and its partial files
    /// are removed.
    pub fn cancel(&self, id: &str) -> Result<JobView, ModelError> {
        let job = self
            .jobs()
            .iter()
            .find(|j| j.view().id == id)
            .cloned()
            .ok_or_else(|| ModelError::NoJob(id.to_string()))?;
        let view = job.view().clone();
        if view.state.finished() {
            return Err(ModelError::Conflict(format!(
                "download {id} already ended ({})",
                serde_json::to_value(view.state).unwrap_or_default().as_str().unwrap_or("")
            )));
        }
        job.cancel.store(true, Ordering::SeqCst);
        Ok(view)
    }

    fn log(&self, plugin: &str, level: Level, message: &str) {
        self.logs.push(plugin, level, "host", "models", message);
        tracing::info!(plugin, "{message}");
    }

    /// Publish a job's state; progress only every `PROGRESS_EVERY`.
    fn send(&self, job: &Job, force: bool) {
        let mut last = job.last_sent.lock().unwrap_or_else(|p| p.into_inner());
        if force || last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            let _ = self.events.send(job.view().clone());
        }
    }

    fn run(self: Arc<Self>, job: Arc<Job>, expected: BTreeMap<String, String>) {
        let (repo, revision, plugin, id, actor) = {
            let v = job.view();
            (v.repo.clone(), v.revision.clone(), v.plugin.clone(), v.id.clone(), v.actor.clone())
        };
        let outcome = self.download_and_install(&job, &expected);
        let (state, kind, details, level, line) = match &outcome {
            Ok(model) => (
                JobState::Installed,
                "model_downloaded",
                serde_json::json!({ "job": id, "repo": repo, "revision": revision,
                    "commit": model.commit, "files": model.files, "bytes": model.total_bytes }),
                Level::Info,
                format!(
                    "model download {id} installed {repo}@{revision} ({} bytes)",
                    model.total_bytes
                ),
            ),
            Err(FetchError::Cancelled) => (
                JobState::Cancelled,
                "model_download_cancelled",
                serde_json::json!({ "job": id, "repo": repo, "revision": revision }),
                Level::Warn,
                format!("model download {id} of {repo}@{revision} cancelled"),
            ),
            Err(FetchError::Failed(message)) => (
                JobState::Failed,
                "model_download_failed",
                serde_json::json!({ "job": id, "repo": repo, "revision": revision, "error": message }),
                Level::Error,
                format!("model download {id} of {repo}@{revision} failed: {message}"),
            ),
        };
        if let Err(e) = self.store.add_event(Some(&plugin), kind, &actor, details) {
            tracing::warn!("cannot record the download event: {e}");
        }
        self.log(&plugin, level, &line);
        {
            let mut v = job.view();
            v.state = state;
            v.finished_at_ms = Some(now_ms());
            match outcome {
                Ok(model) => v.path = Some(model.path),
                Err(FetchError::Failed(message)) => v.error = Some(message),
                Err(FetchError::Cancelled) => v.error = Some("cancelled".into()),
            }
        }
        self.send(&job, true);
    }

    fn download_and_install(
        &self,
        job: &Arc<Job>,
        expected: &BTreeMap<String, String>,
    ) -> Result<InstalledModel, FetchError> {
        let (repo, revision, plugin, id, names) = {
            let v = job.view();
            let names: Vec<String> = v.files.iter().map(|f| f.name.clone()).collect();
            (v.repo.clone(), v.revision.clone(), v.plugin.clone(), v.id.clone(), names)
        };
        let work = self.settings.dir.join(install::WORK_DIR);
        let hub = HubSettings {
            endpoint: self.settings.endpoint.clone(),
            retries: self.settings.retries,
            token: self.settings.token.clone(),
            cache_dir: work.join("hub"),
        };
        let fetcher = RepoFetcher::new(&hub, &repo, &revision).map_err(FetchError::Failed)?;
        let discard = |e: FetchError| {
            if matches!(e, FetchError::Cancelled) {
                // A cancelled download is not resumed: its partial files go.
                let _ = std::fs::remove_dir_all(fetcher.cache_folder());
            }
            e
        };
        let mut fetched = Vec::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            if job.cancel.load(Ordering::SeqCst) {
                return Err(discard(FetchError::Cancelled));
            }
            job.view().files[index].state = FileState::Downloading;
            self.send(job, true);
            let watch = JobWatch { models: self, job: job.clone(), index };
            match fetcher.fetch(name, expected.get(name).map(String::as_str), watch) {
                Ok(f) => {
                    {
                        let mut v = job.view();
                        let file = &mut v.files[index];
                        file.state = FileState::Verified;
                        file.bytes_done = f.size;
                        file.bytes_total = Some(f.size);
                        file.sha256 = Some(f.sha256.clone());
                    }
                    self.send(job, true);
                    fetched.push(f);
                }
                Err(e) => {
                    job.view().files[index].state = match e {
                        FetchError::Failed(_) => FileState::Failed,
                        FetchError::Cancelled => FileState::Cancelled,
                    };
                    return Err(discard(e));
                }
            }
        }
        if job.cancel.load(Ordering::SeqCst) {
            return Err(discard(FetchError::Cancelled));
        }
        job.view().state = JobState::Installing;
        self.send(job, true);

        let folders = install::Work::new(&self.settings.dir, &id);
        let model = InstalledModel {
            repo: repo.clone(),
            revision,
            commit: fetched.iter().rev().find_map(|f| f.commit.clone()),
            path: repo.clone(),
            source: format!("hub:{}", self.settings.endpoint),
            files: names
                .iter()
                .zip(&fetched)
                .map(|(name, f)| ModelFile {
                    name: name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            total_bytes: fetched.iter().map(|f| f.size).sum(),
            plugin: Some(plugin),
            installed_at_ms: now_ms() as i64,
        };
        let staging = &folders.staging;
        let register = || {
            self.store
                .put_model(&model)
                .map_err(|e| format!("cannot record {repo} in the database: {e}"))
        };
        let installed = names
            .iter()
            .zip(&fetched)
            .try_for_each(|(name, f)| install::stage_file(staging, name, &f.blob))
            .map_err(|e| format!("cannot assemble the model in {}: {e}", staging.display()))
            .and_then(|_| install::commit(&self.settings.dir, &folders, &model, register));
        let _ = std::fs::remove_dir_all(staging);
        installed.map_err(FetchError::Failed)?;
        // The installed folder holds (hard links to) the files: the cache copy can go.
        let _ = std::fs::remove_dir_all(fetcher.cache_folder());
        Ok(model)
    }
}

/// Reports one file's progress into its job; says stop once the job is cancelled.
struct JobWatch<'a> {
    models: &'a Models,
    job: Arc<Job>,
    index: usize,
}

impl Watch for JobWatch<'_> {
    fn started(&mut self, total: u64) {
        {
            let mut v = self.job.view();
            let file = &mut v.files[self.index];
            file.bytes_total = Some(total);
            file.bytes_done = 0;
        }
        self.models.send(&self.job, false);
    }

    fn advanced(&mut self, bytes: u64) -> bool {
        self.job.view().files[self.index].bytes_done += bytes;
        self.models.send(&self.job, false);
        !self.job.cancel.load(Ordering::SeqCst)
    }
}

fn new_job_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (now_ms() ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! One file from the hub, through `hf-hub`'s blocking client, into its cache under
//! `<models-dir>/.downloads/hub/` (the hub cache layout: `blobs/<etag>`, `snapshots/<commit>/`,
//! `refs/<revision>`). `hf-hub` writes `blobs/<etag>.part` first and, asked again, continues it
//! with a `Range` request: that is how an interrupted transfer resumes.
//!
//! The hub is trusted to name its blobs and commits (hf-hub builds paths from its `etag` and
//! `x-repo-commit` headers); everything the *client* names is checked in `names`.

use std::fs;
use std::io::Read as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest as _, Sha256};

use super::names::is_sha256;

/// Where and how to reach the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub endpoint: String,
    pub retries: usize,
    pub token: Option<String>,
    pub cache_dir: PathBuf,
}

/// What a finished file is.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The verified file in the hub cache.
    pub blob: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The commit the hub resolved the revision to.
    pub commit: Option<String>,
}

/// Told of a file's progress; `update` returning false cancels the transfer.
pub trait Watch: Send {
    fn started(&mut self, total: u64);
    fn advanced(&mut self, bytes: u64) -> bool;
}

/// Why a file did not arrive.
#[derive(Debug)]
pub enum FetchError {
    Cancelled,
    Failed(String),
}

/// The payload unwound through hf-hub when a transfer is cancelled: its `Progress` callback
/// cannot return an error, and unwinding drops its open file and lock on the way out.
struct Cancelled;

struct ProgressAdapter<W: Watch> {
    watch: W,
}

impl<W: Watch> Progress for ProgressAdapter<W> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.watch.started(size as u64);
    }
    fn update(&mut self, size: usize) {
        if !self.watch.advanced(size as u64) {
            // resume_unwind: no panic hook, no message; caught in `fetch` below.
            panic::resume_unwind(Box::new(Cancelled));
        }
    }
    fn finish(&mut self) {}
}

/// One repo at one revision on the hub.
pub struct RepoFetcher {
    api: Api,
    cache: Cache,
    repo: Repo,
    repo_id: String,
    revision: String,
    endpoint: String,
}

impl RepoFetcher {
    pub fn new(settings: &HubSettings, repo_id: &str, revision: &str) -> Result<Self, String> {
        let cache = Cache::new(settings.cache_dir.clone());
        let api = ApiBuilder::from_cache(cache.clone())
            .with_endpoint(settings.endpoint.trim_end_matches('/').to_string())
            .with_progress(false)
            .with_retries(settings.retries)
            .with_token(settings.token.clone())
            .with_user_agent("bkg", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| format!("cannot set up the hub client: {e}"))?;
        Ok(Self {
            api,
            cache,
            repo: Repo::with_revision(repo_id.into(), RepoType::Model, revision.into()),
            repo_id: repo_id.into(),
            revision: revision.into(),
            endpoint: settings.endpoint.clone(),
        })
    }

    /// The cache folder of this repo (partial files of interrupted transfers live here).
    pub fn cache_folder(&self) -> PathBuf {
        self.cache.path().join(self.repo.folder_name())
    }

    /// Fetch `name` (or take it from the cache when an earlier, interrupted download of this
    /// revision already finished it), then check its SHA-256 against `expected` or, for files
    /// the hub stores with git-lfs, against the hub's etag. A file that fails the check is
    /// deleted.
    pub fn fetch(
        &self,
        name: &str,
        expected: Option<&str>,
        watch: impl Watch,
    ) -> Result<Fetched, FetchError> {
        let pointer = match self.cache.repo(self.repo.clone()).get(name) {
            Some(p) => p,
            None => {
                let api_repo = self.api.repo(self.repo.clone());
                let progress = ProgressAdapter { watch };
                let run = panic::catch_unwind(AssertUnwindSafe(|| {
                    api_repo.download_with_progress(name, progress)
                }));
                match run {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Err(FetchError::Failed(self.explain(name, e))),
                    Err(payload) if payload.is::<Cancelled>() => return Err(FetchError::Cancelled),
                    Err(payload) => panic::resume_unwind(payload),
                }
            }
        };
        let blob = fs::canonicalize(&pointer).map_err(|e| {
            FetchError::Failed(format!("downloaded '{name}' but cannot find it in the cache: {e}"))
        })?;
        let (size, sha256) = hash_file(&blob)
            .map_err(|e| FetchError::Failed(format!("cannot read the downloaded '{name}': {e}")))?;
        let etag = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let want = expected.map(str::to_string).or_else(|| is_sha256(&etag).then_some(etag));
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(&sha256) {
                let _ = fs::remove_file(&pointer);
                let _ = fs::remove_file(&blob);
                return Err(FetchError::Failed(format!(
                    "'{name}' is corrupt: its sha256 is {sha256}, expected {want}; the file was \
                     discarded"
                )));
            }
        }
        let commit = fs::read_to_string(self.cache_folder().join("refs").join(&self.revision))
            .ok()
            .map(|c| c.trim().to_string());
        Ok(Fetched { blob, size, sha256, commit })
    }

    fn explain(&self, name: &str, e: ApiError) -> String {
        let what = format!("'{name}' of {}@{}", self.repo_id, self.revision);
        match e {
            ApiError::RequestError(inner) => match *inner {
                ureq::Error::Status(404, _) => format!(
                    "the hub at {} has no {what} (404): check the repo id, revision and file name",
                    self.endpoint
                ),
                ureq::Error::Status(code @ (401 | 403), _) => format!(
                    "the hub refused {what} ({code}): the repo may be gated or private; set HF_TOKEN"
                ),
                ureq::Error::Status(code, _) => format!("the hub answered {code} for {what}"),
                ureq::Error::Transport(t) => {
                    format!("cannot reach the hub at {} for {what}: {t}", self.endpoint)
                }
            },
            ApiError::IoError(io) => format!(
                "the transfer of {what} broke off ({io}); what arrived is kept: request the \
                 download again to resume it"
            ),
            ApiError::TooManyRetries(last) => {
                format!("gave up on {what} after retrying: {}", self.explain(name, *last))
            }
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => format!(
                "the answer for {what} lacks a valid '{h}' header: is {} a Hugging Face hub?",
                self.endpoint
            ),
            ApiError::InvalidResume => {
                let _ = remove_partials(&self.cache_folder());
                format!(
                    "the partial download of {what} is larger than the file on the hub; it was \
                     discarded: request the download again"
                )
            }
            other => format!("downloading {what} failed: {other}"),
        }
    }
}

/// Size and SHA-256 of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// Remove the partial (`*.part`) files of a repo's cache folder.
pub fn remove_partials(cache_folder: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(cache_folder.join("blobs"))?.flatten() {
        if e.path().extension().is_some_and(|x| x == "part") {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

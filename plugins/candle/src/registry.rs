//! The loaded models, by name.
//!
//! A model is loaded from a path relative to the host's models folder: a folder
//! (`sentence-transformers/all-MiniLM-L6-v2`: `config.json` + `model.safetensors` is a BERT
//! embedding model; a folder with one `*.gguf` is that file) or a file (`.../model-q8_0.gguf`,
//! `.../SmolLM2-135M-Instruct.Q4_1.gguf`). A GGUF whose `general.architecture` is `bert` is an
//! embedding model, any other a llama-family chat model.
//!
//! Weights are shared: loading a file that is already loaded (under any name) reuses the same
//! `Arc<Model>` instead of reading it again. They are freed when the last name is unloaded.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::quantized::gguf_file;
use serde::Serialize;

use crate::chat::ChatModel;
use crate::embed::EmbeddingModel;
use crate::error::{candle_msg, Error, Result};

pub enum Model {
    Embedding(EmbeddingModel),
    Chat(ChatModel),
}

impl Model {
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Embedding(_) => "embedding",
            Model::Chat(_) => "chat",
        }
    }
}

/// What a loaded model looks like from outside.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub kind: &'static str,
    /// As given, relative to the models folder.
    pub path: String,
    /// The weights file that was read.
    pub file: String,
    pub file_size: u64,
    pub loaded_at_ms: u64,
    /// How many loaded names share these weights.
    pub shared_by: usize,
    pub details: serde_json::Value,
}

struct Entry {
    path: String,
    file: PathBuf,
    file_size: u64,
    loaded_at_ms: u64,
    model: Arc<Model>,
}

#[derive(Default)]
pub struct Registry {
    by_name: RwLock<HashMap<String, Entry>>,
    /// Weights by (canonical file, kind), kept while any name holds them.
    by_file: Mutex<HashMap<(PathBuf, &'static str), Weak<Model>>>,
}

/// Where a request's `path` points, checked to stay inside `models_dir`.
pub fn resolve(models_dir: &Path, rel: &str) -> Result<PathBuf> {
    if rel.is_empty() {
        return Err(Error::bad_request("path is empty"));
    }
    let p = Path::new(rel);
    if p.is_absolute() {
        return Err(Error::bad_request(format!(
            "path {rel:?} must be relative to the models folder (e.g. \"sentence-transformers/all-MiniLM-L6-v2\")"
        )));
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Error::bad_request(format!("path {rel:?} must not contain '..'")));
    }
    let base = models_dir.canonicalize().map_err(|e| {
        Error::not_found(format!(
            "the models folder {} is not there ({e}); run scripts/fetch-models.sh or download a model",
            models_dir.display()
        ))
    })?;
    let full = base.join(p);
    let full = full
        .canonicalize()
        .map_err(|_| Error::not_found(format!("no model at {rel:?} under {}", base.display())))?;
    if !full.starts_with(&base) {
        return Err(Error::bad_request(format!("path {rel:?} leads outside the models folder")));
    }
    Ok(full)
}

/// Which file to read and as what kind.
fn pick(full: &Path, kind: Option<&str>) -> Result<(PathBuf, &'static str)> {
    let kind = match kind {
        None => None,
        Some("embedding") => Some("embedding"),
        Some("chat") => Some("chat"),
        Some(other) => {
            return Err(Error::bad_request(format!(
                "kind {other:?}: use \"embedding\" or \"chat\""
            )))
        }
    };
    let file = if full.is_dir() {
        let st = full.join("model.safetensors");
        if st.is_file() && full.join("config.json").is_file() && kind != Some("chat") {
            return Ok((st, "embedding"));
        }
        let mut ggufs: Vec<PathBuf> = std::fs::read_dir(full)
            .map_err(|e| Error::bad_request(format!("{}: {e}", full.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        ggufs.sort();
        match ggufs.len() {
            0 => {
                return Err(Error::bad_request(format!(
                    "{}: neither model.safetensors + config.json nor a .gguf file",
                    full.display()
                )))
            }
            1 => ggufs.remove(0),
            _ => {
                let names: Vec<String> = ggufs
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                return Err(Error::bad_request(format!(
                    "{} holds several GGUF files ({}): name one in the path",
                    full.display(),
                    names.join(", ")
                )));
            }
        }
    } else {
        full.to_path_buf()
    };
    match file.extension().and_then(|e| e.to_str()) {
        Some("gguf") => Ok((file, kind.unwrap_or(""))), // decided from the metadata
        Some("safetensors") if kind != Some("chat") => Ok((file, "embedding")),
        _ => Err(Error::bad_request(format!(
            "{}: not a model file this plugin reads (.safetensors BERT or .gguf)",
            file.display()
        ))),
    }
}

fn read_model(file: &Path, kind: &str) -> Result<Model> {
    if file.extension().is_some_and(|e| e == "safetensors") {
        let dir = file.parent().unwrap_or(Path::new("."));
        return Ok(Model::Embedding(EmbeddingModel::load_safetensors(dir)?));
    }
    let mut f = std::fs::File::open(file)
        .map_err(|e| Error::not_found(format!("{}: {e}", file.display())))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| {
        Error::bad_request(format!(
            "{}: not a readable GGUF file: {}",
            file.display(),
            candle_msg(&e)
        ))
    })?;
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let is_bert = arch == "bert";
    match (kind, is_bert) {
        ("chat", true) => {
            Err(Error::bad_request(format!("{}: a BERT GGUF is not a chat model", file.display())))
        }
        ("embedding", false) => Err(Error::bad_request(format!(
            "{}: architecture {arch:?} is not an embedding model this plugin reads",
            file.display()
        ))),
        (_, true) => Ok(Model::Embedding(EmbeddingModel::load_gguf(file, &content, &mut f)?)),
        (_, false) => Ok(Model::Chat(ChatModel::load(file, content, &mut f)?)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn details(model: &Model) -> serde_json::Value {
    match model {
        Model::Embedding(m) => serde_json::json!({
            "architecture": "bert",
            "dimensions": m.dim(),
            "max_tokens": m.max_tokens,
            "max_tokens_from": m.max_tokens_from,
            "layers": m.bert.config.num_hidden_layers,
            "weights": m.weights_dtype,
        }),
        Model::Chat(m) => serde_json::json!({
            "architecture": m.architecture,
            "context_length": m.context_length,
            "weights": m.file_type,
            "compute": m.compute_type,
        }),
    }
}

impl Registry {
    /// Load `rel` (relative to `models_dir`) as `name`. Loading the same name and path again
    /// is a no-op; a name already used for another path is a conflict.
    pub fn load(
        &self,
        models_dir: &Path,
        name: &str,
        rel: &str,
        kind: Option<&str>,
    ) -> Result<ModelInfo> {
        if name.is_empty() || name.len() > 128 {
            return Err(Error::bad_request("name must be 1 to 128 characters"));
        }
        let full = resolve(models_dir, rel)?;
        let (file, kind) = pick(&full, kind)?;
        if let Some(e) = self.by_name.read().map_err(poisoned)?.get(name) {
            if e.file == file {
                return self.info(name);
            }
            return Err(Error::conflict(format!(
                "a model named {name:?} is already loaded from {:?}; unload it first",
                e.path
            )));
        }
        let file_size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let shared = {
            let cache = self.by_file.lock().map_err(poisoned)?;
            cache
                .iter()
                .find(|((f, k), _)| *f == file && (kind.is_empty() || *k == kind))
                .and_then(|(_, w)| w.upgrade())
        };
        let model = match shared {
            Some(m) => m,
            None => {
                let m = Arc::new(read_model(&file, kind)?);
                self.by_file
                    .lock()
                    .map_err(poisoned)?
                    .insert((file.clone(), m.kind()), Arc::downgrade(&m));
                m
            }
        };
        let entry = Entry { path: rel.to_string(), file, file_size, loaded_at_ms: now_ms(), model };
        {
            let mut by_name = self.by_name.write().map_err(poisoned)?;
            if by_name.contains_key(name) {
                return Err(Error::conflict(format!(
                    "a model named {name:?} was loaded meanwhile"
                )));
            }
            by_name.insert(name.to_string(), entry);
        }
        self.info(name)
    }

    pub fn unload(&self, name: &str) -> Result<ModelInfo> {
        let info = self.info(name)?;
        self.by_name.write().map_err(poisoned)?.remove(name);
        self.by_file.lock().map_err(poisoned)?.retain(|_, w| w.strong_count() > 0);
        Ok(info)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Model>> {
        self.by_name
            .read()
            .map_err(poisoned)?
            .get(name)
            .map(|e| e.model.clone())
            .ok_or_else(|| self.unknown(name))
    }

    /// The folder a loaded model was read from.
    pub fn folder(&self, name: &str) -> Result<PathBuf> {
        let by_name = self.by_name.read().map_err(poisoned)?;
        let e = by_name.get(name).ok_or_else(|| self.unknown(name))?;
        Ok(e.file.parent().unwrap_or(Path::new(".")).to_path_buf())
    }

    fn unknown(&self, name: &str) -> Error {
        let names = self.names();
        Error::not_found(format!(
            "no model named {name:?} is loaded (loaded: [{}]); load it with model.load",
            names.join(", ")
        ))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.by_name.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }

    pub fn info(&self, name: &str) -> Result<ModelInfo> {
        let by_name = self.by_name.read().map_err(poisoned)?;
        let e = by_name.get(name).ok_or_else(|| self.unknown(name))?;
        let shared_by = by_name.values().filter(|o| Arc::ptr_eq(&o.model, &e.model)).count();
        Ok(ModelInfo {
            name: name.to_string(),
            kind: e.model.kind(),
            path: e.path.clone(),
            file: e.file.display().to_string(),
            file_size: e.file_size,
            loaded_at_ms: e.loaded_at_ms,
            shared_by,
            details: details(&e.model),
        })
    }

    pub fn list(&self) -> Vec<ModelInfo> {
        self.names().iter().filter_map(|n| self.info(n).ok()).collect()
    }

    /// Drop every model (on stop).
    pub fn clear(&self) {
        if let Ok(mut m) = self.by_name.write() {
            m.clear();
        }
        if let Ok(mut m) = self.by_file.lock() {
            m.clear();
        }
    }

    /// Distinct weights in memory (shared loads counted once).
    pub fn distinct_weights(&self) -> usize {
        self.by_file
            .lock()
            .map(|m| m.values().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::internal("model registry lock poisoned")
}

//! `candle`: the model runtime plugin. Loads BERT embedding models (safetensors, or GGUF
//! written by `model.quantize`) and llama-family chat models (GGUF) from the host's models
//! folder and serves them through JSON capabilities. See README.md in this folder for the
//! request and answer shapes.
//!
//! The model logic lives in plain modules (`bert`, `embed`, `chat`, `quantize`, `registry`,
//! `runtime`) tested directly; this file is the glue to the host.

pub mod bert;
pub mod chat;
pub mod embed;
pub mod error;
pub mod fused;
pub mod gen;
pub mod quantize;
pub mod registry;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bkg_abi::serde_json::{json, Value};
use bkg_abi::{
    export_plugin, Context, Error, ErrorKind, Host, Manifest, Plugin, Request, Response,
};
use serde::Deserialize;

use crate::chat::{ChatRequest, Generation};
use crate::embed::EmbedOutcome;
use crate::registry::{Model, ModelInfo, Registry};
use crate::runtime::{barrier_pool_threads, barrier_threads_alive, Runtime};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plugin's settings (its config schema).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_batch")]
    pub embed_batch_size: usize,
    /// Prompt tokens a chat model's batch step reads at most (`gen::batch`).
    #[serde(default = "default_prefill_budget")]
    pub prefill_budget: usize,
}

fn default_threads() -> usize {
    2
}
fn default_batch() -> usize {
    32
}
fn default_prefill_budget() -> usize {
    gen::batch::DEFAULT_PREFILL_BUDGET
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            embed_batch_size: default_batch(),
            prefill_budget: default_prefill_budget(),
        }
    }
}

/// What the engine did, counted as it happens (the `counters` of `status`). A generation is
/// a chat request that reached the model; it ends finished, cancelled (the caller's cancel
/// flag, seen between tokens) or failed (any error, a refused request included).
#[derive(Default)]
pub struct Counters {
    pub generations_started: AtomicU64,
    pub generations_finished: AtomicU64,
    pub generations_cancelled: AtomicU64,
    pub generations_failed: AtomicU64,
    /// Tokens generated, counted one by one as they are made (cancelled generations too).
    pub tokens_generated: AtomicU64,
    pub embed_requests: AtomicU64,
    pub embed_requests_cancelled: AtomicU64,
    /// Encoder batches run, and batches of cancelled requests that never ran.
    pub embed_batches: AtomicU64,
    pub embed_batches_cancelled: AtomicU64,
    pub quantize_cancelled: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::SeqCst);
    }

    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let started = get(&self.generations_started);
        let ended = get(&self.generations_finished)
            + get(&self.generations_cancelled)
            + get(&self.generations_failed);
        json!({
            "generations_started": started,
            "generations_finished": get(&self.generations_finished),
            "generations_cancelled": get(&self.generations_cancelled),
            "generations_failed": get(&self.generations_failed),
            "generations_running": started.saturating_sub(ended),
            "tokens_generated": get(&self.tokens_generated),
            "embed_requests": get(&self.embed_requests),
            "embed_requests_cancelled": get(&self.embed_requests_cancelled),
            "embed_batches": get(&self.embed_batches),
            "embed_batches_cancelled": get(&self.embed_batches_cancelled),
            "quantize_cancelled": get(&self.quantize_cancelled),
        })
    }
}

/// The plugin state, usable without a host (tests, benchmarks): give it the models folder.
pub struct Engine {
    pub models_dir: PathBuf,
    pub registry: Registry,
    pub runtime: Runtime,
    pub settings: Mutex<Settings>,
    pub counters: Counters,
    running: AtomicBool,
    /// candle barrier-pool threads alive when this engine was made: threads that appear later
    /// were started by this library's candle (each loaded copy has its own pool).
    pool_threads_before: usize,
}

impl Engine {
    pub fn new(models_dir: PathBuf) -> Self {
        Self {
            models_dir,
            registry: Registry::default(),
            runtime: Runtime::default(),
            settings: Mutex::new(Settings::default()),
            counters: Counters::default(),
            running: AtomicBool::new(false),
            pool_threads_before: barrier_threads_alive(),
        }
    }

    fn settings(&self) -> Settings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn start(&self) -> Result<(), Error> {
        self.runtime.start(self.settings().threads)?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Join the compute threads and drop every model.
    pub fn stop(&self) -> Result<(), Error> {
        self.running.store(false, Ordering::SeqCst);
        self.runtime.shutdown()?;
        self.registry.clear();
        Ok(())
    }

    pub fn configure(&self, value: Value) -> Result<(), Error> {
        let new: Settings = if value.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(value).map_err(|e| Error::bad_request(format!("config: {e}")))?
        };
        if !(1..=64).contains(&new.threads) {
            return Err(Error::bad_request("threads must be within 1..=64"));
        }
        if !(1..=256).contains(&new.embed_batch_size) {
            return Err(Error::bad_request("embed_batch_size must be within 1..=256"));
        }
        if !(1..=gen::model::MAX_CONTEXT).contains(&new.prefill_budget) {
            return Err(Error::bad_request(format!(
                "prefill_budget must be within 1..={}",
                gen::model::MAX_CONTEXT
            )));
        }
        let old = self.settings();
        *self.settings.lock().map_err(|_| Error::internal("poisoned"))? = new.clone();
        if self.running.load(Ordering::SeqCst) && old.threads != new.threads {
            self.runtime.start(new.threads)?;
        }
        for name in self.registry.names() {
            self.apply_settings(&name)?;
        }
        Ok(())
    }

    /// Load a model (see [`Registry::load`]) and give it the settings in force.
    pub fn load_model(
        &self,
        name: &str,
        path: &str,
        kind: Option<&str>,
    ) -> Result<ModelInfo, Error> {
        let info = self.registry.load(&self.models_dir, name, path, kind)?;
        self.apply_settings(name)?;
        Ok(info)
    }

    /// The settings a loaded model takes: a chat model's prefill budget (for the requests
    /// that come after; one already reading its prompt keeps its chunk length).
    fn apply_settings(&self, name: &str) -> Result<(), Error> {
        if let Ok(model) = self.registry.get(name) {
            if let Model::Chat(chat) = &*model {
                chat.batch.set_prefill_budget(self.settings().prefill_budget)?;
            }
        }
        Ok(())
    }

    /// Run one capability. `sink` takes streamed chunks; `is_cancelled` is the call's cancel
    /// flag (polled on the calling thread every 50 ms, and on each chunk, while model code runs
    /// on the pool; the model stops between tokens, batches or tensors and the call answers
    /// the SDK's cancelled error). Outside the host pass `&mut |_| Ok(())` and `&|| false`.
    pub fn invoke_json(
        &self,
        capability: &str,
        body: Value,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        match capability {
            "model.load" => {
                let r: LoadRequest = from_value(body)?;
                let name = r.name.clone().unwrap_or_else(|| r.path.clone());
                let info = self.load_model(&name, &r.path, r.kind.as_deref())?;
                Ok(serde_json::to_value(info).unwrap_or(Value::Null))
            }
            "model.list" => Ok(json!({ "models": self.registry.list() })),
            "model.unload" => {
                let r: NameRequest = from_value(body)?;
                let info = self.registry.unload(&r.name)?;
                Ok(json!({ "unloaded": info }))
            }
            "model.infer" | "model.generate_stream" => {
                let mut body = match body {
                    Value::Object(m) => m,
                    _ => return Err(Error::bad_request("send a JSON object {model, ...}")),
                };
                let name = match body.remove("model") {
                    Some(Value::String(s)) => s,
                    _ => {
                        return Err(Error::bad_request(
                            "model (the loaded model's name) is required",
                        ))
                    }
                };
                let model = self.registry.get(&name)?;
                match &*model {
                    Model::Embedding(_) => {
                        self.embed(&name, model.clone(), Value::Object(body), is_cancelled)
                    }
                    Model::Chat(_) => {
                        let mut req: ChatRequest = from_value(Value::Object(body))?;
                        if capability == "model.generate_stream" {
                            req.stream = true;
                        }
                        self.chat(&name, model.clone(), req, sink, is_cancelled)
                    }
                }
            }
            "model.tokenize" => {
                let r: TokenizeRequest = from_value(body)?;
                self.tokenize(r, is_cancelled)
            }
            "model.quantize" => {
                let r: QuantizeRequest = from_value(body)?;
                self.quantize(r, is_cancelled)
            }
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }

    /// `model.tokenize`: the word pieces of each whole input as byte offsets (special tokens
    /// left out), and the model's truncation length. Runs on the calling thread (no model
    /// code), polling the cancel flag between texts and every 64 KiB of text.
    fn tokenize(
        &self,
        r: TokenizeRequest,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        let texts = input_texts(r.input)?;
        if texts.is_empty() {
            return Err(Error::bad_request("input is empty: send a string or a non-empty array"));
        }
        let model = self.registry.get(&r.model)?;
        let Model::Embedding(m) = &*model else {
            return Err(Error::bad_request(format!(
                "{} is a chat model: model.tokenize serves embedding models",
                r.model
            )));
        };
        let mut tokens = Vec::with_capacity(texts.len());
        for text in &texts {
            let Some(offsets) = m.token_offsets(text, is_cancelled)? else {
                return Err(Error::cancelled());
            };
            let pieces: Vec<Value> =
                offsets.into_iter().map(|(s, e)| json!({ "start": s, "end": e })).collect();
            tokens.push(Value::Array(pieces));
        }
        Ok(json!({ "model": r.model, "tokens": tokens, "max_tokens": m.max_tokens }))
    }

    fn embed(
        &self,
        name: &str,
        model: Arc<Model>,
        body: Value,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        let r: EmbedRequest = from_value(body)?;
        let texts = input_texts(r.input)?;
        let batch = r.batch_size.unwrap_or(self.settings().embed_batch_size).clamp(1, 256);
        let c = &self.counters;
        Counters::add(&c.embed_requests, 1);
        let cancel = AtomicBool::new(false);
        let outcome = self.runtime.run_with(
            |_: &mpsc::Sender<()>| match &*model {
                Model::Embedding(m) => {
                    m.embed_until(&texts, batch, &|| cancel.load(Ordering::SeqCst))
                }
                Model::Chat(_) => Err(Error::internal("not an embedding model")),
            },
            |_| {
                if is_cancelled() {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
        )??;
        let out = match outcome {
            EmbedOutcome::Done(out) => out,
            EmbedOutcome::Cancelled { batches_run, batches_left } => {
                Counters::add(&c.embed_requests_cancelled, 1);
                Counters::add(&c.embed_batches, batches_run as u64);
                Counters::add(&c.embed_batches_cancelled, batches_left as u64);
                return Err(Error::cancelled());
            }
        };
        Counters::add(&c.embed_batches, out.batches as u64);
        let dims = out.vectors.first().map(Vec::len).unwrap_or(0);
        Ok(json!({
            "model": name,
            "kind": "embedding",
            "dimensions": dims,
            "embeddings": out.vectors,
            "truncated": out.truncated,
            "usage": { "prompt_tokens": out.tokens, "total_tokens": out.tokens },
        }))
    }

    fn chat(
        &self,
        name: &str,
        model: Arc<Model>,
        req: ChatRequest,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        let c = &self.counters;
        Counters::add(&c.generations_started, 1);
        let result = self.generate(name, model, req, sink, is_cancelled);
        match &result {
            Ok(_) => Counters::add(&c.generations_finished, 1),
            Err(e) if e.kind == ErrorKind::CANCELLED => Counters::add(&c.generations_cancelled, 1),
            Err(_) => Counters::add(&c.generations_failed, 1),
        }
        result
    }

    fn generate(
        &self,
        name: &str,
        model: Arc<Model>,
        req: ChatRequest,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        let tokens = &self.counters.tokens_generated;
        let stream = req.stream;
        let Model::Chat(chat_model) = &*model else {
            return Err(Error::internal("not a chat model"));
        };
        if chat_model.batched() {
            // The plugin's own forward pass: the request joins the model's batch (the steps
            // run on the pool; this thread streams, counts and polls the cancel flag).
            let mut on_text = |t: &str| {
                if stream {
                    sink(format!("{}\n", json!({ "text": t })).as_bytes())
                } else {
                    Ok(())
                }
            };
            let result = chat_model.generate_batched(
                &self.runtime,
                &req,
                &mut on_text,
                is_cancelled,
                &|| Counters::add(tokens, 1),
            )?;
            return Self::chat_answer(name, result);
        }
        let cancel = AtomicBool::new(false);
        let mut sink_error: Option<Error> = None;
        let result = self.runtime.run_with(
            |tx: &std::sync::mpsc::Sender<String>| -> Result<Generation, Error> {
                let Model::Chat(m) = &*model else {
                    return Err(Error::internal("not a chat model"));
                };
                let mut on_text = |t: &str| {
                    if stream {
                        let _ = tx.send(t.to_string());
                    }
                    Ok(())
                };
                m.generate_counted(&req, &mut on_text, &|| cancel.load(Ordering::SeqCst), &|| {
                    Counters::add(tokens, 1)
                })
            },
            |msg| {
                if let Some(text) = msg {
                    if sink_error.is_none() {
                        let line = format!("{}\n", json!({ "text": text }));
                        if let Err(e) = sink(line.as_bytes()) {
                            sink_error = Some(e);
                            cancel.store(true, Ordering::SeqCst);
                        }
                    }
                }
                if is_cancelled() {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
        )??;
        if let Some(e) = sink_error {
            return Err(e);
        }
        Self::chat_answer(name, result)
    }

    /// A finished generation as the `model.infer` answer (cancelled: the SDK's error).
    fn chat_answer(name: &str, result: Generation) -> Result<Value, Error> {
        if result.finish == chat::Finish::Cancelled {
            return Err(Error::cancelled());
        }
        let tokens_per_s = if result.total_s > result.first_token_s && result.completion_tokens > 1
        {
            (result.completion_tokens - 1) as f64 / (result.total_s - result.first_token_s)
        } else {
            0.0
        };
        Ok(json!({
            "model": name,
            "kind": "chat",
            "text": result.text,
            "finish_reason": result.finish.as_str(),
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
            "timing": {
                "first_token_s": result.first_token_s,
                "total_s": result.total_s,
                "tokens_per_s": tokens_per_s,
            },
        }))
    }

    fn quantize(
        &self,
        r: QuantizeRequest,
        is_cancelled: &dyn Fn() -> bool,
    ) -> Result<Value, Error> {
        let (dir, rel) = match (&r.name, &r.path) {
            (Some(name), None) => {
                // Known from memory, before any file is read: a chat model is a GGUF.
                if let Model::Chat(m) = &*self.registry.get(name)? {
                    let info = self.registry.info(name)?;
                    let file = Path::new(&info.file).file_name().map(|f| f.to_string_lossy());
                    let file = file.unwrap_or_else(|| info.path.as_str().into());
                    return Err(quantize::chat_model_refusal(name, &file, &m.file_type));
                }
                let dir = self.registry.folder(name)?;
                let base = self.models_dir.canonicalize().unwrap_or_default();
                let rel = dir.strip_prefix(&base).unwrap_or(&dir).display().to_string();
                (dir, rel)
            }
            (None, Some(path)) => (registry::resolve(&self.models_dir, path)?, path.clone()),
            _ => return Err(Error::bad_request("send either name (a loaded model) or path")),
        };
        quantize::check_source(&dir, &rel)?;
        let dtype = r.dtype.unwrap_or_else(|| "q8_0".into());
        quantize::parse_dtype(&dtype)?;
        let cancel = AtomicBool::new(false);
        let cancelled = || cancel.load(Ordering::SeqCst);
        let result = self.runtime.run_with(
            |_: &mpsc::Sender<()>| {
                let written = quantize::quantize_dir_until(&dir, &dtype, &cancelled)?;
                // The file is in place; a cancel from here on skips the agreement check only.
                if cancelled() {
                    return Err(Error::cancelled());
                }
                let f32_model = embed::EmbeddingModel::load_safetensors(&dir)?;
                let mut f = std::fs::File::open(&written.path)
                    .map_err(|e| Error::internal(format!("{}: {e}", written.path.display())))?;
                let content =
                    candle_core::quantized::gguf_file::Content::read(&mut f).map_err(|e| {
                        Error::internal(format!("re-reading the GGUF: {}", error::candle_msg(&e)))
                    })?;
                let q_model = embed::EmbeddingModel::load_gguf(&written.path, &content, &mut f)?;
                let agreement =
                    quantize::agreement(&f32_model, &q_model, &quantize::AGREEMENT_SENTENCES)?;
                Ok::<_, Error>((written, agreement))
            },
            |_| {
                if is_cancelled() {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
        )?;
        let (written, agreement) = match result {
            Err(e) if e.kind == ErrorKind::CANCELLED => {
                Counters::add(&self.counters.quantize_cancelled, 1);
                return Err(e);
            }
            other => other?,
        };
        let file_name =
            written.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(json!({
            "path": format!("{}/{file_name}", rel.trim_end_matches('/')),
            "file": written.path.display().to_string(),
            "dtype": written.path.file_stem().map(|s| s.to_string_lossy().trim_start_matches("model-").to_string()),
            "size_before": written.size_before,
            "size_after": written.size_after,
            "ratio": written.size_after as f64 / written.size_before.max(1) as f64,
            "quantized_tensors": written.quantized_tensors,
            "f32_tensors": written.f32_tensors,
            "agreement": {
                "sentences": agreement.sentences,
                "min_cosine": agreement.min_cosine,
                "mean_cosine": agreement.mean_cosine,
            },
        }))
    }

    pub fn status(&self) -> Value {
        let barrier = barrier_pool_threads();
        let alive = barrier_threads_alive();
        let compute_used = self.runtime.compute_used.load(Ordering::SeqCst);
        // Counted, not guessed: the pool's threads are named candle-bp-N, and the ones that
        // appeared since this engine was made belong to this library's copy of candle. Where
        // /proc is not readable, assume the worst once model code ran.
        let started_here = alive.saturating_sub(self.pool_threads_before);
        let proc_readable = std::path::Path::new("/proc/self/task").is_dir();
        let pinned = if proc_readable { started_here > 0 } else { compute_used && barrier > 0 };
        let reason = if pinned {
            format!(
                "not unloadable: candle 0.11 started its process-wide pool of {barrier} thread(s) \
                 (candle_core::utils::barrier_pool, threads candle-bp-N; it runs quantized \
                 matmuls and element-wise ops on large tensors) and never joins it, so this \
                 library stays mapped after unload. Start the host with CANDLE_NUM_THREADS=1 to \
                 avoid it (that work then runs on the plugin's own threads, single-threaded)."
            )
        } else if barrier > 0 {
            format!(
                "unloadable so far: candle's never-joined pool of {barrier} thread(s) has not been \
                 started (F32 embedding models do not use it; chat and quantized models do); \
                 start the host with CANDLE_NUM_THREADS=1 to avoid it altogether"
            )
        } else {
            "unloadable: CANDLE_NUM_THREADS=1, so candle starts no threads of its own; all \
             compute runs on the plugin's pool, joined in stop"
                .to_string()
        };
        json!({
            "version": VERSION,
            "running": self.running.load(Ordering::SeqCst),
            "models_dir": self.models_dir.display().to_string(),
            "models": self.registry.list(),
            "distinct_weights": self.registry.distinct_weights(),
            "threads": {
                "pool": self.runtime.threads(),
                "live": self.runtime.live_threads(),
                "spawned_total": self.runtime.spawned_total(),
                "joined_total": self.runtime.joined_total(),
                "candle_barrier_pool": barrier,
                "candle_barrier_threads_alive": alive,
                "candle_barrier_threads_started_here": started_here,
                "compute_used": compute_used,
            },
            "counters": self.counters.to_json(),
            "unloadable": !pinned,
            "unloadable_reason": reason,
            "device": if cfg!(feature = "cuda") { "cuda-if-available (this build); models run on cpu" } else { "cpu" },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    name: Option<String>,
    path: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    #[serde(default)]
    input: Value,
    batch_size: Option<usize>,
    /// Accepted for OpenAI compatibility; vectors are always float.
    #[allow(dead_code)]
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    model: String,
    #[serde(default)]
    input: Value,
}

/// `input`: a string or an array of strings.
fn input_texts(input: Value) -> Result<Vec<String>, Error> {
    match input {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(Error::bad_request(format!("input[{i}] is not a string"))),
            })
            .collect(),
        Value::Null => Err(Error::bad_request("input is required")),
        _ => Err(Error::bad_request("input must be a string or an array of strings")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantizeRequest {
    name: Option<String>,
    path: Option<String>,
    dtype: Option<String>,
}

fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::bad_request(format!("invalid request: {e}")))
}

/// The plugin: an [`Engine`] rooted at the host's models folder.
pub struct Candle {
    host: Host,
    engine: Engine,
}

impl Plugin for Candle {
    fn manifest() -> Manifest {
        Manifest::new("candle", "Candle model runtime", VERSION)
            .description(
                "loads BERT embedding models and llama-family GGUF chat models from the models \
                 folder and runs them on CPU with candle",
            )
            .admin_capability("model.load", "load a model from the models folder: {name, path, kind?}")
            .capability("model.list", "the loaded models")
            .admin_capability("model.unload", "unload a model: {name}")
            .streaming_capability(
                "model.infer",
                "embeddings {model, input} or chat {model, messages|prompt, temperature, top_p, max_tokens, stop, seed, stream}",
            )
            .streaming_capability("model.generate_stream", "chat, streamed as NDJSON lines {\"text\"}")
            .capability(
                "model.tokenize",
                "word pieces of whole texts {model, input: [text]} -> {tokens: [[{start, end}]], max_tokens}",
            )
            .admin_capability(
                "model.quantize",
                "BERT safetensors -> GGUF {name|path, dtype: q8_0|q4_0}, with the agreement to F32",
            )
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "threads": { "type": "integer", "minimum": 1, "maximum": 64, "default": 2,
                                 "description": "compute threads owned by the plugin" },
                    "embed_batch_size": { "type": "integer", "minimum": 1, "maximum": 256, "default": 32 },
                    "prefill_budget": { "type": "integer", "minimum": 1, "maximum": gen::model::MAX_CONTEXT,
                                        "default": gen::batch::DEFAULT_PREFILL_BUDGET,
                                        "description": "prompt tokens a chat generation step reads at most: smaller keeps streaming clients' tokens coming while a long prompt is read, larger reads prompts in fewer, more efficient steps" }
                },
                "additionalProperties": false
            }))
    }

    fn new(host: Host) -> Result<Self, Error> {
        let engine = Engine::new(host.models_dir());
        Ok(Candle { host, engine })
    }

    fn start(&self) -> Result<(), Error> {
        self.engine.start()?;
        self.restore_models();
        self.host.info(&format!(
            "started: {} compute threads, models from {}",
            self.engine.runtime.threads(),
            self.engine.models_dir.display()
        ));
        Ok(())
    }

    fn stop(&self) -> Result<(), Error> {
        self.engine.stop()?;
        self.host.info("stopped: compute threads joined, models dropped");
        Ok(())
    }

    fn status(&self) -> Value {
        self.engine.status()
    }

    fn config(&self) -> Value {
        let s = self.engine.settings();
        json!({
            "threads": s.threads,
            "embed_batch_size": s.embed_batch_size,
            "prefill_budget": s.prefill_budget
        })
    }

    fn configure(&self, config: Value) -> Result<(), Error> {
        self.engine.configure(config)
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            req.json()?
        };
        let mut stream = None;
        let mut sink = |chunk: &[u8]| -> Result<(), Error> {
            if stream.is_none() {
                stream = Some(ctx.stream("application/x-ndjson")?);
            }
            stream.as_ref().map(|s| s.send(chunk)).unwrap_or(Ok(()))
        };
        let started = std::time::Instant::now();
        let result = self.engine.invoke_json(capability, body, &mut sink, &|| ctx.is_cancelled());
        self.remember(capability, &result);
        match &result {
            Ok(v) if capability == "model.load" => self.host.info(&format!(
                "loaded {} ({}) in {:.2}s",
                v["name"].as_str().unwrap_or("?"),
                v["kind"].as_str().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            )),
            Err(e) if e.kind.0 >= 500 => self.host.warn(&format!("{capability}: {e}")),
            _ => {}
        }
        let value = result?;
        if stream.is_some() || capability == "model.generate_stream" {
            // The last chunk: the whole answer with "done": true.
            let mut last = value;
            last["done"] = json!(true);
            return Ok(Response::bytes("application/x-ndjson", format!("{last}\n").into_bytes()));
        }
        Response::json(&value)
    }
}

/// Key prefix in the host's key-value store for the models loaded through `model.load`.
const LOADED_KEY: &str = "loaded/";

impl Candle {
    /// Keep the set of loaded models in the host's key-value store, so that a new generation
    /// (a hot swap, a restart of the plugin or of the host) loads them again in `start`, before
    /// it takes traffic.
    fn remember(&self, capability: &str, result: &Result<Value, Error>) {
        let Ok(v) = result else { return };
        let stored = match capability {
            "model.load" => {
                let (Some(name), Some(path)) = (v["name"].as_str(), v["path"].as_str()) else {
                    return;
                };
                let record = json!({ "path": path, "kind": v["kind"] });
                self.host.kv_put(&format!("{LOADED_KEY}{name}"), record.to_string().as_bytes())
            }
            "model.unload" => match v["unloaded"]["name"].as_str() {
                Some(name) => self.host.kv_delete(&format!("{LOADED_KEY}{name}")).map(|_| ()),
                None => return,
            },
            _ => return,
        };
        if let Err(e) = stored {
            self.host.warn(&format!("cannot remember the loaded models: {e}"));
        }
    }

    /// Load what an earlier generation had loaded; a model that fails is logged and forgotten.
    fn restore_models(&self) {
        let keys = match self.host.kv_keys(LOADED_KEY) {
            Ok(k) => k,
            Err(e) => return self.host.warn(&format!("cannot read the loaded models: {e}")),
        };
        for key in keys {
            let name = &key[LOADED_KEY.len()..];
            let record: Value = self
                .host
                .kv_get(&key)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let (path, kind) = (record["path"].as_str().unwrap_or(""), record["kind"].as_str());
            let started = std::time::Instant::now();
            match self.engine.load_model(name, path, kind) {
                Ok(_) => self.host.info(&format!(
                    "reloaded {name} from {path} in {:.2}s",
                    started.elapsed().as_secs_f64()
                )),
                Err(e) => {
                    self.host.warn(&format!("could not reload {name} from {path}: {e}; forgotten"));
                    let _ = self.host.kv_delete(&key);
                }
            }
        }
    }
}

/// The models folder a test or benchmark uses: `$BKG_MODELS_DIR`, else `<repo>/models`.
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("BKG_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

export_plugin!(Candle);

//! `llmserver`: an OpenAI-compatible API under `/v1` (chat completions with streaming,
//! embeddings, models) over the `candle` plugin, reached through the host's bus, so the models
//! are in memory once, in `candle`. Chat generations pass a fair (first come, first served)
//! gate; a client that goes away leaves the queue, or stops its generation.
//!
//! Models are named in this plugin's config (name -> folder under the models folder, and kind);
//! a model `candle` does not have loaded (after its start or a swap) is loaded on first use.

pub mod gate;
pub mod multipart;
pub mod openai;
pub mod stores;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bkg_abi::serde_json::{json, Value};
use bkg_abi::{
    export_plugin, Context, Error, ErrorKind, Host, Manifest, Plugin, Request, Response,
};
use serde::Deserialize;

use gate::{FairGate, Refused};
use openai::{ApiError, ChatRequest, EmbeddingsRequest};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One model this server offers.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Folder (or file) under the host's models folder.
    pub path: String,
    /// `embedding` or `chat`.
    pub kind: String,
}

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default = "default_models")]
    pub models: BTreeMap<String, ModelSpec>,
    /// Generations run at once; the rest wait in arrival order. Default 4: `candle` decodes
    /// the generations of a model together (one step for all, `gen::batch`), so more of them
    /// at once cost little more than one.
    #[serde(default = "default_parallel")]
    pub max_parallel_generations: usize,
    /// Generations that may wait; more are answered 429.
    #[serde(default = "default_waiting")]
    pub max_waiting: usize,
}

fn default_backend() -> String {
    "candle".into()
}
fn default_parallel() -> usize {
    4
}
fn default_waiting() -> usize {
    64
}
/// The two models `scripts/fetch-models.sh` lays out.
pub fn default_models() -> BTreeMap<String, ModelSpec> {
    BTreeMap::from([
        (
            "all-MiniLM-L6-v2".to_string(),
            ModelSpec {
                path: "sentence-transformers/all-MiniLM-L6-v2".into(),
                kind: "embedding".into(),
            },
        ),
        (
            "SmolLM2-135M-Instruct".to_string(),
            ModelSpec {
                path: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
                kind: "chat".into(),
            },
        ),
    ])
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            models: default_models(),
            max_parallel_generations: default_parallel(),
            max_waiting: default_waiting(),
        }
    }
}

pub struct LlmServer {
    host: Host,
    settings: Mutex<Settings>,
    gate: FairGate,
    requests: AtomicU64,
    generated: AtomicU64,
    /// Chat requests whose client went away (or that timed out) while waiting in the gate or
    /// generating; each left the gate at once.
    cancelled: AtomicU64,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("chatcmpl-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

fn answer(status: u16, value: &Value) -> Response {
    Response::bytes("application/json", value.to_string().into_bytes()).with_status(status)
}

fn failure(e: ApiError) -> Response {
    answer(e.status, &e.body())
}

/// How a backend error reads to an OpenAI client: always OpenAI's shape, with a `type` and a
/// `code` a client can act on. The bus's own answers about the backend plugin (stopped, not
/// loaded, busy, too slow: their message starts with `plugin '<backend>'`) are the server's
/// trouble, not the request's: 503 (or 504) `server_error`, saying what to do.
pub(crate) fn from_backend(backend: &str, e: Error) -> ApiError {
    let about_backend = e.message.starts_with(&format!("plugin '{backend}'"));
    match e.kind {
        ErrorKind::CONFLICT | ErrorKind::NOT_FOUND if about_backend => {
            let remedy = if e.kind == ErrorKind::CONFLICT {
                format!("start it: POST /api/core/plugins/{backend}/start")
            } else {
                format!("install the '{backend}' plugin in the plugins folder")
            };
            ApiError::server_code(
                503,
                "backend_unavailable",
                format!("the model backend is not available: {}; {remedy}", e.message),
            )
        }
        ErrorKind::UNAVAILABLE if about_backend => ApiError::server_code(
            503,
            "backend_busy",
            format!("the model backend is busy: {}; try again later", e.message),
        ),
        ErrorKind::TIMEOUT => ApiError::server_code(504, "timeout", e.message),
        ErrorKind::BAD_REQUEST | ErrorKind::UNPROCESSABLE => ApiError::invalid(e.message, None),
        ErrorKind::NOT_FOUND => ApiError::not_found(e.message),
        ErrorKind::CONFLICT => ApiError {
            status: 409,
            kind: "invalid_request_error",
            code: Some("conflict"),
            param: None,
            message: e.message,
        },
        ErrorKind::UNAVAILABLE => ApiError::server_code(503, "backend_unavailable", e.message),
        _ => ApiError::server(500, e.message),
    }
}

fn is_not_loaded(e: &Error) -> bool {
    e.kind == ErrorKind::NOT_FOUND && e.message.contains("is loaded")
}

impl LlmServer {
    fn settings(&self) -> Settings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn backend_json(&self, backend: &str, capability: &str, body: &Value) -> Result<Value, Error> {
        let r = self.host.call_json(backend, capability, body)?;
        r.parse_json()
    }

    /// Load a configured model into the backend.
    fn load(&self, s: &Settings, name: &str) -> Result<(), ApiError> {
        let spec = s.models.get(name).ok_or_else(|| ApiError::model_not_found(name))?;
        let body = json!({ "name": name, "path": spec.path, "kind": spec.kind });
        self.backend_json(&s.backend, "model.load", &body)
            .map_err(|e| from_backend(&s.backend, e))?;
        self.host.info(&format!("loaded {name} from {} into {}", spec.path, s.backend));
        Ok(())
    }

    /// Run `f`; if the backend says the model is not loaded, load it (when configured) and
    /// run `f` once more.
    fn with_model<T>(
        &self,
        s: &Settings,
        name: &str,
        f: impl Fn() -> Result<T, Error>,
    ) -> Result<T, ApiError> {
        match f() {
            Err(e) if is_not_loaded(&e) => {
                if !s.models.contains_key(name) {
                    return Err(ApiError::model_not_found(name));
                }
                self.load(s, name)?;
                f().map_err(|e| from_backend(&s.backend, e))
            }
            other => other.map_err(|e| from_backend(&s.backend, e)),
        }
    }

    /// Make sure the backend has `name` loaded (for streams, which cannot report a 404 late).
    fn ensure_loaded(&self, s: &Settings, name: &str) -> Result<(), ApiError> {
        let list = self
            .backend_json(&s.backend, "model.list", &json!({}))
            .map_err(|e| from_backend(&s.backend, e))?;
        let loaded = list["models"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == name));
        if loaded {
            Ok(())
        } else {
            self.load(s, name)
        }
    }

    fn check_kind(s: &Settings, name: &str, want: &str) -> Result<(), ApiError> {
        match s.models.get(name) {
            Some(spec) if spec.kind != want => Err(ApiError::invalid(
                format!("the model `{name}` is for {}, not {want}", spec.kind),
                Some("model"),
            )),
            _ => Ok(()),
        }
    }

    fn models(&self) -> Response {
        let s = self.settings();
        let mut ids: BTreeMap<String, Value> =
            s.models.iter().map(|(name, spec)| (name.clone(), json!(spec.kind))).collect();
        if let Ok(list) = self.backend_json(&s.backend, "model.list", &json!({})) {
            for m in list["models"].as_array().into_iter().flatten() {
                if let Some(name) = m["name"].as_str() {
                    ids.entry(name.to_string()).or_insert_with(|| m["kind"].clone());
                }
            }
        }
        let data: Vec<Value> = ids
            .into_iter()
            .map(|(id, kind)| {
                json!({ "id": id, "object": "model", "created": 0, "owned_by": "bkg", "kind": kind })
            })
            .collect();
        answer(200, &json!({ "object": "list", "data": data }))
    }

    fn embeddings(&self, req: EmbeddingsRequest) -> Result<Response, ApiError> {
        let s = self.settings();
        let texts = req.texts()?;
        Self::check_kind(&s, &req.model, "embedding")?;
        let body = json!({ "model": req.model, "input": texts });
        let v = self
            .with_model(&s, &req.model, || self.backend_json(&s.backend, "model.infer", &body))?;
        let vectors: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone())
            .map_err(|e| ApiError::server(500, format!("the backend's answer: {e}")))?;
        if v["kind"] != "embedding" {
            return Err(ApiError::invalid(
                format!("the model `{}` is not an embedding model", req.model),
                Some("model"),
            ));
        }
        let dims = vectors.first().map(Vec::len).unwrap_or(0);
        if let Some(d) = req.dimensions {
            if d != dims {
                return Err(ApiError::invalid(
                    format!("the model `{}` has {dims} dimensions; it cannot give {d}", req.model),
                    Some("dimensions"),
                ));
            }
        }
        let b64 = req.encoding_format.as_deref() == Some("base64");
        let data: Vec<Value> =
            vectors.iter().enumerate().map(|(i, v)| openai::embedding_item(i, v, b64)).collect();
        let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        Ok(answer(
            200,
            &json!({
                "object": "list", "data": data, "model": req.model,
                "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
            }),
        ))
    }

    fn chat(&self, req: ChatRequest, ctx: &Context<'_>) -> Result<Response, Error> {
        let s = self.settings();
        let prepared = Self::check_kind(&s, &req.model, "chat").and_then(|_| req.to_backend());
        let body = match prepared {
            Ok(b) => b,
            Err(e) => return Ok(failure(e)),
        };
        let permit = match self.gate.acquire(&|| ctx.is_cancelled()) {
            Ok(p) => p,
            Err(Refused::Cancelled) => return Err(self.gave_up()),
            Err(Refused::Full) => {
                return Ok(failure(ApiError::too_many(
                    "queue_full",
                    format!("{} chat requests are already waiting; try again later", s.max_waiting),
                )))
            }
        };
        let (id, created) = (completion_id(), now_s());
        if !req.stream {
            let result = self
                .with_model(&s, &req.model, || self.backend_json(&s.backend, "model.infer", &body));
            // The host raises the backend call's cancel flag with ours, so the backend stopped
            // between tokens; give the place in the gate back before anything else.
            drop(permit);
            if ctx.is_cancelled() {
                return Err(self.gave_up());
            }
            let v = match result {
                Ok(v) => v,
                Err(e) => return Ok(failure(e)),
            };
            if v["kind"] != "chat" {
                return Ok(failure(ApiError::invalid(
                    format!("the model `{}` is not a chat model", req.model),
                    Some("model"),
                )));
            }
            self.generated.fetch_add(
                v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                Ordering::Relaxed,
            );
            return Ok(answer(
                200,
                &json!({
                    "id": id, "object": "chat.completion", "created": created, "model": req.model,
                    "system_fingerprint": null,
                    "choices": [{ "index": 0, "logprobs": null, "finish_reason": v["finish_reason"],
                        "message": { "role": "assistant", "content": v["text"], "refusal": null } }],
                    "usage": v["usage"],
                }),
            ));
        }
        if let Err(e) = self.ensure_loaded(&s, &req.model) {
            return Ok(failure(e));
        }
        let answer = self.stream_chat(&s, &req, body, &id, created, ctx);
        drop(permit);
        match answer {
            Err(e) if e.kind == ErrorKind::CANCELLED => Err(self.gave_up()),
            other => other,
        }
    }

    /// Count a chat request its client gave up; the error to answer.
    fn gave_up(&self) -> Error {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        Error::cancelled()
    }

    fn stream_chat(
        &self,
        s: &Settings,
        req: &ChatRequest,
        body: Value,
        id: &str,
        created: u64,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        let model = req.model.as_str();
        let stream = ctx.stream("text/event-stream")?;
        let first =
            openai::chunk(id, created, model, json!({ "role": "assistant", "content": "" }), None);
        stream.send(openai::sse(&first).as_bytes())?;
        let mut pending = Vec::new();
        let mut client_gone = false;
        let body = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let result = self.host.call_stream(
            &s.backend,
            "model.generate_stream",
            "application/json",
            &body,
            |bytes| {
                // Stop the backend as soon as our own client is gone, even between chunks
                // that would still be sent.
                if ctx.is_cancelled() {
                    client_gone = true;
                    return false;
                }
                pending.extend_from_slice(bytes);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let Ok(v) = serde_json::from_slice::<Value>(&line) else { continue };
                    if let Some(text) = v["text"].as_str().filter(|_| v.get("done").is_none()) {
                        let c = openai::chunk(id, created, model, json!({ "content": text }), None);
                        if stream.send(openai::sse(&c).as_bytes()).is_err() {
                            client_gone = true;
                            return false;
                        }
                    }
                }
                true
            },
        );
        let tail = match result {
            Ok(tail) => tail,
            Err(_) if client_gone || ctx.is_cancelled() => return Err(Error::cancelled()),
            Err(e) => {
                let e = from_backend(&s.backend, e);
                self.host.warn(&format!("stream of {model} failed: {}", e.message));
                return Ok(Response::bytes(
                    "text/event-stream",
                    format!("{}data: [DONE]\n\n", openai::sse(&e.body())).into_bytes(),
                ));
            }
        };
        // The backend's last line: {"done": true, "finish_reason", "usage", ...}.
        let last: Value = tail
            .body
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
            .find(|v| v.get("done").is_some())
            .unwrap_or(Value::Null);
        self.generated
            .fetch_add(last["usage"]["completion_tokens"].as_u64().unwrap_or(0), Ordering::Relaxed);
        let finish = last["finish_reason"].as_str().unwrap_or("stop");
        let mut out = openai::sse(&openai::chunk(id, created, model, json!({}), Some(finish)));
        if req.stream_options.as_ref().is_some_and(|o| o.include_usage) {
            out.push_str(&openai::sse(&json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": last["usage"],
            })));
        }
        out.push_str("data: [DONE]\n\n");
        Ok(Response::bytes("text/event-stream", out.into_bytes()))
    }
}

fn parse<T: serde::de::DeserializeOwned>(req: &Request<'_>) -> Result<T, ApiError> {
    serde_json::from_slice(req.body).map_err(|e| {
        ApiError::invalid(format!("We could not parse the JSON body of your request: {e}"), None)
    })
}

impl Plugin for LlmServer {
    fn manifest() -> Manifest {
        Manifest::new("llmserver", "OpenAI-compatible API", VERSION)
            .description(
                "POST /v1/chat/completions (stream: true as server-sent events), \
                 POST /v1/embeddings, GET /v1/models; models run in the candle plugin. \
                 /v1/files and /v1/vector_stores are served by the brainml plugin",
            )
            .route_prefix("/v1")
            .streaming_capability(
                "chat.completions",
                "the body and answer of POST /v1/chat/completions, for other plugins and the REST API",
            )
            .capability("embeddings", "the body and answer of POST /v1/embeddings")
            .capability("models", "the answer of GET /v1/models (each model with its kind)")
            // Waiting chat requests hold a worker each; the fair gate orders them.
            .max_concurrency(32)
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "backend": { "type": "string", "minLength": 1, "default": "candle",
                        "description": "the plugin that runs the models" },
                    "models": {
                        "type": "object",
                        "description": "model name -> folder under the models folder and kind",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "path": { "type": "string", "minLength": 1 },
                                "kind": { "enum": ["embedding", "chat"] }
                            },
                            "required": ["path", "kind"],
                            "additionalProperties": false
                        }
                    },
                    "max_parallel_generations": { "type": "integer", "minimum": 1, "maximum": 16, "default": 4 },
                    "max_waiting": { "type": "integer", "minimum": 0, "maximum": 10000, "default": 64 }
                },
                "additionalProperties": false
            }))
    }

    fn new(host: Host) -> Result<Self, Error> {
        let s = Settings::default();
        let gate = FairGate::new(s.max_parallel_generations, s.max_waiting);
        Ok(LlmServer {
            host,
            settings: Mutex::new(s),
            gate,
            requests: AtomicU64::new(0),
            generated: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        })
    }

    fn status(&self) -> Value {
        let s = self.settings();
        let (waiting, generating) = self.gate.load();
        json!({
            "version": VERSION,
            "backend": s.backend,
            "models": s.models,
            "generations": { "running": generating, "waiting": waiting,
                "max_parallel": s.max_parallel_generations, "max_waiting": s.max_waiting,
                "cancelled": self.cancelled.load(Ordering::Relaxed) },
            "requests": self.requests.load(Ordering::Relaxed),
            "completion_tokens": self.generated.load(Ordering::Relaxed),
        })
    }

    fn config(&self) -> Value {
        serde_json::to_value(self.settings()).unwrap_or(Value::Null)
    }

    fn configure(&self, config: Value) -> Result<(), Error> {
        let new: Settings = if config.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(config)
                .map_err(|e| Error::bad_request(format!("config: {e}")))?
        };
        self.gate.set_limits(new.max_parallel_generations, new.max_waiting);
        *self.settings.lock().map_err(|_| Error::internal("settings lock poisoned"))? = new;
        Ok(())
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match capability {
            "embeddings" => {
                Ok(parse(&req).and_then(|r| self.embeddings(r)).unwrap_or_else(failure))
            }
            "chat.completions" => match parse::<ChatRequest>(&req) {
                Ok(r) => self.chat(r, ctx),
                Err(e) => Ok(failure(e)),
            },
            "models" => Ok(self.models()),
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }

    fn route(&self, req: Request<'_>, ctx: &Context<'_>) -> Result<Response, Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.target.split('?').next().unwrap_or("").trim_end_matches('/');
        if stores::handles(path) {
            return Ok(stores::route(&self.host, &req, path).unwrap_or_else(failure));
        }
        match (req.method, path) {
            ("GET", "/v1/models") => Ok(self.models()),
            ("GET", p) if p.starts_with("/v1/models/") => {
                let id = &p["/v1/models/".len()..];
                let list = self.models();
                let v: Value = serde_json::from_slice(&list.body).unwrap_or(Value::Null);
                match v["data"].as_array().and_then(|d| d.iter().find(|m| m["id"] == id)) {
                    Some(m) => Ok(answer(200, m)),
                    None => Ok(failure(ApiError::model_not_found(id))),
                }
            }
            ("POST", "/v1/embeddings") => {
                Ok(parse(&req).and_then(|r| self.embeddings(r)).unwrap_or_else(failure))
            }
            ("POST", "/v1/chat/completions") => match parse::<ChatRequest>(&req) {
                Ok(r) => self.chat(r, ctx),
                Err(e) => Ok(failure(e)),
            },
            (_, "/v1/models" | "/v1/embeddings" | "/v1/chat/completions") => {
                Ok(failure(ApiError {
                    status: 405,
                    kind: "invalid_request_error",
                    code: None,
                    param: None,
                    message: format!("{} is not allowed on {path}", req.method),
                }))
            }
            _ => Ok(failure(ApiError::not_found(format!(
                "no route {} {path}: this server has /v1/chat/completions, /v1/embeddings, \
                 /v1/models, /v1/files and /v1/vector_stores",
                req.method
            )))),
        }
    }
}

export_plugin!(LlmServer);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error keeps OpenAI's four keys, whatever produced it.
    fn shape(e: &ApiError) -> Value {
        let body = e.body();
        let inner = body["error"].as_object().unwrap();
        for key in ["message", "type", "param", "code"] {
            assert!(inner.contains_key(key), "no {key} in {body}");
        }
        assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());
        body
    }

    #[test]
    fn a_stopped_or_busy_backend_is_an_openai_server_error() {
        let stopped = from_backend("candle", Error::conflict("plugin 'candle' is stopped"));
        assert_eq!(stopped.status, 503);
        let body = shape(&stopped);
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], "backend_unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("is stopped") && message.contains("/candle/start"), "{message}");

        let missing = from_backend("candle", Error::not_found("plugin 'candle' is not loaded"));
        assert_eq!((missing.status, missing.code), (503, Some("backend_unavailable")));
        shape(&missing);

        let busy = from_backend(
            "candle",
            Error::unavailable("plugin 'candle' is busy: its queue is full"),
        );
        assert_eq!(
            (busy.status, busy.kind, busy.code),
            (503, "server_error", Some("backend_busy"))
        );
        shape(&busy);

        let slow = from_backend(
            "candle",
            Error::new(ErrorKind::TIMEOUT, "plugin 'candle' did not answer within 30000 ms"),
        );
        assert_eq!((slow.status, slow.kind), (504, "server_error"));
        shape(&slow);
    }

    #[test]
    fn the_backend_s_own_errors_keep_their_meaning() {
        let bad = from_backend("candle", Error::bad_request("top_p must be within 0 and 1"));
        assert_eq!((bad.status, bad.kind), (400, "invalid_request_error"));
        shape(&bad);
        let unknown = from_backend("candle", Error::not_found("no model named \"x\" is loaded"));
        assert_eq!((unknown.status, unknown.kind), (404, "invalid_request_error"));
        let taken =
            from_backend("candle", Error::conflict("a model named \"x\" is already loaded"));
        assert_eq!((taken.status, taken.kind), (409, "invalid_request_error"));
        let broken = from_backend("candle", Error::internal("model: shape mismatch"));
        assert_eq!((broken.status, broken.kind), (500, "server_error"));
        shape(&broken);
    }

    #[test]
    fn a_full_queue_is_a_rate_limit_error() {
        let full = ApiError::too_many("queue_full", "64 chat requests are already waiting");
        let body = shape(&full);
        assert_eq!(full.status, 429);
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "queue_full");
    }
}

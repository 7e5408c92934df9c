//! brainml's side of OpenAI's files and vector stores: the `openai.*` capabilities that
//! `llmserver` forwards `/v1/files` and `/v1/vector_stores` to (or any caller may use). They
//! answer OpenAI's objects; errors are the SDK's (llmserver puts them in OpenAI's shape).
//!
//! Uploaded files are kept under `<data_dir>/openai/files/` (`<id>.txt` + `<id>.json`), text
//! only (UTF-8). Each vector store is a collection named after its id (`vs_...`, embedded
//! with the default model) plus `<data_dir>/openai/vector_stores/<id>.json` (its name,
//! metadata and files); a file added to it is one document of that collection, id = the
//! file's id, metadata = the file's attributes, chunked and embedded as `index` does.
//!
//! | capability                          | request (besides the path's ids)                   | answer |
//! |-------------------------------------|----------------------------------------------------|--------|
//! | `openai.files.create`               | `{filename, purpose, text}`                        | file |
//! | `openai.files.list`                 | `{purpose?, limit?, order?, after?}`               | list of files |
//! | `openai.files.get` / `.delete`      | `{file_id}`                                        | file / `file` deleted |
//! | `openai.files.content`              | `{file_id}`                                        | the text (`text/plain`) |
//! | `openai.vector_stores.create`       | `{name?, file_ids?, metadata?, expires_after?}`    | vector_store |
//! | `openai.vector_stores.list`         | `{limit?, order?, after?, before?}`                | list of vector_store |
//! | `openai.vector_stores.get`/`.delete`| `{vector_store_id}`                                | vector_store / `vector_store.deleted` |
//! | `openai.vector_stores.update`       | `{vector_store_id, name?, metadata?, expires_after?}` | vector_store |
//! | `openai.vector_stores.files.create` | `{vector_store_id, file_id, attributes?}`          | vector_store.file |
//! | `openai.vector_stores.files.list`   | `{vector_store_id, limit?, order?, after?, before?, filter?}` | list of vector_store.file |
//! | `openai.vector_stores.files.get`/`.delete` | `{vector_store_id, file_id}`                | vector_store.file / `vector_store.file.deleted` |
//! | `openai.vector_stores.search`       | `{vector_store_id, query, max_num_results?, filters?, ranking_options?}` | `vector_store.search_results.page` |

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use bkg_abi::{Context, Error, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::rag::local;
use crate::store;
use crate::BrainMl;

/// One writer at a time for the files' and vector stores' records (a read-modify-write of a
/// vector store's record must not lose a file another call added); readers (lists, gets,
/// searches) run side by side.
static LOCK: RwLock<()> = RwLock::new(());

const PURPOSES: [&str; 8] = [
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
];

/// An uploaded file's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileMeta {
    id: String,
    filename: String,
    purpose: String,
    bytes: u64,
    created_ms: u64,
}

impl FileMeta {
    fn object(&self) -> Value {
        json!({ "id": self.id, "object": "file", "bytes": self.bytes,
            "created_at": self.created_ms / 1000, "filename": self.filename,
            "purpose": self.purpose, "status": "processed", "expires_at": null,
            "status_details": null })
    }
}

/// A file in a vector store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreFile {
    id: String,
    filename: String,
    usage_bytes: u64,
    created_ms: u64,
    attributes: Map<String, Value>,
}

/// A vector store's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreMeta {
    id: String,
    name: String,
    created_ms: u64,
    last_active_ms: u64,
    metadata: Map<String, Value>,
    expires_after: Option<Value>,
    files: Vec<StoreFile>,
}

impl StoreMeta {
    fn object(&self) -> Value {
        let n = self.files.len();
        json!({ "id": self.id, "object": "vector_store", "created_at": self.created_ms / 1000,
            "name": self.name, "usage_bytes": self.files.iter().map(|f| f.usage_bytes).sum::<u64>(),
            "file_counts": { "in_progress": 0, "completed": n, "failed": 0, "cancelled": 0,
                "total": n },
            "status": "completed", "last_active_at": self.last_active_ms / 1000,
            "metadata": self.metadata, "expires_after": self.expires_after, "expires_at": null })
    }

    fn file_object(&self, f: &StoreFile) -> Value {
        json!({ "id": f.id, "object": "vector_store.file", "created_at": f.created_ms / 1000,
            "usage_bytes": f.usage_bytes, "vector_store_id": self.id, "status": "completed",
            "last_error": null, "attributes": f.attributes,
            "chunking_strategy": { "type": "other" } })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh id: `prefix` + 24 hex digits from the process's random hash keys, the clock and a
/// counter.
fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hex = String::new();
    for part in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u64(n);
        h.write_u8(part);
        hex.push_str(&format!("{:016x}", h.finish()));
    }
    format!("{prefix}{}", &hex[..24])
}

/// An id as a file name: what `new_id` makes (a prefix, then letters, digits, `-` and `_`).
fn checked_id<'a>(id: &'a str, prefix: &str, what: &str) -> Result<&'a str, Error> {
    let ok = id.len() <= 64
        && id.starts_with(prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(Error::not_found(format!("No {what} found with id '{id}'.")))
    }
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// Write a file whole or not at all (see [`store::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    store::write_atomic(path, bytes).map_err(|e| io(&format!("writing {}", path.display()), e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::internal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&format!("reading {}", path.display()), e)),
    }
}

/// Every record in a folder, newest first.
fn read_all<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    created: impl Fn(&T) -> u64,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&format!("reading {}", dir.display()), e)),
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "json") {
            out.extend(read_json::<T>(&path)?);
        }
    }
    out.sort_by_key(|t| std::cmp::Reverse(created(t)));
    Ok(out)
}

/// OpenAI's list parameters (numbers may come as strings from a query string).
#[derive(Debug, Default, Deserialize)]
struct ListParams {
    limit: Option<Value>,
    order: Option<String>,
    after: Option<String>,
    before: Option<String>,
    purpose: Option<String>,
    filter: Option<String>,
}

/// One page of a list, OpenAI's way: `order` (default desc by creation), `after`/`before`
/// cursors (an object's id), `limit`.
fn page(
    mut items: Vec<(String, Value)>,
    p: &ListParams,
    default_limit: usize,
    max_limit: usize,
) -> Result<Value, Error> {
    let limit = match &p.limit {
        None | Some(Value::Null) => default_limit,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(|n| n as usize)
            .filter(|n| (1..=max_limit).contains(n))
            .ok_or_else(|| {
                Error::bad_request(format!("limit {v}: use an integer from 1 to {max_limit}"))
            })?,
    };
    match p.order.as_deref() {
        None | Some("desc") => {}
        Some("asc") => items.reverse(),
        Some(o) => return Err(Error::bad_request(format!("order {o:?}: use asc or desc"))),
    }
    let position = |id: &str, what: &str| {
        items
            .iter()
            .position(|(i, _)| i == id)
            .ok_or_else(|| Error::bad_request(format!("{what}: no object with id {id:?}")))
    };
    let mut start = 0;
    let mut end = items.len();
    if let Some(after) = &p.after {
        start = position(after, "after")? + 1;
    }
    if let Some(before) = &p.before {
        end = position(before, "before")?;
    }
    let window: Vec<(String, Value)> =
        if start < end { items.drain(start..end).collect() } else { Vec::new() };
    // With only `before`, the page is the one just before it.
    let (skip, has_more) = match (&p.after, &p.before) {
        (None, Some(_)) => (window.len().saturating_sub(limit), window.len() > limit),
        _ => (0, window.len() > limit),
    };
    let data: Vec<Value> = window.into_iter().skip(skip).take(limit).map(|(_, v)| v).collect();
    Ok(json!({ "object": "list",
        "first_id": data.first().map(|v| v["id"].clone()).unwrap_or(Value::Null),
        "last_id": data.last().map(|v| v["id"].clone()).unwrap_or(Value::Null),
        "data": data, "has_more": has_more }))
}

fn parse<T: for<'de> Deserialize<'de>>(req: &Request<'_>) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { req.body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid request: {e}")))
}

/// Attributes (of a vector store's file) and metadata (of a vector store): at most 16 keys
/// of at most 64 characters; values strings of at most 512 characters (or, for attributes,
/// numbers and booleans).
fn check_pairs(what: &str, m: &Map<String, Value>, scalars: bool) -> Result<(), Error> {
    if m.len() > 16 {
        return Err(Error::bad_request(format!("{what}: at most 16 keys, not {}", m.len())));
    }
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > 64 {
            return Err(Error::bad_request(format!("{what}: key {k:?}: use 1 to 64 characters")));
        }
        let ok = match v {
            Value::String(s) => s.chars().count() <= 512,
            Value::Number(_) | Value::Bool(_) => scalars,
            _ => false,
        };
        if !ok {
            let kinds = if scalars {
                "a string (at most 512 characters), number or boolean"
            } else {
                "a string of at most 512 characters"
            };
            return Err(Error::bad_request(format!("{what}: {k} must be {kinds}, not {v}")));
        }
    }
    Ok(())
}

/// OpenAI's attribute filter (`{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}` or
/// `{type: and|or, filters: [..]}`) as brainml's filter.
pub fn translate_filter(f: &Value) -> Result<Value, Error> {
    let bad = |m: String| Error::bad_request(format!("filters: {m}"));
    let kind = f["type"].as_str().ok_or_else(|| bad(format!("no type in {f}")))?;
    match kind {
        "and" | "or" => {
            let items = f["filters"]
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad(format!("{kind} takes a non-empty array filters")))?;
            let inner = items.iter().map(translate_filter).collect::<Result<Vec<_>, _>>()?;
            Ok(json!({ format!("${kind}"): inner }))
        }
        "eq" | "ne" | "gt" | "gte" | "lt" | "lte" | "in" | "nin" => {
            let key = f["key"].as_str().ok_or_else(|| bad(format!("no key in {f}")))?;
            if key.starts_with('$') {
                return Err(bad(format!("key {key:?} must not start with $")));
            }
            let value = f.get("value").ok_or_else(|| bad(format!("no value in {f}")))?.clone();
            Ok(match kind {
                "nin" => json!({ "$not": { key: { "$in": value } } }),
                op => json!({ key: { format!("${op}"): value } }),
            })
        }
        other => Err(bad(format!(
            "unknown type {other:?} (use eq, ne, gt, gte, lt, lte, in, nin, and, or)"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct FileCreate {
    filename: String,
    purpose: Option<String>,
    text: String,
}

#[derive(Debug, Deserialize)]
struct FileId {
    file_id: String,
}

#[derive(Debug, Deserialize)]
struct StoreId {
    vector_store_id: String,
}

#[derive(Debug, Deserialize)]
struct StoreCreate {
    name: Option<String>,
    #[serde(default)]
    file_ids: Vec<String>,
    metadata: Option<Map<String, Value>>,
    expires_after: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StoreUpdate {
    vector_store_id: String,
    name: Option<String>,
    metadata: Option<Map<String, Value>>,
    expires_after: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StoreFileAdd {
    vector_store_id: String,
    file_id: String,
    attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct StoreFileId {
    vector_store_id: String,
    file_id: String,
}

#[derive(Debug, Deserialize)]
struct Search {
    vector_store_id: String,
    query: Value,
    max_num_results: Option<usize>,
    filters: Option<Value>,
    ranking_options: Option<Value>,
}

fn json_answer(v: &Value) -> Result<Response, Error> {
    Response::json(v)
}

impl BrainMl {
    fn openai_dir(&self, kind: &str) -> PathBuf {
        self.host.data_dir().join("openai").join(kind)
    }

    fn file_meta(&self, id: &str) -> Result<FileMeta, Error> {
        let not_found = || Error::not_found(format!("No such File object: {id}"));
        let id = checked_id(id, "file-", "file").map_err(|_| not_found())?;
        read_json(&self.openai_dir("files").join(format!("{id}.json")))?.ok_or_else(not_found)
    }

    fn file_text(&self, f: &FileMeta) -> Result<String, Error> {
        let path = self.openai_dir("files").join(format!("{}.txt", f.id));
        std::fs::read_to_string(&path).map_err(|e| io(&format!("reading {}", path.display()), e))
    }

    fn store_meta(&self, id: &str) -> Result<StoreMeta, Error> {
        let id = checked_id(id, "vs_", "vector store")?;
        read_json(&self.openai_dir("vector_stores").join(format!("{id}.json")))?
            .ok_or_else(|| Error::not_found(format!("No vector store found with id '{id}'.")))
    }

    fn save_store(&self, s: &StoreMeta) -> Result<(), Error> {
        let dir = self.openai_dir("vector_stores");
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the vector stores' folder", e))?;
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&dir.join(format!("{}.json", s.id)), &bytes)
    }

    /// Index a file into a vector store's collection and record it there.
    fn add_file(
        &self,
        store: &mut StoreMeta,
        file_id: &str,
        attributes: Map<String, Value>,
        ctx: &Context<'_>,
    ) -> Result<Value, Error> {
        check_pairs("attributes", &attributes, true)?;
        let f = self.file_meta(file_id)?;
        let text = self.file_text(&f)?;
        if text.trim().is_empty() {
            return Err(Error::bad_request(format!(
                "the file {} ({}) holds no text to search",
                f.id, f.filename
            )));
        }
        let doc = json!({ "collection": store.id,
            "documents": [{ "id": f.id, "text": text, "metadata": attributes }] });
        local(self, "index", &doc, ctx)?;
        let now = now_ms();
        let entry = StoreFile {
            id: f.id.clone(),
            filename: f.filename.clone(),
            usage_bytes: f.bytes,
            created_ms: now,
            attributes,
        };
        store.files.retain(|x| x.id != f.id);
        store.files.push(entry.clone());
        store.last_active_ms = now;
        self.save_store(store)?;
        Ok(store.file_object(&entry))
    }

    pub(crate) fn openai(
        &self,
        capability: &str,
        req: &Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        let op = capability.strip_prefix("openai.").unwrap_or(capability);
        let reads = op.ends_with(".list")
            || op.ends_with(".get")
            || op == "files.content"
            || op == "vector_stores.search";
        let (_read, _write) = if reads {
            (Some(LOCK.read().map_err(|_| crate::poisoned())?), None)
        } else {
            (None, Some(LOCK.write().map_err(|_| crate::poisoned())?))
        };
        match op {
            "files.create" => {
                let r: FileCreate = parse(req)?;
                let purpose = r.purpose.unwrap_or_default();
                if !PURPOSES.contains(&purpose.as_str()) {
                    return Err(Error::bad_request(format!(
                        "purpose {purpose:?}: use one of {}",
                        PURPOSES.join(", ")
                    )));
                }
                if r.filename.trim().is_empty() || r.filename.len() > 512 {
                    return Err(Error::bad_request("filename: use 1 to 512 bytes"));
                }
                if r.text.contains('\0') {
                    return Err(Error::bad_request(format!(
                        "the file {} is not a text file (it holds NUL bytes): upload UTF-8 text",
                        r.filename
                    )));
                }
                let dir = self.openai_dir("files");
                std::fs::create_dir_all(&dir).map_err(|e| io("creating the files' folder", e))?;
                let f = FileMeta {
                    id: new_id("file-"),
                    filename: r.filename,
                    purpose,
                    bytes: r.text.len() as u64,
                    created_ms: now_ms(),
                };
                write_atomic(&dir.join(format!("{}.txt", f.id)), r.text.as_bytes())?;
                let meta =
                    serde_json::to_vec_pretty(&f).map_err(|e| Error::internal(e.to_string()))?;
                write_atomic(&dir.join(format!("{}.json", f.id)), &meta)?;
                self.host
                    .info(&format!("stored file {} ({}, {} bytes)", f.id, f.filename, f.bytes));
                json_answer(&f.object())
            }
            "files.list" => {
                let p: ListParams = parse(req)?;
                let files = read_all(&self.openai_dir("files"), |f: &FileMeta| f.created_ms)?;
                let items = files
                    .iter()
                    .filter(|f| p.purpose.as_ref().is_none_or(|want| &f.purpose == want))
                    .map(|f| (f.id.clone(), f.object()))
                    .collect();
                json_answer(&page(items, &p, 10_000, 10_000)?)
            }
            "files.get" => {
                let r: FileId = parse(req)?;
                json_answer(&self.file_meta(&r.file_id)?.object())
            }
            "files.content" => {
                let r: FileId = parse(req)?;
                let f = self.file_meta(&r.file_id)?;
                Ok(Response::text(self.file_text(&f)?))
            }
            "files.delete" => {
                let r: FileId = parse(req)?;
                let f = self.file_meta(&r.file_id)?;
                // Out of every vector store first, as OpenAI does.
                let stores =
                    read_all(&self.openai_dir("vector_stores"), |s: &StoreMeta| s.created_ms)?;
                for mut s in stores.into_iter().filter(|s| s.files.iter().any(|x| x.id == f.id)) {
                    let ids = json!({ "collection": s.id, "ids": [f.id] });
                    match local(self, "delete", &ids, ctx) {
                        Ok(_) => {}
                        Err(e) if e.kind == bkg_abi::ErrorKind::NOT_FOUND => {}
                        Err(e) => return Err(e),
                    }
                    s.files.retain(|x| x.id != f.id);
                    self.save_store(&s)?;
                }
                let dir = self.openai_dir("files");
                for ext in ["json", "txt"] {
                    let path = dir.join(format!("{}.{ext}", f.id));
                    std::fs::remove_file(&path)
                        .map_err(|e| io(&format!("removing {}", path.display()), e))?;
                }
                json_answer(&json!({ "id": f.id, "object": "file", "deleted": true }))
            }
            "vector_stores.create" => {
                let r: StoreCreate = parse(req)?;
                let metadata = r.metadata.unwrap_or_default();
                check_pairs("metadata", &metadata, false)?;
                // Every file must exist before anything is made.
                for id in &r.file_ids {
                    self.file_meta(id)?;
                }
                let id = new_id("vs_");
                local(self, "collection.create", &json!({ "name": id }), ctx)?;
                let now = now_ms();
                let mut s = StoreMeta {
                    id: id.clone(),
                    name: r.name.unwrap_or_default(),
                    created_ms: now,
                    last_active_ms: now,
                    metadata,
                    expires_after: r.expires_after,
                    files: Vec::new(),
                };
                self.save_store(&s)?;
                for f in &r.file_ids {
                    if let Err(e) = self.add_file(&mut s, f, Map::new(), ctx) {
                        // No half-made store the client never learnt the id of.
                        let _ = local(self, "collection.delete", &json!({ "name": id }), ctx);
                        let path = self.openai_dir("vector_stores").join(format!("{id}.json"));
                        let _ = std::fs::remove_file(path);
                        return Err(e);
                    }
                }
                self.host.info(&format!("created vector store {id} ({:?})", s.name));
                json_answer(&s.object())
            }
            "vector_stores.list" => {
                let p: ListParams = parse(req)?;
                let stores =
                    read_all(&self.openai_dir("vector_stores"), |s: &StoreMeta| s.created_ms)?;
                let items = stores.iter().map(|s| (s.id.clone(), s.object())).collect();
                json_answer(&page(items, &p, 20, 100)?)
            }
            "vector_stores.get" => {
                let r: StoreId = parse(req)?;
                json_answer(&self.store_meta(&r.vector_store_id)?.object())
            }
            "vector_stores.update" => {
                let r: StoreUpdate = parse(req)?;
                let mut s = self.store_meta(&r.vector_store_id)?;
                if let Some(name) = r.name {
                    s.name = name;
                }
                if let Some(m) = r.metadata {
                    check_pairs("metadata", &m, false)?;
                    s.metadata = m;
                }
                if r.expires_after.is_some() {
                    s.expires_after = r.expires_after;
                }
                s.last_active_ms = now_ms();
                self.save_store(&s)?;
                json_answer(&s.object())
            }
            "vector_stores.delete" => {
                let r: StoreId = parse(req)?;
                let s = self.store_meta(&r.vector_store_id)?;
                match local(self, "collection.delete", &json!({ "name": s.id }), ctx) {
                    Ok(_) => {}
                    Err(e) if e.kind == bkg_abi::ErrorKind::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
                let path = self.openai_dir("vector_stores").join(format!("{}.json", s.id));
                std::fs::remove_file(&path)
                    .map_err(|e| io(&format!("removing {}", path.display()), e))?;
                self.host.info(&format!("deleted vector store {}", s.id));
                json_answer(
                    &json!({ "id": s.id, "object": "vector_store.deleted", "deleted": true }),
                )
            }
            "vector_stores.files.create" => {
                let r: StoreFileAdd = parse(req)?;
                let mut s = self.store_meta(&r.vector_store_id)?;
                json_answer(&self.add_file(
                    &mut s,
                    &r.file_id,
                    r.attributes.unwrap_or_default(),
                    ctx,
                )?)
            }
            "vector_stores.files.list" => {
                let r: StoreId = parse(req)?;
                let p: ListParams = parse(req)?;
                let s = self.store_meta(&r.vector_store_id)?;
                let mut files = s.files.clone();
                files.sort_by_key(|f| std::cmp::Reverse(f.created_ms));
                // Every file here is `completed`: a status filter keeps all or none.
                let keep = p.filter.as_deref().is_none_or(|st| st == "completed");
                let items = files
                    .iter()
                    .filter(|_| keep)
                    .map(|f| (f.id.clone(), s.file_object(f)))
                    .collect();
                json_answer(&page(items, &p, 20, 100)?)
            }
            "vector_stores.files.get" | "vector_stores.files.delete" => {
                let r: StoreFileId = parse(req)?;
                let mut s = self.store_meta(&r.vector_store_id)?;
                let f = s.files.iter().find(|f| f.id == r.file_id).cloned().ok_or_else(|| {
                    Error::not_found(format!(
                        "No file found with id '{}' in vector store '{}'.",
                        r.file_id, s.id
                    ))
                })?;
                if op == "vector_stores.files.get" {
                    return json_answer(&s.file_object(&f));
                }
                local(self, "delete", &json!({ "collection": s.id, "ids": [f.id] }), ctx)?;
                s.files.retain(|x| x.id != f.id);
                self.save_store(&s)?;
                json_answer(
                    &json!({ "id": f.id, "object": "vector_store.file.deleted", "deleted": true }),
                )
            }
            "vector_stores.search" => self.search(parse(req)?, ctx),
            other => Err(Error::not_found(format!("no capability openai.{other}"))),
        }
    }

    fn search(&self, r: Search, ctx: &Context<'_>) -> Result<Response, Error> {
        let s = self.store_meta(&r.vector_store_id)?;
        let queries: Vec<String> = match &r.query {
            Value::String(q) => vec![q.clone()],
            Value::Array(a) => a
                .iter()
                .map(|q| q.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::bad_request("query: a string or an array of strings"))?,
            _ => return Err(Error::bad_request("query: a string or an array of strings")),
        };
        let text = queries.join("\n");
        if text.trim().is_empty() {
            return Err(Error::bad_request("query is empty"));
        }
        let k = r.max_num_results.unwrap_or(10);
        if !(1..=50).contains(&k) {
            return Err(Error::bad_request(format!("max_num_results {k}: use 1 to 50")));
        }
        let threshold = match &r.ranking_options {
            Some(o) => match o.get("score_threshold") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    Some(v.as_f64().filter(|t| (0.0..=1.0).contains(t)).ok_or_else(|| {
                        Error::bad_request("ranking_options.score_threshold: a number from 0 to 1")
                    })?)
                }
            },
            None => None,
        };
        // Dense search: its score is the cosine similarity, which a threshold can mean.
        let mut q = json!({ "collection": s.id, "text": text, "k": k, "mode": "dense",
            "with_text": true });
        if let Some(f) = &r.filters {
            q["filter"] = translate_filter(f)?;
        }
        let found: Value = local(self, "query", &q, ctx)?.parse_json()?;
        let data: Vec<Value> = found["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| threshold.is_none_or(|t| h["score"].as_f64().unwrap_or(0.0) >= t))
            .map(|h| {
                let id = h["id"].as_str().unwrap_or_default();
                let filename =
                    s.files.iter().find(|f| f.id == id).map(|f| f.filename.as_str()).unwrap_or("");
                json!({ "file_id": id, "filename": filename, "score": h["score"],
                    "attributes": h["metadata"],
                    "content": [{ "type": "text", "text": h["text"].as_str().unwrap_or("") }] })
            })
            .collect();
        json_answer(&json!({ "object": "vector_store.search_results.page",
            "search_query": queries, "data": data, "has_more": false, "next_page": null }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_filters_become_brainml_filters() {
        let f = json!({ "type": "and", "filters": [
            { "type": "eq", "key": "author", "value": "x" },
            { "type": "or", "filters": [
                { "type": "gte", "key": "year", "value": 2020 },
                { "type": "nin", "key": "tag", "value": ["a", "b"] } ] } ] });
        let got = translate_filter(&f).unwrap();
        assert_eq!(
            got,
            json!({ "$and": [ { "author": { "$eq": "x" } }, { "$or": [
                { "year": { "$gte": 2020 } }, { "$not": { "tag": { "$in": ["a", "b"] } } } ] } ] })
        );
        // And brainml's parser takes what comes out.
        crate::filter::parse(&got).unwrap();
        for bad in [
            json!({ "type": "like", "key": "a", "value": 1 }),
            json!({ "key": "a" }),
            json!({ "type": "and", "filters": [] }),
            json!({ "type": "eq", "key": "$or", "value": 1 }),
        ] {
            assert!(translate_filter(&bad).is_err(), "{bad}");
        }
    }

    fn items(n: usize) -> Vec<(String, Value)> {
        (0..n).rev().map(|i| (format!("id{i}"), json!({ "id": format!("id{i}") }))).collect()
    }

    fn ids(v: &Value) -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().into()).collect()
    }

    #[test]
    fn lists_page_with_cursors_like_openai() {
        let p = ListParams { limit: Some(json!(2)), ..Default::default() };
        let v = page(items(5), &p, 20, 100).unwrap();
        assert_eq!(ids(&v), ["id4", "id3"]);
        assert_eq!((v["has_more"].clone(), v["last_id"].clone()), (json!(true), json!("id3")));
        let p =
            ListParams { limit: Some(json!("2")), after: Some("id3".into()), ..Default::default() };
        assert_eq!(ids(&page(items(5), &p, 20, 100).unwrap()), ["id2", "id1"]);
        let p = ListParams {
            order: Some("asc".into()),
            after: Some("id3".into()),
            ..Default::default()
        };
        let v = page(items(5), &p, 20, 100).unwrap();
        assert_eq!((ids(&v), v["has_more"].clone()), (vec!["id4".to_string()], json!(false)));
        let p =
            ListParams { limit: Some(json!(1)), before: Some("id1".into()), ..Default::default() };
        assert_eq!(ids(&page(items(5), &p, 20, 100).unwrap()), ["id2"]);
        for bad in [
            ListParams { limit: Some(json!(0)), ..Default::default() },
            ListParams { limit: Some(json!(101)), ..Default::default() },
            ListParams { order: Some("up".into()), ..Default::default() },
            ListParams { after: Some("nope".into()), ..Default::default() },
        ] {
            assert!(page(items(5), &bad, 20, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_fresh_and_only_safe_ids_reach_the_disk() {
        let a = new_id("vs_");
        let b = new_id("vs_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 27);
        assert!(crate::api::valid_name(&a), "{a} is a collection name");
        assert!(checked_id(&a, "vs_", "vector store").is_ok());
        for bad in ["vs_../x", "file-abc", "vs_a/b", "vs_a.json"] {
            let e = checked_id(bad, "vs_", "vector store").unwrap_err();
            assert!(e.message.contains("No vector store found"), "{}", e.message);
        }
    }
}

//! `brainml`: a durable knowledge store for RAG. Collections of documents, chunked and embedded
//! by the `candle` plugin through the host's bus (or holding caller-supplied vectors), searched
//! by meaning (dense: exactly, or through an HNSW index that `train` builds, see `ann`), by
//! words (BM25) or both (reciprocal-rank fusion), with metadata filters. Every write is in a
//! checksummed, fsynced write-ahead log before it is answered, and visible to the very next
//! query. Its only threads are the train jobs', joined in `stop`: it unloads cleanly.

pub mod ann;
pub mod api;
pub mod bm25;
pub mod chunk;
pub mod embed;
pub mod filter;
pub mod handoff;
pub mod openai;
pub mod rag;
pub mod snapshot;
pub mod store;
pub mod wal;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use bkg_abi::serde_json::{json, Value};
use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};
use serde::de::DeserializeOwned;
use serde_json::Map;

use api::*;
use filter::Filter;
use store::collection::{self, ChunkRecord, DocRecord, Meta, QueryStats, Record};
use store::{Shared, Store};

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct BrainMl {
    host: Host,
    settings: Mutex<Settings>,
    store: RwLock<Store>,
    stats: Mutex<std::collections::HashMap<String, QueryStats>>,
    /// ANN: the train jobs and their threads (joined in `stop`).
    ann_jobs: ann::job::Jobs,
    /// The data dir's lock between generations (see `handoff`), and whether this generation
    /// has opened the store (under `opening`).
    handoff: handoff::Handoff,
    opened: std::sync::atomic::AtomicBool,
    opening: Mutex<()>,
}

fn parse<T: DeserializeOwned>(req: &Request<'_>) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { req.body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid request: {e}")))
}

const NDJSON: &str = "application/x-ndjson";

/// One NDJSON line.
fn ndjson<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    let mut line = serde_json::to_vec(v).map_err(|e| Error::internal(format!("serialize: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub(crate) fn poisoned() -> Error {
    Error::internal("a lock was poisoned by an earlier panic")
}

/// A caller's vector as f32, checked: `dim` values, all finite (also as f32).
fn checked_vector(v: &[f64], dim: usize, what: &str) -> Result<Vec<f32>, Error> {
    if v.len() != dim {
        return Err(Error::bad_request(format!(
            "{what}: the vector has {} values; this collection's dimension is {dim}",
            v.len()
        )));
    }
    v.iter()
        .enumerate()
        .map(|(i, x)| {
            let f = *x as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                Err(Error::bad_request(format!(
                    "{what}: vector value {i} ({x:e}) is not a finite f32"
                )))
            }
        })
        .collect()
}

fn parse_filter(f: &Option<Value>) -> Result<Option<Filter>, Error> {
    f.as_ref()
        .map(|v| filter::parse(v).map_err(|e| Error::bad_request(format!("filter: {e}"))))
        .transpose()
}

fn check_metadata(id: &str, m: &Map<String, Value>) -> Result<(), Error> {
    for (k, v) in m {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(Error::bad_request(format!(
                "document {id:?}: metadata {k} must be a string, number or boolean, not {v}"
            )));
        }
    }
    Ok(())
}

impl BrainMl {
    /// Open the collections (the caller holds `opening` and the data dir's lock).
    fn open_store(&self) -> Result<(), Error> {
        let store = Store::open(&self.root(), &|m| self.host.warn(m));
        let (n, docs): (usize, usize) = (
            store.collections.len(),
            store.collections.values().filter_map(|c| c.read().ok().map(|c| c.documents())).sum(),
        );
        self.host.info(&format!("opened {n} collections ({docs} documents)"));
        *self.store.write().map_err(|_| poisoned())? = store;
        self.opened.store(true, Ordering::SeqCst);
        self.ann_rebuild_damaged();
        Ok(())
    }

    /// Open the store on the first call of a generation that started during a swap, once the
    /// previous generation has let go of it (see `handoff`).
    fn ensure_open(&self, ctx: &Context<'_>) -> Result<(), Error> {
        if self.opened.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _opening = self.opening.lock().map_err(|_| poisoned())?;
        if self.opened.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.handoff.take(&self.host.data_dir(), &|| ctx.is_cancelled())?;
        self.host.info("the previous generation let go of the collections");
        self.open_store()
    }

    fn settings(&self) -> Settings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn root(&self) -> PathBuf {
        self.host.data_dir().join("collections")
    }

    fn get(&self, name: &str) -> Result<Shared, Error> {
        let store = self.store.read().map_err(|_| poisoned())?;
        store
            .collections
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no collection named {name:?}")))
    }

    fn meta(&self, c: &Shared) -> Result<Meta, Error> {
        Ok(c.read().map_err(|_| poisoned())?.meta.clone())
    }

    fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        embed::embed(&self.host, model, texts, self.settings().embed_batch)
    }

    fn create(&self, r: CreateCollection) -> Result<Response, Error> {
        if !valid_name(&r.name) {
            return Err(Error::bad_request(format!(
                "name {:?}: use 1 to 64 of a-z, 0-9, _ and -",
                r.name
            )));
        }
        let distance = r.distance.unwrap_or_default();
        let (model, dim) = match (r.model, r.dim) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request(
                    "give either model (text is embedded) or dim (you send vectors), not both",
                ))
            }
            (None, Some(dim)) if !(1..=65536).contains(&dim) => {
                return Err(Error::bad_request(format!("dim {dim}: use 1 to 65536")))
            }
            (None, Some(dim)) => (None, dim),
            (model, None) => {
                let model = model.unwrap_or_else(|| DEFAULT_MODEL.to_string());
                if model.trim().is_empty() {
                    return Err(Error::bad_request("model must not be empty"));
                }
                if self.store.read().map_err(|_| poisoned())?.collections.contains_key(&r.name) {
                    return Err(Error::conflict(format!("a collection named {} exists", r.name)));
                }
                // The model's dimension, learnt from one embedding (this loads the model).
                let probe = self.embed(&model, &["dimension probe".to_string()])?;
                let dim = probe.first().map(Vec::len).unwrap_or(0);
                if dim == 0 {
                    return Err(Error::internal(format!("the model {model} gave an empty vector")));
                }
                (Some(model), dim)
            }
        };
        let meta = Meta { name: r.name, model, dim, distance };
        let mut store = self.store.write().map_err(|_| poisoned())?;
        let c = store.create(&self.root(), meta)?;
        let info = c.read().map_err(|_| poisoned())?.info();
        self.host.info(&format!("created collection {}", info.name));
        Ok(Response::json(&info)?.with_status(201))
    }

    /// `index`: check every document and cut the texts on the model's word pieces
    /// (`chunk.rs`), embed the chunks, then write them all in one log record. With `stream`,
    /// NDJSON progress lines while embedding, then the answer (or `{error}`) as the last line;
    /// a failure before the stream begins is a plain error answer. Nothing is written unless
    /// every chunk is embedded.
    fn index(&self, r: IndexRequest, ctx: &Context<'_>) -> Result<Response, Error> {
        let started = Instant::now();
        let c = self.get(&r.collection)?;
        let meta = self.meta(&c)?;
        if r.documents.is_empty() || r.documents.len() > MAX_DOCUMENTS {
            return Err(Error::bad_request(format!(
                "documents: send 1 to {MAX_DOCUMENTS} documents per call, not {}",
                r.documents.len()
            )));
        }
        let settings = self.settings();
        // An embedding collection's texts, cut on the model's word pieces (asked of candle in
        // batches of texts), in document order.
        let (mut split, max_pieces) = match &meta.model {
            Some(model) => {
                let texts: Vec<&str> = (r.documents.iter())
                    .filter_map(|d| d.text.as_deref())
                    .filter(|t| !t.trim().is_empty())
                    .collect();
                let (chunks, max) =
                    chunk::split(&self.host, model, &texts, settings.chunk_overlap_tokens)?;
                (chunks.into_iter(), max)
            }
            None => (Vec::new().into_iter(), 0),
        };
        // Check everything before anything is written.
        let mut docs = Vec::with_capacity(r.documents.len());
        let mut to_embed: Vec<String> = Vec::new();
        for d in r.documents {
            let what = format!("document {:?}", d.id);
            if d.id.is_empty() || d.id.len() > 512 {
                return Err(Error::bad_request("a document id is 1 to 512 bytes"));
            }
            let metadata = d.metadata.unwrap_or_default();
            check_metadata(&d.id, &metadata)?;
            let texts = match &d.text {
                Some(t) if t.trim().is_empty() => {
                    return Err(Error::bad_request(format!("{what}: the text is empty")))
                }
                Some(_) if meta.model.is_some() => {
                    split.next().ok_or_else(|| Error::internal("fewer cut texts than texts"))?
                }
                _ => Vec::new(),
            };
            let vector =
                d.vector.as_deref().map(|v| checked_vector(v, meta.dim, &what)).transpose()?;
            let chunks: Vec<ChunkRecord> = match (&meta.model, vector) {
                (Some(_), _) if texts.is_empty() => {
                    return Err(Error::bad_request(format!(
                        "{what}: this collection embeds text: send text"
                    )))
                }
                (Some(_), Some(_)) if texts.len() > 1 => {
                    return Err(Error::bad_request(format!(
                        "{what}: a vector can only go with a text of one chunk (at most \
                         {max_pieces} word pieces); this text makes {} chunks",
                        texts.len()
                    )))
                }
                (Some(_), Some(v)) => {
                    vec![ChunkRecord { text: texts.into_iter().next(), vector: v }]
                }
                (Some(_), None) => {
                    let chunks = texts
                        .iter()
                        .map(|t| ChunkRecord { text: Some(t.clone()), vector: Vec::new() })
                        .collect();
                    to_embed.extend(texts);
                    chunks
                }
                (None, None) => {
                    return Err(Error::bad_request(format!(
                        "{what}: this collection holds vectors of dimension {}: send vector",
                        meta.dim
                    )))
                }
                // A vector collection keeps the text whole beside the one vector.
                (None, Some(v)) => vec![ChunkRecord { text: d.text.clone(), vector: v }],
            };
            docs.push(DocRecord { id: d.id, metadata, chunks });
        }
        let total = to_embed.len();
        let stream = if r.stream { Some(ctx.stream(NDJSON)?) } else { None };
        let mut progress = |embedded: usize| match &stream {
            Some(s) => s.send(&ndjson(&IndexProgress { embedded, chunks: total })?),
            None => Ok(()),
        };
        progress(0)?;
        let written = (|| {
            if let Some(model) = &meta.model {
                let batch = settings.embed_batch;
                let (vectors, truncated) =
                    embed::embed_reporting(&self.host, model, &to_embed, batch, &mut progress)?;
                // Never cut silently: chunk.rs keeps chunks within the model's length, and a
                // chunk the model still truncated is refused, not stored half-embedded.
                if let Some(i) = truncated.iter().position(|t| *t) {
                    return Err(Error::internal(format!(
                        "the model {model} truncated chunk text {:?}...: it holds more than the \
                         {max_pieces} word pieces it was cut to; nothing was written",
                        to_embed[i].chars().take(60).collect::<String>()
                    )));
                }
                let mut vectors = vectors.into_iter();
                for ch in docs.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
                    if ch.vector.is_empty() {
                        ch.vector = vectors
                            .next()
                            .ok_or_else(|| Error::internal("fewer vectors than chunks"))?;
                    }
                }
            }
            for ch in docs.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
                if ch.vector.len() != meta.dim {
                    return Err(Error::internal(format!(
                        "the model gave {} dimensions; the collection has {}",
                        ch.vector.len(),
                        meta.dim
                    )));
                }
                if meta.distance == Distance::Cosine {
                    collection::normalize(&mut ch.vector);
                }
            }
            let (indexed, chunks) = (docs.len(), docs.iter().map(|d| d.chunks.len()).sum());
            let mut g = c.write().map_err(|_| poisoned())?;
            if g.dropped {
                return Err(Error::not_found(format!("no collection named {:?}", r.collection)));
            }
            let due = g
                .write(Record::Upsert { docs })
                .map_err(|e| Error::internal(format!("writing the write-ahead log: {e}")))?;
            drop(g);
            if due {
                self.compact(&c, ctx);
            }
            Ok(Indexed { indexed, chunks, took_ms: ms(started) })
        })();
        match (written, stream) {
            (Ok(answer), None) => Response::json(&answer),
            (Ok(answer), Some(_)) => Ok(Response::bytes(NDJSON, ndjson(&answer)?)),
            (Err(e), Some(_)) if e.kind != bkg_abi::ErrorKind::CANCELLED => {
                self.host.warn(&format!("index into {} failed midway: {e}", r.collection));
                let line = json!({ "error": {
                    "code": e.kind.code(), "status": e.kind.0, "message": e.message } });
                Ok(Response::bytes(NDJSON, format!("{line}\n").into_bytes()))
            }
            (Err(e), _) => Err(e),
        }
    }

    fn delete(&self, r: DeleteRequest, ctx: &Context<'_>) -> Result<Response, Error> {
        let shared = self.get(&r.collection)?;
        let filter = parse_filter(&r.filter)?;
        let mut c = shared.write().map_err(|_| poisoned())?;
        let ids = match (r.ids, filter) {
            (Some(ids), None) => ids.into_iter().filter(|id| c.contains(id)).collect::<Vec<_>>(),
            (None, Some(f)) => c.matching_ids(&|m| f.matches(m)),
            _ => return Err(Error::bad_request("send either ids or filter")),
        };
        let deleted = ids.len();
        if deleted > 0 {
            let due = c
                .write(Record::Delete { ids })
                .map_err(|e| Error::internal(format!("writing the write-ahead log: {e}")))?;
            drop(c);
            if due {
                self.compact(&shared, ctx);
            }
        }
        Response::json(&DeletedCount { deleted })
    }

    /// Compact a collection's log after a write made it due, on this call's thread with the
    /// collection's lock let go (queries and writes go on: `compact_concurrently`). A failure
    /// is logged and leaves the log as it was: the write stands.
    fn compact(&self, c: &Shared, ctx: &Context<'_>) {
        let name = c.read().map(|g| g.meta.name.clone()).unwrap_or_default();
        match collection::compact_concurrently(c, &|| ctx.is_cancelled()) {
            Ok(true) => {
                let bytes = c.read().map(|g| g.log_bytes()).unwrap_or(0);
                self.host.info(&format!(
                    "collection {name}: compacted its write-ahead log to {bytes} bytes"
                ));
            }
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                self.host.info(&format!("collection {name}: compaction cancelled with the call"))
            }
            Err(e) => self.host.warn(&format!(
                "collection {name}: could not compact its write-ahead log (kept as it is): {e}"
            )),
        }
    }

    fn query(&self, r: QueryRequest) -> Result<Response, Error> {
        let started = Instant::now();
        let c = self.get(&r.collection)?;
        let meta = self.meta(&c)?;
        let k = r.k.unwrap_or(10);
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::bad_request(format!("k {k}: use 1 to {MAX_K}")));
        }
        let filter = parse_filter(&r.filter)?;
        if r.text.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::bad_request("text is empty"));
        }
        let vector =
            r.vector.as_deref().map(|v| checked_vector(v, meta.dim, "query")).transpose()?;
        let has_text = r.text.is_some();
        let can_dense = vector.is_some() || (has_text && meta.model.is_some());
        let mode = match r.mode {
            Some(Mode::Bm25) | Some(Mode::Hybrid) if !has_text => {
                return Err(Error::bad_request("bm25 and hybrid search need text"))
            }
            Some(Mode::Dense) | Some(Mode::Hybrid) if !can_dense => {
                return Err(Error::bad_request(
                    "this collection has no model to embed text: send a vector for dense search",
                ))
            }
            Some(m) => m,
            None if has_text && can_dense => Mode::Hybrid,
            None if can_dense => Mode::Dense,
            None if has_text => Mode::Bm25,
            None => return Err(Error::bad_request("send text or vector")),
        };
        let mut q = match (mode, vector, &meta.model, &r.text) {
            (Mode::Bm25, _, _, _) => None,
            (_, Some(v), _, _) => Some(v),
            (_, None, Some(model), Some(text)) => {
                self.embed(model, std::slice::from_ref(text))?.into_iter().next()
            }
            _ => None,
        };
        if let Some(q) = q.as_mut() {
            if q.len() != meta.dim {
                return Err(Error::internal("the model's dimension changed"));
            }
            if meta.distance == Distance::Cosine {
                collection::normalize(q);
            }
        }
        let s = self.settings();
        let with_text = r.with_text.unwrap_or(true);
        let matches = |m: &Map<String, Value>| filter.as_ref().is_some_and(|f| f.matches(m));
        let guard = c.read().map_err(|_| poisoned())?;
        let allowed = guard.allowed(filter.is_some().then_some(&matches as _));
        let dense = |n: usize| {
            q.as_ref().map(|q| guard.dense_k(q, n, &allowed, s.exact_threshold)).unwrap_or_default()
        };
        let words = || guard.bm25(r.text.as_deref().unwrap_or(""), s.bm25_k1, s.bm25_b, &allowed);
        let ranked = match mode {
            Mode::Dense => dense(k),
            Mode::Bm25 => collection::top_k(words(), k),
            Mode::Hybrid => {
                // Fuse each ranking's best (deep enough that a chunk ranked well by one side
                // still meets the other).
                let depth = (k * 5).max(100);
                let d: Vec<usize> = dense(depth).into_iter().map(|x| x.0).collect();
                let w: Vec<usize> =
                    collection::top_k(words(), depth).into_iter().map(|x| x.0).collect();
                let mut fused = bm25::rrf(&[d, w], s.rrf_k);
                fused.truncate(k);
                fused
            }
        };
        let hits: Vec<Hit> = ranked
            .into_iter()
            .filter_map(|(slot, score)| guard.scored(slot, score, with_text))
            .map(|h| Hit {
                id: h.id,
                chunk: h.chunk,
                score: h.score,
                text: h.text,
                metadata: h.metadata,
            })
            .collect();
        drop(guard);
        let took_ms = ms(started);
        if let Ok(mut stats) = self.stats.lock() {
            stats.entry(meta.name).or_default().record(took_ms);
        }
        Response::json(&QueryAnswer { hits, took_ms, mode })
    }

    fn stats(&self, r: StatsRequest) -> Result<Response, Error> {
        let list: Vec<Shared> = match &r.collection {
            Some(name) => vec![self.get(name)?],
            None => {
                self.store.read().map_err(|_| poisoned())?.collections.values().cloned().collect()
            }
        };
        let stats = self.stats.lock().map_err(|_| poisoned())?;
        let mut out = Vec::new();
        for c in list {
            let c = c.read().map_err(|_| poisoned())?;
            let q = stats.get(&c.meta.name);
            out.push(CollectionStats {
                name: c.meta.name.clone(),
                documents: c.documents(),
                chunks: c.chunks(),
                vectors: c.chunks(),
                bytes_on_disk: c.bytes_on_disk(),
                bytes_in_memory: c.bytes_in_memory(),
                index: if c.ann.is_some() { "hnsw" } else { "exact" },
                queries: q.map_or(0, |q| q.queries),
                p50_ms: q.map_or(0.0, |q| q.quantile(0.5)),
                p99_ms: q.map_or(0.0, |q| q.quantile(0.99)),
                index_params: c.ann.as_ref().map(|a| a.info.params.clone()),
                recall_at_10: c.ann.as_ref().map_or(1.0, |a| a.info.recall_at_10),
                last_trained_ms: c.ann.as_ref().map(|a| a.info.trained_ms),
                bytes_per_vector: c.bytes_per_vector(),
            });
        }
        Response::json(&StatsAnswer { collections: out })
    }
}

impl Plugin for BrainMl {
    fn manifest() -> Manifest {
        Manifest::new("brainml", "Knowledge store", VERSION)
            .description(
                "collections of documents searched by meaning (candle embeddings), by words \
                 (BM25) or both, with metadata filters; durable write-ahead log",
            )
            .capability("collection.create", "{name, model?, dim?, distance?}: a new collection")
            .capability("collection.list", "the collections")
            .capability("collection.get", "{name}: one collection")
            .capability("collection.delete", "{name}: delete a collection and its files")
            .streaming_capability(
                "index",
                "{collection, documents: [{id, text?, vector?, metadata?}], stream?}: upsert; \
                 stream: NDJSON progress {embedded, chunks}, then the answer",
            )
            .capability("delete", "{collection, ids? | filter?}: delete documents")
            .capability(
                "query",
                "{collection, text? | vector?, k?, mode?: hybrid|dense|bm25, filter?, with_text?}",
            )
            .capability("stats", "{collection?}: sizes and query times")
            .capability(
                "train",
                "{collection, m?, ef_construction?, ef_search?, target_recall?, quantization?: \
                 none|int8, sample?, wait?, force?}: build an HNSW index in the background",
            )
            .capability("train.status", "{collection}: the train job and the index")
            .capability("query.batch", "{collection, vectors, k?, filter?, with_text?}: dense")
            .capability("snapshot.create", "{collection}: a hash-checked snapshot (201)")
            .capability("snapshot.list", "{collection?}: the snapshots, newest first")
            .capability("snapshot.verify", "{id}: check every file's size and SHA-256")
            .capability("snapshot.restore", "{id, as?}: verify, then replace (or make `as`)")
            .capability("snapshot.delete", "{id}: delete a snapshot")
            .capability("snapshot.export", "{id}: the snapshot as one application/x-tar archive")
            .capability("snapshot.import", "body: such an archive; checked, kept with a fresh id")
            .max_body_bytes("snapshot.import", snapshot::MAX_IMPORT_BYTES)
            .streaming_capability(
                "rag.ask",
                "{collection, question, k?, mode?, filter?, model?, max_tokens?, stream?}: an answer \
                 from the chat model (llmserver) citing the chunks found; stream: server-sent events",
            )
            .capability("openai.files.create", "{filename, purpose, text}: OpenAI's file object")
            .capability("openai.files.list", "{purpose?, limit?, order?, after?}: OpenAI's file list")
            .capability("openai.files.get", "{file_id}: OpenAI's file object")
            .capability("openai.files.content", "{file_id}: the file's text")
            .capability("openai.files.delete", "{file_id}: delete a file (and from vector stores)")
            .capability("openai.vector_stores.create", "{name?, file_ids?, metadata?}: a vector store")
            .capability("openai.vector_stores.list", "{limit?, order?, after?, before?}")
            .capability("openai.vector_stores.get", "{vector_store_id}")
            .capability("openai.vector_stores.update", "{vector_store_id, name?, metadata?}")
            .capability("openai.vector_stores.delete", "{vector_store_id}")
            .capability("openai.vector_stores.files.create", "{vector_store_id, file_id, attributes?}")
            .capability("openai.vector_stores.files.list", "{vector_store_id, limit?, order?, ...}")
            .capability("openai.vector_stores.files.get", "{vector_store_id, file_id}")
            .capability("openai.vector_stores.files.delete", "{vector_store_id, file_id}")
            .capability(
                "openai.vector_stores.search",
                "{vector_store_id, query, max_num_results?, filters?, ranking_options?}",
            )
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "bm25_k1": { "type": "number", "minimum": 0, "maximum": 10, "default": 1.2 },
                    "bm25_b": { "type": "number", "minimum": 0, "maximum": 1, "default": 0.75 },
                    "rrf_k": { "type": "number", "minimum": 0, "maximum": 10000, "default": 60 },
                    "embed_batch": { "type": "integer", "minimum": 1, "maximum": 256, "default": 32 },
                    "chunk_overlap_tokens": { "type": "integer", "minimum": 0, "maximum": 512, "default": 32,
                        "description": "word pieces a chunk repeats of the one before it (at most half a chunk)" },
                    "exact_threshold": { "type": "integer", "minimum": 0, "default": 20000,
                        "description": "below this many vectors train keeps exact search" }
                },
                "additionalProperties": false
            }))
    }

    fn new(host: Host) -> Result<Self, Error> {
        Ok(BrainMl {
            host,
            settings: Mutex::new(Settings::default()),
            store: RwLock::new(Store::default()),
            stats: Mutex::new(Default::default()),
            ann_jobs: Default::default(),
            handoff: Default::default(),
            opened: Default::default(),
            opening: Mutex::new(()),
        })
    }

    fn start(&self) -> Result<(), Error> {
        let root = self.root();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::internal(format!("creating {}: {e}", root.display())))?;
        let _opening = self.opening.lock().map_err(|_| poisoned())?;
        if self.handoff.try_take(&self.host.data_dir())? {
            self.open_store()
        } else {
            self.host.info(
                "the previous generation still holds the collections (a swap): they open on \
                 the first call, once it has let go",
            );
            Ok(())
        }
    }

    fn stop(&self) -> Result<(), Error> {
        let _opening = self.opening.lock().map_err(|_| poisoned())?;
        self.ann_jobs.stop();
        let mut store = self.store.write().map_err(|_| poisoned())?;
        // A compaction still running in a call that outlived the drain must not switch in a
        // log once the next generation may have opened it: its last step checks `dropped`
        // under the collection's lock.
        for c in store.collections.values() {
            if let Ok(mut c) = c.write() {
                c.dropped = true;
            }
        }
        *store = Store::default();
        drop(store);
        self.opened.store(false, Ordering::SeqCst);
        self.handoff.release();
        Ok(())
    }

    fn status(&self) -> Value {
        let collections = self.store.read().map(|s| s.collections.len()).unwrap_or(0);
        let store = if self.opened.load(Ordering::SeqCst) { "open" } else { "waiting" };
        json!({ "version": VERSION, "collections": collections, "store": store })
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
        *self.settings.lock().map_err(|_| poisoned())? = new;
        Ok(())
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        self.ensure_open(ctx)?;
        match capability {
            "collection.create" => self.create(parse(&req)?),
            "collection.list" => {
                let store = self.store.read().map_err(|_| poisoned())?;
                let mut collections = Vec::new();
                for c in store.collections.values() {
                    collections.push(c.read().map_err(|_| poisoned())?.info());
                }
                Ok(Response::json(&CollectionList { collections })?)
            }
            "collection.get" => {
                let r: NameRequest = parse(&req)?;
                let c = self.get(&r.name)?;
                let info = c.read().map_err(|_| poisoned())?.info();
                Ok(Response::json(&info)?)
            }
            "collection.delete" => {
                let r: NameRequest = parse(&req)?;
                self.store.write().map_err(|_| poisoned())?.delete(&self.root(), &r.name)?;
                self.ann_jobs.forget(&r.name);
                if let Ok(mut s) = self.stats.lock() {
                    s.remove(&r.name);
                }
                self.host.info(&format!("deleted collection {}", r.name));
                Ok(Response::json(&Deleted { deleted: true })?)
            }
            "index" => self.index(parse(&req)?, ctx),
            "delete" => self.delete(parse(&req)?, ctx),
            "query" => self.query(parse(&req)?),
            "stats" => self.stats(parse(&req)?),
            "rag.ask" => self.ask(parse(&req)?, ctx),
            c if c.starts_with("openai.") => self.openai(c, &req, ctx),
            "train" => self.train(parse(&req)?),
            "train.status" => self.train_status(parse(&req)?),
            "query.batch" => self.query_batch(parse(&req)?),
            c if c.starts_with("snapshot.") => snapshot::invoke(self, c, &req),
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }
}

export_plugin!(BrainMl);

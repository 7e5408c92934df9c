//! The capabilities' requests and answers, in one place: the API reads like a table.
//!
//! | capability          | request                                         | answer |
//! |---------------------|-------------------------------------------------|--------|
//! | `collection.create` | [`CreateCollection`]                            | [`CollectionInfo`] (201) |
//! | `collection.list`   | `{}`                                            | [`CollectionList`] |
//! | `collection.get`    | [`NameRequest`]                                 | [`CollectionInfo`] |
//! | `collection.delete` | [`NameRequest`]                                 | [`Deleted`] `{deleted: true}` |
//! | `index`             | [`IndexRequest`]                                | [`Indexed`]; with `stream: true` NDJSON: [`IndexProgress`] per embedded batch, then [`Indexed`] (or `{error}`: nothing written) |
//! | `delete`            | [`DeleteRequest`]                               | [`DeletedCount`] |
//! | `query`             | [`QueryRequest`]                                | [`QueryAnswer`] |
//! | `stats`             | [`StatsRequest`]                                | [`StatsAnswer`] |
//! | `rag.ask`           | [`AskRequest`]                                  | [`AskAnswer`], or with `stream: true` server-sent events (`event: citations` [`AskCitations`], `data: {"delta"}` per token, `event: done` [`AskDone`]; `event: error` `{error}` if the model fails midway) |
//! | `openai.*`          | OpenAI's vector-store and file requests (see `openai.rs`), as `llmserver` forwards them from `/v1` | OpenAI's objects |
//! | `snapshot.create`   | [`SnapshotCreate`]                              | [`Snapshot`] (201) |
//! | `snapshot.list`     | [`SnapshotListRequest`]                         | [`SnapshotList`] (newest first) |
//! | `snapshot.verify`   | [`SnapshotId`]                                  | [`SnapshotVerified`]; 409 naming the damaged file |
//! | `snapshot.restore`  | [`SnapshotRestore`]                             | [`CollectionInfo`]; 409 damaged (nothing changed) or `as` exists |
//! | `snapshot.delete`   | [`SnapshotId`]                                  | [`Deleted`] |
//! | `snapshot.export`   | [`SnapshotId`]                                  | `application/x-tar`: `manifest.json` and the files |
//! | `snapshot.import`   | the raw tar archive `snapshot.export` gave       | [`Snapshot`] (201) with a fresh id; 400 naming a bad entry |
//! | `train`             | [`TrainRequest`]                                | [`TrainExact`] below `exact_threshold`; [`TrainStarted`] (202), or with `wait: true` the finished [`TrainStatus`]; 409 while one runs |
//! | `train.status`      | [`TrainStatusRequest`]                          | [`TrainStatus`] |
//! | `query.batch`       | [`BatchQueryRequest`]                           | [`BatchQueryAnswer`] (dense, one `hits` list per vector) |

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The model a collection embeds with when neither `model` nor `dim` is given.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";
/// The most documents one `index` call takes.
pub const MAX_DOCUMENTS: usize = 1000;
/// The most hits one `query` returns.
pub const MAX_K: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub name: String,
    pub model: Option<String>,
    pub dim: Option<usize>,
    pub distance: Option<Distance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    #[default]
    Cosine,
    Dot,
    L2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    pub model: Option<String>,
    pub dim: usize,
    pub distance: Distance,
    pub documents: usize,
    pub chunks: usize,
}

#[derive(Debug, Serialize)]
pub struct CollectionList {
    pub collections: Vec<CollectionInfo>,
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRequest {
    pub collection: String,
    pub documents: Vec<Document>,
    /// Stream NDJSON progress lines ([`IndexProgress`]) before the answer.
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub id: String,
    pub text: Option<String>,
    pub vector: Option<Vec<f64>>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub struct Indexed {
    pub indexed: usize,
    pub chunks: usize,
    pub took_ms: f64,
}

// ---- EMBED: `index` with `stream: true` (lib.rs `index`, chunk.rs) ----

/// A progress line of a streamed `index`: `embedded` of the request's `chunks` to embed are
/// embedded.
#[derive(Debug, Serialize)]
pub struct IndexProgress {
    pub embedded: usize,
    pub chunks: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub collection: String,
    pub ids: Option<Vec<String>>,
    pub filter: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct DeletedCount {
    pub deleted: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Hybrid,
    Dense,
    Bm25,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub collection: String,
    pub text: Option<String>,
    pub vector: Option<Vec<f64>>,
    pub k: Option<usize>,
    pub mode: Option<Mode>,
    pub filter: Option<Value>,
    pub with_text: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub chunk: usize,
    pub score: f64,
    pub text: Option<String>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct QueryAnswer {
    pub hits: Vec<Hit>,
    pub took_ms: f64,
    pub mode: Mode,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatsRequest {
    pub collection: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CollectionStats {
    pub name: String,
    pub documents: usize,
    pub chunks: usize,
    pub vectors: usize,
    pub bytes_on_disk: u64,
    pub bytes_in_memory: u64,
    pub index: &'static str,
    pub queries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// ANN: the trained index's parameters (null while searched exactly).
    pub index_params: Option<IndexParams>,
    /// ANN: recall@10 measured by the last train (1.0 when exact).
    pub recall_at_10: f64,
    pub last_trained_ms: Option<u64>,
    /// ANN: bytes in memory per vector of the dense search (vectors and index).
    pub bytes_per_vector: f64,
}

#[derive(Debug, Serialize)]
pub struct StatsAnswer {
    pub collections: Vec<CollectionStats>,
}

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub bm25_k1: f64,
    pub bm25_b: f64,
    pub rrf_k: f64,
    pub embed_batch: usize,
    /// Word pieces a chunk repeats of the one before it (chunk.rs).
    pub chunk_overlap_tokens: usize,
    /// Below this many vectors `train` keeps exact search (ANN).
    pub exact_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bm25_k1: 1.2,
            bm25_b: 0.75,
            rrf_k: 60.0,
            embed_batch: 32,
            chunk_overlap_tokens: 32,
            exact_threshold: 20000,
        }
    }
}

/// A collection name is `[a-z0-9_-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

// ---- RAG: `rag.ask` (rag.rs) ----

/// `rag.ask`: retrieve the chunks that answer a question and let a chat model answer from them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    pub collection: String,
    pub question: String,
    /// Chunks given to the model (default 5).
    pub k: Option<usize>,
    pub mode: Option<Mode>,
    pub filter: Option<Value>,
    /// A chat model `llmserver` offers (default: its first chat model).
    pub model: Option<String>,
    /// Most tokens of the answer (default 256).
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub stream: bool,
}

/// One retrieved chunk, numbered as the prompt numbers it (`[n]`).
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    pub n: usize,
    pub id: String,
    pub chunk: usize,
    pub score: f64,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct AskAnswer {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub model: String,
    pub took_ms: f64,
}

/// The first event of a streamed answer.
#[derive(Debug, Serialize)]
pub struct AskCitations {
    pub citations: Vec<Citation>,
    pub model: String,
}

/// The last event of a streamed answer.
#[derive(Debug, Serialize)]
pub struct AskDone {
    pub answer: String,
    pub took_ms: f64,
}

// ---- STORAGE: snapshots (snapshot.rs) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    pub collection: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SnapshotListRequest {
    pub collection: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotId {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestore {
    pub id: String,
    /// Restore as a new collection of this name (409 if it exists); without it the
    /// snapshot's collection is replaced.
    #[serde(rename = "as")]
    pub as_name: Option<String>,
}

/// One file of a snapshot, as its manifest lists it (`path` relative to the snapshot).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub collection: String,
    pub created_ms: u64,
    pub documents: usize,
    pub chunks: usize,
    /// The files' bytes together.
    pub bytes: u64,
    pub files: Vec<SnapshotFile>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotVerified {
    pub id: String,
    pub ok: bool,
    pub files: usize,
    pub bytes: u64,
}

// ---- ANN: `train`, `train.status`, `query.batch` (ann/job.rs) ----

pub use crate::ann::{IndexParams, Quantization};

/// `train`: build an HNSW index in the background.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    pub collection: String,
    /// Links per node (default 16; level 0 has twice as many).
    pub m: Option<usize>,
    /// Beam width while building (default 200).
    pub ef_construction: Option<usize>,
    /// Beam width of a query; null: the smallest of 32..512 that reaches `target_recall`.
    pub ef_search: Option<usize>,
    /// Default 0.95.
    pub target_recall: Option<f64>,
    /// `none` (default) or `int8`.
    pub quantization: Option<Quantization>,
    /// Live vectors used as queries to measure recall@10 (default 1000).
    pub sample: Option<usize>,
    /// Answer when the job is done.
    #[serde(default)]
    pub wait: bool,
    /// Train even below `exact_threshold`.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize)]
pub struct TrainExact {
    pub collection: String,
    pub index: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct TrainStarted {
    pub collection: String,
    pub job: TrainStatus,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStatusRequest {
    pub collection: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainState {
    None,
    Running,
    Done,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainStatus {
    pub collection: String,
    pub state: TrainState,
    pub progress: f64,
    pub index: &'static str,
    pub params: Option<IndexParams>,
    pub recall_at_10: Option<f64>,
    pub sample: usize,
    pub build_ms: Option<f64>,
    pub bytes_per_vector: f64,
    pub index_bytes: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
    /// Live vectors when the job finished (or now, without a job).
    pub vectors: usize,
}

/// `query.batch`: dense queries, many vectors at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchQueryRequest {
    pub collection: String,
    pub vectors: Vec<Vec<f64>>,
    pub k: Option<usize>,
    pub filter: Option<Value>,
    pub with_text: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct BatchHits {
    pub hits: Vec<Hit>,
}

#[derive(Debug, Serialize)]
pub struct BatchQueryAnswer {
    pub results: Vec<BatchHits>,
    pub took_ms: f64,
}

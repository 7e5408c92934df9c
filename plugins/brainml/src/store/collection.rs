//! One collection in memory: its documents, chunk slots, contiguous vectors and BM25 index,
//! rebuilt at start from its write-ahead log and kept in step with it on every write.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::record::{self, Entry};
use crate::api::{CollectionInfo, Distance};
use crate::bm25::Bm25;
use crate::wal::{self, Wal};

/// A log is compacted once it is longer than this ...
const COMPACT_MIN_BYTES: u64 = 8 << 20;
/// ... and its live documents take less than this share of it.
const COMPACT_LIVE_SHARE: f64 = 0.5;
/// A compacted log's records hold about this many bytes each.
const COMPACT_RECORD_BYTES: usize = 4 << 20;

/// What a collection is, kept in `meta.json` beside its log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub name: String,
    pub model: Option<String>,
    pub dim: usize,
    pub distance: Distance,
}

/// One log record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Upsert { docs: Vec<DocRecord> },
    Delete { ids: Vec<String> },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DocRecord {
    pub id: String,
    pub metadata: Map<String, Value>,
    pub chunks: Vec<ChunkRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub text: Option<String>,
    pub vector: Vec<f32>,
}

struct Doc {
    metadata: Map<String, Value>,
    slots: Vec<usize>,
    /// About the bytes the document takes in a compacted log.
    bytes: u64,
}

struct Chunk {
    doc: String,
    index: usize,
    /// Shared, so that a compaction's snapshot takes it without a copy.
    text: Option<Arc<str>>,
}

/// Which chunks one query may return (see [`Collection::allowed`]): `None` is every live
/// chunk, else a mask by slot.
pub struct Allowed(Option<Vec<bool>>);

/// A test on a document's metadata (a query's filter).
pub type Keep<'a> = &'a dyn Fn(&Map<String, Value>) -> bool;

/// A scored chunk, ready to answer.
pub struct Scored {
    pub id: String,
    pub chunk: usize,
    pub score: f64,
    pub text: Option<String>,
    pub metadata: Map<String, Value>,
}

pub struct Collection {
    pub meta: Meta,
    pub dir: PathBuf,
    /// Set when the collection is deleted while a write was being prepared.
    pub dropped: bool,
    wal: Wal,
    /// Shared, so that a compaction's snapshot takes them without a copy.
    docs: HashMap<String, Arc<Doc>>,
    chunks: Vec<Option<Chunk>>,
    /// Slot `i`'s vector (in memory, or on disk under an int8 index: see `crate::ann`).
    vectors: crate::ann::vectors::Vectors,
    free: Vec<usize>,
    live_chunks: usize,
    bm25: Bm25,
    /// About the bytes the live documents take in a compacted log: the rest of the log is
    /// dead (overwritten or deleted documents).
    live_bytes: u64,
    /// No compaction is tried before the log is this long (raised after a failed one).
    compact_at: u64,
    /// Set while a compaction runs outside the lock (see [`compact_concurrently`]).
    compacting: Arc<AtomicBool>,
    /// While a compaction runs: the vectors it still needs that writes replaced since its
    /// snapshot (a `Mutex` so that the snapshot, taken under the read lock, can set it up).
    preserve: Mutex<Option<Preserved>>,
    /// ANN: the trained HNSW index (None: exact search); see `crate::ann`.
    pub ann: Option<crate::ann::AnnIndex>,
    /// ANN: the slots written while a train runs (it inserts them before switching in).
    pub ann_pending: Option<Vec<u32>>,
    /// ANN: an index that was saved but could not be read back: retrain with these params.
    pub ann_rebuild: Option<crate::ann::IndexParams>,
}

/// Query counters, kept apart so that queries share the collection's read lock.
#[derive(Default)]
pub struct QueryStats {
    pub queries: u64,
    recent_ms: VecDeque<f64>,
}

impl QueryStats {
    pub fn record(&mut self, ms: f64) {
        self.queries += 1;
        if self.recent_ms.len() == 1000 {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(ms);
    }

    /// The `q` quantile (0..=1) of the last 1000 query times.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.recent_ms.is_empty() {
            return 0.0;
        }
        let mut v: Vec<f64> = self.recent_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// Eight running sums, so the compiler can keep them in vector registers.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scale to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Keep the `k` best of `v`, best first.
pub fn top_k(mut v: Vec<(usize, f64)>, k: usize) -> Vec<(usize, f64)> {
    let best = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, best);
        v.truncate(k);
    }
    v.sort_by(best);
    v.truncate(k);
    v
}

impl Collection {
    /// Open a collection's folder: replay its log (cutting a bad tail, reported through
    /// `warn`) and build the in-memory indexes.
    pub fn open(dir: &Path, meta: Meta, warn: &dyn Fn(&str)) -> std::io::Result<Collection> {
        let path = dir.join("wal.log");
        let mut c = Collection {
            meta,
            dir: dir.to_path_buf(),
            dropped: false,
            wal: Wal::open(&path)?,
            docs: HashMap::new(),
            chunks: Vec::new(),
            vectors: Default::default(),
            free: Vec::new(),
            live_chunks: 0,
            bm25: Bm25::default(),
            live_bytes: 0,
            compact_at: COMPACT_MIN_BYTES,
            compacting: Arc::new(AtomicBool::new(false)),
            preserve: Mutex::new(None),
            ann: None,
            ann_pending: None,
            ann_rebuild: None,
        };
        // Each record is decoded once and applied at once: nothing but the state is kept.
        let cut = wal::replay(&path, &mut |payload| match record::decode(payload) {
            Some(entry) => {
                c.apply_entry(entry);
                true
            }
            None => false,
        })?;
        if let Some(cut) = &cut {
            c.wal.cut(cut.offset)?;
            warn(&format!(
                "collection {}: cut its write-ahead log {} at byte {}: {} ({} bytes dropped; \
                 every acknowledged write before it is kept)",
                c.meta.name,
                path.display(),
                cut.offset,
                cut.reason,
                cut.dropped_bytes
            ));
        }
        if c.should_compact() {
            let before = c.wal.len();
            match c.compact() {
                Ok(()) => warn(&format!(
                    "collection {}: compacted its write-ahead log from {before} to {} bytes",
                    c.meta.name,
                    c.wal.len()
                )),
                Err(e) => warn(&format!(
                    "collection {}: could not compact its write-ahead log (kept as it is): {e}",
                    c.meta.name
                )),
            }
        }
        c.ann_load(warn);
        Ok(c)
    }

    pub fn info(&self) -> CollectionInfo {
        CollectionInfo {
            name: self.meta.name.clone(),
            model: self.meta.model.clone(),
            dim: self.meta.dim,
            distance: self.meta.distance,
            documents: self.docs.len(),
            chunks: self.live_chunks,
        }
    }

    pub fn documents(&self) -> usize {
        self.docs.len()
    }

    pub fn chunks(&self) -> usize {
        self.live_chunks
    }

    /// Make `record` durable (fsynced), then visible. Answers whether the log now holds so
    /// much dead data that it should be compacted: the caller then runs
    /// [`compact_concurrently`] once it has let go of the lock.
    pub fn write(&mut self, record: Record) -> std::io::Result<bool> {
        if self.dropped {
            return Err(gone(&self.meta.name));
        }
        self.wal.append(&record::encode(&record))?;
        self.apply(record);
        Ok(self.should_compact())
    }

    fn apply_entry(&mut self, entry: Entry) {
        match entry {
            Entry::Record(r) => self.apply(r),
            Entry::Layout { slots, free } => {
                // A compacted log starts here: its state replaces whatever came before.
                self.docs.clear();
                self.bm25 = Bm25::default();
                self.live_chunks = 0;
                self.live_bytes = 0;
                self.chunks = (0..slots).map(|_| None).collect();
                self.vectors.reset(slots, self.meta.dim);
                self.free = free;
            }
            Entry::Placed { docs } => {
                for (d, slots) in docs {
                    self.upsert(d, Some(&slots));
                }
            }
        }
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Upsert { docs } => {
                for d in docs {
                    self.upsert(d, None);
                }
            }
            Record::Delete { ids } => {
                for id in ids {
                    self.remove(&id);
                }
            }
        }
    }

    /// Replace a document; its chunks go to free slots, or to `placed` ones (a compacted log).
    fn upsert(&mut self, d: DocRecord, placed: Option<&[usize]>) {
        self.remove(&d.id);
        let bytes = record::doc_bytes(&d);
        let mut slots = Vec::with_capacity(d.chunks.len());
        for (index, ch) in d.chunks.into_iter().enumerate() {
            if ch.vector.len() != self.meta.dim {
                continue; // never written so; a guard for a hand-edited log
            }
            let want = placed.and_then(|p| p.get(index).copied());
            let slot = self.take_slot(want);
            let preserve = self.preserve.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = preserve {
                // A compaction still needs this slot's vector as of its snapshot.
                if p.live.get(slot).copied().unwrap_or(false) {
                    p.saved.entry(slot).or_insert_with(|| self.vectors.get(slot).into_owned());
                }
            }
            self.vectors.set(slot, &ch.vector);
            if let Some(t) = &ch.text {
                self.bm25.insert(slot, t);
            }
            let text = ch.text.map(Arc::from);
            self.chunks[slot] = Some(Chunk { doc: d.id.clone(), index, text });
            self.live_chunks += 1;
            self.ann_written(slot);
            slots.push(slot);
        }
        self.live_bytes += bytes;
        self.docs.insert(d.id, Arc::new(Doc { metadata: d.metadata, slots, bytes }));
    }

    /// A slot for a new chunk: `want` when it is empty (a compacted log's placement; its
    /// layout record made it and left it off the free list), else a free one or a new one.
    fn take_slot(&mut self, want: Option<usize>) -> usize {
        if let Some(s) = want {
            if s < self.chunks.len() && self.chunks[s].is_none() {
                return s;
            }
        }
        while let Some(s) = self.free.pop() {
            if self.chunks.get(s).is_some_and(Option::is_none) {
                return s;
            }
        }
        self.chunks.push(None);
        self.vectors.push_slot(self.meta.dim);
        self.chunks.len() - 1
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(doc) = self.docs.remove(id) else { return false };
        self.live_bytes = self.live_bytes.saturating_sub(doc.bytes);
        for &slot in &doc.slots {
            if let Some(ch) = self.chunks[slot].take() {
                if let Some(t) = &ch.text {
                    self.bm25.remove(slot, t);
                }
                self.live_chunks -= 1;
                self.free.push(slot);
            }
        }
        true
    }

    /// The ids of the documents that exist among `ids`, or that pass `keep`.
    pub fn matching_ids(&self, keep: &dyn Fn(&Map<String, Value>) -> bool) -> Vec<String> {
        let mut ids: Vec<String> =
            self.docs.iter().filter(|(_, d)| keep(&d.metadata)).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    pub fn contains(&self, id: &str) -> bool {
        self.docs.contains_key(id)
    }

    /// The chunks a query may return, worked out once per query: every live chunk, or
    /// those of the documents `keep` passes. (Looking up each scored chunk's document instead
    /// took ~90% of an exact or BM25 query at 100k chunks.)
    pub fn allowed(&self, keep: Option<Keep<'_>>) -> Allowed {
        let Some(keep) = keep else { return Allowed(None) };
        let mut mask = vec![false; self.chunks.len()];
        for d in self.docs.values().filter(|d| keep(&d.metadata)) {
            for &slot in &d.slots {
                mask[slot] = true;
            }
        }
        Allowed(Some(mask))
    }

    fn passes(&self, slot: usize, allowed: &Allowed) -> bool {
        match &allowed.0 {
            None => self.chunks.get(slot).is_some_and(Option::is_some),
            Some(mask) => mask.get(slot).copied().unwrap_or(false),
        }
    }

    /// Exact dense search: every live chunk that passes `keep`, scored against `q` (higher is
    /// better: the dot product, the cosine of unit vectors, or minus the squared distance).
    pub fn dense(&self, q: &[f32], allowed: &Allowed) -> Vec<(usize, f64)> {
        let l2 = self.meta.distance == Distance::L2;
        let mut out = Vec::new();
        self.vectors.for_each(|slot, v| {
            if self.passes(slot, allowed) {
                let s = if l2 { -l2_squared(v, q) } else { dot(v, q) };
                out.push((slot, s as f64));
            }
        });
        out
    }

    pub fn bm25(&self, text: &str, k1: f64, b: f64, allowed: &Allowed) -> Vec<(usize, f64)> {
        self.bm25.search(text, k1, b, &|slot| self.passes(slot, allowed))
    }

    pub fn scored(&self, slot: usize, score: f64, with_text: bool) -> Option<Scored> {
        let ch = self.chunks.get(slot)?.as_ref()?;
        let doc = self.docs.get(&ch.doc)?;
        Some(Scored {
            id: ch.doc.clone(),
            chunk: ch.index,
            score,
            text: if with_text { ch.text.as_deref().map(str::to_owned) } else { None },
            metadata: doc.metadata.clone(),
        })
    }

    pub fn bytes_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// A rough count of the bytes the collection holds in memory.
    pub fn bytes_in_memory(&self) -> u64 {
        let texts: usize = self
            .chunks
            .iter()
            .flatten()
            .map(|c| c.doc.len() + c.text.as_ref().map_or(0, |t| t.len()) + 64)
            .sum();
        let docs: usize = self
            .docs
            .iter()
            .map(|(id, d)| id.len() + 96 + d.slots.len() * 8 + d.metadata.len() * 64)
            .sum();
        (self.vectors.bytes_in_memory() + texts + docs) as u64
            + self.bm25.bytes()
            + self.ann.as_ref().map_or(0, |a| a.bytes() as u64)
    }
}

/// ANN (see `crate::ann`): the dense search through the trained index, and its upkeep.
impl Collection {
    /// A slot got a new vector: into the live index, and noted for a train in flight.
    fn ann_written(&mut self, slot: usize) {
        if let Some(p) = &mut self.ann_pending {
            p.push(slot as u32);
        }
        if let Some(a) = &mut self.ann {
            a.insert(&self.vectors, slot);
        }
    }

    /// A copy of the vectors and the live slots, for a train; the slots written from now on
    /// are noted.
    pub fn ann_copy(&mut self) -> (Vec<f32>, Vec<u32>) {
        self.ann_pending = Some(Vec::new());
        let live = (0..self.chunks.len()).filter(|&s| self.chunks[s].is_some()).map(|s| s as u32);
        (self.vectors.copy_all(), live.collect())
    }

    /// Switch a freshly trained index in, after inserting the slots written since the copy.
    pub fn ann_switch(&mut self, mut index: crate::ann::AnnIndex) {
        for slot in self.ann_pending.take().unwrap_or_default() {
            if self.chunks.get(slot as usize).is_some_and(Option::is_some) {
                index.insert(&self.vectors, slot as usize);
            }
        }
        self.ann_rebuild = None;
        self.ann = Some(index);
        self.ann_place_vectors();
    }

    /// Under an int8 index the f32 vectors live in `vectors.f32` (rescoring reads them there);
    /// otherwise in memory. If the file cannot be written they stay in memory.
    fn ann_place_vectors(&mut self) {
        let quantized = self.ann.as_ref().is_some_and(|a| a.codes.is_some());
        if quantized {
            let _ = self.vectors.to_disk(&self.dir);
        } else {
            self.vectors.to_ram();
            self.vectors.shrink();
        }
    }

    /// Save the index beside the log (`ann.bin`).
    pub fn ann_save(&self) -> std::io::Result<()> {
        match &self.ann {
            Some(a) => a.save(&self.dir, &self.vectors),
            None => Ok(()),
        }
    }

    /// Read `ann.bin` if there is one: slots whose vector changed since it was saved are
    /// inserted again; an unreadable or mismatched file is left for a retrain.
    fn ann_load(&mut self, warn: &dyn Fn(&str)) {
        match crate::ann::AnnIndex::load(&self.dir) {
            Ok(None) => {}
            Ok(Some((mut index, sums))) => {
                if index.info.dim != self.meta.dim
                    || index.info.l2 != (self.meta.distance == Distance::L2)
                    || index.graph.len() > self.vectors.slots()
                {
                    warn(&format!(
                        "collection {}: its saved index is for another dimension, distance or \
                         more slots than the log holds: searched exactly while it is rebuilt",
                        self.meta.name
                    ));
                    self.ann_rebuild = Some(index.info.params.clone());
                    return;
                }
                let now = crate::ann::slot_sums(&self.vectors);
                for (slot, sum) in now.iter().enumerate() {
                    let live = self.chunks[slot].is_some();
                    if live && (sums.get(slot) != Some(sum) || !index.graph.contains(slot as u32)) {
                        index.insert(&self.vectors, slot);
                    }
                }
                self.ann = Some(index);
                self.ann_place_vectors();
            }
            Err(e) => {
                warn(&format!(
                    "collection {}: {e}: searched exactly while the index is rebuilt",
                    self.meta.name
                ));
                self.ann_rebuild = Some(crate::ann::IndexParams {
                    m: 16,
                    ef_construction: 200,
                    ef_search: 0,
                    quantization: crate::ann::Quantization::None,
                });
            }
        }
    }

    /// The `k` best live chunks that pass `keep`, best first: through the index when there is
    /// one, exactly otherwise, and exactly over the filtered set when a filter passes few
    /// (under `exact_threshold` or under 10% of the chunks); else the walk applies the filter
    /// with an ef widened by how much it filters out.
    pub fn dense_k(
        &self,
        q: &[f32],
        k: usize,
        allowed: &Allowed,
        exact_threshold: usize,
    ) -> Vec<(usize, f64)> {
        let Some(ann) = &self.ann else { return top_k(self.dense(q, allowed), k) };
        let mut ef = ann.info.params.ef_search.max(k);
        if let Some(mask) = &allowed.0 {
            let passing = mask.iter().filter(|&&b| b).count();
            if passing < exact_threshold || passing * 10 < self.live_chunks {
                return top_k(self.dense(q, allowed), k);
            }
            let widen = self.live_chunks as f64 / passing.max(1) as f64;
            ef = ((ef as f64 * widen).ceil() as usize).min(4096);
        }
        ann.search(&self.vectors, q, k, ef, &|s| self.passes(s as usize, allowed))
    }

    /// Bytes in memory per live vector that the dense search needs: the f32 vectors and the
    /// index (graph, codes).
    pub fn bytes_per_vector(&self) -> f64 {
        let ann = self.ann.as_ref().map_or(0, |a| a.bytes());
        (self.vectors.bytes_in_memory() + ann) as f64 / self.live_chunks.max(1) as f64
    }
}

/// The write-ahead log's upkeep: compaction, and what snapshots read.
impl Collection {
    fn should_compact(&self) -> bool {
        let len = self.wal.len();
        len >= self.compact_at && (self.live_bytes as f64) < len as f64 * COMPACT_LIVE_SHARE
    }

    /// Rewrite the log as the live state alone, in one go under the caller's `&mut` (at open,
    /// and in tests): the same steps as [`compact_concurrently`]. Crash-safe, and on an error
    /// the old log stays in use. The chunks keep their slots.
    pub fn compact(&mut self) -> std::io::Result<()> {
        let failpoint = wal::Failpoint::from_env();
        let frozen = self.freeze(false);
        let mut at = 0;
        let vectors = &self.vectors;
        let mut records = std::iter::from_fn(|| frozen.record(&mut at, &|s| vectors.get(s)));
        let new = wal::write_rewrite(self.wal.path(), &mut records, failpoint, &|| false)?;
        self.finish_compaction(new, frozen.from, failpoint).map(drop)
    }

    /// The live state now, for a compaction (see [`Frozen`]); with `preserve`, writes from now
    /// on keep the vectors they replace for it (it runs without the lock).
    fn freeze(&self, preserve: bool) -> Frozen {
        let docs = self.docs.iter().map(|(id, d)| (id.clone(), d.clone())).collect();
        if preserve {
            let live = self.chunks.iter().map(Option::is_some).collect();
            *self.preserve.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(Preserved { live, saved: HashMap::new() });
        }
        Frozen {
            from: self.wal.len(),
            log: self.wal.path().to_path_buf(),
            slots: self.chunks.len(),
            free: self.free.clone(),
            docs,
            texts: self.chunks.iter().map(|c| c.as_ref().and_then(|c| c.text.clone())).collect(),
        }
    }

    /// Slot `slot`'s vector as of the running compaction's snapshot.
    fn frozen_vector(&self, saved: Option<&Preserved>, slot: usize) -> Cow<'_, [f32]> {
        match saved.and_then(|p| p.saved.get(&slot)) {
            Some(v) => Cow::Owned(v.clone()),
            None => self.vectors.get(slot),
        }
    }

    /// The last step of a compaction, under the write lock: the records written since the
    /// snapshot are appended to the new log, which then replaces the old one. Answers the old
    /// log's handle, to be closed once the lock is let go (see [`Wal::finish_rewrite`]).
    fn finish_compaction(
        &mut self,
        new: wal::Rewrite,
        from: u64,
        failpoint: Option<wal::Failpoint>,
    ) -> std::io::Result<std::fs::File> {
        if self.dropped {
            new.abandon();
            return Err(gone(&self.meta.name));
        }
        let old = self.wal.finish_rewrite(new, from, failpoint)?;
        self.compact_at = COMPACT_MIN_BYTES;
        *self.preserve.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(old)
    }

    /// The log's length in bytes.
    pub fn log_bytes(&self) -> u64 {
        self.wal.len()
    }

    /// A handle on the log and its length now (take it under the collection's lock): that
    /// prefix stays readable and unchanged while writes and compactions go on.
    pub fn log_reader(&self) -> std::io::Result<(std::fs::File, u64)> {
        self.wal.reader()
    }
}

fn gone(name: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("the collection {name} was deleted or replaced"),
    )
}

/// The live state of a collection as of one log length, taken for a compaction under the
/// read lock without copying much: the documents and texts are shared with the collection.
/// The vectors are not copied: the compaction reads them from the collection a record at a
/// time (under the read lock), and a write that replaces one it still needs keeps the old
/// one aside first ([`Preserved`]).
struct Frozen {
    /// The log's length when it was taken: the records after it are appended at the end.
    from: u64,
    log: PathBuf,
    slots: usize,
    free: Vec<usize>,
    docs: Vec<(String, Arc<Doc>)>,
    /// Slot `i`'s text.
    texts: Vec<Option<Arc<str>>>,
}

/// The vectors a running compaction still needs that writes replaced since its snapshot.
struct Preserved {
    /// The slots live at the snapshot.
    live: Vec<bool>,
    /// Their vectors as of the snapshot, kept when a write replaced them.
    saved: HashMap<usize, Vec<f32>>,
}

impl Frozen {
    /// The compacted log's next record (`at`: the records made so far): a layout record,
    /// then every live document in the slots it holds, about [`COMPACT_RECORD_BYTES`] a
    /// record, each slot's vector as of the snapshot through `vector`; `None` at the end.
    fn record<'v>(
        &self,
        at: &mut usize,
        vector: &dyn Fn(usize) -> Cow<'v, [f32]>,
    ) -> Option<Vec<u8>> {
        if *at == 0 {
            *at = 1;
            return Some(record::encode_layout(self.slots, &self.free));
        }
        let mut w = record::Writer::new(true);
        while let Some((id, d)) = self.docs.get(*at - 1) {
            *at += 1;
            w.doc(id, &d.metadata, d.slots.len());
            for &slot in &d.slots {
                w.chunk(Some(slot), self.texts[slot].as_deref(), &vector(slot));
            }
            if w.len() >= COMPACT_RECORD_BYTES {
                break;
            }
        }
        (!w.is_empty()).then(|| w.finish())
    }
}

/// Where [`compact_concurrently`] is, for a test to act (write, query) at that point; it
/// holds no lock at either.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// The live state is taken; nothing written yet.
    Frozen,
    /// The compacted log is written and fsynced beside the log; the last step is next.
    Written,
    /// The new log is in use; the old one's handle is closed next.
    Switched,
}

/// Clears [`Collection::compacting`] however the compaction ends.
struct Claim(Arc<AtomicBool>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Compact `c`'s log if it is due and no other compaction of it runs, holding its lock only
/// briefly: under the read lock (queries go on) the live state is taken ([`Frozen`]: the
/// vectors are copied); with no lock the compacted log is written and fsynced to a temp file;
/// under the write lock the records written meanwhile are appended to it, and it replaces the
/// log (see [`wal::Wal::finish_rewrite`]). Runs on the calling thread (a write call's, after it
/// let go of the lock); stops early, keeping the log as it is, once `cancelled` answers true.
/// Answers whether it compacted. On an error the old log stays in use and the next try waits
/// until the log has grown by [`COMPACT_MIN_BYTES`] again.
pub fn compact_concurrently(
    c: &RwLock<Collection>,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<bool> {
    compact_concurrently_at(c, cancelled, wal::Failpoint::from_env(), &mut |_| {})
}

/// [`compact_concurrently`] with a failpoint and a hook called at each [`Stage`] (tests).
pub fn compact_concurrently_at(
    c: &RwLock<Collection>,
    cancelled: &dyn Fn() -> bool,
    failpoint: Option<wal::Failpoint>,
    hook: &mut dyn FnMut(Stage),
) -> std::io::Result<bool> {
    let poisoned = || std::io::Error::other("the collection's lock was poisoned");
    let (frozen, _claim) = {
        let g = c.read().map_err(|_| poisoned())?;
        if g.dropped || !g.should_compact() {
            return Ok(false);
        }
        if g.compacting.swap(true, Ordering::SeqCst) {
            return Ok(false); // another call is compacting it
        }
        let claim = Claim(g.compacting.clone());
        (g.freeze(true), claim)
    };
    hook(Stage::Frozen);
    // Each record is made under the read lock (its vectors are read from the collection, or
    // from those writes kept aside), and written to the file with no lock held. A poisoned
    // lock is read through: the last step, which needs the write lock, then refuses.
    let mut at = 0;
    let mut records = std::iter::from_fn(|| {
        let g = c.read().unwrap_or_else(PoisonError::into_inner);
        let saved = g.preserve.lock().unwrap_or_else(PoisonError::into_inner);
        frozen.record(&mut at, &|slot| g.frozen_vector(saved.as_ref(), slot))
    });
    let written = wal::write_rewrite(&frozen.log, &mut records, failpoint, cancelled);
    let from = frozen.from;
    drop(frozen);
    let finished = written.and_then(|new| {
        hook(Stage::Written);
        let mut g = c.write().map_err(|_| poisoned())?;
        g.finish_compaction(new, from, failpoint)
    });
    match finished {
        Ok(old) => {
            hook(Stage::Switched);
            drop(old); // the old log's blocks are freed here, with no lock held
            Ok(true)
        }
        Err(e) => {
            if let Ok(mut g) = c.write() {
                *g.preserve.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // Try again once the log has grown by as much again.
                    g.compact_at = g.wal.len() + COMPACT_MIN_BYTES;
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
impl Collection {
    /// Compact from this log length on (when the live documents take under half the log).
    pub(crate) fn compact_from(&mut self, bytes: u64) {
        self.compact_at = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_scores_match_a_plain_loop_and_top_k_orders_them() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 3.0 - i as f32).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((l2_squared(&a, &b) - plain).abs() < 1e-2);
        let top = top_k(vec![(0, 0.1), (1, 0.9), (2, 0.5), (3, 0.7)], 2);
        assert_eq!(top, [(1, 0.9), (3, 0.7)]);
    }

    #[test]
    fn replayed_log_rebuilds_the_same_collection() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta { name: "t".into(), model: None, dim: 2, distance: Distance::Dot };
        let doc = |id: &str, v: [f32; 2]| DocRecord {
            id: id.into(),
            metadata: Map::new(),
            chunks: vec![ChunkRecord { text: Some(format!("text of {id}")), vector: v.to_vec() }],
        };
        {
            let mut c = Collection::open(dir.path(), meta.clone(), &|_| {}).unwrap();
            c.write(Record::Upsert { docs: vec![doc("a", [1.0, 0.0]), doc("b", [0.0, 1.0])] })
                .unwrap();
            c.write(Record::Upsert { docs: vec![doc("a", [0.5, 0.5])] }).unwrap();
            c.write(Record::Delete { ids: vec!["b".into()] }).unwrap();
        }
        let c = Collection::open(dir.path(), meta, &|m| panic!("{m}")).unwrap();
        assert_eq!((c.documents(), c.chunks()), (1, 1));
        let hits = c.dense(&[1.0, 1.0], &c.allowed(None));
        assert_eq!(hits, [(0, 1.0)], "a's new vector, in the slot b freed or its own");
        assert_eq!(c.bm25("text", 1.2, 0.75, &c.allowed(None)).len(), 1);
    }
}

//! Approximate nearest-neighbour search: an HNSW graph over a collection's slots ([`hnsw`]),
//! optionally searched on int8 codes ([`quant`]), trained in the background ([`job`]) and kept
//! in the collection's folder as `ann.bin` ([`AnnIndex::save`], [`AnnIndex::load`]).

pub mod hnsw;
pub mod job;
pub mod quant;
pub mod space;
pub mod vectors;

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use hnsw::{Hnsw, Params, Scratch};
use quant::Int8;
use space::{CodeSpace, FlatSpace, Metric};
use vectors::Vectors;

/// The `ef_search` values a train tries, smallest first.
pub const EF_LADDER: [usize; 9] = [32, 48, 64, 96, 128, 192, 256, 384, 512];
const MAGIC: &[u8; 8] = b"BKGANN01";
pub const FILE: &str = "ann.bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    #[default]
    None,
    Int8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub quantization: Quantization,
}

/// What the index knows about itself, saved in `ann.bin`'s header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub params: IndexParams,
    pub dim: usize,
    pub l2: bool,
    pub recall_at_10: f64,
    pub sample: usize,
    pub build_ms: f64,
    pub trained_ms: u64,
}

pub struct AnnIndex {
    pub info: IndexInfo,
    pub graph: Hnsw,
    pub codes: Option<Int8>,
    scratch: Mutex<Vec<Scratch>>,
}

impl AnnIndex {
    pub fn new(info: IndexInfo, graph: Hnsw, codes: Option<Int8>) -> AnnIndex {
        AnnIndex { info, graph, codes, scratch: Mutex::new(Vec::new()) }
    }

    pub fn metric(&self) -> Metric {
        if self.info.l2 {
            Metric::L2
        } else {
            Metric::Dot
        }
    }

    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        let mut s = self.scratch.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
        let out = f(&mut s);
        if let Ok(mut p) = self.scratch.lock() {
            if p.len() < 64 {
                p.push(s);
            }
        }
        out
    }

    /// The `k` best slots that pass `accept`, best first, with exact scores. `vectors` are the
    /// collection's f32 vectors (in memory unless the index is quantized); on int8 codes the
    /// `ef` candidates found are rescored exactly on them (read from disk).
    pub fn search(
        &self,
        vectors: &Vectors,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(usize, f64)> {
        let (dim, metric) = (self.info.dim, self.metric());
        self.with_scratch(|s| match &self.codes {
            None => {
                // Unquantized indexes keep the vectors in memory (the collection sees to it).
                let Some(vectors) = vectors.ram() else { return Vec::new() };
                let space = FlatSpace { vectors, dim, metric };
                let found = self.graph.search(&space, q, k, ef, accept, s);
                found.into_iter().map(|c| (c.id as usize, c.score as f64)).collect()
            }
            Some(codes) => {
                let space = CodeSpace { codes, metric };
                let found = self.graph.search(&space, q, ef.max(k), ef, accept, s);
                let mut exact: Vec<(usize, f64)> = found
                    .into_iter()
                    .filter(|c| (c.id as usize) < vectors.slots())
                    .map(|c| {
                        let v = vectors.get(c.id as usize);
                        (c.id as usize, space::score(metric, q, &v) as f64)
                    })
                    .collect();
                exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                exact.truncate(k);
                exact
            }
        })
    }

    /// Put slot `slot` (its vector now in `vectors`) into the graph.
    pub fn insert(&mut self, vectors: &Vectors, slot: usize) {
        let (dim, metric) = (self.info.dim, self.metric());
        if slot >= vectors.slots() {
            return;
        }
        let mut s = self.scratch.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
        match &mut self.codes {
            None => {
                let Some(vectors) = vectors.ram() else { return };
                let space = FlatSpace { vectors, dim, metric };
                self.graph.insert(&space, slot as u32, &mut s);
            }
            Some(codes) => {
                codes.set(slot as u32, &vectors.get(slot), metric);
                let space = CodeSpace { codes, metric };
                self.graph.insert(&space, slot as u32, &mut s);
            }
        }
        if let Ok(mut p) = self.scratch.lock() {
            p.push(s);
        }
    }

    /// Bytes the index holds in memory (the graph, and the codes when quantized).
    pub fn bytes(&self) -> usize {
        self.graph.bytes() + self.codes.as_ref().map_or(0, Int8::bytes)
    }

    /// Write `ann.bin` (atomically): header, graph, codes, and a checksum of each slot's vector
    /// so that [`AnnIndex::load`] knows which slots changed since.
    pub fn save(&self, dir: &Path, vectors: &Vectors) -> std::io::Result<()> {
        let mut body = Vec::new();
        let header = serde_json::to_vec(&self.info).map_err(std::io::Error::other)?;
        body.extend((header.len() as u64).to_le_bytes());
        body.extend(&header);
        self.graph.to_bytes(&mut body);
        match &self.codes {
            None => body.push(0),
            Some(c) => {
                body.push(1);
                for v in [&c.min, &c.scale, &c.norms] {
                    body.extend((v.len() as u64).to_le_bytes());
                    body.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                }
                body.extend((c.codes.len() as u64).to_le_bytes());
                body.extend(&c.codes);
            }
        }
        let sums = slot_sums(vectors);
        body.extend((sums.len() as u64).to_le_bytes());
        body.extend(sums.iter().flat_map(|x| x.to_le_bytes()));
        let mut file = Vec::with_capacity(body.len() + 12);
        file.extend(MAGIC);
        file.extend(&body);
        file.extend(crc32fast::hash(&body).to_le_bytes());
        crate::store::write_atomic(&dir.join(FILE), &file)
    }

    /// Read `ann.bin`: the index and each slot's vector checksum when it was saved. `Err` names
    /// what is wrong with the file.
    pub fn load(dir: &Path) -> Result<Option<(AnnIndex, Vec<u32>)>, String> {
        let bytes = match std::fs::read(dir.join(FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {FILE}: {e}")),
        };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(format!("{FILE} is not an index file"));
        }
        let body = &bytes[8..bytes.len() - 4];
        let want = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap_or_default());
        if crc32fast::hash(body) != want {
            return Err(format!("{FILE}: checksum mismatch"));
        }
        parse(body).map(Some).ok_or_else(|| format!("{FILE}: malformed"))
    }
}

fn parse(mut b: &[u8]) -> Option<(AnnIndex, Vec<u32>)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        (b.len() >= n).then(|| {
            let (h, t) = b.split_at(n);
            *b = t;
            h
        })
    }
    fn len(b: &mut &[u8]) -> Option<usize> {
        take(b, 8).map(|x| u64::from_le_bytes(x.try_into().unwrap_or_default()) as usize)
    }
    fn f32s(b: &mut &[u8]) -> Option<Vec<f32>> {
        let n = len(b)?;
        let raw = take(b, n.checked_mul(4)?)?;
        Some(
            raw.chunks_exact(4)
                .map(|x| f32::from_le_bytes(x.try_into().unwrap_or_default()))
                .collect(),
        )
    }
    let n = len(&mut b)?;
    let info: IndexInfo = serde_json::from_slice(take(&mut b, n)?).ok()?;
    let graph = Hnsw::from_bytes(&mut b)?;
    let codes = match take(&mut b, 1)?[0] {
        0 => None,
        1 => {
            let (min, scale, norms) = (f32s(&mut b)?, f32s(&mut b)?, f32s(&mut b)?);
            let n = len(&mut b)?;
            let codes = take(&mut b, n)?.to_vec();
            let dim = info.dim;
            if min.len() != dim || scale.len() != dim || dim == 0 || codes.len() % dim != 0 {
                return None;
            }
            if codes.len() / dim < graph.len() {
                return None;
            }
            Some(Int8 { dim, min, scale, codes, norms })
        }
        _ => return None,
    };
    let n = len(&mut b)?;
    let raw = take(&mut b, n.checked_mul(4)?)?;
    let sums =
        raw.chunks_exact(4).map(|x| u32::from_le_bytes(x.try_into().unwrap_or_default())).collect();
    b.is_empty().then(|| (AnnIndex::new(info, graph, codes), sums))
}

/// A checksum of each slot's vector.
pub fn slot_sums(vectors: &Vectors) -> Vec<u32> {
    let mut out = Vec::with_capacity(vectors.slots());
    vectors.for_each(|_, v| {
        let mut h = crc32fast::Hasher::new();
        for x in v {
            h.update(&x.to_le_bytes());
        }
        out.push(h.finalize());
    });
    out
}

#[allow(clippy::too_many_arguments)]
/// Build a fresh index over `live` slots of `vectors` with `threads` threads.
pub fn build(
    vectors: &[f32],
    dim: usize,
    l2: bool,
    live: &[u32],
    params: &IndexParams,
    threads: usize,
    progress: &std::sync::atomic::AtomicUsize,
    cancel: &(dyn Fn() -> bool + Sync),
) -> Option<AnnIndex> {
    let metric = if l2 { Metric::L2 } else { Metric::Dot };
    let seed = 0x0b5e_55ed ^ live.len() as u64;
    let mut graph =
        Hnsw::new(Params { m: params.m, ef_construction: params.ef_construction }, seed);
    let space = FlatSpace { vectors, dim, metric };
    if !graph.build(&space, live, threads, progress, cancel) {
        return None;
    }
    let codes = (params.quantization == Quantization::Int8).then(|| {
        let mut c = Int8::train(
            dim,
            live.iter().map(|&s| &vectors[s as usize * dim..(s as usize + 1) * dim]),
        );
        c.codes.resize(graph.len() * dim, 0);
        for &s in live {
            c.set(s, &vectors[s as usize * dim..(s as usize + 1) * dim], metric);
        }
        c
    });
    let info = IndexInfo {
        params: params.clone(),
        dim,
        l2,
        recall_at_10: 0.0,
        sample: 0,
        build_ms: 0.0,
        trained_ms: 0,
    };
    Some(AnnIndex::new(info, graph, codes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn an_index_survives_save_and_load_and_reports_changed_slots() {
        let dim = 8;
        // Distinct pseudo-random vectors: the test is about saving and loading, so the data must
        // not be one an approximate search can miss (a periodic pattern repeats vectors, and
        // HNSW's recall on exact duplicates is not guaranteed).
        let mut seed = 0x5eed_u64;
        let raw: Vec<f32> = (0..400 * dim)
            .map(|_| (hnsw::splitmix(&mut seed) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        for quantization in [Quantization::None, Quantization::Int8] {
            let dir = tempfile::tempdir().unwrap();
            let params = IndexParams { m: 8, ef_construction: 40, ef_search: 32, quantization };
            let live: Vec<u32> = (0..400).collect();
            let idx =
                build(&raw, dim, true, &live, &params, 1, &AtomicUsize::new(0), &|| false).unwrap();
            let mut vectors = Vectors::from_vec(dim, raw.clone());
            if quantization == Quantization::Int8 {
                // Quantized: the f32 vectors leave memory; rescoring reads them from the file.
                vectors.to_disk(dir.path()).unwrap();
                assert_eq!(vectors.bytes_in_memory(), 0);
            }
            idx.save(dir.path(), &vectors).unwrap();
            let q = raw[17 * dim..18 * dim].to_vec();
            let before = idx.search(&vectors, &q, 5, 32, &|_| true);
            assert_eq!(before[0].0, 17);
            let mut moved = q.clone();
            moved[0] += 1.0;
            vectors.set(3, &moved);
            let (back, sums) = AnnIndex::load(dir.path()).unwrap().unwrap();
            assert_eq!(back.info, idx.info);
            let now = slot_sums(&vectors);
            let changed: Vec<usize> = (0..400).filter(|&i| now[i] != sums[i]).collect();
            assert_eq!(changed, [3]);
            vectors.set(3, &raw[3 * dim..4 * dim]);
            assert_eq!(back.search(&vectors, &q, 5, 32, &|_| true), before);
            // A damaged file is refused with a reason.
            let p = dir.path().join(FILE);
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, &bytes).unwrap();
            let err = AnnIndex::load(dir.path()).err().unwrap();
            assert!(err.contains("checksum"), "{err}");
        }
    }
}

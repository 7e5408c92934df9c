//! A hierarchical navigable small-world graph (Malkov & Yashunin), in safe Rust.
//!
//! Layout, chosen for speed: level 0 is one contiguous array of `2 * m + 1` words per node
//! (`[count, neighbour...]`), the upper levels one shared array that each node with a level
//! above 0 owns `level * (m + 1)` words of. The words are `AtomicU32` so that a build can
//! insert from several threads at once (a neighbour list is changed under one of a few striped
//! locks; readers load its words without locking: a reader may see a list half changed, which
//! only ever holds valid node ids). Relaxed atomic loads are plain loads.
//!
//! Node ids are the collection's slots. The graph does not own vectors: every call takes a
//! [`Space`] that scores a query against a node (higher is better). Deleted nodes stay in the
//! graph (walks pass through them); the `accept` callback keeps them out of results.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Scores against the stored vectors; higher is better.
pub trait Space: Sync {
    /// A query prepared once for many scorings.
    type Query: Sync;
    fn prepare(&self, q: &[f32]) -> Self::Query;
    /// The query prepared from a stored node's vector.
    fn prepare_node(&self, id: u32) -> Self::Query;
    fn score(&self, q: &Self::Query, id: u32) -> f32;
    fn score_pair(&self, a: u32, b: u32) -> f32;
    /// Read a word of each cache line of node `id`'s vector and return them mixed: issued for
    /// a batch of nodes before they are scored, these independent loads act as the prefetch
    /// safe Rust has no instruction for.
    #[inline]
    fn touch(&self, _id: u32) -> u32 {
        0
    }
}

/// "No level": a node that is not in the graph.
pub const ABSENT: u8 = u8::MAX;
const MAX_LEVEL: u8 = 15;
const LOCKS: usize = 1024;

/// A (score, id) pair ordered by score (total order), then id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cand {
    pub score: f32,
    pub id: u32,
}

impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.id.cmp(&self.id))
    }
}

/// The worst first: a min-heap through reversed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Worst(Cand);
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.cmp(&self.0)
    }
}

/// Reusable search state: an epoch-stamped visited array and the two heaps. The epochs are
/// bytes (a quarter of the cache footprint of words), so the array is cleared every 255
/// searches.
#[derive(Default)]
pub struct Scratch {
    visited: Vec<u8>,
    epoch: u8,
    cands: BinaryHeap<Cand>,
    best: BinaryHeap<Worst>,
    buf: Vec<u32>,
    scores: Vec<f32>,
}

impl Scratch {
    fn reset(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.epoch = 1;
        }
        self.cands.clear();
        self.best.clear();
    }

    /// Mark `id` visited; false if it already was.
    #[inline]
    fn visit(&mut self, id: u32) -> bool {
        let v = &mut self.visited[id as usize];
        if *v == self.epoch {
            false
        } else {
            *v = self.epoch;
            true
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub m: usize,
    pub ef_construction: usize,
}

pub struct Hnsw {
    pub params: Params,
    m0: usize,
    /// Node `i`'s level-0 list is `links0[i * (m0 + 1)..]`: `[count, ids...]`.
    links0: Vec<AtomicU32>,
    /// Node `i`'s level `l >= 1` list is `upper[upper_off[i] + (l - 1) * (m + 1)..]`.
    upper: Vec<AtomicU32>,
    upper_off: Vec<u32>,
    levels: Vec<u8>,
    /// `level << 32 | node` of the entry point; `u64::MAX` while the graph is empty.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    locks: Vec<Mutex<()>>,
    rng: u64,
}

pub fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hnsw {
    pub fn new(params: Params, seed: u64) -> Hnsw {
        let m = params.m.clamp(2, 255);
        let params = Params { m, ef_construction: params.ef_construction.max(m) };
        Hnsw {
            params,
            m0: 2 * m,
            links0: Vec::new(),
            upper: Vec::new(),
            upper_off: Vec::new(),
            levels: Vec::new(),
            entry: AtomicU64::new(u64::MAX),
            entry_lock: Mutex::new(()),
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            rng: seed | 1,
        }
    }

    /// How many node ids the graph has room for (in it or not).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entry.load(Relaxed) == u64::MAX
    }

    pub fn contains(&self, id: u32) -> bool {
        self.levels.get(id as usize).is_some_and(|l| *l != ABSENT)
    }

    /// Bytes held by the graph's arrays.
    pub fn bytes(&self) -> usize {
        (self.links0.capacity() + self.upper.capacity() + self.upper_off.capacity()) * 4
            + self.levels.capacity()
            + self.locks.len() * std::mem::size_of::<Mutex<()>>()
    }

    fn random_level(&mut self) -> u8 {
        let u = (splitmix(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        let mult = 1.0 / (self.params.m as f64).ln();
        ((-(u.max(1e-300)).ln() * mult) as usize).min(MAX_LEVEL as usize) as u8
    }

    /// Make room for ids below `n` (new ones absent).
    pub fn grow(&mut self, n: usize) {
        if n <= self.levels.len() {
            return;
        }
        let stride = self.m0 + 1;
        use crate::ann::vectors::grow_gently;
        grow_gently(&mut self.links0, n * stride);
        grow_gently(&mut self.upper_off, n);
        grow_gently(&mut self.levels, n);
        self.links0.resize_with(n * stride, || AtomicU32::new(0));
        self.upper_off.resize(n, u32::MAX);
        self.levels.resize(n, ABSENT);
    }

    /// Give `id` a level (and its upper lists); it joins the graph at `link`.
    fn assign_level(&mut self, id: u32) {
        let level = self.random_level();
        let i = id as usize;
        self.levels[i] = level;
        if level > 0 {
            self.upper_off[i] = self.upper.len() as u32;
            let words = level as usize * (self.params.m + 1);
            self.upper.extend((0..words).map(|_| AtomicU32::new(0)));
        }
    }

    #[inline]
    fn list(&self, level: u8, id: u32) -> &[AtomicU32] {
        if level == 0 {
            let s = self.m0 + 1;
            &self.links0[id as usize * s..(id as usize + 1) * s]
        } else {
            let s = self.params.m + 1;
            let off = self.upper_off[id as usize] as usize + (level as usize - 1) * s;
            &self.upper[off..off + s]
        }
    }

    #[inline]
    fn neighbours(&self, level: u8, id: u32, out: &mut Vec<u32>) {
        let l = self.list(level, id);
        let n = (l[0].load(Relaxed) as usize).min(l.len() - 1);
        out.clear();
        out.extend(l[1..=n].iter().map(|a| a.load(Relaxed)));
    }

    fn set_list(&self, level: u8, id: u32, ids: &[u32]) {
        let l = self.list(level, id);
        let n = ids.len().min(l.len() - 1);
        for (slot, v) in l[1..=n].iter().zip(ids) {
            slot.store(*v, Relaxed);
        }
        l[0].store(n as u32, Relaxed);
    }

    fn entry(&self) -> Option<(u32, u8)> {
        let e = self.entry.load(Relaxed);
        (e != u64::MAX).then_some((e as u32, (e >> 32) as u8))
    }

    /// Greedy walk to the best node of `level`, from `ep`.
    fn greedy<S: Space>(
        &self,
        space: &S,
        q: &S::Query,
        mut ep: Cand,
        level: u8,
        buf: &mut Vec<u32>,
    ) -> Cand {
        loop {
            let mut moved = false;
            self.neighbours(level, ep.id, buf);
            for &n in buf.iter() {
                let s = space.score(q, n);
                if s > ep.score {
                    ep = Cand { score: s, id: n };
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Beam search of one level from `ep`: up to `ef` best accepted nodes, left in
    /// `scratch.best` (worst on top).
    fn search_level<S: Space, A: Fn(u32) -> bool + ?Sized>(
        &self,
        space: &S,
        q: &S::Query,
        ep: Cand,
        level: u8,
        ef: usize,
        accept: &A,
        scratch: &mut Scratch,
    ) {
        scratch.reset(self.levels.len());
        scratch.visit(ep.id);
        scratch.cands.push(ep);
        if accept(ep.id) {
            scratch.best.push(Worst(ep));
        }
        let mut buf = std::mem::take(&mut scratch.buf);
        let mut scores = std::mem::take(&mut scratch.scores);
        let mut touched = 0u32;
        while let Some(c) = scratch.cands.pop() {
            if scratch.best.len() >= ef {
                if let Some(w) = scratch.best.peek() {
                    if c.score < w.0.score {
                        break;
                    }
                }
            }
            // In three passes, so that the memory loads of each pass are independent of one
            // another and overlap (the CPU runs ahead; no prefetch needed): the unvisited
            // neighbours, their scores, then the heaps.
            self.neighbours(level, c.id, &mut buf);
            buf.retain(|&n| scratch.visit(n));
            for &n in buf.iter() {
                touched ^= space.touch(n);
            }
            scores.clear();
            scores.extend(buf.iter().map(|&n| space.score(q, n)));
            for (&n, &s) in buf.iter().zip(scores.iter()) {
                let full = scratch.best.len() >= ef;
                if full && scratch.best.peek().is_some_and(|w| s <= w.0.score) {
                    continue;
                }
                let cand = Cand { score: s, id: n };
                scratch.cands.push(cand);
                if accept(n) {
                    scratch.best.push(Worst(cand));
                    if scratch.best.len() > ef {
                        scratch.best.pop();
                    }
                }
            }
        }
        scratch.scores = scores;
        std::hint::black_box(touched);
        scratch.buf = buf;
    }

    /// The `k` best accepted nodes for `q`, best first, searched with a beam of `ef`.
    pub fn search<S: Space, A: Fn(u32) -> bool + ?Sized>(
        &self,
        space: &S,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &A,
        scratch: &mut Scratch,
    ) -> Vec<Cand> {
        let Some((ep, top)) = self.entry() else { return Vec::new() };
        let q = space.prepare(q);
        let mut cur = Cand { score: space.score(&q, ep), id: ep };
        let mut buf = std::mem::take(&mut scratch.buf);
        for level in (1..=top).rev() {
            cur = self.greedy(space, &q, cur, level, &mut buf);
        }
        scratch.buf = buf;
        self.search_level(space, &q, cur, 0, ef.max(k), accept, scratch);
        let mut out: Vec<Cand> = scratch.best.drain().map(|w| w.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out.truncate(k);
        out
    }

    /// The heuristic of the paper (and hnswlib/faiss): walk the candidates best first and keep
    /// one only if it is closer to the base than to every one kept so far.
    fn select<S: Space>(&self, space: &S, cands: &mut Vec<Cand>, max: usize) {
        if cands.len() <= max {
            return;
        }
        cands.sort_by(|a, b| b.cmp(a));
        let mut kept: Vec<Cand> = Vec::with_capacity(max);
        for c in cands.iter() {
            if kept.len() >= max {
                break;
            }
            if kept.iter().all(|k| space.score_pair(c.id, k.id) < c.score) {
                kept.push(*c);
            }
        }
        *cands = kept;
    }

    /// Link `id` (its level assigned, its vector scoreable) into the graph.
    fn link<S: Space>(&self, space: &S, id: u32, scratch: &mut Scratch) {
        let level = self.levels[id as usize];
        let Some((ep, top)) = self.entry() else {
            let _g = self.entry_lock.lock();
            if self.entry().is_none() {
                self.entry.store((level as u64) << 32 | id as u64, Relaxed);
                return;
            }
            drop(_g);
            return self.link(space, id, scratch);
        };
        if ep == id {
            return;
        }
        let q = space.prepare_node(id);
        let mut cur = Cand { score: space.score(&q, ep), id: ep };
        let mut buf = std::mem::take(&mut scratch.buf);
        for l in ((level + 1)..=top).rev() {
            cur = self.greedy(space, &q, cur, l, &mut buf);
        }
        scratch.buf = buf;
        let not_self = |n: u32| n != id;
        for l in (0..=level.min(top)).rev() {
            let max = if l == 0 { self.m0 } else { self.params.m };
            self.search_level(space, &q, cur, l, self.params.ef_construction, &not_self, scratch);
            let mut found: Vec<Cand> = scratch.best.drain().map(|w| w.0).collect();
            if let Some(best) = found.iter().max() {
                cur = *best;
            }
            // As faiss: up to the level's capacity (2m at level 0), not m as hnswlib.
            self.select(space, &mut found, max);
            let ids: Vec<u32> = found.iter().map(|c| c.id).collect();
            {
                let _g = self.locks[id as usize % LOCKS].lock();
                self.set_list(l, id, &ids);
            }
            for c in &found {
                self.add_link(space, l, c.id, id, c.score, max);
            }
        }
        if level > top {
            let _g = self.entry_lock.lock();
            if self.entry().is_none_or(|(_, t)| level > t) {
                self.entry.store((level as u64) << 32 | id as u64, Relaxed);
            }
        }
    }

    /// Add `new` (scoring `score` against `node`) to `node`'s list at `level`, pruning it back
    /// to `max` by the heuristic when full.
    fn add_link<S: Space>(
        &self,
        space: &S,
        level: u8,
        node: u32,
        new: u32,
        score: f32,
        max: usize,
    ) {
        let _g = self.locks[node as usize % LOCKS].lock();
        let l = self.list(level, node);
        let n = (l[0].load(Relaxed) as usize).min(max);
        if l[1..=n].iter().any(|a| a.load(Relaxed) == new) {
            return;
        }
        if n < max {
            l[n + 1].store(new, Relaxed);
            l[0].store(n as u32 + 1, Relaxed);
            return;
        }
        let q = space.prepare_node(node);
        let mut cands: Vec<Cand> = l[1..=n]
            .iter()
            .map(|a| {
                let id = a.load(Relaxed);
                Cand { score: space.score(&q, id), id }
            })
            .collect();
        cands.push(Cand { score, id: new });
        self.select(space, &mut cands, max);
        let ids: Vec<u32> = cands.iter().map(|c| c.id).collect();
        self.set_list(level, node, &ids);
    }

    /// Insert one node (or re-insert a slot whose vector changed: it keeps its level and gets
    /// fresh out-links; stale in-links only cost the walk a detour).
    pub fn insert<S: Space>(&mut self, space: &S, id: u32, scratch: &mut Scratch) {
        self.grow(id as usize + 1);
        if self.levels[id as usize] == ABSENT {
            self.assign_level(id);
        }
        self.link(space, id, scratch);
    }

    /// Build over `ids` with `threads` threads; `progress` counts inserted nodes and `cancel`
    /// stops early (returns false).
    pub fn build<S: Space>(
        &mut self,
        space: &S,
        ids: &[u32],
        threads: usize,
        progress: &AtomicUsize,
        cancel: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let Some(max) = ids.iter().max() else { return true };
        self.grow(*max as usize + 1);
        for &id in ids {
            if self.levels[id as usize] == ABSENT {
                self.assign_level(id);
            }
        }
        let this = &*self;
        let mut scratch = Scratch::default();
        let head = ids.len().min(1);
        for &id in &ids[..head] {
            this.link(space, id, &mut scratch);
            progress.fetch_add(1, Relaxed);
        }
        let next = AtomicUsize::new(head);
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let work = || {
            let mut scratch = Scratch::default();
            loop {
                let i = next.fetch_add(64, Relaxed);
                if i >= ids.len() {
                    return;
                }
                if cancel() {
                    stopped.store(true, Relaxed);
                    return;
                }
                for &id in &ids[i..(i + 64).min(ids.len())] {
                    this.link(space, id, &mut scratch);
                }
                progress.fetch_add((i + 64).min(ids.len()) - i, Relaxed);
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads.max(1) {
                s.spawn(work);
            }
            work();
        });
        !stopped.load(Relaxed)
    }

    // ---- persistence: plain little-endian words ----

    pub fn to_bytes(&self, out: &mut Vec<u8>) {
        let words = |out: &mut Vec<u8>, v: &[AtomicU32]| {
            out.extend((v.len() as u64).to_le_bytes());
            for a in v {
                out.extend(a.load(Relaxed).to_le_bytes());
            }
        };
        out.extend((self.params.m as u64).to_le_bytes());
        out.extend((self.params.ef_construction as u64).to_le_bytes());
        out.extend(self.entry.load(Relaxed).to_le_bytes());
        out.extend((self.levels.len() as u64).to_le_bytes());
        out.extend(&self.levels);
        out.extend(self.upper_off.iter().flat_map(|o| o.to_le_bytes()));
        words(out, &self.links0);
        words(out, &self.upper);
    }

    pub fn from_bytes(b: &mut &[u8]) -> Option<Hnsw> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Some(h)
        }
        let u64_ = |b: &mut &[u8]| take(b, 8).map(|x| u64::from_le_bytes(x.try_into().unwrap()));
        let u32s = |b: &mut &[u8], n: usize| -> Option<Vec<u32>> {
            let raw = take(b, n.checked_mul(4)?)?;
            Some(raw.chunks_exact(4).map(|x| u32::from_le_bytes(x.try_into().unwrap())).collect())
        };
        let m = u64_(b)? as usize;
        let ef_construction = u64_(b)? as usize;
        let entry = u64_(b)?;
        let n = u64_(b)? as usize;
        let mut h = Hnsw::new(Params { m, ef_construction }, 0x5eed ^ n as u64);
        if h.params.m != m {
            return None;
        }
        h.levels = take(b, n)?.to_vec();
        h.upper_off = u32s(b, n)?;
        let n0 = u64_(b)? as usize;
        h.links0 = u32s(b, n0)?.into_iter().map(AtomicU32::new).collect();
        let nu = u64_(b)? as usize;
        h.upper = u32s(b, nu)?.into_iter().map(AtomicU32::new).collect();
        h.entry = AtomicU64::new(entry);
        // Everything indexes inside its arrays, or the file is not ours.
        let ok = n0 == n * (h.m0 + 1)
            && (entry == u64::MAX || (entry as u32 as usize) < n)
            && h.links0.chunks(h.m0 + 1).all(|l| {
                (l[0].load(Relaxed) as usize) <= h.m0
                    && l[1..].iter().all(|a| (a.load(Relaxed) as usize) < n)
            })
            && h.levels.iter().zip(&h.upper_off).all(|(lv, off)| {
                *lv == ABSENT
                    || *lv == 0
                    || (*lv <= MAX_LEVEL && (*off as usize + *lv as usize * (m + 1)) <= nu)
            })
            && h.upper.iter().all(|a| (a.load(Relaxed) as usize) < n);
        ok.then_some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ann::space::{FlatSpace, Metric};

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| (splitmix(&mut s) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        for row in v.chunks_mut(dim) {
            let n = crate::ann::space::dot(row, row).sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    fn exact(v: &[f32], dim: usize, q: &[f32], k: usize, skip: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut s: Vec<(f32, u32)> = v
            .chunks(dim)
            .enumerate()
            .filter(|(i, _)| !skip(*i as u32))
            .map(|(i, x)| (crate::ann::space::dot(q, x), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn built_graph_finds_the_nearest_and_honours_deletions() {
        let (n, dim) = (3000, 16);
        let v = data(n, dim, 7);
        let space = FlatSpace { vectors: &v, dim, metric: Metric::Dot };
        let mut h = Hnsw::new(Params { m: 12, ef_construction: 100 }, 1);
        let ids: Vec<u32> = (0..n as u32).collect();
        assert!(h.build(&space, &ids, 2, &AtomicUsize::new(0), &|| false));
        let mut scratch = Scratch::default();
        let (mut found, mut total) = (0, 0);
        let deleted = |id: u32| id.is_multiple_of(7);
        for qi in 0..100 {
            let q = &v[qi * 31 % n * dim..][..dim];
            let truth = exact(&v, dim, q, 10, &deleted);
            let got = h.search(&space, q, 10, 64, &|id| !deleted(id), &mut scratch);
            assert!(got.iter().all(|c| !deleted(c.id)), "a deleted node came back");
            found += got.iter().filter(|c| truth.contains(&c.id)).count();
            total += 10;
        }
        assert!(found as f64 / total as f64 > 0.9, "recall {}", found as f64 / total as f64);
    }

    #[test]
    fn nodes_inserted_after_the_build_are_found_and_the_graph_round_trips() {
        let (n, dim) = (1500, 8);
        let v = data(n, dim, 3);
        let space = FlatSpace { vectors: &v, dim, metric: Metric::L2 };
        let mut h = Hnsw::new(Params { m: 8, ef_construction: 64 }, 2);
        let first: Vec<u32> = (0..1000).collect();
        assert!(h.build(&space, &first, 1, &AtomicUsize::new(0), &|| false));
        let mut scratch = Scratch::default();
        for id in 1000..n as u32 {
            h.insert(&space, id, &mut scratch);
        }
        for id in (1000..n as u32).step_by(50) {
            let q = &v[id as usize * dim..][..dim];
            let got = h.search(&space, q, 1, 32, &|_| true, &mut scratch);
            assert_eq!(got[0].id, id, "a node inserted late is its own nearest neighbour");
        }
        let mut bytes = Vec::new();
        h.to_bytes(&mut bytes);
        let back = Hnsw::from_bytes(&mut bytes.as_slice()).expect("round trip");
        let mut again = Vec::new();
        back.to_bytes(&mut again);
        assert_eq!(bytes, again);
        let q = &v[1234 * dim..][..dim];
        assert_eq!(
            back.search(&space, q, 5, 32, &|_| true, &mut scratch),
            h.search(&space, q, 5, 32, &|_| true, &mut scratch)
        );
        bytes.truncate(bytes.len() - 3);
        assert!(Hnsw::from_bytes(&mut bytes.as_slice()).is_none(), "a cut file is refused");
    }
}

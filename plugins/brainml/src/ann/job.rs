//! `train`, `train.status` and `query.batch`.
//!
//! A train is a background job on a thread the plugin owns (one per collection at a time):
//! it copies the live vectors (the collection then notes every slot written meanwhile), builds
//! the graph from the copy with two scoped threads, measures recall@10 against exact search on
//! `sample` live vectors used as queries, picks `ef_search`, and switches the index in under
//! the collection's write lock after inserting the slots written meanwhile. Queries use the
//! old index (or exact search) until then. `stop` cancels every job and joins its thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bkg_abi::{Error, Response};
use serde_json::{Map, Value};

use super::{space, IndexParams, Quantization, EF_LADDER};
use crate::api::{
    BatchHits, BatchQueryAnswer, BatchQueryRequest, Distance, Hit, TrainExact, TrainRequest,
    TrainStarted, TrainState, TrainStatus, TrainStatusRequest, MAX_K,
};
use crate::store::collection::Collection;
use crate::store::Shared;
use crate::{checked_vector, ms, parse_filter, poisoned, BrainMl};

/// Build threads of one train.
const BUILD_THREADS: usize = 2;
/// The most query vectors one `query.batch` takes.
pub const MAX_BATCH: usize = 1000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct Job {
    status: Mutex<TrainStatus>,
    built: AtomicUsize,
    total: AtomicUsize,
    cancel: AtomicBool,
    finished: (Mutex<bool>, Condvar),
}

impl Job {
    fn status(&self) -> TrainStatus {
        let mut s =
            self.status.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone());
        if s.state == TrainState::Running {
            let total = self.total.load(Relaxed).max(1);
            // The build is 90% of the work; measuring recall the rest.
            s.progress = s.progress.max(0.9 * self.built.load(Relaxed) as f64 / total as f64);
        }
        s
    }

    fn set(&self, f: impl FnOnce(&mut TrainStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn finish(&self) {
        let (m, cv) = &self.finished;
        if let Ok(mut d) = m.lock() {
            *d = true;
        }
        cv.notify_all();
    }

    fn wait(&self) {
        let (m, cv) = &self.finished;
        let Ok(mut d) = m.lock() else { return };
        while !*d {
            match cv.wait(d) {
                Ok(g) => d = g,
                Err(_) => return,
            }
        }
    }
}

/// The plugin's train jobs: the latest per collection, and the threads running them.
#[derive(Default)]
pub struct Jobs {
    latest: Mutex<HashMap<String, Arc<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Jobs {
    /// Cancel every job and join its thread (the plugin's `stop`).
    pub fn stop(&self) {
        if let Ok(latest) = self.latest.lock() {
            latest.values().for_each(|j| j.cancel.store(true, Relaxed));
        }
        let threads: Vec<JoinHandle<()>> =
            self.threads.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        if let Ok(mut latest) = self.latest.lock() {
            latest.clear();
        }
    }

    /// Forget a deleted collection's job (cancelling it if it runs).
    pub fn forget(&self, collection: &str) {
        if let Ok(mut latest) = self.latest.lock() {
            if let Some(j) = latest.remove(collection) {
                j.cancel.store(true, Relaxed);
            }
        }
    }

    fn reap(&self) {
        if let Ok(mut t) = self.threads.lock() {
            let (done, running): (Vec<_>, Vec<_>) = t.drain(..).partition(|h| h.is_finished());
            *t = running;
            for h in done {
                let _ = h.join();
            }
        }
    }
}

fn exact_status(name: &str, c: &Collection) -> TrainStatus {
    let ann = c.ann.as_ref();
    let index_bytes = ann.map_or(0, |a| a.bytes() as u64);
    TrainStatus {
        collection: name.to_string(),
        // An index read back at start was trained earlier: done.
        state: if ann.is_some() { TrainState::Done } else { TrainState::None },
        progress: if ann.is_some() { 1.0 } else { 0.0 },
        index: if ann.is_some() { "hnsw" } else { "exact" },
        params: ann.map(|a| a.info.params.clone()),
        recall_at_10: Some(ann.map_or(1.0, |a| a.info.recall_at_10)),
        sample: ann.map_or(0, |a| a.info.sample),
        build_ms: ann.map(|a| a.info.build_ms),
        bytes_per_vector: c.bytes_per_vector(),
        index_bytes,
        started_ms: None,
        finished_ms: ann.map(|a| a.info.trained_ms),
        error: None,
        vectors: c.chunks(),
    }
}

fn check_params(r: &TrainRequest) -> Result<(IndexParams, f64, usize), Error> {
    let m = r.m.unwrap_or(16);
    if !(4..=64).contains(&m) {
        return Err(Error::bad_request(format!("m {m}: use 4 to 64")));
    }
    let ef_construction = r.ef_construction.unwrap_or(200);
    if !(m..=2048).contains(&ef_construction) {
        return Err(Error::bad_request(format!(
            "ef_construction {ef_construction}: use m ({m}) to 2048"
        )));
    }
    if let Some(ef) = r.ef_search {
        if !(1..=4096).contains(&ef) {
            return Err(Error::bad_request(format!(
                "ef_search {ef}: use 1 to 4096, or leave it out"
            )));
        }
    }
    let target = r.target_recall.unwrap_or(0.95);
    if !(target > 0.0 && target <= 1.0) {
        return Err(Error::bad_request(format!("target_recall {target}: use a number in (0, 1]")));
    }
    let sample = r.sample.unwrap_or(1000);
    if !(1..=100_000).contains(&sample) {
        return Err(Error::bad_request(format!("sample {sample}: use 1 to 100000")));
    }
    let params = IndexParams {
        m,
        ef_construction,
        ef_search: r.ef_search.unwrap_or(0),
        quantization: r.quantization.unwrap_or(Quantization::None),
    };
    Ok((params, target, sample))
}

impl BrainMl {
    pub(crate) fn train(&self, r: TrainRequest) -> Result<Response, Error> {
        let (params, target, sample) = check_params(&r)?;
        let c = self.get(&r.collection)?;
        let threshold = self.settings().exact_threshold;
        let live = c.read().map_err(|_| poisoned())?.chunks();
        if live < threshold && !r.force {
            return Response::json(&TrainExact {
                collection: r.collection.clone(),
                index: "exact",
                reason: format!(
                    "{live} vectors are below the exact_threshold {threshold}: searched exactly \
                     (recall 1.0)"
                ),
            });
        }
        if live == 0 {
            return Err(Error::bad_request(format!(
                "collection {} has no vectors to train on",
                r.collection
            )));
        }
        let job =
            self.start_job(&r.collection, c, params, target, sample, r.ef_search.is_none())?;
        if r.wait {
            job.wait();
            let s = job.status();
            if s.state == TrainState::Failed {
                return Err(Error::internal(format!(
                    "train of {} failed: {}",
                    r.collection,
                    s.error.unwrap_or_default()
                )));
            }
            return Response::json(&s);
        }
        Ok(Response::json(&TrainStarted { collection: r.collection, job: job.status() })?
            .with_status(202))
    }

    /// Start a train job (409 if one runs for this collection).
    pub(crate) fn start_job(
        &self,
        name: &str,
        c: Shared,
        params: IndexParams,
        target: f64,
        sample: usize,
        auto_ef: bool,
    ) -> Result<Arc<Job>, Error> {
        self.ann_jobs.reap();
        let mut latest = self.ann_jobs.latest.lock().map_err(|_| poisoned())?;
        if let Some(j) = latest.get(name) {
            if j.status().state == TrainState::Running {
                return Err(Error::conflict(format!(
                    "a train of {name} is running; poll train.status"
                )));
            }
        }
        let job = Arc::new(Job {
            status: Mutex::new(TrainStatus {
                collection: name.to_string(),
                state: TrainState::Running,
                progress: 0.0,
                index: "exact",
                params: Some(params.clone()),
                recall_at_10: None,
                sample: 0,
                build_ms: None,
                bytes_per_vector: 0.0,
                index_bytes: 0,
                started_ms: Some(now_ms()),
                finished_ms: None,
                error: None,
                vectors: 0,
            }),
            built: AtomicUsize::new(0),
            total: AtomicUsize::new(1),
            cancel: AtomicBool::new(false),
            finished: (Mutex::new(false), Condvar::new()),
        });
        latest.insert(name.to_string(), job.clone());
        drop(latest);
        let j = job.clone();
        let host = self.host.clone();
        let name2 = name.to_string();
        let handle = std::thread::Builder::new()
            .name(format!("brainml-train-{name}"))
            .spawn(move || {
                // A panic in the job must still finish it (a `wait: true` caller waits on it).
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&j, &c, params, target, sample, auto_ef)
                }))
                .unwrap_or_else(|_| Err("the train job panicked (a bug: see the log)".into()));
                match res {
                    Ok(()) => {}
                    Err(e) => {
                        let cancelled = j.cancel.load(Relaxed);
                        if let Ok(mut c) = c.write() {
                            c.ann_pending = None;
                        }
                        if !cancelled {
                            host.warn(&format!("train of {name2} failed: {e}"));
                        }
                        j.set(|s| {
                            s.state =
                                if cancelled { TrainState::Cancelled } else { TrainState::Failed };
                            s.error = Some(e);
                            s.finished_ms = Some(now_ms());
                        });
                    }
                }
                j.finish();
            })
            .map_err(|e| Error::internal(format!("starting the train thread: {e}")))?;
        self.ann_jobs.threads.lock().map_err(|_| poisoned())?.push(handle);
        Ok(job)
    }

    /// At start: retrain (in the background) every collection whose saved index could not be
    /// read back; it is searched exactly meanwhile.
    pub(crate) fn ann_rebuild_damaged(&self) {
        let list: Vec<(String, Shared)> = match self.store.read() {
            Ok(s) => s.collections.iter().map(|(n, c)| (n.clone(), c.clone())).collect(),
            Err(_) => return,
        };
        for (name, c) in list {
            let params = c.read().ok().and_then(|g| g.ann_rebuild.clone());
            if let Some(p) = params {
                let auto = p.ef_search == 0;
                if let Err(e) = self.start_job(&name, c, p, 0.95, 1000, auto) {
                    self.host.warn(&format!(
                        "collection {name}: could not start the rebuild: {}",
                        e.message
                    ));
                }
            }
        }
    }

    pub(crate) fn train_status(&self, r: TrainStatusRequest) -> Result<Response, Error> {
        let c = self.get(&r.collection)?;
        let job = self.ann_jobs.latest.lock().map_err(|_| poisoned())?.get(&r.collection).cloned();
        let status = match job {
            Some(j) => j.status(),
            None => exact_status(&r.collection, &*c.read().map_err(|_| poisoned())?),
        };
        Response::json(&status)
    }

    pub(crate) fn query_batch(&self, r: BatchQueryRequest) -> Result<Response, Error> {
        let started = Instant::now();
        let c = self.get(&r.collection)?;
        let meta = self.meta(&c)?;
        let k = r.k.unwrap_or(10);
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::bad_request(format!("k {k}: use 1 to {MAX_K}")));
        }
        if r.vectors.is_empty() || r.vectors.len() > MAX_BATCH {
            return Err(Error::bad_request(format!(
                "vectors: send 1 to {MAX_BATCH} query vectors, not {}",
                r.vectors.len()
            )));
        }
        let filter = parse_filter(&r.filter)?;
        let mut qs = Vec::with_capacity(r.vectors.len());
        for (i, v) in r.vectors.iter().enumerate() {
            let mut q = checked_vector(v, meta.dim, &format!("vectors[{i}]"))?;
            if meta.distance == Distance::Cosine {
                crate::store::collection::normalize(&mut q);
            }
            qs.push(q);
        }
        let threshold = self.settings().exact_threshold;
        let with_text = r.with_text.unwrap_or(true);
        let matches = |m: &Map<String, Value>| filter.as_ref().is_some_and(|f| f.matches(m));
        let guard = c.read().map_err(|_| poisoned())?;
        let allowed = guard.allowed(filter.is_some().then_some(&matches as _));
        let results = qs
            .iter()
            .map(|q| BatchHits {
                hits: guard
                    .dense_k(q, k, &allowed, threshold)
                    .into_iter()
                    .filter_map(|(slot, score)| guard.scored(slot, score, with_text))
                    .map(|h| Hit {
                        id: h.id,
                        chunk: h.chunk,
                        score: h.score,
                        text: h.text,
                        metadata: h.metadata,
                    })
                    .collect(),
            })
            .collect();
        drop(guard);
        Response::json(&BatchQueryAnswer { results, took_ms: ms(started) })
    }
}

/// The job's body: copy, build, measure, switch in, save.
fn run(
    job: &Job,
    c: &Shared,
    mut params: IndexParams,
    target: f64,
    sample: usize,
    auto_ef: bool,
) -> Result<(), String> {
    let started = Instant::now();
    let (copy, live, dim, l2) = {
        let mut g = c.write().map_err(|_| "a lock was poisoned".to_string())?;
        let (v, live) = g.ann_copy();
        (v, live, g.meta.dim, g.meta.distance == Distance::L2)
    };
    let copy = super::vectors::Vectors::from_vec(dim, copy);
    let vectors = copy.ram().unwrap_or_default();
    job.total.store(live.len(), Relaxed);
    let cancel = || job.cancel.load(Relaxed);
    let mut index =
        super::build(vectors, dim, l2, &live, &params, BUILD_THREADS, &job.built, &cancel)
            .ok_or_else(|| "cancelled".to_string())?;
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    job.set(|s| s.progress = 0.9);

    // Recall@10 on `sample` live vectors as queries, against exact search over the copy.
    let mut rng = 0x5eed_u64 ^ live.len() as u64;
    let mut queries: Vec<u32> = live.clone();
    let n = sample.min(queries.len());
    for i in 0..n {
        let j = i + (super::hnsw::splitmix(&mut rng) as usize % (queries.len() - i));
        queries.swap(i, j);
    }
    queries.truncate(n);
    let metric = index.metric();
    let row = |s: u32| &vectors[s as usize * dim..(s as usize + 1) * dim];
    let truth: Vec<Vec<u32>> = parallel(queries.len(), BUILD_THREADS, |qi| {
        if cancel() {
            return Vec::new();
        }
        let q = row(queries[qi]);
        let mut s: Vec<(f32, u32)> =
            live.iter().map(|&id| (space::score(metric, q, row(id)), id)).collect();
        let k = 10.min(s.len());
        if k > 0 && s.len() > k {
            s.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        s.truncate(k);
        s.into_iter().map(|x| x.1).collect()
    });
    if cancel() {
        return Err("cancelled".into());
    }
    let ladder: Vec<usize> = if auto_ef { EF_LADDER.to_vec() } else { vec![params.ef_search] };
    let mut chosen = (ladder[ladder.len() - 1], 0.0);
    for (i, &ef) in ladder.iter().enumerate() {
        if cancel() {
            return Err("cancelled".into());
        }
        let found: Vec<usize> = parallel(queries.len(), BUILD_THREADS, |qi| {
            let got = index.search(&copy, row(queries[qi]), 10, ef, &|_| true);
            got.iter().filter(|(s, _)| truth[qi].contains(&(*s as u32))).count()
        });
        let want: usize = truth.iter().map(Vec::len).sum();
        let recall = found.iter().sum::<usize>() as f64 / want.max(1) as f64;
        chosen = (ef, recall);
        job.set(|s| s.progress = 0.9 + 0.1 * (i + 1) as f64 / ladder.len() as f64);
        if recall >= target {
            break;
        }
    }
    params.ef_search = chosen.0;
    index.info.params = params.clone();
    index.info.recall_at_10 = chosen.1;
    index.info.sample = queries.len();
    index.info.build_ms = build_ms;
    index.info.trained_ms = now_ms();
    drop(copy);

    // Switch in: the slots written meanwhile first.
    let mut g = c.write().map_err(|_| "a lock was poisoned".to_string())?;
    if cancel() || g.dropped {
        g.ann_pending = None;
        return Err("cancelled".into());
    }
    g.ann_switch(index);
    drop(g);
    let g = c.read().map_err(|_| "a lock was poisoned".to_string())?;
    let saved = g.ann_save();
    let done = exact_status("", &g);
    drop(g);
    job.set(|s| {
        s.state = TrainState::Done;
        s.progress = 1.0;
        s.index = "hnsw";
        s.params = Some(params.clone());
        s.recall_at_10 = Some(chosen.1);
        s.sample = n;
        s.build_ms = Some(build_ms);
        s.bytes_per_vector = done.bytes_per_vector;
        s.index_bytes = done.index_bytes;
        s.vectors = done.vectors;
        s.finished_ms = Some(now_ms());
        s.error = saved.err().map(|e| format!("the index works but could not be saved: {e}"));
    });
    Ok(())
}

/// `f(0..n)` over `threads` scoped threads, in order.
pub fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Relaxed);
                        if i >= n {
                            return out;
                        }
                        out.push((i, f(i)));
                    }
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut all: Vec<(usize, T)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|x| x.0);
    all.into_iter().map(|x| x.1).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde_json::{json, Map, Value};

    use crate::ann::{build, IndexParams, Quantization};
    use crate::api::Distance;
    use crate::store::collection::{ChunkRecord, Collection, DocRecord, Meta, Record};

    const DIM: usize = 8;

    /// A deterministic spread of unit vectors.
    fn vector(i: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM)
            .map(|j| (((i * 31 + j * 17) * 2654435761usize) % 1000) as f32 - 500.0)
            .collect();
        crate::store::collection::normalize(&mut v);
        v
    }

    fn doc(i: usize, v: Vec<f32>) -> DocRecord {
        let mut metadata = Map::new();
        metadata.insert("rare".into(), json!(i.is_multiple_of(50)));
        DocRecord {
            id: format!("d{i}"),
            metadata,
            chunks: vec![ChunkRecord { text: None, vector: v }],
        }
    }

    fn train(c: &mut Collection, quantization: Quantization) -> Vec<usize> {
        let (copy, live) = c.ann_copy();
        // Written while the job runs: inserted at the switch.
        c.write(Record::Upsert { docs: vec![doc(900, vector(900))] }).unwrap();
        let params = IndexParams { m: 8, ef_construction: 64, ef_search: 64, quantization };
        let idx = build(&copy, DIM, false, &live, &params, 2, &AtomicUsize::new(0), &|| false);
        c.ann_switch(idx.unwrap());
        live.iter().map(|s| *s as usize).collect()
    }

    fn ids(c: &Collection, hits: &[(usize, f64)]) -> Vec<String> {
        hits.iter().map(|(s, _)| c.scored(*s, 0.0, false).unwrap().id).collect()
    }

    #[test]
    fn the_index_answers_fresh_writes_hides_deletions_and_filters_selectively_exactly() {
        for quantization in [Quantization::None, Quantization::Int8] {
            let dir = tempfile::tempdir().unwrap();
            let meta = Meta { name: "t".into(), model: None, dim: DIM, distance: Distance::Cosine };
            let mut c = Collection::open(dir.path(), meta.clone(), &|_| {}).unwrap();
            let docs: Vec<DocRecord> = (0..600).map(|i| doc(i, vector(i))).collect();
            c.write(Record::Upsert { docs }).unwrap();
            train(&mut c, quantization);
            // A slot written during the train is in the switched-in index.
            let hits = c.dense_k(&vector(900), 1, &c.allowed(None), 20000);
            assert_eq!(ids(&c, &hits), ["d900"], "{quantization:?}");
            // A write after the switch is found at once.
            let fresh = vector(7777);
            c.write(Record::Upsert { docs: vec![doc(7777, fresh.clone())] }).unwrap();
            assert_eq!(ids(&c, &c.dense_k(&fresh, 1, &c.allowed(None), 20000)), ["d7777"]);
            // A deleted document never comes back, though the walk passes its node.
            c.write(Record::Delete { ids: vec!["d10".into()] }).unwrap();
            let hits = c.dense_k(&vector(10), 10, &c.allowed(None), 20000);
            assert!(!ids(&c, &hits).contains(&"d10".to_string()));
            assert_eq!(hits.len(), 10);
            // A filter passing few chunks (12 of 601) is searched exactly over them.
            let rare = |m: &Map<String, Value>| m["rare"] == json!(true);
            let hits = c.dense_k(&vector(3), 12, &c.allowed(Some(&rare)), 20000);
            let exact =
                crate::store::collection::top_k(c.dense(&vector(3), &c.allowed(Some(&rare))), 12);
            assert_eq!(hits, exact);
            assert!(ids(&c, &hits).iter().all(|id| id
                .trim_start_matches('d')
                .parse::<usize>()
                .unwrap()
                % 50
                == 0));
            // int8 keeps the f32 vectors on disk; an unquantized index in memory.
            let file = dir.path().join(crate::ann::vectors::FILE);
            assert_eq!(file.exists(), quantization == Quantization::Int8);
            // Saved and read back at open: the same answers.
            c.ann_save().unwrap();
            let before = c.dense_k(&vector(42), 10, &c.allowed(None), 20000);
            drop(c);
            let c = Collection::open(dir.path(), meta, &|m| panic!("{m}")).unwrap();
            assert!(c.ann.is_some());
            assert_eq!(c.dense_k(&vector(42), 10, &c.allowed(None), 20000), before);
        }
    }

    #[test]
    fn a_saved_index_with_more_slots_than_the_log_is_rebuilt_not_trusted() {
        let (big, small) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let meta = Meta { name: "t".into(), model: None, dim: DIM, distance: Distance::Cosine };
        let mut c = Collection::open(big.path(), meta.clone(), &|_| {}).unwrap();
        c.write(Record::Upsert { docs: (0..300).map(|i| doc(i, vector(i))).collect() }).unwrap();
        train(&mut c, Quantization::None);
        c.ann_save().unwrap();
        // An older log (a snapshot cut before the index was saved, say) beside that index.
        let mut old = Collection::open(small.path(), meta.clone(), &|_| {}).unwrap();
        old.write(Record::Upsert { docs: (0..100).map(|i| doc(i, vector(i))).collect() }).unwrap();
        drop(old);
        std::fs::copy(big.path().join(crate::ann::FILE), small.path().join(crate::ann::FILE))
            .unwrap();
        let warned = std::cell::RefCell::new(String::new());
        let c = Collection::open(small.path(), meta, &|m| warned.borrow_mut().push_str(m)).unwrap();
        assert!(c.ann.is_none() && c.ann_rebuild.is_some());
        assert!(warned.borrow().contains("more slots than the log holds"), "{}", warned.borrow());
        assert_eq!(c.dense_k(&vector(5), 1, &c.allowed(None), 20000)[0].0, 5, "exact meanwhile");
    }
}

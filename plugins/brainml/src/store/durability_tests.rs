//! The log's formats and compaction, on real files: records written by the first (JSON)
//! format still read, compaction keeps every document in its slot, runs beside queries and
//! writes without losing any of them, survives a crash at each of its steps, and a torn tail
//! after a compaction is still cut.

use std::io::Write;
use std::sync::RwLock;

use serde_json::{Map, Value};

use super::collection::{
    compact_concurrently, compact_concurrently_at, ChunkRecord, Collection, DocRecord, Meta,
    Record, Stage,
};
use crate::api::Distance;
use crate::wal;

fn meta(dim: usize) -> Meta {
    Meta { name: "t".into(), model: None, dim, distance: Distance::Dot }
}

/// A deterministic vector for document `n`, version `v`.
fn vector(n: usize, v: usize, dim: usize) -> Vec<f32> {
    (0..dim).map(|i| (((n * 31 + v * 7 + i * 13) % 97) as f32 - 48.0) / 97.0).collect()
}

fn doc(n: usize, v: usize, dim: usize) -> DocRecord {
    let mut metadata = Map::new();
    metadata.insert("n".into(), Value::from(n));
    metadata.insert("v".into(), Value::from(v));
    DocRecord {
        id: format!("d{n}"),
        metadata,
        chunks: vec![
            ChunkRecord { text: Some(format!("document n{n} at v{v}")), vector: vector(n, v, dim) },
            ChunkRecord { text: None, vector: vector(n + 1, v, dim) },
        ],
    }
}

/// Everything a query can see, in slot order: equal answers mean the same collection.
fn fingerprint(c: &Collection, dim: usize) -> Vec<(usize, u64, String, usize)> {
    let q = vector(5, 5, dim);
    c.dense(&q, &c.allowed(None))
        .into_iter()
        .map(|(slot, score)| {
            let s = c.scored(slot, score, true).unwrap();
            let v = s.metadata["v"].as_u64().unwrap();
            (slot, score.to_bits(), format!("{} {} {:?}", s.id, v, s.text), s.chunk)
        })
        .collect()
}

#[test]
fn logs_of_json_records_still_read_and_new_records_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 3;
    // A log as the first format wrote it: every record JSON, vectors as JSON numbers.
    let mut old = Vec::new();
    for r in [
        Record::Upsert { docs: vec![doc(1, 0, dim), doc(2, 0, dim)] },
        Record::Delete { ids: vec!["d1".into()] },
    ] {
        old.extend(wal::frame(&serde_json::to_vec(&r).unwrap()));
    }
    assert_eq!(old[8], b'{');
    std::fs::write(dir.path().join("wal.log"), &old).unwrap();
    let mut c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!((c.documents(), c.chunks()), (1, 2));
    c.write(Record::Upsert { docs: vec![doc(3, 0, dim)] }).unwrap();
    let before = fingerprint(&c, dim);
    drop(c);
    let bytes = std::fs::read(dir.path().join("wal.log")).unwrap();
    assert_eq!(bytes[old.len() + 8], crate::store::record::UPSERT, "new upserts are binary");
    let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!((c.documents(), c.chunks()), (2, 4));
    assert_eq!(fingerprint(&c, dim), before);
    let v = c.scored(before[0].0, 0.0, true).unwrap();
    assert!(v.id == "d2" || v.id == "d3");
}

/// Write the way a call does: under the write lock, then (the lock let go) compact if due.
fn write(c: &RwLock<Collection>, record: Record) {
    let due = c.write().unwrap().write(record).unwrap();
    if due {
        assert!(compact_concurrently(c, &|| false).unwrap(), "a due compaction ran");
    }
}

#[test]
fn compaction_keeps_every_document_in_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 64;
    let c = RwLock::new(Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap());
    let log_bytes = || c.read().unwrap().log_bytes();
    // 1500 documents rewritten over and over, some deleted: most of the log goes dead.
    let (mut written, mut compactions) = (0, 0);
    for round in 0..30 {
        let docs = || (0..1500).map(|n| doc(n, round, dim)).collect::<Vec<_>>();
        let record = crate::store::record::encode(&Record::Upsert { docs: docs() });
        written += record.len() as u64 + 8;
        let before = log_bytes();
        write(&c, Record::Upsert { docs: docs() });
        if log_bytes() < before + record.len() as u64 + 8 {
            compactions += 1;
        }
        if round % 10 == 9 {
            let ids = (0..1500).filter(|n| n % 7 == round % 7).map(|n| format!("d{n}")).collect();
            write(&c, Record::Delete { ids });
        }
    }
    assert!(written > 3 * (8 << 20), "{written} bytes written");
    assert!(compactions >= 2, "{compactions} compactions");
    assert!(log_bytes() < 8 << 20, "compacted on its own: {} of {written}", log_bytes());
    let mut c = c.into_inner().unwrap();
    // A last write after the automatic compactions, then an explicit one.
    c.write(Record::Upsert { docs: vec![doc(3, 99, dim)] }).unwrap();
    let docs = c.documents();
    let before = fingerprint(&c, dim);
    c.compact().unwrap();
    assert_eq!(fingerprint(&c, dim), before, "the live state is unchanged");
    c.write(Record::Upsert { docs: vec![doc(4000, 0, dim)] }).unwrap();
    let after_write = fingerprint(&c, dim);
    drop(c);
    let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!(c.documents(), docs + 1);
    assert_eq!(fingerprint(&c, dim), after_write, "same documents, texts, scores and slots");
    assert_eq!(c.bm25("v99", 1.2, 0.75, &c.allowed(None)).len(), 1);
}

#[test]
fn a_torn_tail_after_a_compaction_is_still_cut() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let mut c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    for round in 0..3 {
        c.write(Record::Upsert { docs: (0..50).map(|n| doc(n, round, dim)).collect() }).unwrap();
    }
    c.compact().unwrap();
    c.write(Record::Upsert { docs: vec![doc(77, 0, dim)] }).unwrap();
    let good = c.log_bytes();
    let before = fingerprint(&c, dim);
    drop(c);
    // A record torn halfway (the process died while appending it).
    let half =
        wal::frame(&crate::store::record::encode(&Record::Upsert { docs: vec![doc(78, 0, dim)] }));
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("wal.log")).unwrap();
    f.write_all(&half[..half.len() / 2]).unwrap();
    drop(f);
    let warned = std::cell::RefCell::new(Vec::new());
    let c = Collection::open(dir.path(), meta(dim), &|m| warned.borrow_mut().push(m.to_string()))
        .unwrap();
    let warned = warned.into_inner();
    assert!(warned.len() == 1 && warned[0].contains(&format!("at byte {good}")), "{warned:?}");
    assert_eq!(c.documents(), 51);
    assert_eq!(fingerprint(&c, dim), before);
    assert_eq!(std::fs::metadata(dir.path().join("wal.log")).unwrap().len(), good);
}

#[test]
fn a_compaction_interrupted_before_its_rename_leaves_the_old_log_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let mut c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    for round in 0..3 {
        c.write(Record::Upsert { docs: (0..50).map(|n| doc(n, round, dim)).collect() }).unwrap();
    }
    let before = fingerprint(&c, dim);
    drop(c);
    // What a crash halfway through writing the compacted log leaves: a torn temp file.
    let log = dir.path().join("wal.log");
    for tmp in ["wal.log.compact", "wal.log.18f2a-3.compact"] {
        std::fs::write(dir.path().join(tmp), &wal::frame(b"\xB2 half a compacted log")[..9])
            .unwrap();
    }
    assert_eq!(wal::compact_leftovers(&log).len(), 2);
    let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!(fingerprint(&c, dim), before);
    assert!(wal::compact_leftovers(&log).is_empty(), "the leftover temp files are removed");
}

/// A collection folder holding `docs` documents of `version`.
fn folder(root: &std::path::Path, dir: &str, docs: usize, version: usize) {
    let path = root.join(dir);
    std::fs::create_dir_all(&path).unwrap();
    let m = Meta { name: "docs".into(), ..meta(4) };
    std::fs::write(path.join("meta.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let mut c = Collection::open(&path, m, &|m| panic!("{m}")).unwrap();
    c.write(Record::Upsert { docs: (0..docs).map(|n| doc(n, version, 4)).collect() }).unwrap();
}

#[test]
fn a_restore_interrupted_between_its_renames_leaves_the_old_collection() {
    let root = tempfile::tempdir().unwrap();
    // The live folder was renamed aside; the restored one never got its name.
    folder(root.path(), ".replaced-docs", 5, 0);
    folder(root.path(), ".restore-docs", 9, 1);
    let warned = std::cell::RefCell::new(Vec::new());
    let store = super::Store::open(root.path(), &|m| warned.borrow_mut().push(m.to_string()));
    let c = store.collections.get("docs").expect("the old collection is back");
    assert_eq!(c.read().unwrap().documents(), 5);
    assert!(warned.borrow().iter().any(|w| w.contains("restore was interrupted")), "{warned:?}");
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["docs"], "the leftovers are removed");
}

#[test]
fn a_restore_interrupted_after_its_renames_keeps_the_restored_collection() {
    let root = tempfile::tempdir().unwrap();
    folder(root.path(), ".replaced-docs", 5, 0);
    folder(root.path(), "docs", 9, 1);
    let store = super::Store::open(root.path(), &|m| panic!("{m}"));
    assert_eq!(store.collections["docs"].read().unwrap().documents(), 9);
    assert!(!root.path().join(".replaced-docs").exists());
}

/// A collection of 50 documents written three times over (two thirds of its log dead), due
/// for a compaction from its first byte on.
fn due_for_compaction(dir: &std::path::Path, dim: usize) -> RwLock<Collection> {
    let mut c = Collection::open(dir, meta(dim), &|m| panic!("{m}")).unwrap();
    for round in 0..3 {
        c.write(Record::Upsert { docs: (0..50).map(|n| doc(n, round, dim)).collect() }).unwrap();
    }
    c.compact_from(0);
    RwLock::new(c)
}

/// What every test below writes while the compaction runs: at [`Stage::Frozen`] (after the
/// snapshot) and at [`Stage::Written`] (before the last step).
fn write_during(c: &RwLock<Collection>, stage: Stage, dim: usize) {
    let mut g = c.try_write().expect("no lock is held while the compacted log is written");
    match stage {
        Stage::Frozen => {
            g.write(Record::Upsert { docs: vec![doc(900, 0, dim), doc(1, 7, dim)] }).unwrap();
            g.write(Record::Delete { ids: vec!["d2".into()] }).unwrap();
        }
        Stage::Written => {
            g.write(Record::Upsert { docs: vec![doc(901, 0, dim), doc(2, 8, dim)] }).unwrap();
            g.write(Record::Delete { ids: vec!["d3".into()] }).unwrap();
        }
        Stage::Switched => {}
    }
}

/// The documents [`write_during`] leaves: d0..d49 at version 2, d1 at 7, d2 at 8, no d3, d900
/// and d901.
fn check_all_writes(c: &Collection) {
    let hits = c.dense(&vector(5, 5, 8), &c.allowed(None));
    let version = |id: &str| {
        let hit =
            hits.iter().find_map(|&(slot, _)| c.scored(slot, 0.0, false).filter(|s| s.id == id));
        hit.map(|s| s.metadata["v"].as_u64().unwrap())
    };
    assert_eq!(c.documents(), 51);
    assert_eq!(version("d0"), Some(2));
    assert_eq!(version("d1"), Some(7), "overwritten during the compaction");
    assert_eq!(version("d2"), Some(8), "deleted, then written again during it");
    assert_eq!(version("d3"), None, "deleted during it");
    assert_eq!(version("d900"), Some(0), "written during it");
    assert_eq!(version("d901"), Some(0), "written just before its last step");
}

#[test]
fn a_compaction_lets_queries_and_writes_through_and_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let c = due_for_compaction(dir.path(), dim);
    let log = dir.path().join("wal.log");
    let before = c.read().unwrap().log_bytes();
    let (to_test, at_stage) = std::sync::mpsc::channel::<Stage>();
    let (go, to_compaction) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // The compaction on a thread of its own, paused at each stage until told to go on.
        let shared = &c;
        let compaction = s.spawn(move || {
            compact_concurrently_at(shared, &|| false, None, &mut |stage| {
                to_test.send(stage).unwrap();
                to_compaction.recv().unwrap();
            })
        });
        for want in [Stage::Frozen, Stage::Written] {
            let stage = at_stage.recv().unwrap();
            assert_eq!(stage, want);
            // A query while it is paused: the read lock is free, and it sees the documents.
            {
                let g = c.try_read().expect("a query does not wait for the compaction");
                let q = vector(5, 5, dim);
                assert_eq!(g.dense(&q, &g.allowed(None)).len(), g.chunks());
                assert!(g.contains("d0"));
            }
            write_during(&c, stage, dim);
            assert!(c.read().unwrap().contains("d900"), "a write is visible at once");
            if stage == Stage::Written {
                assert_eq!(wal::compact_leftovers(&log).len(), 1, "the compacted log is written");
            }
            go.send(()).unwrap();
        }
        assert_eq!(at_stage.recv().unwrap(), Stage::Switched);
        go.send(()).unwrap();
        assert!(compaction.join().unwrap().unwrap(), "it compacted");
    });
    let mut c = c.into_inner().unwrap();
    assert!(c.log_bytes() < before, "{} of {before} bytes", c.log_bytes());
    assert!(wal::compact_leftovers(&log).is_empty());
    check_all_writes(&c);
    // Appends go to the new log.
    c.write(Record::Upsert { docs: vec![doc(902, 0, dim)] }).unwrap();
    let now = fingerprint(&c, dim);
    drop(c);
    let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!(fingerprint(&c, dim), now, "the same documents in the same slots");
    assert!(c.contains("d902"));
}

#[test]
fn a_compaction_interrupted_at_any_step_loses_no_write() {
    use wal::Failpoint::*;
    for failpoint in [Torn, BeforeTail, BeforeRename, AfterRename] {
        let dir = tempfile::tempdir().unwrap();
        let dim = 8;
        let c = due_for_compaction(dir.path(), dim);
        let log = dir.path().join("wal.log");
        let before = c.read().unwrap().log_bytes();
        let (mut stages, mut at_snapshot) = (Vec::new(), Vec::new());
        let e = compact_concurrently_at(&c, &|| false, Some(failpoint), &mut |stage| {
            if stage == Stage::Frozen {
                at_snapshot = fingerprint(&c.read().unwrap(), dim);
            }
            write_during(&c, stage, dim);
            stages.push(stage);
        })
        .unwrap_err();
        assert!(e.to_string().contains("failpoint"), "{failpoint:?}: {e}");
        let want = if failpoint == Torn { 1 } else { 2 };
        assert_eq!(stages.len(), want, "{failpoint:?}: {stages:?}");
        if failpoint == BeforeTail {
            // The compacted log without the records written since is the state as of the
            // snapshot, though writes reused the slots of d1 (overwritten) before the
            // compaction read their vectors.
            let tmp = wal::compact_leftovers(&log);
            let alone = tempfile::tempdir().unwrap();
            std::fs::copy(&tmp[0], alone.path().join("wal.log")).unwrap();
            let snapshot = Collection::open(alone.path(), meta(dim), &|m| panic!("{m}")).unwrap();
            assert_eq!(fingerprint(&snapshot, dim), at_snapshot, "the state at the snapshot");
        }
        if failpoint == Torn {
            // Written after the compaction stopped, before the "crash".
            write_during(&c, Stage::Written, dim);
        }
        let live = fingerprint(&c.read().unwrap(), dim);
        // The process dies here: the collection is dropped as it is.
        drop(c);
        let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{failpoint:?}: {m}")).unwrap();
        assert!(wal::compact_leftovers(&log).is_empty(), "{failpoint:?}: temp file removed");
        check_all_writes(&c);
        assert_eq!(fingerprint(&c, dim), live, "{failpoint:?}: the same state");
        let after = c.log_bytes();
        if failpoint == AfterRename {
            assert!(after < before, "{failpoint:?}: the new log is in use: {after} of {before}");
        } else {
            assert!(after > before, "{failpoint:?}: the old log is in use: {after} of {before}");
        }
    }
}

#[test]
fn a_compaction_of_a_collection_deleted_meanwhile_switches_nothing_in() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let c = due_for_compaction(dir.path(), dim);
    let log = dir.path().join("wal.log");
    let before = std::fs::read(&log).unwrap();
    let e = compact_concurrently_at(&c, &|| false, None, &mut |stage| {
        if stage == Stage::Written {
            c.write().unwrap().dropped = true; // as a delete, a restore or `stop` does
        }
    })
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert_eq!(std::fs::read(&log).unwrap(), before, "the log is untouched");
    assert!(wal::compact_leftovers(&log).is_empty(), "its temp file is removed");
}

#[test]
fn a_cancelled_compaction_keeps_the_log_and_a_later_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let c = due_for_compaction(dir.path(), dim);
    let before = c.read().unwrap().log_bytes();
    let e = compact_concurrently(&c, &|| true).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{e}");
    assert_eq!(c.read().unwrap().log_bytes(), before);
    assert!(wal::compact_leftovers(&dir.path().join("wal.log")).is_empty());
    assert!(compact_concurrently(&c, &|| false).unwrap(), "not left marked as running");
    assert!(c.read().unwrap().log_bytes() < before);
}

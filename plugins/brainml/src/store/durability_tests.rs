//! The log's formats and compaction, on real files: records written by the first (JSON)
//! format still read, compaction keeps every document in its slot, and a torn tail after a
//! compaction is still cut.

use std::io::Write;

use serde_json::{Map, Value};

use super::collection::{ChunkRecord, Collection, DocRecord, Meta, Record};
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

#[test]
fn compaction_keeps_every_document_in_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 64;
    let mut c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    // 1500 documents rewritten over and over, some deleted: most of the log goes dead.
    let (mut written, mut compactions) = (0, 0);
    for round in 0..30 {
        let docs = || (0..1500).map(|n| doc(n, round, dim)).collect::<Vec<_>>();
        let record = crate::store::record::encode(&Record::Upsert { docs: docs() });
        written += record.len() as u64 + 8;
        let before = c.log_bytes();
        c.write(Record::Upsert { docs: docs() }).unwrap();
        if c.log_bytes() < before + record.len() as u64 + 8 {
            compactions += 1;
        }
        if round % 10 == 9 {
            let ids = (0..1500).filter(|n| n % 7 == round % 7).map(|n| format!("d{n}")).collect();
            c.write(Record::Delete { ids }).unwrap();
        }
    }
    assert!(written > 3 * (8 << 20), "{written} bytes written");
    assert!(compactions >= 2, "{compactions} compactions");
    assert!(c.log_bytes() < 8 << 20, "compacted on its own: {} of {written}", c.log_bytes());
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
    let tmp = wal::compact_path(&dir.path().join("wal.log"));
    std::fs::write(&tmp, &wal::frame(b"\xB2 half a compacted log")[..9]).unwrap();
    let c = Collection::open(dir.path(), meta(dim), &|m| panic!("{m}")).unwrap();
    assert_eq!(fingerprint(&c, dim), before);
    assert!(!tmp.exists(), "the leftover temp file is removed");
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

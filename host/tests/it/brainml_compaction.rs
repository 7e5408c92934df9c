//! `brainml` compacts a collection's write-ahead log in a real host: the write call that makes
//! it due compacts it after letting go of the collection's lock, and a process killed at a
//! compaction's riskiest step (the new log renamed in, nothing switched in memory) loses no
//! acknowledged document. The unit tests (plugins/brainml/src/store/durability_tests.rs) pause
//! a compaction at each step with writes and queries in between; these show the same through
//! the plugin's calls, its process and its unloading.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{lib_name, product_plugin, Host};

const DIM: usize = 256;
const DOCS: usize = 2500;

/// Document `n`'s vector in `round`: distinct pseudo-random values (xorshift).
fn vector(n: usize, round: usize) -> Vec<f32> {
    let mut x = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (round as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) =
        host.post_json(&format!("/api/plugins/brainml/{capability}"), &body.to_string());
    assert!(status == 200 || status == 201, "{capability} -> {status} {v}");
    v
}

/// A host with `brainml` running (vector collections need no `candle`).
fn brainml_host(env: &[(&str, &str)]) -> Host {
    let host = Host::start_with_env(&[], env);
    host.install(&product_plugin("brainml"), &lib_name("bkg_plugin_brainml"));
    host.wait_state("brainml", "running");
    host
}

/// Write documents `start..start + 250` of `round` in one call, each with its round in its
/// metadata.
fn write_call(host: &Host, start: usize, round: usize) {
    let docs: Vec<Value> = (start..start + 250)
        .map(|n| json!({ "id": format!("d{n}"), "vector": vector(n, round), "metadata": { "round": round } }))
        .collect();
    ok(host, "index", json!({ "collection": "c", "documents": docs }));
}

/// Write every document of `round` (250 a call).
fn write_round(host: &Host, round: usize) {
    for start in (0..DOCS).step_by(250) {
        write_call(host, start, round);
    }
}

/// Every document answers with the vector of the round `round(n)` it was last written in
/// (l2: its own vector is at distance 0).
fn check_documents(host: &Host, round: &dyn Fn(usize) -> usize) {
    let got = ok(host, "collection.get", json!({ "name": "c" }));
    assert_eq!(got["documents"], DOCS, "{got}");
    for n in (0..DOCS).step_by(97).chain([DOCS - 1]) {
        let r = round(n);
        let v = ok(host, "query", json!({ "collection": "c", "vector": vector(n, r), "k": 1 }));
        let hit = &v["hits"][0];
        assert_eq!(hit["id"], format!("d{n}"), "{v}");
        assert_eq!(hit["metadata"]["round"], r, "{v}");
    }
}

/// The collection's folder (under the plugin's data dir).
fn collection_dir(root: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "c") && p.join("wal.log").exists() {
                return Some(p);
            }
            if let Some(found) = collection_dir(&p) {
                return Some(found);
            }
        }
    }
    None
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".compact"))
        .collect()
}

#[test]
fn brainml_compacts_a_mostly_dead_log_on_the_write_call_and_keeps_every_document_then_unloads() {
    let host = brainml_host(&[]);
    ok(&host, "collection.create", json!({ "name": "c", "dim": DIM, "distance": "l2" }));
    // Four rounds of every document: ~10.6 MB written, a quarter of it live.
    for round in 0..4 {
        write_round(&host, round);
    }
    host.wait_for("the compaction to be logged", || {
        host.log().contains("collection c: compacted its write-ahead log")
    });
    let dir = collection_dir(&host.data_dir()).expect("the collection's folder");
    let wal = std::fs::metadata(dir.join("wal.log")).unwrap().len();
    assert!(wal < 8 << 20, "the log was compacted: {wal} bytes");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    check_documents(&host, &|_| 3);

    let host = host.kill_and_restart(&[]);
    host.wait_state("brainml", "running");
    check_documents(&host, &|_| 3);
    write_round(&host, 4);
    check_documents(&host, &|_| 4);

    // Removing the file unloads the plugin: the compaction left no thread behind.
    host.remove(&lib_name("bkg_plugin_brainml"));
    let p = host.wait_residency("brainml");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

#[test]
fn brainml_killed_right_after_a_compaction_renamed_its_new_log_in_loses_no_document() {
    // The failpoint: the compaction renames the new log over the old one, fsyncs the folder,
    // and stops before anything in memory switches to it; the process is then killed.
    let host = brainml_host(&[("BKG_BRAINML_FAILPOINT", "compact-after-rename")]);
    ok(&host, "collection.create", json!({ "name": "c", "dim": DIM, "distance": "l2" }));
    // Call by call, so that the process is killed right after the call that compacted.
    let mut written = vec![0usize; DOCS];
    'rounds: for round in 0..8 {
        for start in (0..DOCS).step_by(250) {
            write_call(&host, start, round);
            written[start..start + 250].fill(round);
            if host.log().contains("failpoint compact-after-rename") {
                break 'rounds;
            }
        }
    }
    assert!(host.log().contains("failpoint compact-after-rename"), "{}", host.log());
    let host = host.kill_and_restart(&[]);
    host.wait_state("brainml", "running");
    check_documents(&host, &|n| written[n]);
    let dir = collection_dir(&host.data_dir()).expect("the collection's folder");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    let wal = std::fs::metadata(dir.join("wal.log")).unwrap().len();
    assert!(wal < 8 << 20, "the new, compacted log is the one in use: {wal} bytes");
}

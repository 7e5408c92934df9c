//! `brainml` hot-swapped while it is written and queried: no failed request, no lost write.
//! The host starts the new generation beside the old one and retires the old one after the
//! routing switched, so the two overlap; brainml hands its data over between them
//! (plugins/brainml/src/handoff.rs).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::brainml::{args, brain_host_with, call, hit_ids, ok, paragraphs};
use crate::support::{lib_name, product_plugin};

#[test]
fn brainml_survives_its_own_hot_swaps_under_writes_and_queries_and_loses_no_write() {
    let models = tempfile::tempdir().unwrap();
    let args = args(&models);
    let host = brain_host_with(&args);
    ok(&host, "collection.create", json!({ "name": "swapped" }));
    let paras = paragraphs();
    let generation = host.plugin("brainml")["generation"].as_u64().unwrap();

    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::<String>::new());
    let acked_count = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let queries = AtomicUsize::new(0);
    let swaps = 3;
    std::thread::scope(|s| {
        // One writer, one document per call, recording what was acknowledged.
        s.spawn(|| {
            for (id, license, text) in paras.iter().cycle().take(2000) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let n = acked_count.load(Ordering::SeqCst);
                let id = format!("{id}-{n}");
                let body = json!({ "collection": "swapped", "documents": [
                    { "id": id, "text": text, "metadata": { "license": license } }] });
                match call(&host, "index", body) {
                    (200, _) => {
                        acked.lock().unwrap().push(id);
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    (status, v) => failures.lock().unwrap().push(format!("index {status} {v}")),
                }
            }
        });
        // One reader, in every mode.
        s.spawn(|| {
            let modes = ["hybrid", "dense", "bm25"];
            while !stop.load(Ordering::SeqCst) {
                let i = queries.fetch_add(1, Ordering::SeqCst);
                let body = json!({ "collection": "swapped", "text": "warranty of any kind",
                                   "mode": modes[i % 3], "k": 3 });
                if let (status @ 400.., v) = call(&host, "query", body) {
                    failures.lock().unwrap().push(format!("query {status} {v}"));
                }
            }
        });
        let wait_acks = |at_least: usize| {
            host.wait_for(&format!("{at_least} acknowledged writes"), || {
                acked_count.load(Ordering::SeqCst) >= at_least
                    || !failures.lock().unwrap().is_empty()
            })
        };
        for swap in 1..=swaps {
            wait_acks(acked_count.load(Ordering::SeqCst) + 8);
            // A new build of brainml: the same code with bytes appended (another file hash).
            let mut bytes = std::fs::read(product_plugin("brainml")).unwrap();
            bytes.extend(std::iter::repeat_n(0u8, swap as usize));
            host.install_bytes(&bytes, &lib_name("bkg_plugin_brainml"));
            host.wait_for(&format!("swap {swap}"), || {
                let p = host.plugin("brainml");
                p["generation"].as_u64() == Some(generation + swap) && p["state"] == "running"
            });
        }
        wait_acks(acked_count.load(Ordering::SeqCst) + 8);
        stop.store(true, Ordering::SeqCst);
    });

    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} failed across the swaps: {failures:?}", failures.len());
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 8 * (swaps as usize + 1), "{} writes", acked.len());
    assert!(queries.load(Ordering::SeqCst) > 10, "too few queries to mean anything");
    // Every acknowledged write is in the serving generation, and each is found by its words.
    let info = ok(&host, "collection.get", json!({ "name": "swapped" }));
    assert_eq!(info["documents"], acked.len(), "{info}");
    let p = host.plugin("brainml");
    for old in p["history"].as_array().unwrap().iter().take(swaps as usize) {
        assert_eq!(old["reason"], "swapped", "{old}");
        assert_eq!(old["residency"], "unloaded", "{old}");
    }
    // And in the log on disk: a restart replays the same documents, nothing cut.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = host.kill_and_restart(&args);
    host.wait_state("brainml", "running");
    let after = ok(&host, "collection.get", json!({ "name": "swapped" }));
    assert_eq!(after["documents"], acked.len(), "{after}");
    assert!(!host.log().contains("cut its write-ahead log"), "{}", host.log());
    let last = acked.last().unwrap();
    let text = &paras[(acked.len() - 1) % paras.len()].2;
    let v: Value = ok(
        &host,
        "query",
        json!({ "collection": "swapped", "text": text, "mode": "bm25", "k": 50,
                "filter": { "license": paras[(acked.len() - 1) % paras.len()].1 } }),
    );
    assert!(hit_ids(&v).contains(last), "the last acknowledged write {last}: {v}");
}

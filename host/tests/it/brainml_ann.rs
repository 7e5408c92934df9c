//! brainml's approximate nearest-neighbour index (issue 12, ANN): `train` builds an HNSW graph
//! over real all-MiniLM-L6-v2 embeddings (real `candle`) of real text (the paragraphs of the
//! machine's license texts and Debian copyright files), with `exact_threshold` configured low.
//! The test measures recall@10 itself against the exact dense results taken before training,
//! unfiltered and filtered; then freshness, deletions, a train while queries run, `query.batch`,
//! a restart (the saved index is loaded) and a clean unload.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::brainml::{args, brain_host_with, call, hit_ids, ok};
use crate::support::{lib_name, Host};

/// Distinct paragraphs of 20 to 60 words, `(id, source, text)`, thinned evenly to `max`.
fn corpus(max: usize) -> Vec<(String, String, String)> {
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut licenses: Vec<_> = std::fs::read_dir("/usr/share/common-licenses")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    licenses.sort();
    files.extend(licenses.into_iter().map(|p| ("license".to_string(), p)));
    let mut docs: Vec<_> = std::fs::read_dir("/usr/share/doc")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("copyright"))
        .filter(|p| p.is_file())
        .collect();
    docs.sort();
    files.extend(docs.into_iter().map(|p| ("copyright".to_string(), p)));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (source, path) in files {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        for p in text.split("\n\n") {
            let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
            let words = p.split(' ').count();
            if (20..=60).contains(&words) && seen.insert(p.clone()) {
                out.push((format!("p{}", out.len()), source.clone(), p));
            }
        }
    }
    assert!(out.len() >= 520, "only {} paragraphs on this machine", out.len());
    let step = out.len() as f64 / max.min(out.len()) as f64;
    (0..max.min(out.len())).map(|i| out[(i as f64 * step) as usize].clone()).collect()
}

fn index(host: &Host, docs: &[(String, String, String)]) {
    for batch in docs.chunks(50) {
        let documents: Vec<Value> = batch
            .iter()
            .map(|(id, source, text)| json!({ "id": id, "text": text, "metadata": { "source": source } }))
            .collect();
        ok(host, "index", json!({ "collection": "ann", "documents": documents }));
    }
}

/// The first dozen words of a paragraph: a query that paraphrases part of it.
fn query_text(text: &str) -> String {
    text.split(' ').take(12).collect::<Vec<_>>().join(" ")
}

/// A dense query's top 10 as `id#chunk`.
fn top10(host: &Host, text: &str, filter: Option<&Value>) -> Vec<String> {
    let mut body =
        json!({ "collection": "ann", "text": text, "mode": "dense", "k": 10, "with_text": false });
    if let Some(f) = filter {
        body["filter"] = f.clone();
    }
    let v = ok(host, "query", body);
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}#{}", h["id"].as_str().unwrap(), h["chunk"]))
        .collect()
}

fn recall(truth: &[Vec<String>], got: &[Vec<String>]) -> f64 {
    let (mut found, mut total) = (0, 0);
    for (t, g) in truth.iter().zip(got) {
        total += t.len();
        found += g.iter().filter(|x| t.contains(x)).count();
    }
    found as f64 / total.max(1) as f64
}

fn embed(host: &Host, texts: &[String]) -> Vec<Value> {
    let (status, v) = host.post_json(
        "/api/plugins/candle/model.infer",
        &json!({ "model": "all-MiniLM-L6-v2", "input": texts }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    v["embeddings"].as_array().unwrap().clone()
}

fn stats(host: &Host) -> Value {
    ok(host, "stats", json!({ "collection": "ann" }))["collections"][0].clone()
}

#[test]
fn brainml_ann_train_keeps_recall_freshness_and_deletions_and_survives_a_restart() {
    let models = tempfile::tempdir().unwrap();
    let args = args(&models);
    let mut host = brain_host_with(&args);
    let (status, v) = host.post_json(
        "/api/core/plugins/brainml/config",
        &json!({ "exact_threshold": 200 }).to_string(),
    );
    assert!(status == 200 || status == 204, "{status} {v}");

    let all = corpus(520);
    let (docs, spare) = all.split_at(all.len() - 20);
    ok(&host, "collection.create", json!({ "name": "ann" }));
    index(&host, docs);

    // Below the threshold: exact, with the reason; bad requests name the problem.
    ok(&host, "collection.create", json!({ "name": "tiny", "dim": 3 }));
    let documents: Vec<Value> =
        (0..3).map(|i| json!({ "id": format!("t{i}"), "vector": [1.0, i as f64, 0.5] })).collect();
    ok(&host, "index", json!({ "collection": "tiny", "documents": documents }));
    let v = ok(&host, "train", json!({ "collection": "tiny" }));
    assert_eq!(v["index"], "exact", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("3 vectors are below the exact_threshold 200"),
        "{v}"
    );
    for (body, code, needle) in [
        (json!({ "collection": "ann", "m": 1 }), 400, "m 1"),
        (json!({ "collection": "ann", "quantization": "int4" }), 400, "int4"),
        (json!({ "collection": "ann", "target_recall": 1.5 }), 400, "target_recall"),
        (json!({ "collection": "nope" }), 404, "nope"),
    ] {
        let (status, v) = call(&host, "train", body.clone());
        assert_eq!(status, code, "{body}: {v}");
        assert!(v.to_string().contains(needle), "{body}: {v}");
    }
    let v = ok(&host, "train.status", json!({ "collection": "ann" }));
    assert_eq!((&v["state"], &v["index"]), (&json!("none"), &json!("exact")), "{v}");

    // The exact answers, before any index exists.
    let queries: Vec<String> =
        docs.iter().step_by(docs.len() / 60).map(|d| query_text(&d.2)).collect();
    let filter = json!({ "source": "copyright" });
    let exact: Vec<Vec<String>> = queries.iter().map(|q| top10(&host, q, None)).collect();
    let exact_f: Vec<Vec<String>> =
        queries.iter().map(|q| top10(&host, q, Some(&filter))).collect();
    assert_eq!(stats(&host)["index"], "exact");

    // Train (waiting): the plugin's own recall and the test's agree that it is >= 0.95.
    let v = ok(&host, "train", json!({ "collection": "ann", "wait": true, "sample": 300 }));
    assert_eq!((&v["state"], &v["index"]), (&json!("done"), &json!("hnsw")), "{v}");
    assert!(v["recall_at_10"].as_f64().unwrap() >= 0.95, "{v}");
    assert!(v["bytes_per_vector"].as_f64().unwrap() > 1536.0, "f32 vectors and the graph: {v}");
    let s = stats(&host);
    assert_eq!((&s["index"], &s["index_params"]["m"]), (&json!("hnsw"), &json!(16)), "{s}");
    assert!(s["last_trained_ms"].as_u64().is_some(), "{s}");
    let approx: Vec<Vec<String>> = queries.iter().map(|q| top10(&host, q, None)).collect();
    let r = recall(&exact, &approx);
    assert!(r >= 0.95, "recall@10 {r} against exact search");
    // A filter that passes most chunks is applied inside the walk, with the same recall; every
    // hit passes it.
    let approx_f: Vec<Vec<String>> =
        queries.iter().map(|q| top10(&host, q, Some(&filter))).collect();
    let r = recall(&exact_f, &approx_f);
    assert!(r >= 0.95, "filtered recall@10 {r}");
    let sources: HashSet<&str> =
        docs.iter().filter(|d| d.1 == "copyright").map(|d| d.0.as_str()).collect();
    assert!(approx_f.iter().flatten().all(|h| sources.contains(h.split('#').next().unwrap())));

    // query.batch answers each vector as `query` does.
    let vectors = embed(&host, &queries[..8]);
    let v = ok(
        &host,
        "query.batch",
        json!({ "collection": "ann", "vectors": vectors, "k": 10, "with_text": false }),
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "{v}");
    for (res, want) in results.iter().zip(&approx) {
        let got: Vec<String> = res["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| format!("{}#{}", h["id"].as_str().unwrap(), h["chunk"]))
            .collect();
        assert_eq!(&got, want);
    }

    // Freshness: a paragraph indexed after training is found by the next query.
    let (new_id, _, new_text) = &spare[0];
    ok(
        &host,
        "index",
        json!({ "collection": "ann", "documents": [{ "id": new_id, "text": new_text, "metadata": { "source": "license" } }] }),
    );
    let first = |host: &Host, text: &str| {
        let v = ok(
            host,
            "query",
            json!({ "collection": "ann", "text": text, "mode": "dense", "k": 10 }),
        );
        hit_ids(&v)
    };
    assert_eq!(first(&host, new_text)[0], *new_id);
    // Deletions are honoured: the paragraph that answered its own text best is gone.
    let (gone, _, gone_text) = &docs[7];
    assert_eq!(first(&host, gone_text)[0], *gone, "before the delete");
    ok(&host, "delete", json!({ "collection": "ann", "ids": [gone] }));
    assert!(!first(&host, gone_text).contains(gone), "a deleted document came back");

    // A train while queries run: no query fails.
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let body = json!({ "collection": "ann", "vectors": vectors, "k": 5 });
            while !stop.load(Ordering::Relaxed) {
                let v = ok(&host, "query.batch", body.clone());
                let results = v["results"].as_array().unwrap();
                assert!(results.iter().all(|r| r["hits"].as_array().unwrap().len() == 5), "{v}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (status, v) = call(
            &host,
            "train",
            json!({ "collection": "ann", "ef_construction": 300, "sample": 200 }),
        );
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["job"]["state"], "running", "{v}");
        // One job per collection: a second train while it runs is refused.
        let (again, v2) = call(&host, "train", json!({ "collection": "ann" }));
        let still = ok(&host, "train.status", json!({ "collection": "ann" }));
        assert!(again == 409 || still["state"] != "running", "{again} {v2} {still}");
        if again == 409 {
            assert!(v2.to_string().contains("running"), "{v2}");
        }
        host.wait_for("the second train", || {
            ok(&host, "train.status", json!({ "collection": "ann" }))["state"] == "done"
        });
        let at_switch = served.load(Ordering::Relaxed);
        host.wait_for("queries after the switch", || served.load(Ordering::Relaxed) > at_switch);
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("no query failed during the train");
    });
    assert!(served.load(Ordering::Relaxed) >= 2);
    let s = ok(&host, "train.status", json!({ "collection": "ann" }));
    assert_eq!(s["params"]["ef_construction"], 300, "{s}");

    // int8: the walk runs on byte codes, the best candidates are rescored exactly on the f32
    // vectors, which leave memory for the collection's vectors.f32; recall holds.
    let v = ok(
        &host,
        "train",
        json!({ "collection": "ann", "quantization": "int8", "wait": true, "sample": 300 }),
    );
    assert_eq!(
        (&v["state"], &v["params"]["quantization"]),
        (&json!("done"), &json!("int8")),
        "{v}"
    );
    assert!(v["recall_at_10"].as_f64().unwrap() >= 0.95, "{v}");
    let per_vector = v["bytes_per_vector"].as_f64().unwrap();
    assert!(per_vector < 1536.0 * 0.5, "no f32 copy in memory: {per_vector} bytes per vector");
    let folder = host.data_dir().join("plugin-data/brainml/collections/ann");
    assert!(folder.join("vectors.f32").is_file(), "{}", folder.display());
    let approx: Vec<Vec<String>> = queries.iter().map(|q| top10(&host, q, None)).collect();
    let r = recall(&exact, &approx);
    assert!(r >= 0.93, "int8 recall@10 {r} against exact search");

    // Written after the index was saved: inserted again when it is read back.
    let (late_id, _, late_text) = &spare[1];
    ok(
        &host,
        "index",
        json!({ "collection": "ann", "documents": [{ "id": late_id, "text": late_text }] }),
    );

    // Restart: the saved index is read back (no retrain), the late paragraph is still found
    // and the deleted one stays gone.
    host = host.restart(&args.iter().map(String::as_str).collect::<Vec<_>>());
    host.wait_state("brainml", "running");
    let s = stats(&host);
    assert_eq!(s["index"], "hnsw", "{s}");
    assert_eq!(s["index_params"]["quantization"], "int8", "{s}");
    let t = ok(&host, "train.status", json!({ "collection": "ann" }));
    assert_eq!((&t["state"], &t["index"]), (&json!("done"), &json!("hnsw")), "{t}");
    // Two paragraphs were added and one deleted since the exact answers were taken: a
    // little of the truth moved, the rest is found as before.
    let after: Vec<Vec<String>> = queries.iter().map(|q| top10(&host, q, None)).collect();
    let r = recall(&exact, &after);
    assert!(r >= 0.93, "recall@10 {r} after the restart");
    assert_eq!(first(&host, new_text)[0], *new_id);
    assert_eq!(first(&host, late_text)[0], *late_id);
    assert!(!first(&host, gone_text).contains(gone));
    assert!(!host.log().contains("searched exactly while the index is rebuilt"), "{}", host.log());

    // A damaged ann.bin is not trusted: exact search at once, the index rebuilt in the
    // background (default parameters: the file's own could not be read).
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    host = host.kill_edit_and_restart(&args_ref, |data| {
        let f = data.join("plugin-data/brainml/collections/ann/ann.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&f, bytes).unwrap();
    });
    host.wait_state("brainml", "running");
    host.wait_for("the rebuilt index", || {
        let s = ok(&host, "train.status", json!({ "collection": "ann" }));
        s["state"] == "done" && s["index"] == "hnsw"
    });
    assert!(host.log().contains("ann.bin: checksum mismatch"), "{}", host.log());
    let s = stats(&host);
    assert_eq!((&s["index"], &s["index_params"]["quantization"]), (&json!("hnsw"), &json!("none")));
    assert_eq!(first(&host, late_text)[0], *late_id);
    assert!(!first(&host, gone_text).contains(gone));

    // The plugin still unloads cleanly: the train threads were joined.
    host.remove(&lib_name("bkg_plugin_brainml"));
    let p = host.wait_residency("brainml");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

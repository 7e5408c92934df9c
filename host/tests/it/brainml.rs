//! The `brainml` knowledge store in a real host, with the real `candle` plugin and the real
//! all-MiniLM-L6-v2 (from `scripts/fetch-models.sh`), on real prose nobody here wrote: the
//! license texts Debian ships in /usr/share/common-licenses.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{lib_name, product_plugin, Host};

pub(crate) const LICENSES: [&str; 4] = ["GPL-3", "Apache-2.0", "MPL-2.0", "Artistic"];

pub(crate) fn models_dir(into: &Path) -> PathBuf {
    crate::support::link_models(into, &["sentence-transformers/all-MiniLM-L6-v2"])
}

pub(crate) fn args(models: &tempfile::TempDir) -> Vec<String> {
    let dir = models_dir(models.path());
    vec!["--models-dir".into(), dir.to_str().unwrap().into()]
}

/// A host with `candle` and `brainml` running.
pub(crate) fn brain_host(models: &tempfile::TempDir) -> Host {
    brain_host_with(&args(models))
}

pub(crate) fn brain_host_with(args: &[String]) -> Host {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = Host::start_with(&args);
    host.install(&product_plugin("candle"), &lib_name("bkg_plugin_candle"));
    host.install(&product_plugin("brainml"), &lib_name("bkg_plugin_brainml"));
    host.wait_state("candle", "running");
    host.wait_state("brainml", "running");
    host
}

pub(crate) fn call(host: &Host, capability: &str, body: Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/brainml/{capability}"), &body.to_string())
}

pub(crate) fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, body.clone());
    assert!(status == 200 || status == 201, "{capability} {body} -> {status} {v}");
    v
}

/// The paragraphs (at least 25 words) of the license texts, with their ids `<license>-<n>`.
pub(crate) fn paragraphs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for name in LICENSES {
        let text = std::fs::read_to_string(format!("/usr/share/common-licenses/{name}")).unwrap();
        let mut n = 0;
        for p in text.split("\n\n") {
            let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
            if p.split(' ').count() >= 25 {
                out.push((format!("{name}-{n}"), name.to_string(), p));
                n += 1;
            }
        }
    }
    out
}

pub(crate) fn index_paragraphs(
    host: &Host,
    collection: &str,
    paras: &[(String, String, String)],
) -> Vec<String> {
    let mut ids = Vec::new();
    for batch in paras.chunks(50) {
        let documents: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, (id, license, text))| {
                json!({ "id": id, "text": text,
                        "metadata": { "license": license, "len": text.len(), "even": i % 2 == 0 } })
            })
            .collect();
        let v = ok(host, "index", json!({ "collection": collection, "documents": documents }));
        assert_eq!(v["indexed"], batch.len(), "{v}");
        ids.extend(batch.iter().map(|p| p.0.clone()));
    }
    ids
}

pub(crate) fn hit_ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn the_paragraph(
    paras: &[(String, String, String)],
    license: &str,
    needle: &str,
) -> String {
    paras
        .iter()
        .find(|p| p.1 == license && p.2.contains(needle))
        .unwrap_or_else(|| panic!("no {license} paragraph with {needle:?}"))
        .0
        .clone()
}

#[test]
fn brainml_finds_fresh_documents_by_meaning_and_words_and_filters_restrict_hits() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    let created = ok(&host, "collection.create", json!({ "name": "licenses" }));
    assert_eq!(created["model"], "all-MiniLM-L6-v2", "{created}");
    assert_eq!(created["dim"], 384, "{created}");
    let paras = paragraphs();
    assert!(paras.len() > 100, "{} paragraphs", paras.len());
    index_paragraphs(&host, "licenses", &paras);
    let info = ok(&host, "collection.get", json!({ "name": "licenses" }));
    assert_eq!(info["documents"], paras.len(), "{info}");

    // (2) A question about one paragraph finds it in the top 3 of hybrid search.
    let questions = [
        (
            "Am I allowed to use the licensor's trademarks and product names?",
            "Apache-2.0",
            "does not grant permission to use the trade",
        ),
        ("Is there any warranty for the program?", "GPL-3", "THERE IS NO WARRANTY FOR THE PROGRAM"),
    ];
    for (question, license, needle) in questions {
        let want = the_paragraph(&paras, license, needle);
        let v = ok(&host, "query", json!({ "collection": "licenses", "text": question, "k": 3 }));
        assert_eq!(v["mode"], "hybrid");
        assert!(hit_ids(&v).contains(&want), "{question}: want {want} in {v}");
    }

    // (1) Freshness: a new document is found by the very next query, in each mode.
    let fresh = "Quokkas photographed on Rottnest Island smile for tourists every summer.";
    ok(
        &host,
        "index",
        json!({ "collection": "licenses",
        "documents": [{ "id": "fresh", "text": fresh, "metadata": { "license": "none" } }] }),
    );
    for mode in ["hybrid", "dense", "bm25"] {
        let v = ok(
            &host,
            "query",
            json!({ "collection": "licenses",
            "text": "quokkas on Rottnest Island", "mode": mode, "k": 1 }),
        );
        assert_eq!(hit_ids(&v), ["fresh"], "{mode}: {v}");
        assert_eq!(v["hits"][0]["text"], fresh);
        assert_eq!(v["mode"], mode);
    }
    // An upsert replaces the text at once; a delete removes it at once.
    let newer = "Wombats produce cube-shaped droppings.";
    ok(
        &host,
        "index",
        json!({ "collection": "licenses", "documents": [{ "id": "fresh", "text": newer }] }),
    );
    let v = ok(
        &host,
        "query",
        json!({ "collection": "licenses", "text": "wombats cube droppings", "mode": "bm25", "k": 1 }),
    );
    assert_eq!(v["hits"][0]["text"], newer, "{v}");
    let v = ok(
        &host,
        "query",
        json!({ "collection": "licenses", "text": "quokkas Rottnest", "mode": "bm25" }),
    );
    assert!(!hit_ids(&v).contains(&"fresh".to_string()), "the old text is gone: {v}");
    let v =
        ok(&host, "delete", json!({ "collection": "licenses", "ids": ["fresh", "never-there"] }));
    assert_eq!(v["deleted"], 1);
    let v = ok(
        &host,
        "query",
        json!({ "collection": "licenses", "text": "wombats cube droppings", "mode": "bm25" }),
    );
    assert!(!hit_ids(&v).contains(&"fresh".to_string()), "{v}");

    // (3) Filters restrict the hits, in each mode.
    let text = "warranty liability damages";
    let check = |filter: Value, pass: &dyn Fn(&Value) -> bool| {
        for mode in ["hybrid", "dense", "bm25"] {
            let v = ok(
                &host,
                "query",
                json!({ "collection": "licenses", "text": text,
                "mode": mode, "k": 50, "filter": filter }),
            );
            let hits = v["hits"].as_array().unwrap();
            assert!(!hits.is_empty(), "{mode} {filter}: {v}");
            for h in hits {
                assert!(pass(&h["metadata"]), "{mode} {filter}: {h}");
            }
        }
    };
    check(json!({ "license": "MPL-2.0" }), &|m| m["license"] == "MPL-2.0");
    check(json!({ "license": { "$in": ["Artistic", "GPL-3"] } }), &|m| {
        m["license"] == "Artistic" || m["license"] == "GPL-3"
    });
    check(json!({ "len": { "$gte": 600, "$lt": 900 } }), &|m| {
        (600..900).contains(&m["len"].as_u64().unwrap())
    });
    check(json!({ "$and": [{ "license": "GPL-3" }, { "$not": { "even": true } }] }), &|m| {
        m["license"] == "GPL-3" && m["even"] == false
    });
    check(json!({ "$or": [{ "license": "Apache-2.0" }, { "len": { "$gt": 1500 } }] }), &|m| {
        m["license"] == "Apache-2.0" || m["len"].as_u64().unwrap() > 1500
    });
    // A filter nothing passes gives no hits; the unfiltered query gives some.
    let v = ok(
        &host,
        "query",
        json!({ "collection": "licenses", "text": text, "filter": { "license": "none" } }),
    );
    assert_eq!(v["hits"], json!([]), "{v}");
    // Delete by filter.
    let mpl = paras.iter().filter(|p| p.1 == "MPL-2.0").count();
    let v = ok(
        &host,
        "delete",
        json!({ "collection": "licenses", "filter": { "license": "MPL-2.0" } }),
    );
    assert_eq!(v["deleted"], mpl, "{v}");
    let info = ok(&host, "collection.get", json!({ "name": "licenses" }));
    assert_eq!(info["documents"], paras.len() - mpl, "{info}");
    let stats = ok(&host, "stats", json!({ "collection": "licenses" }));
    let s = &stats["collections"][0];
    assert_eq!(s["index"], "exact");
    assert!(
        s["queries"].as_u64().unwrap() >= 20 && s["bytes_on_disk"].as_u64().unwrap() > 0,
        "{stats}"
    );
}

#[test]
fn brainml_keeps_every_acknowledged_document_across_kill_9_and_cuts_a_garbage_log_tail() {
    let models = tempfile::tempdir().unwrap();
    let args = args(&models);
    let host = brain_host_with(&args);
    ok(&host, "collection.create", json!({ "name": "durable" }));
    ok(&host, "collection.create", json!({ "name": "vectors", "dim": 3, "distance": "l2" }));
    let paras = paragraphs();
    let ids = index_paragraphs(&host, "durable", &paras[..120]);
    ok(
        &host,
        "index",
        json!({ "collection": "vectors", "documents": [
        { "id": "a", "vector": [1.0, 0.0, 0.0] }, { "id": "b", "vector": [0.0, 1.0, 0.0] }] }),
    );
    let before = ok(&host, "collection.list", json!({}));

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = host.kill_and_restart(&args);
    host.wait_state("brainml", "running");
    let after = ok(&host, "collection.list", json!({}));
    assert_eq!(after, before, "the counts agree");
    for id in &ids {
        let v = ok(
            &host,
            "query",
            json!({ "collection": "durable", "text": paras.iter().find(|p| &p.0 == id).unwrap().2, "mode": "bm25", "k": 1 }),
        );
        assert_eq!(&hit_ids(&v)[0], id, "{v}");
    }
    let v =
        ok(&host, "query", json!({ "collection": "vectors", "vector": [0.1, 0.9, 0.0], "k": 1 }));
    assert_eq!(hit_ids(&v), ["b"], "{v}");

    // Garbage at the end of a log, written while the host is down, is cut on the next start.
    let mut wal_len = 0;
    let host = host.kill_edit_and_restart(&args, |data| {
        let wal = find(data, "wal.log", "vectors").expect("the vectors collection's log");
        wal_len = std::fs::metadata(&wal).unwrap().len();
        let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
        f.write_all(b"\x10\x00\x00\x00garbage").unwrap();
    });
    host.wait_state("brainml", "running");
    host.wait_for("the cut to be logged", || host.log().contains("cut its write-ahead log"));
    let wal = find(host.models_dir().parent().unwrap(), "wal.log", "vectors").unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), wal_len, "the garbage is cut off");
    let v =
        ok(&host, "query", json!({ "collection": "vectors", "vector": [0.9, 0.1, 0.0], "k": 2 }));
    assert_eq!(hit_ids(&v), ["a", "b"], "{v}");
    ok(
        &host,
        "index",
        json!({ "collection": "vectors", "documents": [{ "id": "c", "vector": [0.0, 0.0, 1.0] }] }),
    );
    assert_eq!(ok(&host, "collection.get", json!({ "name": "vectors" }))["documents"], 3);
}

/// The file `name` under `root` whose path contains `within`.
fn find(root: &Path, name: &str, within: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find(&p, name, within) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == name) && p.to_string_lossy().contains(within) {
            return Some(p);
        }
    }
    None
}

#[test]
fn brainml_refuses_bad_input_with_a_4xx_and_keeps_answering_then_unloads() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "words" }));
    ok(&host, "collection.create", json!({ "name": "vec", "dim": 3 }));
    ok(
        &host,
        "index",
        json!({ "collection": "vec", "documents": [{ "id": "a", "vector": [1, 2, 3], "text": "first" }] }),
    );
    ok(
        &host,
        "index",
        json!({ "collection": "words", "documents": [{ "id": "a", "text": "The quick brown fox." }] }),
    );
    let bad: Vec<(&str, String, u16, &str)> = vec![
        ("query", json!({ "collection": "nope", "text": "x" }).to_string(), 404, "nope"),
        ("index", json!({ "collection": "nope", "documents": [{ "id": "a", "text": "x" }] }).to_string(), 404, "nope"),
        ("collection.get", json!({ "name": "nope" }).to_string(), 404, "nope"),
        ("collection.create", json!({ "name": "vec", "dim": 3 }).to_string(), 409, "exists"),
        ("collection.create", json!({ "name": "Bad Name", "dim": 3 }).to_string(), 400, "name"),
        ("collection.create", json!({ "name": "both", "dim": 3, "model": "all-MiniLM-L6-v2" }).to_string(), 400, "not both"),
        ("index", json!({ "collection": "vec", "documents": [{ "id": "b", "vector": [1, 2] }] }).to_string(), 400, "dimension"),
        ("query", json!({ "collection": "vec", "vector": [1, 2, 3, 4] }).to_string(), 400, "dimension"),
        // JSON has no NaN: a value too large for f32 is the reachable non-finite input, and
        // serde refuses 1e999 itself (a 400 from the parser); a string is refused likewise.
        ("index", json!({ "collection": "vec", "documents": [{ "id": "b", "vector": [1, 1e300, 3] }] }).to_string(), 400, r#"document \"b\": vector value 1 (1e300) is not a finite"#),
        ("index", r#"{"collection":"vec","documents":[{"id":"b","vector":[1,1e999,3]}]}"#.to_string(), 400, "invalid"),
        ("index", json!({ "collection": "vec", "documents": [{ "id": "b", "vector": [1, "NaN", 3] }] }).to_string(), 400, "invalid"),
        ("index", json!({ "collection": "words", "documents": [{ "id": "b", "text": "  " }] }).to_string(), 400, "empty"),
        ("index", json!({ "collection": "words", "documents": [{ "id": "b" }] }).to_string(), 400, "send text"),
        ("index", json!({ "collection": "words", "documents": [{ "id": "b", "text": "x", "metadata": { "tags": ["a"] } }] }).to_string(), 400, "metadata"),
        ("query", json!({ "collection": "words", "text": "fox", "filter": { "year": { "$like": 1 } } }).to_string(), 400, "$like"),
        ("query", json!({ "collection": "words", "text": "fox", "filter": [1] }).to_string(), 400, "filter"),
        ("query", json!({ "collection": "words", "text": "fox", "k": 0 }).to_string(), 400, "k 0"),
        ("query", json!({ "collection": "words", "text": "fox", "k": 1001 }).to_string(), 400, "k 1001"),
        ("query", json!({ "collection": "words", "text": "" }).to_string(), 400, "empty"),
        ("query", json!({ "collection": "vec", "text": "first", "mode": "dense" }).to_string(), 400, "vector"),
        ("query", json!({ "collection": "vec", "vector": [1, 2, 3], "mode": "bm25" }).to_string(), 400, "text"),
    ];
    for (capability, body, status, needle) in bad {
        let (got, text) = host.post(&format!("/api/plugins/brainml/{capability}"), &body);
        assert_eq!(got, status, "{capability} {body}: {text}");
        assert!(text.contains(needle), "{capability} {body}: {text} lacks {needle:?}");
        // Nothing changed, and both collections still answer.
        let v = ok(&host, "query", json!({ "collection": "vec", "vector": [1, 2, 3], "k": 5 }));
        assert_eq!(hit_ids(&v), ["a"], "after {body}: {v}");
        let v = ok(&host, "query", json!({ "collection": "words", "text": "quick fox" }));
        assert_eq!(hit_ids(&v), ["a"], "after {body}: {v}");
    }

    // (6) Removing the file unloads the plugin: no thread of its own keeps it mapped.
    host.remove(&lib_name("bkg_plugin_brainml"));
    let p = host.wait_residency("brainml");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

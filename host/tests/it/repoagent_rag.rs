//! repoagent's code RAG (issue 14): `code.index`, `code.semantic_search` and `code.ask` in a
//! real host with the real `candle`, `brainml`, `llmserver` and `repoagent` plugins, the real
//! all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (from `scripts/fetch-models.sh`), on a real
//! crate nobody here wrote: walkdir's sources from the cargo registry, at the version
//! Cargo.lock pins (a dependency of `ignore`, so always there after the build).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::code_trees::{copy_visible_tree, registry_crate, repoagent_lib};
use crate::support::{lib_name, product_plugin, Host, ADMIN_KEY};

fn call(host: &Host, capability: &str, body: Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/repoagent/{capability}"), &body.to_string())
}

fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, body.clone());
    assert_eq!(status, 200, "{capability} {body}: {v}");
    v
}

/// A call that may take long on a loaded 2-core machine (the chat model's whole answer): the
/// host runs with a long call timeout (`rag_host`) and this client waits as long.
fn ok_patient(host: &Host, capability: &str, body: Value) -> Value {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build();
    let url = format!("{}/api/plugins/repoagent/{capability}", host.base);
    let resp = agent
        .post(&url)
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("{capability} {body}: {e}"));
    resp.into_json().unwrap()
}

/// A host with candle, llmserver, brainml and repoagent running on the real models, repoagent
/// allowed to read under `root`.
fn rag_host(models: &Path, root: &Path) -> Host {
    let dir = crate::support::link_models(
        models,
        &["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"],
    );
    let host =
        Host::start_with(&["--models-dir", dir.to_str().unwrap(), "--call-timeout-ms", "300000"]);
    for (id, lib) in [
        ("candle", "bkg_plugin_candle"),
        ("llmserver", "bkg_plugin_llmserver"),
        ("brainml", "bkg_plugin_brainml"),
        ("repoagent", "bkg_plugin_repoagent"),
    ] {
        host.install(&product_plugin(id), &lib_name(lib));
    }
    for id in ["candle", "llmserver", "brainml", "repoagent"] {
        host.wait_state(id, "running");
    }
    let (status, v) = host.post_json(
        "/api/core/plugins/repoagent/config",
        &json!({"roots": [root.to_str().unwrap()]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    host
}

/// (query, path, line): the first sentence of each documented function's doc comment and
/// where that function's name is, from the crate's own sources (tests left out).
fn doc_pairs(repo: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![repo.join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "tests") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(repo).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let t = t.strip_prefix("pub(crate) ").or(t.strip_prefix("pub ")).unwrap_or(t);
            let Some(rest) = t.strip_prefix("fn ") else { continue };
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // The doc comment above it (attributes between them skipped).
            let mut j = i;
            while j > 0 && lines[j - 1].trim_start().starts_with("#[") {
                j -= 1;
            }
            let mut doc = Vec::new();
            while j > 0 && lines[j - 1].trim_start().starts_with("///") {
                j -= 1;
                doc.push(lines[j].trim_start().trim_start_matches('/').trim());
            }
            doc.reverse();
            let para: Vec<&str> = doc.iter().copied().take_while(|d| !d.is_empty()).collect();
            let para = para.join(" ");
            let sentence = match para.find(". ") {
                Some(end) => &para[..end + 1],
                None => para.as_str(),
            };
            if sentence.split_whitespace().count() >= 4 && !name.is_empty() {
                out.push((sentence.to_string(), rel.clone(), i as u64 + 1));
            }
        }
    }
    out
}

/// MRR@10 of `pairs` searched with `mode` in `collection`.
fn mrr(host: &Host, collection: &str, mode: &str, pairs: &[(String, String, u64)]) -> f64 {
    let mut sum = 0.0;
    for (query, path, line) in pairs {
        let v = ok(
            host,
            "code.semantic_search",
            json!({"repo": "walkdir", "collection": collection, "query": query, "k": 10,
                   "mode": mode, "with_text": false}),
        );
        let hits = v["hits"].as_array().unwrap();
        if let Some(rank) = hits.iter().position(|h| h["path"] == *path && h["line"] == *line) {
            sum += 1.0 / (rank as f64 + 1.0);
        }
    }
    sum / pairs.len() as f64
}

/// POST `body` and read the whole streamed answer on a connection of the test's own (no
/// total timeout, unlike the support agent's 30 s; 300 s per read): its status and lines.
fn post_streamed(host: &Host, path: &str, body: &Value) -> (u16, Vec<String>) {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.to_string();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the answer ended in its head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let mut text = String::new();
    if chunked {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap() == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            text.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
    } else {
        reader.read_to_string(&mut text).unwrap();
    }
    (status, text.lines().map(str::to_string).collect())
}

/// POST a streamed `body` to code.index, read until its first embedding progress line, and
/// hang up.
fn leave_after_first_progress(host: &Host, body: &Value) {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.to_string();
    write!(
        tcp,
        "POST /api/plugins/repoagent/code.index HTTP/1.1\r\nHost: {addr}\r\nAuthorization: \
         Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(tcp);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "ended before any progress: {seen}");
        seen.push_str(&line);
        if line.contains("\"phase\":\"embedding\"") {
            return;
        }
    }
}

/// `code.index` streamed (an unstreamed answer must come within the host's call timeout):
/// its progress lines checked, the answer (the last line) returned.
fn index_streamed(host: &Host, mut body: Value) -> Value {
    body["stream"] = json!(true);
    let (status, lines) = post_streamed(host, "/api/plugins/repoagent/code.index", &body);
    assert_eq!(status, 200, "{lines:?}");
    let lines: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (answer, progress) = lines.split_last().unwrap();
    assert!(answer["error"].is_null(), "{answer}");
    assert!(progress.iter().any(|l| l["phase"] == "embedding"), "{lines:?}");
    let mut last = 0;
    for l in progress.iter().filter(|l| l["phase"] == "embedding") {
        let done = l["done"].as_u64().unwrap();
        assert!(done >= last && done <= l["total"].as_u64().unwrap(), "{l}");
        last = done;
    }
    answer.clone()
}

/// The server-sent events of a streamed answer: (event name, data).
fn events(host: &Host, capability: &str, body: Value) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    let mut name = None;
    let (status, lines) =
        post_streamed(host, &format!("/api/plugins/repoagent/{capability}"), &body);
    assert_eq!(status, 200, "{lines:?}");
    for l in lines {
        if let Some(n) = l.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = l.strip_prefix("data: ") {
            out.push((name.take(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

/// walkdir indexed through brainml: every chunk within the model's window by its own
/// tokenizer; a query in words finds the function that does it; a second `code.index` embeds
/// nothing, and after one function's body is edited it embeds that chunk alone; MRR@10 on
/// the doc-comment pairs (indexed without their doc comments) for hybrid, dense and bm25;
/// `code.ask` answers from the chunks found with `path:line` citations (whole and streamed);
/// brainml or candle stopped: 503 naming it; after it all the library unloads.
#[test]
fn code_rag_indexes_walkdir_finds_functions_by_meaning_and_embeds_only_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repos");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let repo = root.join("walkdir");
    copy_visible_tree(&registry_crate("walkdir"), &repo);
    let host = rag_host(&tmp.path().join("models"), &root);
    let (status, v) = call(&host, "repo.add", json!({"path": repo.to_str().unwrap()}));
    assert_eq!(status, 201, "{v}");

    // Nothing indexed yet: a clear 409; bad requests: 400 naming the problem.
    let (status, v) = call(&host, "code.semantic_search", json!({"repo": "walkdir", "query": "x"}));
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("run code.index"), "{v}");
    let (status, v) = call(&host, "code.index", json!({"repo": "walkdir", "collection": "Bad!"}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = call(&host, "code.index", json!({"repo": "nope"}));
    assert_eq!(status, 404, "{v}");

    // (1) Index, streamed: progress lines, then the answer.
    let first = index_streamed(&host, json!({"repo": "walkdir"}));
    assert_eq!(first["collection"], "repo-walkdir", "{first}");
    let total = first["chunks"].as_u64().unwrap();
    assert!(total > 80, "{first}");
    assert_eq!(first["embedded"], total, "{first}");
    assert_eq!(first["unchanged"], 0);

    // Every chunk within the model's window, by the model's own tokenizer.
    let (status, all) = host.post_json(
        "/api/plugins/brainml/query",
        &json!({"collection": "repo-walkdir", "text": "walk", "k": 1000, "mode": "dense",
                "with_text": true})
        .to_string(),
    );
    assert_eq!(status, 200, "{all}");
    let texts: Vec<&str> =
        all["hits"].as_array().unwrap().iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len() as u64, total);
    assert!(all["hits"].as_array().unwrap().iter().all(|h| h["chunk"] == 0), "one chunk each");
    let (status, tok) = host.post_json(
        "/api/plugins/candle/model.tokenize",
        &json!({"model": "all-MiniLM-L6-v2", "input": texts}).to_string(),
    );
    assert_eq!(status, 200, "{tok}");
    let longest = tok["tokens"].as_array().unwrap().iter().map(|t| t.as_array().unwrap().len());
    let longest = longest.max().unwrap();
    assert!(longest <= 240, "a chunk of {longest} word pieces");
    assert!(texts.iter().any(|t| t.contains('⋯')), "long bodies are collapsed");

    // (2) A query in words finds the function that does it.
    let v = ok(
        &host,
        "code.semantic_search",
        json!({"repo": "walkdir", "query": "follow symbolic links while walking", "k": 5}),
    );
    let hits = v["hits"].as_array().unwrap();
    let found = hits.iter().position(|h| h["name"] == "follow_links" && h["kind"] == "method");
    assert!(found.is_some(), "{v}");
    let h = &hits[found.unwrap()];
    assert_eq!((h["path"].as_str(), h["parent"].as_str()), (Some("src/lib.rs"), Some("WalkDir")));
    let line = h["line"].as_u64().unwrap() as usize;
    let source = std::fs::read_to_string(repo.join("src/lib.rs")).unwrap();
    assert!(source.lines().nth(line - 1).unwrap().contains("pub fn follow_links"), "{h}");
    assert!(h["text"].as_str().unwrap().starts_with("src/lib.rs · WalkDir · pub fn follow_links"));

    // (3) Nothing changed: nothing embedded. One function's body edited (same lines): that
    // chunk alone is embedded again and its old version deleted.
    let again = ok(&host, "code.index", json!({"repo": "walkdir"}));
    assert_eq!((again["embedded"].as_u64(), again["deleted"].as_u64()), (Some(0), Some(0)));
    assert_eq!(again["unchanged"], total);
    let edited = source.replacen("            n = 1;\n", "            n = 2;\n", 1);
    assert_ne!(edited, source);
    std::fs::write(repo.join("src/lib.rs"), &edited).unwrap();
    // The watcher updates the index; code.index reads the files as they are then.
    let edit = std::cell::RefCell::new(Value::Null);
    host.wait_for("code.index to see the edit", || {
        let v = ok(&host, "code.index", json!({"repo": "walkdir"}));
        let seen = v["embedded"] != 0;
        *edit.borrow_mut() = v;
        seen
    });
    let edit = edit.into_inner();
    assert_eq!((edit["embedded"].as_u64(), edit["deleted"].as_u64()), (Some(1), Some(1)), "{edit}");
    let after = ok(&host, "code.index", json!({"repo": "walkdir"}));
    assert_eq!(after["embedded"], 0, "{after}");
    assert_eq!(after["chunks"], total);
    let v = ok(
        &host,
        "code.semantic_search",
        json!({"repo": "walkdir", "query": "max_open", "k": 3, "mode": "bm25"}),
    );
    let max_open = v["hits"].as_array().unwrap().iter().find(|h| h["name"] == "max_open");
    assert!(max_open.unwrap()["text"].as_str().unwrap().contains("n = 2;"), "{v}");

    // A client that leaves stops code.index between two batches; what was embedded before is
    // kept and recorded, so the next call embeds the rest only.
    leave_after_first_progress(
        &host,
        &json!({"repo": "walkdir", "collection": "walkdir-leave", "stream": true}),
    );
    let mut rest = Value::Null;
    for _ in 0..1200 {
        let (status, v) =
            call(&host, "code.index", json!({"repo": "walkdir", "collection": "walkdir-leave"}));
        if status == 409 && v["error"]["message"].as_str().unwrap().contains("already running") {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 200, "{v}");
        rest = v;
        break;
    }
    assert_eq!(rest["chunks"], total, "{rest}");
    let (embedded, unchanged) = (rest["embedded"].as_u64().unwrap(), rest["unchanged"].as_u64());
    assert!(embedded > 0 && embedded < total, "the first call ran to its end: {rest}");
    assert_eq!(unchanged, Some(total - embedded), "{rest}");
    assert_eq!(host.log().matches("code.index walkdir: 213 chunks in walkdir-leave").count(), 1);

    // (4) MRR@10 on the doc-comment pairs, indexed without the doc comments.
    let pairs = doc_pairs(&repo);
    assert!(pairs.len() >= 30, "{} pairs", pairs.len());
    let v = index_streamed(
        &host,
        json!({"repo": "walkdir", "collection": "walkdir-nodocs", "docs": false}),
    );
    assert!(v["chunks"].as_u64().unwrap() > 80, "{v}");
    let (status, probe) = host.post_json(
        "/api/plugins/brainml/query",
        &json!({"collection": "walkdir-nodocs", "text": pairs[0].0, "k": 1000,
                "mode": "dense", "with_text": true})
        .to_string(),
    );
    assert_eq!(status, 200);
    for h in probe["hits"].as_array().unwrap() {
        let t = h["text"].as_str().unwrap();
        assert!(!t.lines().any(|l| l.trim_start().starts_with("///")), "a doc comment in {t}");
    }
    let mut scores = BTreeMap::new();
    for mode in ["hybrid", "dense", "bm25"] {
        scores.insert(mode, mrr(&host, "walkdir-nodocs", mode, &pairs));
    }
    eprintln!("MRR@10 over {} doc-comment pairs of walkdir: {scores:?}", pairs.len());
    assert!(scores["hybrid"] > 0.2 && scores["dense"] > 0.2, "{scores:?}");

    // (5) code.ask: the answer comes with the chunks it was given, cited as path:line.
    let question = "How do I make the directory walk follow symbolic links?";
    let v = ok_patient(
        &host,
        "code.ask",
        json!({"repo": "walkdir", "question": question, "k": 3, "max_tokens": 16}),
    );
    eprintln!("code.ask answered: {}", v["answer"]);
    assert!(!v["answer"].as_str().unwrap().trim().is_empty(), "{v}");
    let citations = v["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 3, "{v}");
    for c in citations {
        assert_eq!(c["cite"], format!("{}:{}", c["path"].as_str().unwrap(), c["line"]), "{c}");
    }
    assert!(citations.iter().any(|c| c["name"] == "follow_links"), "{v}");
    let ev = events(
        &host,
        "code.ask",
        json!({"repo": "walkdir", "question": question, "k": 3, "max_tokens": 24, "stream": true}),
    );
    assert_eq!(ev[0].0.as_deref(), Some("citations"), "{ev:?}");
    assert_eq!(ev[0].1["citations"].as_array().unwrap().len(), 3);
    let deltas = ev.iter().filter(|(n, d)| n.is_none() && d["delta"].is_string()).count();
    assert!(deltas > 1, "{ev:?}");
    let (last, done) = ev.last().unwrap();
    assert_eq!(last.as_deref(), Some("done"), "{ev:?}");
    assert!(!done["answer"].as_str().unwrap().is_empty());
    let (status, v) = call(&host, "code.ask", json!({"repo": "walkdir", "question": " "}));
    assert_eq!(status, 400, "{v}");

    // (6) candle stopped, then brainml: 503 naming each.
    assert_eq!(host.post("/api/core/plugins/candle/stop", "").0, 200);
    let (status, v) =
        call(&host, "code.index", json!({"repo": "walkdir", "collection": "walkdir-fresh"}));
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("needs the candle plugin"), "{v}");
    assert_eq!(host.post("/api/core/plugins/brainml/stop", "").0, 200);
    let (status, v) = call(&host, "code.index", json!({"repo": "walkdir"}));
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("needs the brainml plugin"), "{v}");
    let (status, v) = call(&host, "code.semantic_search", json!({"repo": "walkdir", "query": "x"}));
    assert_eq!(status, 503, "{v}");

    // (6b) repo.remove deletes the collections code.index filled for the repository, and
    // their records, through brainml: while brainml is stopped they are left and said so;
    // with keep_index they are left. The repository is added again each time.
    let rag_dir = host.data_dir().join("plugin-data/repoagent/rag/walkdir");
    let ours = ["repo-walkdir", "walkdir-leave", "walkdir-nodocs"];
    let collection_status = |c: &str| {
        host.post_json("/api/plugins/brainml/collection.get", &json!({ "name": c }).to_string())
    };
    let add_again = || {
        let (status, v) = call(&host, "repo.add", json!({"path": repo.to_str().unwrap()}));
        assert_eq!(status, 201, "{v}");
    };
    let v = ok(&host, "repo.remove", json!({"name": "walkdir"}));
    assert_eq!(v["collections_deleted"], json!([]), "{v}");
    assert_eq!(v["collections_left"].as_array().unwrap().len(), 3, "{v}");
    let reason = v["collections_left"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("brainml"), "{v}");
    assert!(
        rag_dir.join("repo-walkdir.json").is_file(),
        "a record was dropped though its collection is left"
    );
    assert_eq!(host.post("/api/core/plugins/brainml/start", "").0, 200);
    add_again();
    let v = ok(&host, "repo.remove", json!({"name": "walkdir", "keep_index": true}));
    assert_eq!(v["collections_deleted"], json!([]), "{v}");
    let left: Vec<&str> = v["collections_left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collection"].as_str().unwrap())
        .collect();
    assert_eq!(left, ours, "{v}");
    for c in ours {
        assert_eq!(collection_status(c).0, 200, "keep_index deleted {c}");
    }
    add_again();
    let v = ok(&host, "repo.remove", json!({"name": "walkdir"}));
    assert_eq!(v["collections_deleted"], json!(ours), "{v}");
    assert_eq!(v["collections_left"], json!([]), "{v}");
    for c in ours {
        let (status, b) = collection_status(c);
        assert_eq!(status, 404, "{c} is still in brainml: {b}");
    }
    assert!(!rag_dir.exists(), "{} is left", rag_dir.display());

    // (7) After all that work, deleting the library unloads it.
    host.remove(&repoagent_lib());
    let p = host.wait_residency("repoagent");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

//! Retrieval-augmented answers (`rag.ask`) and OpenAI's vector stores under `/v1`, in a real
//! host with the real `candle`, `llmserver` and `brainml` plugins, the real all-MiniLM-L6-v2
//! and SmolLM2-135M-Instruct (from `scripts/fetch-models.sh`), on the license texts Debian
//! ships in /usr/share/common-licenses. The official `openai` Python client is run against
//! the same endpoints by scripts/test-openai-vector-stores.py.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::brainml::{call, index_paragraphs, ok, paragraphs, the_paragraph};
use crate::support::{lib_name, product_plugin, Host, ADMIN_KEY};

const CHAT: &str = "SmolLM2-135M-Instruct";

/// A host with `candle`, `llmserver` and `brainml` running on the real models.
fn rag_host(models: &tempfile::TempDir) -> Host {
    let dir = crate::support::link_models(
        models.path(),
        &["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"],
    );
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    for (id, lib) in [
        ("candle", "bkg_plugin_candle"),
        ("llmserver", "bkg_plugin_llmserver"),
        ("brainml", "bkg_plugin_brainml"),
    ] {
        host.install(&product_plugin(id), &lib_name(lib));
    }
    for id in ["candle", "llmserver", "brainml"] {
        host.wait_state(id, "running");
    }
    host
}

/// One server-sent event: its name (`None` for plain `data:` events) and its data.
type Event = (Option<String>, Value);

/// POST `rag.ask` with `stream: true` and read the events one by one as they come.
fn ask_streamed(host: &Host, body: &Value) -> Vec<Event> {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.to_string();
    write!(
        tcp,
        "POST /api/plugins/brainml/rag.ask HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
         {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
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
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    // Undo the chunked encoding as the bytes come, then split the events.
    let mut text = String::new();
    loop {
        if chunked {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap() == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            std::io::Read::read_exact(&mut reader, &mut chunk).unwrap();
            text.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        } else {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            text.push_str(&line);
        }
    }
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
                }
            }
            (name, data)
        })
        .collect()
}

/// POST `body` on a connection of the test's own, so that it can hang up whenever it likes.
fn send_raw(host: &Host, path: &str, body: &str) -> TcpStream {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tcp
}

fn cited_ids(citations: &Value) -> Vec<String> {
    citations
        .as_array()
        .unwrap_or_else(|| panic!("no citations: {citations}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// `rag.ask` whole and streamed: the paragraph that answers is cited, the streamed answer comes
/// in several deltas between the citations and `done`; a client that leaves stops the
/// generation in candle; unknown collection, empty question, unknown model, no chat model and
/// llmserver stopped each give their status and a message that names the problem.
#[test]
fn rag_ask_cites_the_paragraph_that_answers_and_streams_the_answer_token_by_token() {
    let models = tempfile::tempdir().unwrap();
    let host = rag_host(&models);
    ok(&host, "collection.create", json!({ "name": "licenses" }));
    let paras: Vec<_> =
        paragraphs().into_iter().filter(|p| p.1 == "Apache-2.0" || p.1 == "MPL-2.0").collect();
    index_paragraphs(&host, "licenses", &paras);
    let question = "Am I allowed to use the licensor's trademarks and product names?";
    let want = the_paragraph(&paras, "Apache-2.0", "does not grant permission to use the trade");

    let ask = json!({ "collection": "licenses", "question": question, "k": 3, "max_tokens": 12 });

    // llmserver without a chat model (none configured, none loaded yet): a clear error.
    let config = json!({ "models": { "all-MiniLM-L6-v2": {
        "path": "sentence-transformers/all-MiniLM-L6-v2", "kind": "embedding" } } });
    let (status, v) = host.post_json("/api/core/plugins/llmserver/config", &config.to_string());
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(&host, "rag.ask", ask.clone());
    assert_eq!(status, 503, "{v}");
    assert!(v.to_string().contains("no chat model"), "{v}");
    let (status, v) = host.post_json("/api/core/plugins/llmserver/config", "{}");
    assert_eq!(status, 200, "{v}");

    // Whole: the answer, the chunks it was given (numbered from 1), the model.
    let v = ok(&host, "rag.ask", ask.clone());
    assert!(cited_ids(&v["citations"]).contains(&want), "want {want} cited: {v}");
    let numbers: Vec<u64> =
        v["citations"].as_array().unwrap().iter().map(|c| c["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "{v}");
    let cited = v["citations"].as_array().unwrap().iter().find(|c| c["id"] == want.as_str());
    assert!(cited.unwrap()["text"].as_str().unwrap().contains("trade"), "{v}");
    assert!(!v["answer"].as_str().unwrap().trim().is_empty(), "{v}");
    assert_eq!(v["model"], CHAT, "{v}");

    // Streamed: the citations first, then the answer in several deltas, then done.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let events = ask_streamed(&host, &streamed);
    assert_eq!(events[0].0.as_deref(), Some("citations"), "{events:?}");
    assert!(cited_ids(&events[0].1["citations"]).contains(&want), "{events:?}");
    let (last_name, done) = events.last().unwrap();
    assert_eq!(last_name.as_deref(), Some("done"), "{events:?}");
    let deltas: Vec<&str> = events[1..events.len() - 1]
        .iter()
        .map(|(name, d)| {
            assert!(name.is_none(), "{events:?}");
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert!(deltas.len() >= 3, "the answer came in {} deltas: {events:?}", deltas.len());
    assert_eq!(deltas.concat(), done["answer"].as_str().unwrap(), "{events:?}");
    // Greedy decoding: the same answer as the whole one.
    assert_eq!(done["answer"], v["answer"], "{events:?}");

    // A client that leaves a streamed answer stops the generation two bus hops away, in
    // candle (brainml -> llmserver -> candle), and frees llmserver's place for the next one.
    let counters = || {
        let (status, v) = host.get_json("/api/core/plugins/candle/status");
        assert_eq!(status, 200, "{v}");
        let c = v["status"]["counters"].clone();
        assert!(c.is_object(), "candle reports no counters: {v}");
        c
    };
    let count = |c: &Value, name: &str| c[name].as_u64().unwrap_or_else(|| panic!("{name}: {c}"));
    let before = counters();
    let mut long = streamed.clone();
    long["question"] =
        json!("Explain in a long essay everything these sources say about trademarks.");
    long["max_tokens"] = json!(2000);
    let tcp = send_raw(&host, "/api/plugins/brainml/rag.ask", &long.to_string());
    host.wait_for("the answer to be under way", || {
        let c = counters();
        count(&c, "generations_running") == 1
            && count(&c, "tokens_generated") >= count(&before, "tokens_generated") + 3
    });
    tcp.shutdown(std::net::Shutdown::Both).unwrap();
    drop(tcp);
    host.wait_for("candle to count the generation cancelled", || {
        count(&counters(), "generations_cancelled") == count(&before, "generations_cancelled") + 1
    });
    let c = counters();
    assert_eq!(count(&c, "generations_finished"), count(&before, "generations_finished"), "{c}");
    let again = ok(&host, "rag.ask", ask.clone());
    assert_eq!(again["answer"], v["answer"], "{again}");

    // Bad input: unknown collection 404, empty question 400, each naming the problem.
    let (status, v) = call(&host, "rag.ask", json!({ "collection": "nope", "question": "x?" }));
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("nope"), "{v}");
    let (status, v) = call(&host, "rag.ask", json!({ "collection": "licenses", "question": " " }));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("question is empty"), "{v}");
    let (status, v) = call(
        &host,
        "rag.ask",
        json!({ "collection": "licenses", "question": "x?", "model": "no-such-model" }),
    );
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("no-such-model"), "{v}");

    // llmserver stopped: 503 naming it, streamed or not.
    assert_eq!(host.post_json("/api/core/plugins/llmserver/stop", "").0, 200);
    host.wait_state("llmserver", "stopped");
    for body in [ask, streamed] {
        let (status, v) = call(&host, "rag.ask", body);
        assert_eq!(status, 503, "{v}");
        assert!(v.to_string().contains("llmserver"), "{v}");
    }
}

/// A multipart upload to `/v1/files`.
fn upload(host: &Host, filename: &str, bytes: &[u8]) -> (u16, Value) {
    let boundary = "bkg-test-boundary-7f3a";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = ureq::post(&format!("{}/v1/files", host.base))
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
        .send_bytes(&body);
    finish(r)
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (status, text) = match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

fn delete(host: &Host, path: &str) -> (u16, Value) {
    let r = ureq::delete(&format!("{}{path}", host.base))
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .call();
    finish(r)
}

fn openai_error(v: &Value) -> &str {
    let e = v["error"].as_object().unwrap_or_else(|| panic!("not OpenAI's error shape: {v}"));
    for key in ["message", "type", "param", "code"] {
        assert!(e.contains_key(key), "no {key} in {v}");
    }
    e["message"].as_str().unwrap()
}

#[test]
fn openai_vector_stores_find_the_file_that_answers_and_errors_are_openai_shaped() {
    let models = tempfile::tempdir().unwrap();
    let host = rag_host(&models);
    let mut ids = Vec::new();
    for name in ["Apache-2.0", "MPL-2.0", "BSD"] {
        let text = std::fs::read(format!("/usr/share/common-licenses/{name}")).unwrap();
        let (status, f) = upload(&host, name, &text);
        assert_eq!(status, 200, "{f}");
        assert_eq!((f["object"].as_str(), f["filename"].as_str()), (Some("file"), Some(name)));
        assert_eq!(f["bytes"], text.len(), "{f}");
        assert!(f["id"].as_str().unwrap().starts_with("file-"), "{f}");
        ids.push(f["id"].as_str().unwrap().to_string());
    }
    let (status, list) = host.get_json("/v1/files");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");

    // A store made with two files, a third added with attributes.
    let body = json!({ "name": "licenses", "file_ids": [ids[0], ids[1]] });
    let (status, vs) = host.post_json("/v1/vector_stores", &body.to_string());
    assert_eq!(status, 200, "{vs}");
    assert_eq!(
        (vs["object"].as_str(), vs["name"].as_str()),
        (Some("vector_store"), Some("licenses"))
    );
    assert_eq!(vs["file_counts"]["completed"], 2, "{vs}");
    assert_eq!(vs["status"], "completed");
    let vs_id = vs["id"].as_str().unwrap().to_string();
    assert!(vs_id.starts_with("vs_"), "{vs}");
    let body = json!({ "file_id": ids[2], "attributes": { "kind": "permissive", "year": 1998 } });
    let (status, f) =
        host.post_json(&format!("/v1/vector_stores/{vs_id}/files"), &body.to_string());
    assert_eq!(status, 200, "{f}");
    assert_eq!(
        (f["object"].as_str(), f["status"].as_str()),
        (Some("vector_store.file"), Some("completed"))
    );
    assert_eq!(f["vector_store_id"], vs_id.as_str());
    let (_, files) = host.get_json(&format!("/v1/vector_stores/{vs_id}/files"));
    assert_eq!(files["data"].as_array().unwrap().len(), 3, "{files}");
    let (_, got) = host.get_json(&format!("/v1/vector_stores/{vs_id}"));
    assert_eq!(got["file_counts"]["total"], 3, "{got}");

    // Search: the file that answers comes first.
    let search = |query: &str, extra: Value| {
        let mut body = json!({ "query": query, "max_num_results": 5 });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, page) =
            host.post_json(&format!("/v1/vector_stores/{vs_id}/search"), &body.to_string());
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["object"], "vector_store.search_results.page", "{page}");
        page
    };
    for (query, want) in [
        ("Must I include the NOTICE text file when I redistribute the Work?", &ids[0]),
        ("What happens to the license of Covered Software in Executable Form?", &ids[1]),
    ] {
        let page = search(query, json!({}));
        let first = &page["data"][0];
        assert_eq!(first["file_id"], want.as_str(), "{query}: {page}");
        assert_eq!(first["content"][0]["type"], "text", "{page}");
        assert!(first["score"].as_f64().unwrap() > 0.0, "{page}");
    }
    // Attribute filters restrict the files searched.
    let page = search(
        "redistribution of source code",
        json!({ "filters": { "type": "eq", "key": "kind", "value": "permissive" } }),
    );
    let hits = page["data"].as_array().unwrap();
    assert!(!hits.is_empty(), "{page}");
    for h in hits {
        assert_eq!(
            (h["file_id"].as_str(), h["filename"].as_str()),
            (Some(ids[2].as_str()), Some("BSD"))
        );
        assert_eq!(h["attributes"]["year"], 1998, "{page}");
    }

    // A store made with a file that cannot be indexed (no text) is not left half-made.
    let (status, blank) = upload(&host, "blank.txt", b"  \n\n ");
    assert_eq!(status, 200, "{blank}");
    let body = json!({ "name": "half", "file_ids": [ids[0], blank["id"]] });
    let (status, v) = host.post_json("/v1/vector_stores", &body.to_string());
    assert_eq!(status, 400, "{v}");
    assert!(openai_error(&v).contains("no text"), "{v}");
    let (_, stores) = host.get_json("/v1/vector_stores");
    assert_eq!(stores["data"].as_array().unwrap().len(), 1, "{stores}");
    let collections = ok(&host, "collection.list", json!({}));
    assert_eq!(collections["collections"].as_array().unwrap().len(), 1, "{collections}");

    // Errors in OpenAI's shape.
    let (status, v) = host.get_json("/v1/vector_stores/vs_doesnotexist");
    assert_eq!(status, 404, "{v}");
    assert!(openai_error(&v).contains("vs_doesnotexist"), "{v}");
    let (status, v) =
        host.post_json("/v1/vector_stores/vs_doesnotexist/search", r#"{"query":"x"}"#);
    assert_eq!(status, 404, "{v}");
    openai_error(&v);
    let binary = std::fs::read(crate::support::product_plugin("brainml")).unwrap();
    let (status, v) = upload(&host, "libbrainml.so", &binary[..4096]);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "file", "{v}");
    assert!(openai_error(&v).contains("is not a"), "{v}");
    assert!(openai_error(&v).contains("text file"), "{v}");
    let (status, v) =
        host.post_json(&format!("/v1/vector_stores/{vs_id}/files"), r#"{"file_id":"file-nope"}"#);
    assert_eq!(status, 404, "{v}");
    assert!(openai_error(&v).contains("file-nope"), "{v}");
    let (status, v) = host.post_json(
        &format!("/v1/vector_stores/{vs_id}/search"),
        r#"{"query":"x","max_num_results":99}"#,
    );
    assert_eq!(status, 400, "{v}");
    assert!(openai_error(&v).contains("max_num_results"), "{v}");

    // Deleting a file takes it out of the store; deleting the store removes its collection.
    let (status, v) = delete(&host, &format!("/v1/files/{}", ids[2]));
    assert_eq!((status, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    let page = search("redistribution of source code", json!({}));
    assert!(
        page["data"].as_array().unwrap().iter().all(|h| h["file_id"] != ids[2].as_str()),
        "{page}"
    );
    let (status, v) = delete(&host, &format!("/v1/vector_stores/{vs_id}"));
    assert_eq!((status, v["object"].as_str()), (200, Some("vector_store.deleted")), "{v}");
    let (status, v) = call(&host, "collection.get", json!({ "name": vs_id }));
    assert_eq!(status, 404, "{v}");

    // brainml stopped: a 503 in OpenAI's shape that names it.
    assert_eq!(host.post_json("/api/core/plugins/brainml/stop", "").0, 200);
    host.wait_state("brainml", "stopped");
    let (status, v) = host.get_json("/v1/vector_stores");
    assert_eq!(status, 503, "{v}");
    assert!(openai_error(&v).contains("'brainml'"), "{v}");
    assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
}

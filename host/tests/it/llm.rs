//! The ML plugins in a real host with real weights (from `scripts/fetch-models.sh`): the
//! OpenAI-compatible API of `llmserver` over `candle` through the bus.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{lib_name, product_plugin, Host};

const EMBED: &str = "all-MiniLM-L6-v2";
const CHAT: &str = "SmolLM2-135M-Instruct";

fn models_dir(into: &Path) -> PathBuf {
    crate::support::link_models(
        into,
        &["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"],
    )
}

/// A host with `candle` and `llmserver` running on the real models.
fn ml_host(models: &tempfile::TempDir) -> Host {
    ml_host_with(models, &[])
}

/// [`ml_host`] with more host flags.
fn ml_host_with(models: &tempfile::TempDir, extra: &[&str]) -> Host {
    let dir = models_dir(models.path());
    let mut args = vec!["--models-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let host = Host::start_with(&args);
    host.install(&product_plugin("candle"), &lib_name("bkg_plugin_candle"));
    host.install(&product_plugin("llmserver"), &lib_name("bkg_plugin_llmserver"));
    host.wait_state("candle", "running");
    host.wait_state("llmserver", "running");
    host
}

/// The reference cosines of all-MiniLM-L6-v2 and their tolerance: where they come from (candle
/// transformers' `BertModel`, /work/shared/design/models.md) and how the tolerance is derived
/// (4 decimals: 0.00005 of rounding, plus 0.00001 of float noise) is in
/// plugins/candle/tests/embed.rs, which recomputes them from that source.
const REFERENCE_FOOD_BREAD: f32 = 0.7553;
const REFERENCE_FOOD_STOCKS: f32 = 0.0088;
const REFERENCE_TOLERANCE: f32 = 0.00005 + 0.00001;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {v}"))
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect()
}

fn embed(host: &Host, input: Value) -> (u16, Value) {
    host.post_json("/v1/embeddings", &json!({ "model": EMBED, "input": input }).to_string())
}

#[test]
fn embeddings_through_v1_match_the_reference_figures() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host(&models);
    let sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market crashed today.",
    ];
    let (status, v) = embed(&host, json!(sentences));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], EMBED);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 10, "{v}");
    let batch = vectors(&v);
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0].len(), 384);
    let (c1, c2) = (cosine(&batch[0], &batch[1]), cosine(&batch[0], &batch[2]));
    assert!((c1 - REFERENCE_FOOD_BREAD).abs() <= REFERENCE_TOLERANCE, "cos(food, bread) = {c1}");
    assert!((c2 - REFERENCE_FOOD_STOCKS).abs() <= REFERENCE_TOLERANCE, "cos(food, stocks) = {c2}");
    // One by one gives the same vectors as the batch.
    for (i, s) in sentences.iter().enumerate() {
        let (status, v) = embed(&host, json!(s));
        assert_eq!(status, 200, "{v}");
        let single = &vectors(&v)[0];
        assert!(cosine(single, &batch[i]) > 0.9999, "sentence {i}");
    }
    // base64 carries the same floats.
    let body = json!({ "model": EMBED, "input": sentences[0], "encoding_format": "base64" });
    let (status, v) = host.post_json("/v1/embeddings", &body.to_string());
    assert_eq!(status, 200, "{v}");
    let b64 = v["data"][0]["embedding"].as_str().expect("a base64 string");
    let bytes = base64_decode(b64);
    let floats: Vec<f32> =
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(cosine(&floats, &batch[0]) > 0.9999);

    // /v1/models lists both configured models.
    let (status, v) = host.get_json("/v1/models");
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> =
        v["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&EMBED) && ids.contains(&CHAT), "{ids:?}");

    // Bad input: OpenAI's error shape, and the plugin keeps serving.
    for (body, status, needle) in [
        (json!({ "model": "nope", "input": "x" }).to_string(), 404, "does not exist"),
        (json!({ "model": EMBED, "input": "" }).to_string(), 400, "empty"),
        (json!({ "model": EMBED, "input": [] }).to_string(), 400, "empty"),
        (json!({ "model": EMBED, "input": [1, 2] }).to_string(), 400, "token arrays"),
        (json!({ "model": CHAT, "input": "x" }).to_string(), 400, "not embedding"),
        ("{\"model\": ".to_string(), 400, "parse the JSON"),
    ] {
        let (got, v) = host.post_json("/v1/embeddings", &body);
        assert_eq!(got, status, "{body} -> {v}");
        let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains(needle), "{body} -> {message}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    // A very long input is truncated (at the model's 256 word pieces, documented), not refused.
    let long = "word ".repeat(100_000);
    let (status, v) = embed(&host, json!(long));
    assert_eq!(status, 200, "{v}");
    assert_eq!(vectors(&v)[0].len(), 384);
    assert_eq!(embed(&host, json!("still serving")).0, 200);
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// POST a streaming chat request; return the `data:` payloads as they came.
fn stream_chat(host: &Host, body: &Value) -> Vec<String> {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.to_string();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::support::ADMIN_KEY,
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    BufReader::new(tcp).read_to_string(&mut text).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{rest}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    // Undo chunked transfer encoding, then pick the SSE data lines.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn chat_body(question: &str, extra: Value) -> Value {
    let mut body = json!({ "model": CHAT, "temperature": 0, "max_tokens": 24,
        "messages": [{ "role": "user", "content": question }] });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn chat_answers_the_same_streamed_or_not_and_respects_limits() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host(&models);
    let q = "What is the capital of France?";
    let (status, v) = host.post_json("/v1/chat/completions", &chat_body(q, json!({})).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Streamed: OpenAI chunks, ending with [DONE], the same text.
    let events = stream_chat(&host, &chat_body(q, json!({ "stream": true })));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.len() > 3, "{events:?}");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        v["choices"][0]["finish_reason"]
    );

    // max_tokens and stop.
    let (_, v) = host
        .post_json("/v1/chat/completions", &chat_body(q, json!({ "max_tokens": 3 })).to_string());
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    let (_, v) = host
        .post_json("/v1/chat/completions", &chat_body(q, json!({ "stop": ["Paris"] })).to_string());
    let stopped = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!stopped.contains("Paris") && text.starts_with(stopped), "{stopped:?} vs {text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Bad input.
    for (body, status) in [
        (json!({ "model": "nope", "messages": [{ "role": "user", "content": "x" }] }), 404),
        (json!({ "model": CHAT, "messages": [] }), 400),
        (json!({ "model": EMBED, "messages": [{ "role": "user", "content": "x" }] }), 400),
        (json!({ "model": CHAT, "messages": [{ "role": "user", "content": "x" }], "n": 3 }), 400),
    ] {
        let (got, v) = host.post_json("/v1/chat/completions", &body.to_string());
        assert_eq!(got, status, "{body} -> {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    huge_max_tokens_is_a_clear_400(&host, q);
    top_p_zero_is_accepted_as_greedy(&host, q, &text);
}

/// OpenAI accepts `top_p: 0` and reads it as greedy (only the likeliest token); it was refused
/// with a 400. At a sampling temperature it answers what temperature 0 answers (`greedy`).
fn top_p_zero_is_accepted_as_greedy(host: &Host, q: &str, greedy: &str) {
    for seed in [1, 2] {
        let body = chat_body(q, json!({ "top_p": 0, "temperature": 1.5, "seed": seed }));
        let (status, v) = host.post_json("/v1/chat/completions", &body.to_string());
        assert_eq!(status, 200, "top_p 0 -> {v}");
        assert_eq!(v["choices"][0]["message"]["content"], greedy, "seed {seed}: {v}");
    }
}

/// `prompt + max_tokens` is checked without overflow: `max_tokens` near `u64::MAX` once
/// wrapped past the context check in a release build (and panicked in a debug one).
fn huge_max_tokens_is_a_clear_400(host: &Host, q: &str) {
    for max_tokens in [json!(u64::MAX), json!(u64::MAX - 3), json!(1u64 << 40)] {
        let body = chat_body(q, json!({ "max_tokens": max_tokens }));
        let (status, v) = host.post_json("/v1/chat/completions", &body.to_string());
        assert_eq!(status, 400, "max_tokens {max_tokens} -> {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("context"), "max_tokens {max_tokens}: {v}");
    }
    // The plugins keep serving.
    let (status, v) = host.post_json("/v1/chat/completions", &chat_body(q, json!({})).to_string());
    assert_eq!(status, 200, "{v}");
}

/// candle's counters (`status.counters`); a status without them fails the test.
fn candle_counters(host: &Host) -> Value {
    let (status, v) = host.get_json("/api/core/plugins/candle/status");
    assert_eq!(status, 200, "{v}");
    let counters = v["status"]["counters"].clone();
    assert!(counters.is_object(), "candle reports no counters: {v}");
    counters
}

fn counter(counters: &Value, name: &str) -> u64 {
    counters[name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {counters}"))
}

fn llmserver_generations(host: &Host) -> Value {
    let (status, v) = host.get_json("/api/core/plugins/llmserver/status");
    assert_eq!(status, 200, "{v}");
    v["status"]["generations"].clone()
}

/// POST `body` with the admin key on a connection of the test's own, so that it can hang up
/// whenever it likes (a raw socket: no client library retries or waits).
fn send_raw(host: &Host, path: &str, body: &str) -> TcpStream {
    let addr = host.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::support::ADMIN_KEY,
        body.len()
    )
    .unwrap();
    tcp.write_all(body.as_bytes()).unwrap();
    tcp
}

fn hang_up(tcp: TcpStream) {
    tcp.shutdown(std::net::Shutdown::Both).unwrap();
    drop(tcp);
}

/// A chat request (streamed or not) whose client hangs up mid-generation: candle counts the
/// generation cancelled and makes no more tokens, llmserver counts it and gives its only
/// place in the gate back at once (the next request is admitted and answered). The host's
/// call timeout is far away, so only the hang-up can have stopped it.
fn an_abandoned_chat_stops_and_frees_the_slot(stream: bool) {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host_with(&models, &["--call-timeout-ms", "600000"]);
    let config = json!({ "max_parallel_generations": 1 }).to_string();
    let (status, v) = host.post_json("/api/core/plugins/llmserver/config", &config);
    assert_eq!(status, 200, "{v}");
    // Load the model first: a hang-up during the load would stop no generation.
    let (status, v) = host.post_json(
        "/v1/chat/completions",
        &chat_body("Hi", json!({ "max_tokens": 1 })).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let before = candle_counters(&host);
    let cancelled_before = counter(&before, "generations_cancelled");

    let body = chat_body(
        "Write a long story about a dragon.",
        json!({ "stream": stream, "max_tokens": 2000 }),
    )
    .to_string();
    let tcp = send_raw(&host, "/v1/chat/completions", &body);
    host.wait_for("the generation to make tokens", || {
        let c = candle_counters(&host);
        counter(&c, "generations_running") == 1
            && counter(&c, "tokens_generated") >= counter(&before, "tokens_generated") + 3
    });
    assert_eq!(llmserver_generations(&host)["running"], 1);
    hang_up(tcp);

    host.wait_for("candle to count the generation cancelled", || {
        counter(&candle_counters(&host), "generations_cancelled") == cancelled_before + 1
    });
    let c = candle_counters(&host);
    assert_eq!(counter(&c, "generations_running"), 0, "{c}");
    assert_eq!(
        counter(&c, "generations_finished"),
        counter(&before, "generations_finished"),
        "the generation ran to its end: {c}"
    );
    let tokens = counter(&c, "tokens_generated");
    assert!(tokens < counter(&before, "tokens_generated") + 2000, "{c}");
    // No token after the cancel: the counter stays where it was.
    std::thread::sleep(Duration::from_millis(500));
    let later = candle_counters(&host);
    assert_eq!(
        counter(&later, "tokens_generated"),
        tokens,
        "tokens made after the cancel: {later}"
    );
    host.wait_for("llmserver to count it and let go of its place", || {
        let g = llmserver_generations(&host);
        g["cancelled"] == 1 && g["running"] == 0 && g["waiting"] == 0
    });
    // The one place is free: the next request is admitted and answered (a held place would
    // keep it waiting for the 2000 tokens, far past the client's 30 s).
    let q = chat_body("What is the capital of France?", json!({}));
    let (status, v) = host.post_json("/v1/chat/completions", &q.to_string());
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("Paris"), "{v}");
    assert_eq!(
        counter(&candle_counters(&host), "generations_finished"),
        counter(&before, "generations_finished") + 1
    );
}

#[test]
fn a_non_streamed_chat_abandoned_by_its_client_stops_and_frees_the_slot() {
    an_abandoned_chat_stops_and_frees_the_slot(false);
}

#[test]
fn a_streamed_chat_abandoned_by_its_client_stops_and_frees_the_slot() {
    an_abandoned_chat_stops_and_frees_the_slot(true);
}

/// A large /v1/embeddings request whose client hangs up: candle stops between batches (it
/// counts the request cancelled and the batches it never ran) and keeps serving.
#[test]
fn an_abandoned_embeddings_request_stops_between_batches() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host_with(&models, &["--call-timeout-ms", "600000"]);
    assert_eq!(embed(&host, json!("warm up")).0, 200);
    let before = candle_counters(&host);
    let texts: Vec<String> = (0..20_000)
        .map(|i| format!("sentence {i}: a man is eating a piece of bread in the park"))
        .collect();
    let body = json!({ "model": EMBED, "input": texts }).to_string();
    let tcp = send_raw(&host, "/v1/embeddings", &body);
    host.wait_for("candle to start on the request", || {
        counter(&candle_counters(&host), "embed_requests") == counter(&before, "embed_requests") + 1
    });
    hang_up(tcp);
    host.wait_for("candle to count the request cancelled", || {
        counter(&candle_counters(&host), "embed_requests_cancelled")
            == counter(&before, "embed_requests_cancelled") + 1
    });
    let c = candle_counters(&host);
    let ran = counter(&c, "embed_batches") - counter(&before, "embed_batches");
    let skipped =
        counter(&c, "embed_batches_cancelled") - counter(&before, "embed_batches_cancelled");
    // 20,000 texts in batches of 32 (candle's default).
    assert_eq!(ran + skipped, 625, "{c}");
    assert!(skipped > 0, "{c}");
    assert_eq!(embed(&host, json!("still serving")).0, 200);
}

#[test]
fn llmserver_keeps_answering_while_candle_is_hot_swapped() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host(&models);
    assert_eq!(embed(&host, json!("warm up")).0, 200);
    let generation = host.plugin("candle")["generation"].as_u64().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match embed(&host, json!(["A man is eating food.", "swap"])) {
                    (200, _) => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        });
        // A new build of candle: the same code with a byte appended (another file hash).
        let mut bytes = std::fs::read(product_plugin("candle")).unwrap();
        bytes.push(0);
        host.install_bytes(&bytes, &lib_name("bkg_plugin_candle"));
        host.wait_for("candle to be swapped", || {
            host.plugin("candle")["generation"].as_u64() == Some(generation + 1)
                && host.state("candle") == "running"
        });
        // Requests after the swap (the new generation loads the model on first use) too.
        for _ in 0..3 {
            assert_eq!(embed(&host, json!("after")).0, 200);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        client.join().unwrap()
    });
    assert!(failed.is_empty(), "{} failed during the swap: {failed:?}", failed.len());
    assert!(ok > 0);
}

fn candle(host: &Host, capability: &str, body: Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/candle/{capability}"), &body.to_string())
}

#[test]
fn candle_loads_shares_quantizes_and_refuses_broken_weights_through_the_host() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host(&models);
    let path = "sentence-transformers/all-MiniLM-L6-v2";
    let (status, a) = candle(&host, "model.load", json!({ "name": "a", "path": path }));
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["kind"], "embedding");
    // The same weights under a second name are shared, not loaded twice.
    let (status, b) = candle(&host, "model.load", json!({ "name": "b", "path": path }));
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["shared_by"], 2, "{b}");
    let (_, list) = candle(&host, "model.list", json!({}));
    assert_eq!(list["models"].as_array().unwrap().len(), 2, "{list}");

    // q8_0: smaller, and embeddings agree with F32 (>= 0.99 on 20 sentences).
    let (status, q) = candle(&host, "model.quantize", json!({ "name": "a", "dtype": "q8_0" }));
    assert_eq!(status, 200, "{q}");
    assert!(q["size_after"].as_u64().unwrap() * 3 < q["size_before"].as_u64().unwrap(), "{q}");
    assert_eq!(q["agreement"]["sentences"], 20);
    assert!(q["agreement"]["min_cosine"].as_f64().unwrap() >= 0.99, "{q}");
    let qpath = q["path"].as_str().unwrap();
    let (status, v) = candle(&host, "model.load", json!({ "name": "q", "path": qpath }));
    assert_eq!(status, 200, "{v}");
    let embed_with = |model: &str| {
        let (status, v) = candle(
            &host,
            "model.infer",
            json!({ "model": model, "input": "A man is eating food." }),
        );
        assert_eq!(status, 200, "{v}");
        serde_json::from_value::<Vec<Vec<f32>>>(v["embeddings"].clone()).unwrap().remove(0)
    };
    assert!(cosine(&embed_with("a"), &embed_with("q")) >= 0.99);

    quantizing_the_chat_model_says_what_can_be_quantized(&host);

    // Broken weights: a clear 400, nothing else affected.
    let broken = models.path().join("broken/model");
    std::fs::create_dir_all(&broken).unwrap();
    let source = models.path().join(path);
    std::fs::copy(source.join("config.json"), broken.join("config.json")).unwrap();
    std::fs::copy(source.join("tokenizer.json"), broken.join("tokenizer.json")).unwrap();
    let weights = std::fs::read(source.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    let (status, v) =
        candle(&host, "model.load", json!({ "name": "broken", "path": "broken/model" }));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("model.safetensors"), "{v}");
    for (body, status) in [
        (json!({ "name": "x", "path": "../../etc" }), 400),
        (json!({ "name": "x", "path": "/etc" }), 400),
        (json!({ "name": "x", "path": "no/such/model" }), 404),
    ] {
        assert_eq!(candle(&host, "model.load", body.clone()).0, status, "{body}");
    }
    assert_eq!(candle(&host, "model.infer", json!({ "model": "nope", "input": "x" })).0, 404);
    assert_eq!(candle(&host, "model.infer", json!({ "model": "a", "input": [] })).0, 400);
    assert_eq!(embed_with("b").len(), 384, "still serving");

    // Unloading one name keeps the other; the status tells whether the library can leave.
    assert_eq!(candle(&host, "model.unload", json!({ "name": "a" })).0, 200);
    assert_eq!(embed_with("b").len(), 384);
    let (_, status) = host.get_json("/api/core/plugins/candle/status");
    let s = &status["status"];
    assert!(s["unloadable"].is_boolean() && s["unloadable_reason"].is_string(), "{status}");
    // Model code ran: with candle's own thread pool (CANDLE_NUM_THREADS unset, 2 cores) the
    // plugin says it cannot leave memory, and the host's check after a delete agrees.
    let claimed = s["unloadable"].as_bool().unwrap();
    host.remove(&lib_name("bkg_plugin_candle"));
    host.wait_for("candle to be unloaded", || host.state("candle") == "unloaded");
    let history = host.plugin("candle")["history"].clone();
    let residency = history.as_array().unwrap().last().unwrap()["residency"].clone();
    let expected = if claimed { "unloaded" } else { "pinned" };
    assert_eq!(residency, expected, "status said unloadable={claimed}: {history}");
}

#[test]
fn candle_used_only_for_f32_embeddings_really_leaves_memory() {
    let models = tempfile::tempdir().unwrap();
    let dir = models_dir(models.path());
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("candle"), &lib_name("bkg_plugin_candle"));
    host.wait_state("candle", "running");
    let body = json!({ "name": "m", "path": "sentence-transformers/all-MiniLM-L6-v2" });
    assert_eq!(candle(&host, "model.load", body).0, 200);
    let (status, v) = candle(&host, "model.infer", json!({ "model": "m", "input": ["a", "b c"] }));
    assert_eq!(status, 200, "{v}");
    let (_, status) = host.get_json("/api/core/plugins/candle/status");
    assert_eq!(status["status"]["unloadable"], true, "{status}");
    host.remove(&lib_name("bkg_plugin_candle"));
    host.wait_for("candle to be unloaded", || host.state("candle") == "unloaded");
    let history = host.plugin("candle")["history"].clone();
    assert_eq!(history[0]["residency"], "unloaded", "{history}");
}

/// Chat runs on the plugin's own forward pass and kernels (issue 17), never on candle's
/// barrier pool: after real generations (a long prompt as one batch, greedy and sampled,
/// streamed) the plugin says it can leave memory, and deleting its file unloads it.
#[test]
fn candle_used_for_chat_really_leaves_memory() {
    let models = tempfile::tempdir().unwrap();
    let dir = models_dir(models.path());
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("candle"), &lib_name("bkg_plugin_candle"));
    host.wait_state("candle", "running");
    let body = json!({ "name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF" });
    let (status, v) = candle(&host, "model.load", body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["details"]["compute"], "q4_1", "{v}");
    let long = "Tell me about rivers. ".repeat(60);
    for extra in [
        json!({ "temperature": 0, "messages": [{ "role": "user", "content": long }] }),
        json!({ "temperature": 0.8, "top_p": 0.9, "seed": 7, "prompt": "Once upon a time" }),
        json!({ "temperature": 0, "stream": true, "prompt": "The three primary colors are" }),
    ] {
        let mut body = json!({ "model": "smol", "max_tokens": 12 });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = host.post("/api/plugins/candle/model.infer", &body.to_string());
        assert_eq!(status, 200, "{body}: {v}");
    }
    let (_, status) = host.get_json("/api/core/plugins/candle/status");
    assert_eq!(status["status"]["unloadable"], true, "{status}");
    assert_eq!(status["status"]["threads"]["candle_barrier_threads_started_here"], 0, "{status}");
    host.remove(&lib_name("bkg_plugin_candle"));
    host.wait_for("candle to be unloaded", || host.state("candle") == "unloaded");
    let history = host.plugin("candle")["history"].clone();
    assert_eq!(history[0]["residency"], "unloaded", "{history}");
}

/// `model.quantize` on the chat model (a Q4_1 GGUF, by the name llmserver gives it or by its
/// folder) once answered `400 .../SmolLM2-135M-Instruct-GGUF/config.json: No such file or
/// directory`; now the 400 says what can be quantized and why this model cannot.
fn quantizing_the_chat_model_says_what_can_be_quantized(host: &Host) {
    let folder = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
    let (status, v) = candle(host, "model.load", json!({ "name": CHAT, "path": folder }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "chat");
    for body in [
        json!({ "name": CHAT, "dtype": "q8_0" }),
        json!({ "path": folder, "dtype": "q8_0" }),
        json!({ "path": format!("{folder}/SmolLM2-135M-Instruct.Q4_1.gguf") }),
    ] {
        let (status, v) = candle(host, "model.quantize", body.clone());
        assert_eq!(status, 400, "{body} -> {v}");
        let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(
            message.contains("BERT-style embedding model") && message.contains("F32 safetensors"),
            "{body}: does not say what can be quantized: {message}"
        );
        assert!(message.contains("already quantized"), "{body}: does not say why not: {message}");
        assert!(!message.contains("No such file"), "{body}: {message}");
    }
    assert_eq!(candle(host, "model.unload", json!({ "name": CHAT })).0, 200);
}

/// Asserts `body` is an error in OpenAI's shape (`{"error":{"message","type","param","code"}}`,
/// what OpenAI clients parse) and returns it.
fn assert_openai_error(what: &str, body: &str) -> Value {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    let error = v["error"].as_object().unwrap_or_else(|| panic!("{what}: no error object: {v}"));
    assert!(error.get("message").is_some_and(Value::is_string), "{what}: message: {v}");
    assert!(error.get("type").is_some_and(Value::is_string), "{what}: type: {v}");
    for key in ["param", "code"] {
        assert!(error.contains_key(key), "{what}: no {key:?} key: {v}");
    }
    assert!(error["code"].is_string() || error["code"].is_null(), "{what}: code: {v}");
    v
}

/// Every error an OpenAI client can get under `/v1` is in OpenAI's shape, whoever answers it:
/// llmserver with `candle` stopped (503; once `server_busy` without a code), the host's auth
/// with no key (401) or a read key (403), and the host with llmserver itself stopped (409).
#[test]
fn v1_errors_are_in_openai_s_shape_whoever_answers() {
    let models = tempfile::tempdir().unwrap();
    let host = ml_host(&models);
    host.install(&product_plugin("apikeys"), &lib_name("bkg_plugin_apikeys"));
    host.wait_state("apikeys", "running");
    let (status, v) =
        host.post_json("/api/plugins/apikeys/create", r#"{"name":"r","scopes":["read"]}"#);
    assert_eq!(status, 201, "{v}");
    let read_key = v["key"].as_str().unwrap().to_string();
    let chat = chat_body("What is the capital of France?", json!({ "max_tokens": 2 })).to_string();
    let embeddings = json!({ "model": EMBED, "input": "x" }).to_string();

    // candle stopped: llmserver answers, for chat (streamed or not) and embeddings.
    assert_eq!(host.post_json("/api/core/plugins/candle/stop", "").0, 200);
    host.wait_state("candle", "stopped");
    let streamed =
        chat_body("What is the capital of France?", json!({ "stream": true })).to_string();
    for (path, body) in [
        ("/v1/chat/completions", &chat),
        ("/v1/chat/completions", &streamed),
        ("/v1/embeddings", &embeddings),
    ] {
        let (status, text) = host.post(path, body);
        assert_eq!(status, 503, "{path} {body} with candle stopped: {text}");
        let v = assert_openai_error("candle stopped", &text);
        assert_eq!(v["error"]["type"], "server_error", "{v}");
        assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("'candle' is stopped"), "{message}");
    }

    // The host's auth, before llmserver is reached.
    let (status, text) = host.post_as("/v1/chat/completions", &chat, "");
    assert_eq!(status, 401, "{text}");
    assert_openai_error("no key", &text);
    let (status, text) = host.post_as("/v1/chat/completions", &chat, &read_key);
    assert_eq!(status, 403, "{text}");
    assert_openai_error("a read key", &text);

    // llmserver itself stopped: the host answers.
    assert_eq!(host.post_json("/api/core/plugins/llmserver/stop", "").0, 200);
    host.wait_state("llmserver", "stopped");
    let (status, text) = host.post("/v1/chat/completions", &chat);
    assert_eq!(status, 409, "{text}");
    assert_openai_error("llmserver stopped", &text);

    // Both started again: served.
    assert_eq!(host.post_json("/api/core/plugins/candle/start", "").0, 200);
    assert_eq!(host.post_json("/api/core/plugins/llmserver/start", "").0, 200);
    host.wait_state("candle", "running");
    host.wait_state("llmserver", "running");
    let (status, v) = host.post_json("/v1/embeddings", &embeddings);
    assert_eq!(status, 200, "{v}");
}

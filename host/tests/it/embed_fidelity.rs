//! Embedding fidelity and token-boundary indexing, in a real host with the real `candle`,
//! `llmserver` and `brainml` plugins and the real all-MiniLM-L6-v2:
//! - `candle` truncates where sentence-transformers (the reference) does, at the model's
//!   `sentence_bert_config.json` `max_seq_length` (256 word pieces), and says so per input;
//!   the vectors match the reference numbers in `host/tests/fixtures/embed-reference.json`
//!   (written by `scripts/reference-embeddings.sh` with sentence-transformers on PyTorch);
//! - `model.tokenize` gives the word pieces as byte offsets;
//! - `brainml`'s `index` cuts on word pieces and streams its progress.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::brainml::{args, brain_host, call, hit_ids, ok, paragraphs};
use crate::support::{lib_name, product_plugin, Host, ADMIN_KEY};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed-reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn candle(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) =
        host.post_json(&format!("/api/plugins/candle/{capability}"), &body.to_string());
    assert_eq!(status, 200, "{capability} {body} -> {v}");
    v
}

/// The reference texts' vectors and `truncated` from `candle`'s `model.infer` with `model`.
fn embed_reference_texts(host: &Host, model: &str, texts: &[Value]) -> (Vec<Vec<f32>>, Value) {
    let input: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let v = candle(host, "model.infer", json!({ "model": model, "input": input }));
    let vectors = v["embeddings"].as_array().unwrap().iter().map(floats).collect();
    (vectors, v["truncated"].clone())
}

#[test]
fn embed_fidelity_candle_truncates_where_sentence_transformers_does_and_matches_its_vectors() {
    let reference = reference();
    assert_eq!(reference["max_seq_length"], 256, "{}", reference["versions"]);
    let texts = reference["texts"].as_array().unwrap().clone();
    let (long, short) = (&texts[0], &texts[1]);
    assert_eq!((&long["name"], &short["name"]), (&json!("long"), &json!("short")));
    assert!(long["word_pieces"].as_u64().unwrap() > 256 && long["truncated"] == true);
    assert!(short["word_pieces"].as_u64().unwrap() < 256 && short["truncated"] == false);

    let models = tempfile::tempdir().unwrap();
    let args = args(&models);
    // The same model without its sentence_bert_config.json: candle falls back to the model's
    // max_position_embeddings (512), as it did for every model before (the old behaviour).
    let plain = models.path().join("plain/all-MiniLM-L6-v2");
    std::fs::create_dir_all(plain.join("1_Pooling")).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"] {
        std::fs::hard_link(models.path().join(MINILM).join(f), plain.join(f)).unwrap();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = Host::start_with(&args);
    host.install(&product_plugin("candle"), &lib_name("bkg_plugin_candle"));
    host.install(&product_plugin("llmserver"), &lib_name("bkg_plugin_llmserver"));
    host.wait_state("candle", "running");
    host.wait_state("llmserver", "running");
    let info = candle(&host, "model.load", json!({ "name": "minilm", "path": MINILM }));
    assert_eq!(info["details"]["max_tokens"], 256, "{info}");
    assert_eq!(info["details"]["max_tokens_from"], "sentence_bert_config.json", "{info}");
    let info = candle(
        &host,
        "model.load",
        json!({ "name": "minilm-512", "path": "plain/all-MiniLM-L6-v2" }),
    );
    assert_eq!(info["details"]["max_tokens"], 512, "{info}");
    assert_eq!(info["details"]["max_tokens_from"], "max_position_embeddings", "{info}");

    // The reference: truncated at 256 word pieces, cosine >= 0.999 to PyTorch's vectors.
    let (vectors, truncated) = embed_reference_texts(&host, "minilm", &texts);
    assert_eq!(truncated, json!([true, false]));
    for (t, v) in texts.iter().zip(&vectors) {
        let cos = cosine(v, &floats(&t["embedding"]));
        eprintln!("{}: cosine to sentence-transformers {cos:.7}", t["name"]);
        assert!(cos >= 0.999, "{}: cosine {cos} to the reference", t["name"]);
    }
    // /v1/embeddings (llmserver over candle) embeds the same way.
    let (status, v) = host.post_json(
        "/v1/embeddings",
        &json!({ "model": "all-MiniLM-L6-v2", "input": long["text"] }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let cos = cosine(&floats(&v["data"][0]["embedding"]), &floats(&long["embedding"]));
    assert!(cos >= 0.999, "/v1/embeddings: cosine {cos} to the reference");

    // The old behaviour (512 positions) does not truncate the long text and misses the
    // reference: this test would fail with it.
    let (vectors, truncated) = embed_reference_texts(&host, "minilm-512", &texts);
    assert_eq!(truncated, json!([false, false]));
    let cos = cosine(&vectors[0], &floats(&long["embedding"]));
    assert!(cos < 0.99, "without the truncation at 256 the long text's cosine is {cos}");
    assert!(cosine(&vectors[1], &floats(&short["embedding"])) >= 0.999);

    // model.tokenize: the word pieces as byte offsets (no [CLS]/[SEP]), as many as the
    // reference tokenizer counted, each a non-empty piece of the text, in order.
    let input: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let v = candle(&host, "model.tokenize", json!({ "model": "minilm", "input": input }));
    assert_eq!(v["max_tokens"], 256, "{v}");
    for (t, pieces) in texts.iter().zip(v["tokens"].as_array().unwrap()) {
        let text = t["text"].as_str().unwrap();
        let pieces = pieces.as_array().unwrap();
        assert_eq!(pieces.len() as u64 + 2, t["word_pieces"].as_u64().unwrap(), "{}", t["name"]);
        let mut last_end = 0;
        for p in pieces {
            let (s, e) =
                (p["start"].as_u64().unwrap() as usize, p["end"].as_u64().unwrap() as usize);
            assert!(last_end <= s && s < e && e <= text.len(), "{p} after {last_end}");
            assert!(!text[s..e].trim().is_empty(), "{p}: {:?}", &text[s..e]);
            last_end = e;
        }
        assert_eq!(&text[..pieces[0]["end"].as_u64().unwrap() as usize], "The");
    }
    // Not past the truncation point: all of a text much longer than 256 word pieces.
    let whole = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap();
    let v = candle(&host, "model.tokenize", json!({ "model": "minilm", "input": [whole] }));
    let pieces = v["tokens"][0].as_array().unwrap();
    assert!(pieces.len() > 5000, "{} word pieces", pieces.len());
    let last = pieces.last().unwrap()["end"].as_u64().unwrap() as usize;
    assert_eq!(whole[..last].trim_end(), whole.trim_end());
    // Bad input: a 4xx that names the problem.
    for (body, needle) in [
        (json!({ "model": "minilm", "input": [] }), "empty"),
        (json!({ "model": "minilm", "input": [1] }), "input[0]"),
        (json!({ "model": "nope", "input": ["x"] }), "nope"),
        (json!({ "model": "minilm" }), "input"),
    ] {
        let (status, text) = host.post("/api/plugins/candle/model.tokenize", &body.to_string());
        assert!((400..500).contains(&status), "{body}: {status} {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
}

/// A streamed `index`: the NDJSON lines of the answer, read as they come (with a timeout
/// far above what the request needs).
fn index_streamed(host: &Host, body: &Value) -> impl Iterator<Item = Value> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
    let resp = agent
        .post(&format!("{}/api/plugins/brainml/index", host.base))
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("streamed index: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_type(), "application/x-ndjson");
    std::io::BufReader::new(resp.into_reader())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
}

#[test]
fn embed_fidelity_brainml_index_streams_progress_and_cuts_long_texts_on_word_pieces() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "streamed" }));
    // The license paragraphs (one chunk each) and the whole GPL-3 (~34 KB: many chunks).
    let paras = paragraphs();
    let gpl = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap();
    let mut documents: Vec<Value> =
        paras[..120].iter().map(|(id, _, text)| json!({ "id": id, "text": text })).collect();
    documents.push(json!({ "id": "gpl-3", "text": gpl, "metadata": { "doc": "gpl" } }));
    // The same words without whitespace between them (joined by hyphens, or glued into
    // words past BERT's 100 characters): cut at punctuation, never inside a word, so no chunk
    // is truncated by the model (index would refuse it).
    let words: Vec<&str> = gpl.split_whitespace().take(1200).collect();
    documents.push(json!({ "id": "hyphens", "text": words.join("-") }));
    documents.push(json!({ "id": "glued", "text": words.concat() }));
    let lines: Vec<Value> = index_streamed(
        &host,
        &json!({ "collection": "streamed", "documents": documents, "stream": true }),
    )
    .collect();
    let (last, progress) = lines.split_last().unwrap();
    assert_eq!(last["indexed"], 123, "{last}");
    let chunks = last["chunks"].as_u64().unwrap();
    assert!(last["took_ms"].as_f64().is_some(), "{last}");
    // One line before embedding, then one per batch of 32 chunks, counting up to all.
    assert!(chunks > 123 + 20, "the GPL is cut into many chunks: {chunks} in all");
    assert_eq!(progress[0], json!({ "embedded": 0, "chunks": chunks }));
    assert_eq!(progress.len() as u64, 1 + chunks.div_ceil(32), "{progress:?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["chunks"], chunks, "{p}");
        assert_eq!(p["embedded"].as_u64().unwrap(), (i as u64 * 32).min(chunks), "{p}");
    }

    // The documents are there and queryable; the GPL's chunks are exact pieces of it, each
    // within the model's 254 word pieces (the tokenizer says so), overlapping.
    let info = ok(&host, "collection.get", json!({ "name": "streamed" }));
    assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(123), Some(chunks)));
    let v = ok(
        &host,
        "query",
        json!({ "collection": "streamed", "text": "Am I allowed to use the licensor's trademarks?",
                "k": 5 }),
    );
    assert!(!hit_ids(&v).is_empty(), "{v}");
    // Dense search scores every chunk the filter passes: all of the GPL's.
    let v = ok(
        &host,
        "query",
        json!({ "collection": "streamed", "text": "How to Apply These Terms to Your New Programs",
                "mode": "dense", "k": 1000, "filter": { "doc": "gpl" } }),
    );
    let gpl_hits: Vec<&Value> = v["hits"].as_array().unwrap().iter().collect();
    assert!(gpl_hits.len() > 20 && gpl_hits.iter().all(|h| h["id"] == "gpl-3"), "{v}");
    let texts: Vec<&str> = gpl_hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    let counted =
        candle(&host, "model.tokenize", json!({ "model": "all-MiniLM-L6-v2", "input": texts }));
    for (t, pieces) in texts.iter().zip(counted["tokens"].as_array().unwrap()) {
        assert!(gpl.contains(t), "a chunk is not a piece of the text: {t:?}");
        let n = pieces.as_array().unwrap().len();
        assert!(n <= 254 && n > 100, "{n} word pieces in {t:?}");
    }
    let mut starts: Vec<(u64, usize, usize)> = gpl_hits
        .iter()
        .map(|h| {
            let t = h["text"].as_str().unwrap();
            let at = gpl.find(t).unwrap();
            (h["chunk"].as_u64().unwrap(), at, at + t.len())
        })
        .collect();
    starts.sort();
    // In order, each overlapping the one before: together they hold the whole text.
    assert_eq!((starts[0].1, starts.last().unwrap().2), (0, gpl.len()));
    for (i, w) in starts.windows(2).enumerate() {
        assert_eq!((w[0].0, w[1].0), (i as u64, i as u64 + 1));
        assert!(w[0].1 < w[1].1 && w[1].1 < w[0].2, "chunks {i} and {} do not overlap", i + 1);
    }

    // Without stream: the plain JSON answer, as before.
    let v = ok(
        &host,
        "index",
        json!({ "collection": "streamed", "documents": [{ "id": "gpl-3", "text": gpl }] }),
    );
    assert_eq!((v["indexed"].as_u64(), v["chunks"].as_u64().is_some()), (Some(1), true), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    let (status, _) = call(&host, "stats", json!({ "collection": "streamed" }));
    assert_eq!(status, 200);
}

/// A streamed `index` whose backend goes away midway ends with an `{error}` line, and nothing
/// of it is written. (`candle` is stopped after the first progress line; the request has
/// ~120 batches of one chunk left then, each a bus call that a stopped `candle` refuses.)
#[test]
fn embed_fidelity_a_streamed_index_that_fails_midway_ends_with_an_error_and_writes_nothing() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "halfway" }));
    let (status, v) = host
        .post_json("/api/core/plugins/brainml/config", &json!({ "embed_batch": 1 }).to_string());
    assert_eq!(status, 200, "{v}");
    let documents: Vec<Value> =
        paragraphs()[..120].iter().map(|(id, _, text)| json!({ "id": id, "text": text })).collect();
    let mut lines = index_streamed(
        &host,
        &json!({ "collection": "halfway", "documents": documents, "stream": true }),
    );
    let first = lines.next().unwrap();
    assert_eq!(first["embedded"], 0, "{first}");
    let chunks = first["chunks"].as_u64().unwrap();
    assert!(chunks >= 120, "{first}");
    assert_eq!(host.post_json("/api/core/plugins/candle/stop", "").0, 200);
    let rest: Vec<Value> = lines.collect();
    let (last, progress) = rest.split_last().unwrap();
    assert!(progress.iter().all(|p| p["embedded"].as_u64().unwrap() < chunks), "{rest:?}");
    let message = last["error"]["message"].as_str().unwrap_or_else(|| panic!("{rest:?}"));
    assert!(message.contains("candle"), "{last}");
    assert!(last["error"]["code"].is_string() && last["error"]["status"].is_u64(), "{last}");
    let info = ok(&host, "collection.get", json!({ "name": "halfway" }));
    assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(0), Some(0)));
    // With candle back, the same request goes through.
    assert_eq!(host.post_json("/api/core/plugins/candle/start", "").0, 200);
    host.wait_state("candle", "running");
    let v = ok(
        &host,
        "index",
        json!({ "collection": "halfway",
        "documents": [{ "id": "back", "text": "The backend is back." }] }),
    );
    assert_eq!(v["indexed"], 1, "{v}");
}

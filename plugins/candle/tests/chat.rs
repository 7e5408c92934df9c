//! Chat with the real SmolLM2-135M-Instruct Q4_1 GGUF.
mod common;

use bkg_abi::serde_json::{json, Value};
use common::*;

fn ask(e: &bkg_plugin_candle::Engine, extra: Value) -> Value {
    let mut body = json!({
        "model": "smol",
        "messages": [{ "role": "user", "content": "What is the capital of France?" }],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(e, "model.infer", body).expect("chat")
}

#[test]
fn greedy_answer_names_paris_and_streaming_matches() {
    let e = engine();
    let info = load(&e, "smol", SMOLLM);
    assert_eq!(info["kind"], "chat");
    let a = ask(&e, json!({}));
    println!("answer: {a}");
    let text = a["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert!(a["usage"]["completion_tokens"].as_u64().unwrap() <= 24);
    assert!(a["usage"]["prompt_tokens"].as_u64().unwrap() > 5);

    // Streaming: the chunks concatenate to the same text.
    let mut chunks = Vec::new();
    let s = e
        .invoke_json(
            "model.infer",
            json!({ "model": "smol", "messages": [{ "role": "user", "content": "What is the capital of France?" }],
                    "temperature": 0, "max_tokens": 24, "stream": true }),
            &mut |c| {
                chunks.push(String::from_utf8(c.to_vec()).unwrap());
                Ok(())
            },
            &|| false,
        )
        .expect("stream");
    let streamed: String = chunks
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l.trim()).unwrap()["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(chunks.len() > 3, "{chunks:?}");
    assert_eq!(streamed, text);
    assert_eq!(s["text"], a["text"]);
}

#[test]
fn max_tokens_and_stop_are_respected() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let a = ask(&e, json!({ "max_tokens": 3 }));
    assert_eq!(a["finish_reason"], "length");
    assert_eq!(a["usage"]["completion_tokens"], 3);

    let full = ask(&e, json!({}));
    let text = full["text"].as_str().unwrap();
    let stop = "Paris";
    let cut = ask(&e, json!({ "stop": [stop] }));
    assert_eq!(cut["finish_reason"], "stop");
    assert_eq!(cut["text"].as_str().unwrap(), &text[..text.find(stop).unwrap()]);
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let a = ask(&e, json!({ "temperature": 0.8, "top_p": 0.9, "seed": 42, "max_tokens": 12 }));
    let b = ask(&e, json!({ "temperature": 0.8, "top_p": 0.9, "seed": 42, "max_tokens": 12 }));
    assert_eq!(a["text"], b["text"]);
}

/// OpenAI reads `top_p: 0` as "only the likeliest token": greedy whatever the temperature
/// and seed, so it answers exactly what temperature 0 answers (it was refused with a 400).
#[test]
fn top_p_zero_is_greedy() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let greedy = ask(&e, json!({}));
    for seed in [1, 2, 3] {
        let a = ask(&e, json!({ "temperature": 1.5, "top_p": 0, "seed": seed }));
        assert_eq!(a["text"], greedy["text"], "seed {seed}");
    }
}

#[test]
fn bad_chat_requests() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    for body in [
        json!({ "model": "smol" }),
        json!({ "model": "smol", "messages": [] }),
        json!({ "model": "smol", "prompt": "" }),
        json!({ "model": "smol", "messages": [{ "role": "wizard", "content": "hi" }] }),
        json!({ "model": "smol", "prompt": "hi", "max_tokens": 0 }),
        json!({ "model": "smol", "prompt": "hi", "max_tokens": 100000 }),
        json!({ "model": "smol", "prompt": "hi", "temperature": 5 }),
        json!({ "model": "smol", "prompt": "hi", "top_p": 1.5 }),
        json!({ "model": "smol", "prompt": "hi", "top_p": -0.1 }),
        json!({ "model": "smol", "prompt": "hi", "bogus": 1 }),
    ] {
        let err = call(&e, "model.infer", body.clone()).expect_err(&body.to_string());
        assert_eq!(err.kind.0, 400, "{body}: {err}");
    }
    // Still serving.
    assert!(ask(&e, json!({ "max_tokens": 2 }))["text"].is_string());
}

fn counters(e: &bkg_plugin_candle::Engine) -> Value {
    let status = e.status();
    assert!(status["counters"].is_object(), "no counters in {status:#}");
    status["counters"].clone()
}

fn count(c: &Value, name: &str) -> u64 {
    c[name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {c:#}"))
}

/// A long generation whose caller's cancel flag rises stops between tokens: the call answers
/// the SDK's cancelled error, and the counters say so (read from `status`, as the host does).
#[test]
fn a_cancelled_generation_stops_between_tokens_and_is_counted() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let body = json!({ "model": "smol", "temperature": 0, "max_tokens": 2000,
        "messages": [{ "role": "user", "content": "Write a long story about a dragon." }] });
    // The caller gives up once five tokens were made (polled on this thread every 50 ms).
    let tokens = || e.counters.tokens_generated.load(std::sync::atomic::Ordering::SeqCst);
    let err = e
        .invoke_json("model.infer", body.clone(), &mut |_| Ok(()), &|| tokens() >= 5)
        .expect_err("a cancelled generation answers an error");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    let c = counters(&e);
    assert_eq!(count(&c, "generations_started"), 1, "{c:#}");
    assert_eq!(count(&c, "generations_cancelled"), 1, "{c:#}");
    assert_eq!(count(&c, "generations_finished"), 0, "{c:#}");
    assert_eq!(count(&c, "generations_running"), 0, "{c:#}");
    let made = count(&c, "tokens_generated");
    assert!((5..2000).contains(&made), "{c:#}");
    // Nothing runs on: the counter stays where the cancelled generation left it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(&counters(&e), "tokens_generated"), made);

    // Streamed: a sink that fails (the client is gone) stops it the same way.
    let mut sent = 0;
    let mut body = body;
    body["stream"] = json!(true);
    let err = e
        .invoke_json(
            "model.infer",
            body,
            &mut |_| {
                sent += 1;
                if sent > 3 {
                    Err(bkg_abi::Error::cancelled())
                } else {
                    Ok(())
                }
            },
            &|| false,
        )
        .expect_err("a stream whose client is gone answers an error");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    let c = counters(&e);
    assert_eq!(count(&c, "generations_cancelled"), 2, "{c:#}");
    assert!(count(&c, "tokens_generated") < made + 2000, "{c:#}");

    // The engine serves the next request, counted as finished.
    assert!(ask(&e, json!({ "max_tokens": 3 }))["text"].is_string());
    let c = counters(&e);
    assert_eq!(count(&c, "generations_finished"), 1, "{c:#}");
    assert_eq!(count(&c, "generations_started"), 3, "{c:#}");
}

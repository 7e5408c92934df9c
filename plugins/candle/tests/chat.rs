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
    let (chunks, s) = infer_streamed(
        &e,
        json!({ "model": "smol", "messages": [{ "role": "user", "content": "What is the capital of France?" }],
                "temperature": 0, "max_tokens": 24, "stream": true }),
    );
    let streamed = chunks.concat();
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

/// The chat model through the plugin's own forward pass (`gen::model`), for the batching tests.
fn own_forward(
    e: &bkg_plugin_candle::Engine,
) -> std::sync::Arc<bkg_plugin_candle::registry::Model> {
    load(e, "smol", SMOLLM);
    let m = e.registry.get("smol").expect("loaded");
    match m.as_ref() {
        bkg_plugin_candle::registry::Model::Chat(c) => assert!(c.own_model().is_some()),
        _ => panic!("smol is not a chat model"),
    }
    m
}

fn chat_of(m: &bkg_plugin_candle::registry::Model) -> &bkg_plugin_candle::chat::ChatModel {
    match m {
        bkg_plugin_candle::registry::Model::Chat(c) => c,
        _ => unreachable!(),
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn user_prompt(c: &bkg_plugin_candle::chat::ChatModel, content: &str) -> Vec<u32> {
    let req =
        serde_json::from_value(json!({ "messages": [{ "role": "user", "content": content }] }))
            .unwrap();
    c.prompt_tokens(&req).unwrap()
}

/// Several sequences decoded in one step (each at its own position, over its own KV cache)
/// give each exactly the tokens it gets decoded alone, also when one leaves the batch midway.
#[test]
fn decoding_sequences_together_gives_each_the_tokens_it_gets_alone() {
    use bkg_plugin_candle::gen::model::Scratch;
    let e = engine();
    let m = own_forward(&e);
    let chat = chat_of(&m);
    let model = chat.own_model().unwrap();
    let prompts = [
        user_prompt(chat, "What is the capital of France?"),
        user_prompt(chat, "Write a haiku about the sea, then explain each line of it."),
        raw_prompt_tokens(chat, "1, 2, 3,"),
    ];
    assert!(prompts[0].len() != prompts[1].len() && prompts[1].len() != prompts[2].len());
    const STEPS: usize = 20;
    const LEAVES_AFTER: usize = 7;
    let (alone, together) = e
        .runtime
        .install(|| {
            let mut scratch = Scratch::default();
            let alone: Vec<Vec<u32>> = prompts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let steps = if i == 1 { LEAVES_AFTER } else { STEPS };
                    let mut seq = model.sequence(p.len() + steps);
                    model.prefill(&mut scratch, &mut seq, p).unwrap();
                    let mut out = vec![argmax(seq.logits())];
                    for _ in 1..steps {
                        let t = *out.last().unwrap();
                        model.decode_step(&mut scratch, &mut [&mut seq], &[t]).unwrap();
                        out.push(argmax(seq.logits()));
                    }
                    out
                })
                .collect();
            let mut seqs: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let mut seq = model.sequence(p.len() + STEPS);
                    model.prefill(&mut scratch, &mut seq, p).unwrap();
                    seq
                })
                .collect();
            let mut together: Vec<Vec<u32>> =
                seqs.iter().map(|s| vec![argmax(s.logits())]).collect();
            for step in 1..STEPS {
                // The second sequence leaves after LEAVES_AFTER tokens.
                let active: Vec<usize> =
                    (0..3).filter(|i| *i != 1 || step < LEAVES_AFTER).collect();
                let tokens: Vec<u32> =
                    active.iter().map(|i| *together[*i].last().unwrap()).collect();
                let mut batch: Vec<&mut _> = seqs
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| active.contains(i))
                    .map(|(_, s)| s)
                    .collect();
                model.decode_step(&mut scratch, &mut batch, &tokens).unwrap();
                for (i, s) in active.iter().zip(batch.iter()) {
                    together[*i].push(argmax(s.logits()));
                }
            }
            (alone, together)
        })
        .unwrap();
    for i in 0..3 {
        eprintln!("sequence {i}: {:?}", chat.detokenize(&alone[i]).unwrap());
        assert_eq!(together[i], alone[i], "sequence {i}");
    }
    assert_eq!(together[1].len(), LEAVES_AFTER);
}

fn raw_prompt_tokens(c: &bkg_plugin_candle::chat::ChatModel, prompt: &str) -> Vec<u32> {
    let req = serde_json::from_value(json!({ "prompt": prompt })).unwrap();
    c.prompt_tokens(&req).unwrap()
}

/// A prompt processed as one batch (matrix-matrix products, causal attention over the prompt)
/// leaves the same KV cache as the same tokens fed one at a time: the next tokens agree.
#[test]
fn a_prompt_as_one_batch_equals_the_prompt_token_by_token() {
    use bkg_plugin_candle::gen::model::Scratch;
    let e = engine();
    let m = own_forward(&e);
    let chat = chat_of(&m);
    let model = chat.own_model().unwrap();
    let prompt = user_prompt(chat, "Name three rivers in Europe and say where each one ends.");
    let (batch, stepwise) = e
        .runtime
        .install(|| {
            let mut scratch = Scratch::default();
            let run = |seq: &mut bkg_plugin_candle::gen::model::Sequence, scratch: &mut Scratch| {
                let mut out = vec![argmax(seq.logits())];
                for _ in 0..12 {
                    let t = *out.last().unwrap();
                    model.decode_step(scratch, &mut [seq], &[t]).unwrap();
                    out.push(argmax(seq.logits()));
                }
                out
            };
            let mut a = model.sequence(prompt.len() + 16);
            model.prefill(&mut scratch, &mut a, &prompt).unwrap();
            let mut b = model.sequence(prompt.len() + 16);
            for t in &prompt {
                model.decode_step(&mut scratch, &mut [&mut b], &[*t]).unwrap();
            }
            let first_diff =
                a.logits().iter().zip(b.logits()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(first_diff < 1e-3, "logits after the prompt differ by {first_diff}");
            (run(&mut a, &mut scratch), run(&mut b, &mut scratch))
        })
        .unwrap();
    assert_eq!(batch, stepwise);
}

/// Poll `cond` until it holds (a generous upper bound, never a speed check).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Continuous batching: four requests (greedy, with a stop string, raw, seeded sampling; two
/// of them streamed) sent at once while a long generation runs all decode in one batch, and
/// each gets exactly the answer it gets alone (the streamed ones stream that text); the long
/// one, cancelled once the streamed ones are under way, ends cancelled without disturbing the
/// others, nothing stays in the batch, and the next request is served.
#[test]
fn requests_decoded_in_one_batch_each_get_their_answer_alone_and_a_cancelled_one_leaves() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let e = engine();
    let m = own_forward(&e);
    let bodies: Vec<Value> = [
        json!({ "messages": [{ "role": "user", "content": "What is the capital of France?" }],
                "temperature": 0 }),
        json!({ "messages": [{ "role": "user", "content": "Write a haiku about the sea." }],
                "temperature": 0, "stop": ["mirror"] }),
        json!({ "prompt": "The three primary colours are", "temperature": 0 }),
        json!({ "messages": [{ "role": "user", "content": "Name a fruit and describe it." }],
                "temperature": 0.8, "top_p": 0.9, "seed": 7 }),
    ]
    .into_iter()
    .map(|mut b| {
        b["model"] = json!("smol");
        b["max_tokens"] = json!(32);
        b
    })
    .collect();
    let alone: Vec<Value> =
        bodies.iter().map(|b| call(&e, "model.infer", b.clone()).expect("alone")).collect();
    // Alone in the batch == the unbatched path (one generation's own loop).
    let chat = chat_of(&m);
    for (i, b) in bodies.iter().enumerate() {
        let mut b = b.clone();
        b.as_object_mut().unwrap().remove("model");
        let req: bkg_plugin_candle::chat::ChatRequest = serde_json::from_value(b).unwrap();
        let g = e.runtime.install(|| chat.generate(&req, &mut |_| Ok(()), &|| false));
        let g = g.unwrap().unwrap();
        assert_eq!(g.text, alone[i]["text"].as_str().unwrap(), "request {i}: batch vs unbatched");
    }
    let streamed = [true, false, true, false];
    let chunks: [AtomicUsize; 4] = Default::default();
    let tokens = || e.counters.tokens_generated.load(SeqCst);
    let before = tokens();
    let (long, answers) = std::thread::scope(|s| {
        let (e, chunks) = (&e, &chunks);
        let long = s.spawn(move || {
            let body = json!({ "model": "smol", "prompt": "1, 2, 3,", "temperature": 0,
                               "max_tokens": 1000 });
            // Cancelled once each streamed request has two chunks: they were decoded in a
            // step together with this one.
            let under_way = || (0..4).filter(|i| streamed[*i]).all(|i| chunks[i].load(SeqCst) >= 2);
            e.invoke_json("model.infer", body, &mut |_| Ok(()), &under_way)
        });
        // The long generation is in the batch before the others come.
        wait_until("the long generation's first token", || tokens() > before);
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut body = b.clone();
                body["stream"] = json!(streamed[i]);
                s.spawn(move || {
                    let mut text = String::new();
                    let answer = e.invoke_json(
                        "model.infer",
                        body,
                        &mut |c| {
                            let line: Value = serde_json::from_slice(c).unwrap();
                            text.push_str(line["text"].as_str().unwrap());
                            chunks[i].fetch_add(1, SeqCst);
                            Ok(())
                        },
                        &|| false,
                    );
                    (answer, text)
                })
            })
            .collect();
        let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (long.join().unwrap(), answers)
    });
    let err = long.expect_err("the long generation ends cancelled");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    for (i, ((answer, text), alone)) in answers.into_iter().zip(&alone).enumerate() {
        let answer = answer.unwrap_or_else(|e| panic!("request {i}: {e}"));
        eprintln!("request {i}: {:?} ({})", answer["text"], answer["finish_reason"]);
        assert_eq!(answer["text"], alone["text"], "request {i}");
        assert_eq!(answer["finish_reason"], alone["finish_reason"], "request {i}");
        assert_eq!(answer["usage"], alone["usage"], "request {i}");
        if streamed[i] {
            assert_eq!(text, alone["text"].as_str().unwrap(), "request {i} streamed");
            assert!(chunks[i].load(SeqCst) >= 2, "request {i}");
        } else {
            assert!(text.is_empty(), "request {i} was not streamed: {text:?}");
        }
    }
    // The stop string cuts the haiku ("The sea is a mirror ..."; "The waves of the sea are a
    // mirror" before the tiled attention: " waves" trails " sea" by 0.17 logits, a near-tie).
    assert_eq!(alone[1]["finish_reason"], "stop");
    assert!(alone[1]["text"].as_str().unwrap().ends_with(" a "), "{}", alone[1]["text"]);
    assert!(chat.batch.widest() >= 2, "widest step: {}", chat.batch.widest());
    assert_eq!(chat.batch.held(), 0, "nothing stays in the batch");
    let c = counters(&e);
    assert_eq!(count(&c, "generations_cancelled"), 1, "{c:#}");
    assert_eq!(count(&c, "generations_finished"), 8, "{c:#}");
    // The next request is served, with the same answer.
    let again = call(&e, "model.infer", bodies[0].clone()).expect("served after");
    assert_eq!(again["text"], alone[0]["text"]);
}

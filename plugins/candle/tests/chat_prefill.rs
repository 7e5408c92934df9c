//! Chunked prefill in the continuous batch (`gen::batch`): a long prompt is processed over
//! several steps, a chunk per step, while the other requests keep decoding; each answer is the
//! one it gets alone; a request cancelled halfway through its prompt leaves. Checked on the
//! batch's step trace (`Batcher::steps`), never on time.
mod common;

use std::sync::atomic::Ordering::SeqCst;

use bkg_abi::serde_json::{json, Value};
use bkg_plugin_candle::chat::ChatModel;
use bkg_plugin_candle::gen::batch::{StepTrace, DEFAULT_PREFILL_BUDGET};
use bkg_plugin_candle::registry::Model;
use common::*;

fn chat_of(m: &Model) -> &ChatModel {
    match m {
        Model::Chat(c) => {
            assert!(c.batched(), "SmolLM2 runs on the plugin's own forward pass");
            c
        }
        _ => panic!("smol is not a chat model"),
    }
}

/// Poll `cond` until it holds (a generous upper bound, never a speed check).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A user message of about a thousand tokens (several prefill chunks).
fn long_body() -> Value {
    let boats = ["red", "green", "blue", "white", "black", "yellow", "grey"];
    let ports = ["Lisbon", "Oslo", "Genoa", "Dublin", "Bergen"];
    let mut notes = String::from("Read these harbour notes.\n");
    for i in 0..70 {
        notes.push_str(&format!(
            "Note {i}: the {} boat sailed to {} on day {}.\n",
            boats[i % boats.len()],
            ports[i % ports.len()],
            i * 3 + 1
        ));
    }
    notes.push_str("Which boat sailed to Oslo on day 4?");
    json!({ "model": "smol", "messages": [{ "role": "user", "content": notes }],
            "temperature": 0, "max_tokens": 16 })
}

/// A short request that keeps generating (counting) until `max_tokens`.
fn short_body(max_tokens: usize) -> Value {
    json!({ "model": "smol", "prompt": "1, 2, 3,", "temperature": 0, "max_tokens": max_tokens })
}

fn usage(v: &Value, what: &str) -> usize {
    v["usage"][what].as_u64().unwrap_or_else(|| panic!("no usage.{what} in {v}")) as usize
}

/// The chunks a prompt of `len` tokens is processed in at `budget` tokens per step.
fn chunks(len: usize, budget: usize) -> Vec<usize> {
    (0..len).step_by(budget).map(|start| budget.min(len - start)).collect()
}

/// A long prompt that arrives while a short request decodes is processed one chunk per step,
/// and every one of those steps also decodes the short request: its tokens keep coming while
/// the long prompt is read (before, one step processed the whole prompt). Both answers are
/// the ones they get alone, and the long one's is also the unbatched path's.
#[test]
fn a_long_prompt_is_prefilled_a_chunk_per_step_while_the_others_keep_decoding() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let m = e.registry.get("smol").expect("loaded");
    let chat = chat_of(&m);
    assert_eq!(chat.batch.prefill_budget(), DEFAULT_PREFILL_BUDGET);
    let (short, long) = (short_body(120), long_body());
    let short_alone = call(&e, "model.infer", short.clone()).expect("short alone");
    let long_alone = call(&e, "model.infer", long.clone()).expect("long alone");
    assert_eq!(usage(&short_alone, "completion_tokens"), 120, "{short_alone}");
    let long_len = usage(&long_alone, "prompt_tokens");
    let expected = chunks(long_len, DEFAULT_PREFILL_BUDGET);
    assert!(expected.len() >= 3, "the long prompt has only {long_len} tokens");
    // The unbatched path (the whole prompt through `Model::prefill`) answers the same.
    let mut req = long.clone();
    req.as_object_mut().unwrap().remove("model");
    let req = serde_json::from_value(req).unwrap();
    let unbatched =
        e.runtime.install(|| chat.generate(&req, &mut |_| Ok(()), &|| false)).unwrap().unwrap();
    assert_eq!(unbatched.text, long_alone["text"].as_str().unwrap());

    let before = chat.batch.steps().len();
    let tokens = || e.counters.tokens_generated.load(SeqCst);
    let start = tokens();
    let (short_answer, long_answer) = std::thread::scope(|s| {
        let e = &e;
        let a = s.spawn(move || call(e, "model.infer", short.clone()));
        // The short request decodes before the long one comes.
        wait_until("the short request's first tokens", || tokens() >= start + 2);
        let b = s.spawn(move || call(e, "model.infer", long.clone()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (short_answer, long_answer) = (short_answer.unwrap(), long_answer.unwrap());
    for (what, got, alone) in
        [("short", &short_answer, &short_alone), ("long", &long_answer, &long_alone)]
    {
        eprintln!("{what}: {:?}", got["text"]);
        assert_eq!(got["text"], alone["text"], "{what}");
        assert_eq!(got["finish_reason"], alone["finish_reason"], "{what}");
        assert_eq!(got["usage"], alone["usage"], "{what}");
    }

    let all = chat.batch.steps();
    assert!(all.len() < 512, "the trace dropped steps of this test");
    let steps: &[StepTrace] = &all[before..];
    eprintln!("{} steps; with prefill: {:?}", steps.len(), {
        steps.iter().enumerate().filter(|(_, s)| s.prefill_tokens > 0).collect::<Vec<_>>()
    });
    // The short request's prompt, then its tokens alone, then the long prompt's chunks.
    assert_eq!(steps[0].prefill_tokens, usage(&short_alone, "prompt_tokens"), "{:?}", steps[0]);
    assert_eq!(steps[0].decoded, 1, "{:?}", steps[0]);
    let prefills: Vec<(usize, &StepTrace)> =
        steps.iter().enumerate().skip(1).filter(|(_, s)| s.prefill_tokens > 0).collect();
    let got: Vec<usize> = prefills.iter().map(|(_, s)| s.prefill_tokens).collect();
    assert_eq!(got, expected, "the long prompt's chunks, one per step");
    let first = prefills[0].0;
    assert!(
        steps[1..first].iter().all(|s| s.decoded == 1 && s.prefill_tokens == 0),
        "the short request decoded alone before the long one came: {:?}",
        &steps[..first]
    );
    for (k, (i, s)) in prefills.iter().enumerate() {
        // One step after another; each decoded the short request (and, once its prompt was
        // done, the long one: it gets its first token in the step that finishes its prompt).
        assert_eq!(*i, first + k, "the long prompt advanced every step: {prefills:?}");
        assert_eq!(s.prefill_chunks, 1, "{s:?}");
        let last = k + 1 == prefills.len();
        assert_eq!(s.decoded, if last { 2 } else { 1 }, "step {i}: {s:?}");
        assert_eq!(s.prefilling, if last { 0 } else { 1 }, "step {i}: {s:?}");
    }
    assert!(steps.iter().all(|s| s.prefill_tokens <= DEFAULT_PREFILL_BUDGET));
    assert_eq!(chat.batch.widest(), 2);
    assert_eq!(chat.batch.held(), 0, "nothing stays in the batch");
}

/// A request cancelled once the first chunk of its prompt is processed leaves before the next
/// chunk: no further prompt tokens, no token generated, nothing left in the batch; the next
/// request is served with its usual answer. The budget is the plugin's `prefill_budget`
/// setting: checked, given to a model loaded after it and to one already loaded.
#[test]
fn a_request_cancelled_mid_prefill_leaves_and_the_next_is_served() {
    let e = engine();
    e.configure(json!({ "prefill_budget": 64 })).expect("configured before the load");
    load(&e, "smol", SMOLLM);
    let m = e.registry.get("smol").expect("loaded");
    let chat = chat_of(&m);
    assert_eq!(chat.batch.prefill_budget(), 64, "the setting in force at the load");
    for bad in [0, 4097, usize::MAX] {
        let err = chat.batch.set_prefill_budget(bad).expect_err("a bad budget");
        assert_eq!(err.kind.0, 400, "{err}");
        assert!(err.message.contains("prefill budget"), "{err}");
        let err = e.configure(json!({ "prefill_budget": bad })).expect_err("a bad setting");
        assert_eq!(err.kind.0, 400, "{err}");
        assert!(err.message.contains("prefill_budget must be within 1..=4096"), "{err}");
    }
    assert_eq!(chat.batch.prefill_budget(), 64, "a refused setting changes nothing");
    e.configure(json!({ "prefill_budget": 128 })).expect("configured");
    assert_eq!(chat.batch.prefill_budget(), 128, "given to the loaded model");
    let question = json!({ "model": "smol", "temperature": 0, "max_tokens": 16,
        "messages": [{ "role": "user", "content": "What is the capital of France?" }] });
    let alone = call(&e, "model.infer", question.clone()).expect("alone");

    let before = chat.batch.steps().len();
    let made = e.counters.tokens_generated.load(SeqCst);
    // Cancelled once a step has processed a chunk of it (polled between steps).
    let started = || chat.batch.steps().len() > before;
    let err = e
        .invoke_json("model.infer", long_body(), &mut |_| Ok(()), &started)
        .expect_err("cancelled mid-prefill");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    let steps = chat.batch.steps();
    let steps = &steps[before..];
    assert_eq!(steps.len(), 1, "one chunk, then it left: {steps:?}");
    assert_eq!(
        steps[0],
        StepTrace { prefill_tokens: 128, prefill_chunks: 1, decoded: 0, prefilling: 1 }
    );
    assert_eq!(e.counters.tokens_generated.load(SeqCst), made, "no token for it");
    assert_eq!(chat.batch.held(), 0, "its slot is free");
    let c = e.status()["counters"].clone();
    assert_eq!(c["generations_cancelled"], 1, "{c:#}");
    assert_eq!(c["generations_running"], 0, "{c:#}");

    let again = call(&e, "model.infer", question).expect("served after");
    assert_eq!(again["text"], alone["text"]);
    assert!(again["text"].as_str().unwrap().contains("Paris"), "{again}");
}

/// A short prompt that comes while a long one is being read is read in the next step, ahead
/// of the long one's next chunk (before, it waited for the long one's whole prefill), and then
/// decodes while the long prompt goes on: the long one is passed over for that one step only.
/// A budget of 32 gives the long prompt dozens of chunks, so the short one comes in its middle.
#[test]
fn a_short_prompt_that_comes_while_a_long_one_is_read_goes_ahead_of_its_next_chunk() {
    const BUDGET: usize = 32;
    let e = engine();
    load(&e, "smol", SMOLLM);
    let m = e.registry.get("smol").expect("loaded");
    let chat = chat_of(&m);
    chat.batch.set_prefill_budget(BUDGET).unwrap();
    let (short, long) = (short_body(120), long_body());
    let short_alone = call(&e, "model.infer", short.clone()).expect("short alone");
    let long_alone = call(&e, "model.infer", long.clone()).expect("long alone");
    let short_len = usage(&short_alone, "prompt_tokens");
    let long_len = usage(&long_alone, "prompt_tokens");
    assert!(short_len < BUDGET, "the short prompt has {short_len} tokens");
    let expected = chunks(long_len, BUDGET);
    assert!(expected.len() >= 20, "the long prompt has only {long_len} tokens");

    let before = chat.batch.steps().len();
    let (short_answer, long_answer) = std::thread::scope(|s| {
        let e = &e;
        let b = s.spawn(move || call(e, "model.infer", long.clone()));
        // The long prompt's first chunk is read before the short request comes.
        wait_until("the long prompt's first chunk", || chat.batch.steps().len() > before);
        let a = s.spawn(move || call(e, "model.infer", short.clone()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (short_answer, long_answer) = (short_answer.unwrap(), long_answer.unwrap());
    for (what, got, alone) in
        [("short", &short_answer, &short_alone), ("long", &long_answer, &long_alone)]
    {
        assert_eq!(got["text"], alone["text"], "{what}");
        assert_eq!(got["usage"], alone["usage"], "{what}");
    }

    let all = chat.batch.steps();
    assert!(all.len() < 512, "the trace dropped steps of this test");
    let steps: &[StepTrace] = &all[before..];
    // The first step that decoded is the one that read the short prompt: alone (the long
    // one's chunk would not have fitted beside it), with the long prompt still waiting.
    let k = steps.iter().position(|s| s.decoded > 0).expect("a step decoded");
    assert!(k >= 1, "{:?}", &steps[..=k]);
    assert_eq!(
        steps[k],
        StepTrace { prefill_tokens: short_len, prefill_chunks: 1, decoded: 1, prefilling: 1 },
        "the step that read the short prompt; steps before it: {:?}",
        &steps[..k]
    );
    assert!(
        steps[..k].iter().all(|s| *s
            == StepTrace { prefill_tokens: BUDGET, prefill_chunks: 1, decoded: 0, prefilling: 1 }),
        "the long prompt's chunks before the short one came: {:?}",
        &steps[..k]
    );
    // Every other step with prompt tokens is one chunk of the long prompt, one step after
    // another: it was passed over in step k only. The short request decodes in each.
    let long_steps: Vec<(usize, &StepTrace)> =
        steps.iter().enumerate().filter(|(i, s)| *i != k && s.prefill_tokens > 0).collect();
    let got: Vec<usize> = long_steps.iter().map(|(_, s)| s.prefill_tokens).collect();
    assert_eq!(got, expected, "the long prompt's chunks");
    for (j, (i, s)) in long_steps.iter().enumerate() {
        let want = if j < k { j } else { j + 1 };
        assert_eq!(*i, want, "the long prompt advanced in every step but k={k}: {long_steps:?}");
        assert_eq!(s.prefill_chunks, 1, "{s:?}");
        if *i > k {
            assert!(s.decoded >= 1, "step {i} did not decode the short request: {s:?}");
        }
    }
    assert!(steps.iter().all(|s| s.prefill_tokens <= BUDGET), "{steps:?}");
    assert_eq!(chat.batch.held(), 0, "nothing stays in the batch");
}

//! Chat generation speed in process: SmolLM2-135M-Instruct (Q4_1 GGUF, its blocks run as stored), greedy,
//! on the plugin's pool (`--threads`, default 2), `--rounds` times (default 5); prints the
//! median time to first token (prompt processing + first token) and the median generation
//! speed after the first token (the `timing` of `model.infer`). Each round is a new generation
//! (its own KV cache: nothing of an earlier round's prompt is reused).
//!
//! ```text
//! cargo run --release --example bench_chat -- [--rounds 5] [--threads 2] [--max-tokens 128] [--json]
//!     [--prompt-file PATH] [--tag NAME]
//! ```
//!
//! `--prompt-file`: the user message is the file's text (default: [`PROMPT`]); `--tag`: a name
//! for the prompt, copied into the JSON line (`"prompt"`).
//!
//! ```text
//! cargo run --release --example bench_chat -- --gap LONG_PROMPT_FILE [--prefill-budget 256]
//!     [--rounds 5] [--threads 2] [--json]
//! ```
//!
//! `--gap`: the worst gap between two streamed tokens of 3 clients while a long prompt (the
//! file's text as the user message, ~1,500 tokens) arrives: each round the 3 clients stream a
//! story (256 tokens at most), and once each has 8 chunks the long request comes (8 tokens).
//! Per round: the longest gap between two chunks of any of the 3 clients that spans part of the
//! long prompt's prefill (from its sending to its first token), the median gap of the 3 before
//! it came, and the long request's time to first token. `--prefill-budget`: the chat model's
//! batch prefill budget (`Batcher::set_prefill_budget`; the default 256; 4096 processes a
//! 1,500-token prompt in one step, as before the budget existed).
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Instant;

use bkg_abi::serde_json::{json, Value};
use bkg_plugin_candle::{default_models_dir, Engine};

/// The streaming clients' prompts in `--gap` (bench-ml-chat.py's STORIES).
const STORIES: [&str; 3] = [
    PROMPT,
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a short story about a cat who becomes the mayor of a small town.",
];

pub const PROMPT: &str = "Write a short story about a robot who learns to paint.";

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut rounds = 5usize;
    let mut threads = 2usize;
    let mut max_tokens = 128usize;
    let mut as_json = false;
    let mut prompt = PROMPT.to_string();
    let mut tag = "short".to_string();
    let mut gap: Option<String> = None;
    let mut budget: Option<usize> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => rounds = value().parse().expect("--rounds N"),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--max-tokens" => max_tokens = value().parse().expect("--max-tokens N"),
            "--json" => as_json = true,
            "--prompt-file" => {
                let path = value();
                prompt = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("--prompt-file {path}: {e}"));
            }
            "--tag" => tag = value(),
            "--gap" => gap = Some(value()),
            "--prefill-budget" => budget = Some(value().parse().expect("--prefill-budget N")),
            other => panic!("unknown argument {other}"),
        }
    }
    let e = Engine::new(default_models_dir());
    e.configure(json!({ "threads": threads })).unwrap();
    e.start().unwrap();
    let load = json!({"name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"});
    e.invoke_json("model.load", load, &mut |_| Ok(()), &|| false)
        .expect("load (run scripts/fetch-models.sh first)");
    if let Some(tokens) = budget {
        let m = e.registry.get("smol").unwrap();
        let bkg_plugin_candle::registry::Model::Chat(chat) = m.as_ref() else { unreachable!() };
        chat.batch.set_prefill_budget(tokens).expect("--prefill-budget");
    }
    if let Some(path) = gap {
        let long = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("--gap {path}: {e}"));
        gap_bench(&e, &long, rounds, threads, budget.unwrap_or(256), as_json);
        e.stop().unwrap();
        return;
    }
    let body = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    });
    let _ = e.invoke_json("model.infer", body.clone(), &mut |_| Ok(()), &|| false).unwrap();
    let (mut ttft, mut tps, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    let mut prompt_tokens = 0;
    for _ in 0..rounds {
        let out = e.invoke_json("model.infer", body.clone(), &mut |_| Ok(()), &|| false).unwrap();
        ttft.push(out["timing"]["first_token_s"].as_f64().unwrap());
        tps.push(out["timing"]["tokens_per_s"].as_f64().unwrap());
        tokens.push(out["usage"]["completion_tokens"].as_u64().unwrap());
        prompt_tokens = out["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    let line = format!(
        "candle chat: prompt {prompt_tokens} tokens, {} generated; time to first token median \
         {:.1} ms; generation median {:.1} tokens/s ({threads} threads, {rounds} rounds)",
        tokens[0],
        median(&ttft) * 1e3,
        median(&tps)
    );
    if as_json {
        eprintln!("{line}");
        println!(
            "{}",
            json!({"side": "candle", "prompt": tag, "ttft_s": ttft, "tokens_per_s": tps,
                   "tokens": tokens, "prompt_tokens": prompt_tokens})
        );
    } else {
        println!("{line}");
    }
    e.stop().unwrap();
}

/// One `model.infer` of `message` (greedy), streamed: the time of each chunk with text.
fn stream(
    e: &Engine,
    message: &str,
    max_tokens: usize,
    count: &AtomicUsize,
) -> (Vec<Instant>, Value) {
    let body = json!({ "model": "smol", "messages": [{"role": "user", "content": message}],
                       "temperature": 0, "max_tokens": max_tokens, "stream": true });
    let mut times = Vec::new();
    let answer = e
        .invoke_json(
            "model.infer",
            body,
            &mut |c| {
                let line: Value = bkg_abi::serde_json::from_slice(c).expect("a JSON line");
                if line["text"].as_str().is_some_and(|t| !t.is_empty()) {
                    times.push(Instant::now());
                    count.fetch_add(1, SeqCst);
                }
                Ok(())
            },
            &|| false,
        )
        .expect("model.infer");
    (times, answer)
}

/// `--gap` (see the module docs).
fn gap_bench(e: &Engine, long: &str, rounds: usize, threads: usize, budget: usize, as_json: bool) {
    let counts: [AtomicUsize; 3] = Default::default();
    let prompt_tokens = Mutex::new(0u64);
    let round = || {
        for c in &counts {
            c.store(0, SeqCst);
        }
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..3)
                .map(|i| {
                    let (e, counts) = (&e, &counts);
                    s.spawn(move || stream(e, STORIES[i], 256, &counts[i]).0)
                })
                .collect();
            while counts.iter().any(|c| c.load(SeqCst) < 8) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let sent = Instant::now();
            let (times, answer) = stream(e, long, 8, &AtomicUsize::new(0));
            *prompt_tokens.lock().unwrap() = answer["usage"]["prompt_tokens"].as_u64().unwrap();
            let first = *times.first().expect("the long request's first token");
            let (mut worst, mut before) = (0f64, Vec::new());
            for c in clients {
                let t = c.join().unwrap();
                assert!(
                    t.last().is_some_and(|l| *l > first),
                    "a client ended before the long prompt's first token: raise its max_tokens"
                );
                for w in t.windows(2) {
                    let g = (w[1] - w[0]).as_secs_f64();
                    if w[1] <= sent {
                        before.push(g);
                    } else if w[0] < first {
                        worst = worst.max(g);
                    }
                }
            }
            (worst, median(&before), (first - sent).as_secs_f64())
        })
    };
    round(); // warm-up
    let (mut worst, mut base, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (w, b, t) = round();
        worst.push(w);
        base.push(b);
        ttft.push(t);
    }
    let prompt_tokens = *prompt_tokens.lock().unwrap();
    let label = format!("prefill budget {budget}");
    eprintln!(
        "candle chat in process, 3 streaming clients while a {prompt_tokens}-token prompt \
         arrives ({label}, {threads} threads, {rounds} rounds): worst inter-token gap median \
         {:.1} ms (max {:.1}), usual gap median {:.1} ms, the long prompt's first token after \
         {:.1} ms",
        median(&worst) * 1e3,
        worst.iter().cloned().fold(0.0, f64::max) * 1e3,
        median(&base) * 1e3,
        median(&ttft) * 1e3
    );
    if as_json {
        println!(
            "{}",
            json!({"side": "gap candle in process", "label": label, "prompt_tokens": prompt_tokens,
                   "worst_gap_s": worst, "usual_gap_s": base, "long_ttft_s": ttft})
        );
    }
}

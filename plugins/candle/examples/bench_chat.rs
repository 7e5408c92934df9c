//! Chat generation speed in process: SmolLM2-135M-Instruct (Q4_1 GGUF, run as Q8_0), greedy,
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
use bkg_abi::serde_json::json;
use bkg_plugin_candle::{default_models_dir, Engine};

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
            other => panic!("unknown argument {other}"),
        }
    }
    let e = Engine::new(default_models_dir());
    e.configure(json!({ "threads": threads })).unwrap();
    e.start().unwrap();
    let load = json!({"name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"});
    e.invoke_json("model.load", load, &mut |_| Ok(()), &|| false)
        .expect("load (run scripts/fetch-models.sh first)");
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

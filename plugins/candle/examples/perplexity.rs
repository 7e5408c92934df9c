//! The chat model's perplexity on a text and on the same words shuffled: a check of the
//! forward pass's numerics (plain English scores far lower than word salad; two correct
//! implementations score nearly the same). Not part of CI.
//!
//! ```text
//! cargo run --release --example perplexity -- FILE [--words N] [--threads 2]
//! ```
//! FILE: any English prose, e.g. CPython's `LICENSE.txt`
//! (`python3 -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])'`/LICENSE.txt); the
//! first N words (default 300) are scored, then the same words in a fixed shuffled order.
use bkg_abi::serde_json::json;
use bkg_plugin_candle::registry::Model;
use bkg_plugin_candle::{default_models_dir, Engine};

fn main() {
    let mut file = None;
    let mut words = 300usize;
    let mut threads = 2usize;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--words" => words = value().parse().expect("--words N"),
            "--threads" => threads = value().parse().expect("--threads N"),
            _ if file.is_none() => file = Some(arg.clone()),
            other => panic!("unknown argument {other}"),
        }
    }
    let file = file.expect("usage: perplexity FILE [--words N] [--threads N]");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut ws: Vec<&str> = text.split_whitespace().take(words).collect();
    let plain = ws.join(" ");
    // A fixed shuffle (an LCG), so that every run scores the same word salad.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..ws.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ws.swap(i, (x >> 33) as usize % (i + 1));
    }
    let shuffled = ws.join(" ");

    let e = Engine::new(default_models_dir());
    e.configure(json!({ "threads": threads })).unwrap();
    e.start().unwrap();
    let load = json!({"name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"});
    e.invoke_json("model.load", load, &mut |_| Ok(()), &|| false)
        .expect("load (run scripts/fetch-models.sh first)");
    let m = e.registry.get("smol").unwrap();
    let Model::Chat(chat) = m.as_ref() else { panic!("not a chat model") };
    for (name, t) in [("plain", &plain), ("shuffled", &shuffled)] {
        let (ppl, n) = e.runtime.install(|| chat.perplexity(t)).unwrap().unwrap();
        println!(
            "perplexity {name}: {ppl:.3} over {n} tokens ({} words of {file}; forward {}, compute {})",
            ws.len(),
            chat.forward_name(),
            chat.compute_type
        );
    }
    e.stop().unwrap();
}

//! Ask the chat model one question: `cargo run --release --example chat_cli -- [--raw] "question"`.
use bkg_abi::serde_json::json;
use bkg_plugin_candle::{default_models_dir, Engine};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let raw = args.iter().any(|a| a == "--raw");
    let q = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or("What is the capital of France?".into());
    let e = Engine::new(default_models_dir());
    e.start().unwrap();
    let load = json!({"name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"});
    e.invoke_json("model.load", load, &mut |_| Ok(()), &|| false).unwrap();
    let body = if raw {
        json!({"model": "smol", "prompt": q, "temperature": 0, "max_tokens": 30})
    } else {
        json!({"model": "smol", "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 30})
    };
    let out = e.invoke_json("model.infer", body, &mut |_| Ok(()), &|| false).unwrap();
    println!("{out:#}");
}

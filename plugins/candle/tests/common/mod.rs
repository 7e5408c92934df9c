//! Shared test helpers: the real models folder (scripts/fetch-models.sh) and a started engine.
#![allow(dead_code)]

use std::path::PathBuf;

use bkg_abi::serde_json::{json, Value};
use bkg_abi::Error;
use bkg_plugin_candle::{default_models_dir, Engine};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
pub const SMOLLM: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";

/// The models folder; fails (never skips) when the weights are missing.
pub fn models_dir() -> PathBuf {
    let dir = default_models_dir();
    for (repo, file) in [(MINILM, "model.safetensors"), (SMOLLM, "SmolLM2-135M-Instruct.Q4_1.gguf")]
    {
        let p = dir.join(repo).join(file);
        assert!(
            p.is_file(),
            "{} is missing: run `bash scripts/fetch-models.sh` first (or set BKG_MODELS_DIR)",
            p.display()
        );
    }
    dir
}

pub fn engine() -> Engine {
    let e = Engine::new(models_dir());
    e.start().expect("start");
    e
}

pub fn call(e: &Engine, capability: &str, body: Value) -> Result<Value, Error> {
    e.invoke_json(capability, body, &mut |_| Ok(()), &|| false)
}

/// `model.infer` streamed: the texts of its chunks (one JSON object a chunk) and the answer.
pub fn infer_streamed(e: &Engine, body: Value) -> (Vec<String>, Value) {
    let mut chunks = Vec::new();
    let answer = e
        .invoke_json(
            "model.infer",
            body,
            &mut |c| {
                let chunk: Value = bkg_abi::serde_json::from_slice(c).expect("a JSON chunk");
                chunks.push(chunk["text"].as_str().expect("a chunk's text").to_string());
                Ok(())
            },
            &|| false,
        )
        .expect("stream");
    (chunks, answer)
}

pub fn load(e: &Engine, name: &str, path: &str) -> Value {
    call(e, "model.load", json!({ "name": name, "path": path })).expect("model.load")
}

pub fn embed(e: &Engine, model: &str, input: Value) -> Vec<Vec<f32>> {
    let v = call(e, "model.infer", json!({ "model": model, "input": input })).expect("embed");
    serde_json::from_value(v["embeddings"].clone()).expect("vectors")
}

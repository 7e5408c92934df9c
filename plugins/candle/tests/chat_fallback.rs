//! The candle_transformers fallback: a llama GGUF whose matrices the plugin's own forward pass
//! does not run (not Q4_1 / Q8_0 / F16 / F32) goes through candle_transformers'
//! `quantized_llama`. No such file is fetched, so the test writes one from the real SmolLM2
//! GGUF: its matrices requantized to Q4_0 with candle's own quantizer and written with
//! candle's GGUF writer, the metadata (tokenizer included) as it was.
//!
//! Its own test binary: candle's quantized matmuls start candle's process-wide barrier pool
//! (never joined, see the README's "Threads and unloading"), which must not leak into the
//! tests that count threads or heap.
mod common;

use bkg_abi::serde_json::json;
use bkg_plugin_candle::registry::Model;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use common::*;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Write `dst` from the real GGUF with every 2-D tensor requantized to `dtype`; returns how
/// many were.
fn requantized_copy(dst: &std::path::Path, dtype: GgmlDType) -> usize {
    let src = models_dir().join(SMOLLM).join(FILE);
    let mut f = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut changed = 0;
    let tensors: Vec<(&str, QTensor)> = names
        .into_iter()
        .map(|name| {
            let t = content.tensor(&mut f, name, &Device::Cpu).unwrap();
            let t = if t.shape().dims().len() == 2 && t.dtype() != dtype {
                changed += 1;
                QTensor::quantize(&t.dequantize(&Device::Cpu).unwrap(), dtype).unwrap()
            } else {
                t
            };
            (name.as_str(), t)
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> =
        content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    gguf_file::write(&mut out, &metadata, &refs).unwrap();
    changed
}

/// A Q4_0 SmolLM2 loads through candle_transformers (the model says so, and why), answers the
/// capital question with Paris greedily, and its streamed text is its non-streamed text.
#[test]
fn a_llama_gguf_of_other_weight_types_runs_through_candle_transformers() {
    let tmp = std::env::temp_dir().join(format!("bkg-candle-fallback-{}", std::process::id()));
    let dir = tmp.join("smol-q4_0");
    std::fs::create_dir_all(&dir).unwrap();
    let changed = requantized_copy(&dir.join("SmolLM2-135M-Instruct.Q4_0.gguf"), GgmlDType::Q4_0);
    // token_embd and the 7 matrices of each of the 30 layers.
    assert_eq!(changed, 1 + 7 * 30);

    let e = bkg_plugin_candle::Engine::new(tmp.clone());
    e.start().unwrap();
    let info = load(&e, "smol", "smol-q4_0");
    assert_eq!(info["kind"], "chat", "{info:#}");
    assert_eq!(info["details"]["architecture"], "llama", "{info:#}");
    assert_eq!(info["details"]["weights"], "q4_0", "{info:#}");
    assert_eq!(info["details"]["compute"], "q4_0", "{info:#}");
    let m = e.registry.get("smol").expect("loaded");
    let Model::Chat(chat) = m.as_ref() else { panic!("smol is not a chat model") };
    assert_eq!(chat.forward_name(), "candle_transformers");
    assert!(!chat.batched() && chat.own_model().is_none());
    let reason = chat.fallback_reason.as_deref().expect("the reason the own pass refused it");
    assert!(reason.contains("Q4_0") && reason.contains("not supported"), "{reason}");

    let body = json!({ "model": "smol", "temperature": 0, "max_tokens": 24,
        "messages": [{ "role": "user", "content": "What is the capital of France?" }] });
    let a = call(&e, "model.infer", body.clone()).expect("chat");
    eprintln!("answer: {a}");
    let text = a["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");

    let mut streamed_body = body;
    streamed_body["stream"] = json!(true);
    let (chunks, s) = infer_streamed(&e, streamed_body);
    let streamed = chunks.concat();
    assert!(chunks.len() > 3, "{chunks:?}");
    assert_eq!(streamed, text);
    assert_eq!(s["text"], a["text"]);
    assert_eq!(s["usage"], a["usage"]);

    e.stop().unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

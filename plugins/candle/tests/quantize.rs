//! model.quantize on a copy of the real all-MiniLM-L6-v2 folder.
mod common;

use bkg_abi::serde_json::json;
use bkg_plugin_candle::embed::cosine;
use common::*;

#[test]
fn q8_0_and_q4_0_agree_with_f32_and_load_again() {
    let tmp = std::env::temp_dir().join(format!("bkg-candle-quant-{}", std::process::id()));
    let dst = tmp.join(MINILM);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(models_dir().join(MINILM).join(f), dst.join(f)).unwrap();
    }
    let e = bkg_plugin_candle::Engine::new(tmp.clone());
    e.start().unwrap();
    load(&e, "f32", MINILM);

    let q8 = call(&e, "model.quantize", json!({ "name": "f32", "dtype": "q8_0" })).unwrap();
    println!("q8_0: {q8}");
    assert!(q8["agreement"]["min_cosine"].as_f64().unwrap() >= 0.99);
    assert_eq!(q8["agreement"]["sentences"], 20);
    assert!(q8["size_after"].as_u64().unwrap() * 3 < q8["size_before"].as_u64().unwrap());
    assert_eq!(q8["path"], format!("{MINILM}/model-q8_0.gguf"));

    let q4 = call(&e, "model.quantize", json!({ "path": MINILM, "dtype": "q4_0" })).unwrap();
    println!("q4_0: {q4}");
    assert!(q4["size_after"].as_u64().unwrap() < q8["size_after"].as_u64().unwrap());

    // The GGUF loads as an embedding model and agrees with F32 on the same sentences.
    let info = load(&e, "q8", q8["path"].as_str().unwrap());
    assert_eq!(info["kind"], "embedding");
    assert_eq!(info["details"]["weights"], "q8_0");
    let s = bkg_plugin_candle::quantize::AGREEMENT_SENTENCES;
    let a = embed(&e, "f32", json!(s));
    let b = embed(&e, "q8", json!(s));
    let worst = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).fold(1.0f32, f32::min);
    println!("q8_0 loaded via model.load: worst cosine to f32 {worst:.5}");
    assert!(worst >= 0.99);

    // A folder with several GGUFs and a safetensors still loads the safetensors by default.
    let again = load(&e, "f32b", MINILM);
    assert_eq!(again["details"]["weights"], "f32");
    assert_eq!(
        call(&e, "model.quantize", json!({ "name": "f32", "dtype": "q3" })).unwrap_err().kind.0,
        400
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A quantization whose caller's cancel flag rises stops (between tensors, before writing,
/// or before the agreement check) with a cancelled error, and is counted.
#[test]
fn a_cancelled_quantization_stops_and_is_counted() {
    let tmp = std::env::temp_dir().join(format!("bkg-candle-quant-cancel-{}", std::process::id()));
    let dst = tmp.join(MINILM);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(models_dir().join(MINILM).join(f), dst.join(f)).unwrap();
    }
    let e = bkg_plugin_candle::Engine::new(tmp.clone());
    e.start().unwrap();
    let body = json!({ "path": MINILM, "dtype": "q8_0" });
    let err = e
        .invoke_json("model.quantize", body, &mut |_| Ok(()), &|| true)
        .expect_err("a cancelled quantization answers an error");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    let status = e.status();
    assert_eq!(status["counters"]["quantize_cancelled"], 1, "{status:#}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The chat model (a Q4_1 GGUF) cannot be quantized: by name or by path the answer is a 400
/// that says what can be (a BERT-style F32 safetensors model) and why this cannot (already a
/// quantized GGUF), not a file-system error about a missing config.json.
#[test]
fn quantizing_the_chat_model_says_what_can_be_quantized_and_why_not_this() {
    let e = engine();
    load(&e, "smol", SMOLLM);
    let gguf = format!("{SMOLLM}/SmolLM2-135M-Instruct.Q4_1.gguf");
    for body in [
        json!({ "name": "smol", "dtype": "q8_0" }),
        json!({ "path": SMOLLM, "dtype": "q8_0" }),
        json!({ "path": gguf }),
    ] {
        let err = call(&e, "model.quantize", body.clone()).expect_err(&body.to_string());
        assert_eq!(err.kind.0, 400, "{body}: {err}");
        let m = &err.message;
        assert!(m.contains("BERT-style embedding model") && m.contains("safetensors"), "{m}");
        assert!(m.contains("already quantized"), "{m}");
        assert!(!m.contains("No such file"), "{m}");
    }
    assert!(
        !models_dir().join(SMOLLM).join("model-q8_0.gguf").exists(),
        "a refused quantization wrote a file"
    );
}

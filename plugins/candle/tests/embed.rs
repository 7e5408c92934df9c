//! Embeddings with the real all-MiniLM-L6-v2 weights.
mod common;

use bkg_abi::serde_json::json;
use bkg_plugin_candle::embed::cosine;
use common::*;

#[test]
fn reference_cosines() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let v = embed(
        &e,
        "minilm",
        json!([
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The stock market crashed today."
        ]),
    );
    assert_eq!(v[0].len(), 384);
    let close = cosine(&v[0], &v[1]);
    let far = cosine(&v[0], &v[2]);
    println!("cos(food, bread) = {close:.4}, cos(food, stock market) = {far:.4}");
    assert!((close - 0.7553).abs() <= 0.001, "cos(food, bread) = {close}");
    assert!((far - 0.0088).abs() <= 0.01, "cos(food, stock market) = {far}");
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
}

#[test]
fn batch_equals_one_by_one_and_matches_candle_bert() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let sentences = bkg_plugin_candle::quantize::AGREEMENT_SENTENCES;
    let batch = embed(&e, "minilm", json!(sentences));
    let mut worst = 1.0f32;
    for (i, s) in sentences.iter().enumerate() {
        let one = embed(&e, "minilm", json!(s));
        worst = worst.min(cosine(&one[0], &batch[i]));
    }
    println!("worst cos batch vs one-by-one: {worst:.7}");
    assert!(worst > 0.9999, "{worst}");

    // The reference: candle_transformers' BertModel with the same masked mean pooling.
    use bkg_plugin_candle::registry::Model;
    use candle_core::{DType, Device, Tensor};
    let dir = models_dir().join(MINILM);
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    let model = e.registry.get("minilm").unwrap();
    let Model::Embedding(m) = &*model else { panic!() };
    let mut worst = 1.0f32;
    for (i, s) in sentences.iter().enumerate() {
        let ids = m.tokenize(s).unwrap();
        let n = ids.len();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mask = ids.ones_like().unwrap();
        let hidden = reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        let v = bkg_plugin_candle::bert::masked_mean_normalized(&hidden, &mask).unwrap();
        let v = v.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        assert!(n > 3);
        worst = worst.min(cosine(&v, &batch[i]));
    }
    println!("worst cos vs candle_transformers BertModel: {worst:.7}");
    assert!(worst > 0.9999, "{worst}");
}

#[test]
fn bad_inputs_get_clear_errors_and_the_engine_keeps_serving() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let err = |cap: &str, body| call(&e, cap, body).expect_err("should fail");
    assert_eq!(err("model.infer", json!({ "model": "nope", "input": "x" })).kind.0, 404);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": [] })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": "" })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm" })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": [1, 2] })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "input": "x" })).kind.0, 400);
    assert_eq!(err("model.infer", json!("just a string")).kind.0, 400);
    assert_eq!(err("model.unload", json!({ "name": "nope" })).kind.0, 404);
    assert_eq!(err("model.nope", json!({})).kind.0, 404);
    // Paths: absolute, escaping, missing.
    for path in ["/etc", "../models", "sentence-transformers/../../x", ""] {
        let e = err("model.load", json!({ "name": "x", "path": path }));
        assert_eq!(e.kind.0, 400, "{path}: {e}");
    }
    assert_eq!(err("model.load", json!({ "name": "x", "path": "no/such-model" })).kind.0, 404);
    assert_eq!(
        err("model.load", json!({ "name": "x", "path": MINILM, "kind": "chat" })).kind.0,
        400
    );

    // A 100k-token input is truncated to 512 tokens, and says so.
    let long = "word ".repeat(100_000);
    let v =
        call(&e, "model.infer", json!({ "model": "minilm", "input": [long, "short"] })).unwrap();
    assert_eq!(v["truncated"], 1);
    assert_eq!(v["usage"]["prompt_tokens"], 512 + 3);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);

    // Still serving.
    assert_eq!(embed(&e, "minilm", json!("A man is eating food."))[0].len(), 384);
}

#[test]
fn corrupted_weights_are_refused() {
    let tmp = std::env::temp_dir().join(format!("bkg-candle-corrupt-{}", std::process::id()));
    let dst = tmp.join("org/broken");
    std::fs::create_dir_all(&dst).unwrap();
    let src = models_dir().join(MINILM);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(dst.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    std::fs::write(tmp.join("org/garbage.gguf"), b"GGUF but not really").unwrap();

    let e = bkg_plugin_candle::Engine::new(tmp.clone());
    e.start().unwrap();
    let err = call(&e, "model.load", json!({ "name": "b", "path": "org/broken" })).unwrap_err();
    println!("{err}");
    assert_eq!(err.kind.0, 400);
    let err =
        call(&e, "model.load", json!({ "name": "g", "path": "org/garbage.gguf" })).unwrap_err();
    println!("{err}");
    assert_eq!(err.kind.0, 400);
    assert!(call(&e, "model.list", json!({})).unwrap()["models"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_second_load_of_the_same_weights_shares_them() {
    let e = engine();
    load(&e, "a", MINILM);
    let b = load(&e, "b", MINILM);
    assert_eq!(b["shared_by"], 2);
    assert_eq!(e.registry.distinct_weights(), 1);
    let a = e.registry.get("a").unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &e.registry.get("b").unwrap()));
    // Same name, same path: a no-op. Same name, another path: a conflict.
    load(&e, "a", MINILM);
    let err = call(&e, "model.load", json!({ "name": "a", "path": SMOLLM })).unwrap_err();
    assert_eq!(err.kind.0, 409);
    call(&e, "model.unload", json!({ "name": "a" })).unwrap();
    assert_eq!(e.registry.distinct_weights(), 1);
    drop(a);
    call(&e, "model.unload", json!({ "name": "b" })).unwrap();
    assert_eq!(e.registry.distinct_weights(), 0);
}

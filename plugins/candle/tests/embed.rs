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
        json!(["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today."]),
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

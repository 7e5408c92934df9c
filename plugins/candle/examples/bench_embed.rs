//! Embedding throughput: 512 deterministic sentences of 8-30 words, length-sorted batches padded
//! to their longest member, batch 32 and batch 1, on the plugin's own pool (`BKG_THREADS`,
//! default 2). Also the worst cosine against candle_transformers' `BertModel` (the unoptimised
//! reference) with the same pooling.
//!
//! ```text
//! bash scripts/fetch-models.sh
//! cargo run --release --example bench_embed      # in plugins/candle
//! ```
use std::time::Instant;

use bkg_abi::serde_json::json;
use bkg_plugin_candle::embed::cosine;
use bkg_plugin_candle::registry::Model;
use bkg_plugin_candle::{default_models_dir, Engine};
use candle_core::{DType, Device, Tensor};

const WORDS: &[&str] = &[
    "the",
    "a",
    "man",
    "woman",
    "child",
    "dog",
    "cat",
    "city",
    "market",
    "river",
    "bread",
    "food",
    "is",
    "was",
    "will",
    "eating",
    "walking",
    "reading",
    "building",
    "selling",
    "quickly",
    "slowly",
    "under",
    "over",
    "near",
    "with",
    "without",
    "green",
    "old",
    "new",
    "small",
    "large",
    "music",
    "computer",
    "train",
    "station",
    "morning",
    "evening",
    "weather",
    "rain",
    "sun",
    "government",
    "report",
    "company",
    "price",
    "stock",
    "game",
    "team",
    "player",
    "doctor",
    "hospital",
    "school",
    "teacher",
    "student",
    "book",
    "garden",
    "flower",
    "mountain",
    "sea",
    "boat",
    "road",
    "car",
];

fn sentences(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let len = 8 + (next() % 23) as usize;
            let words: Vec<&str> =
                (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
            let mut s = words.join(" ");
            s.push('.');
            s
        })
        .collect()
}

fn main() {
    let threads: usize =
        std::env::var("BKG_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let runs: usize =
        std::env::var("BKG_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let e = Engine::new(default_models_dir());
    e.configure(json!({ "threads": threads })).unwrap();
    e.start().unwrap();
    let path =
        std::env::var("BKG_BENCH_MODEL").unwrap_or("sentence-transformers/all-MiniLM-L6-v2".into());
    e.invoke_json("model.load", json!({ "name": "m", "path": path }), &mut |_| Ok(()), &|| false)
        .expect("load (run scripts/fetch-models.sh first)");
    let model = e.registry.get("m").unwrap();
    let Model::Embedding(m) = &*model else { panic!("not an embedding model") };
    let texts = sentences(512);
    let tokens: usize = texts.iter().map(|t| m.tokenize(t).unwrap().len()).sum();
    println!(
        "512 sentences, {tokens} tokens ({:.1} per sentence), {threads} threads, model {path}",
        tokens as f64 / 512.0
    );

    let mut vectors = Vec::new();
    for batch in [32usize, 1] {
        let _ = e.runtime.install(|| m.embed(&texts[..64], batch)).unwrap().unwrap(); // warm-up
        let mut best = f64::MAX;
        for _ in 0..runs {
            let t = Instant::now();
            let out = e.runtime.install(|| m.embed(&texts, batch)).unwrap().unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            vectors = out.vectors;
        }
        println!("batch {batch:>2}: {:.1} sentences/s (best of {runs}: {best:.3}s)", 512.0 / best);
    }

    // Reference: candle_transformers' BertModel, one sentence at a time.
    let dir = default_models_dir().join("sentence-transformers/all-MiniLM-L6-v2");
    let st = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(st, DType::F32, &Device::Cpu);
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    let worst = e
        .runtime
        .install(|| {
            let mut worst = 1.0f32;
            for (i, t) in texts.iter().enumerate() {
                let ids = Tensor::new(m.tokenize(t).unwrap().as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let mask = ids.ones_like().unwrap();
                let h = reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
                let v = bkg_plugin_candle::bert::masked_mean_normalized(&h, &mask).unwrap();
                worst = worst
                    .min(cosine(&v.squeeze(0).unwrap().to_vec1::<f32>().unwrap(), &vectors[i]));
            }
            worst
        })
        .unwrap();
    println!("worst cosine vs candle_transformers BertModel over 512 sentences: {worst:.7}");
    e.stop().unwrap();
}

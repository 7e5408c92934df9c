//! Embedding throughput: 512 deterministic sentences of 8-30 words, length-sorted batches padded
//! to their longest member, batch 32 and batch 1, on the plugin's own pool (`--threads`,
//! default 2). Rounds alternate the batch sizes; the median of the rounds is reported.
//!
//! ```text
//! bash scripts/fetch-models.sh
//! cargo run --release --example bench_embed -- [--rounds 5] [--threads 2] [--batches 32,1]
//!     [--sentences FILE] [--write-sentences FILE] [--vectors-out DIR] [--reference]
//!     [--model sentence-transformers/all-MiniLM-L6-v2] [--json]
//! ```
//!
//! `--write-sentences FILE` writes the 512 sentences (one a line) and exits; `--sentences FILE`
//! reads them back (scripts/bench-ml.sh gives the same file to PyTorch). `--vectors-out DIR`
//! writes `candle-b<batch>.f32` (little-endian f32, 512 x 384, input order) for the comparison.
//! `--json` prints `{"side":"candle","rates":{"32":[..],"1":[..]}}` on stdout (the rest on
//! stderr). `--reference` also reports the worst cosine against candle_transformers' `BertModel`.
//! Env fallbacks: `BKG_THREADS`, `BKG_BENCH_RUNS`, `BKG_BENCH_MODEL`.

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

struct Args {
    rounds: usize,
    threads: usize,
    batches: Vec<usize>,
    sentences: Option<String>,
    write_sentences: Option<String>,
    vectors_out: Option<String>,
    reference: bool,
    json: bool,
    model: String,
}

fn args() -> Args {
    let env = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        rounds: env("BKG_BENCH_RUNS").and_then(|v| v.parse().ok()).unwrap_or(5),
        threads: env("BKG_THREADS").and_then(|v| v.parse().ok()).unwrap_or(2),
        batches: vec![32, 1],
        sentences: None,
        write_sentences: None,
        vectors_out: None,
        reference: false,
        json: false,
        model: env("BKG_BENCH_MODEL").unwrap_or("sentence-transformers/all-MiniLM-L6-v2".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--batches" => {
                a.batches = value().split(',').map(|b| b.parse().expect("--batches 32,1")).collect()
            }
            "--sentences" => a.sentences = Some(value()),
            "--write-sentences" => a.write_sentences = Some(value()),
            "--vectors-out" => a.vectors_out = Some(value()),
            "--model" => a.model = value(),
            "--reference" => a.reference = true,
            "--json" => a.json = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

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
    let a = args();
    if let Some(path) = &a.write_sentences {
        std::fs::write(path, sentences(512).join("\n") + "\n").expect("write sentences");
        println!("wrote 512 sentences to {path}");
        return;
    }
    let texts: Vec<String> = match &a.sentences {
        Some(path) => std::fs::read_to_string(path)
            .expect("read sentences")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => sentences(512),
    };
    let n = texts.len();
    let e = Engine::new(default_models_dir());
    e.configure(json!({ "threads": a.threads })).unwrap();
    e.start().unwrap();
    e.invoke_json("model.load", json!({ "name": "m", "path": a.model }), &mut |_| Ok(()), &|| {
        false
    })
    .expect("load (run scripts/fetch-models.sh first)");
    let model = e.registry.get("m").unwrap();
    let Model::Embedding(m) = &*model else { panic!("not an embedding model") };
    let tokens: usize = texts.iter().map(|t| m.tokenize(t).unwrap().len()).sum();
    let say = |line: String| if a.json { eprintln!("{line}") } else { println!("{line}") };
    say(format!(
        "{n} sentences, {tokens} tokens ({:.1} per sentence), {} threads, model {}",
        tokens as f64 / n as f64,
        a.threads,
        a.model
    ));

    for &batch in &a.batches {
        let _ = e.runtime.install(|| m.embed(&texts[..64.min(n)], batch)).unwrap().unwrap();
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); a.batches.len()];
    let mut vectors: Vec<Vec<Vec<f32>>> = vec![Vec::new(); a.batches.len()];
    for _ in 0..a.rounds {
        for (i, &batch) in a.batches.iter().enumerate() {
            let t = Instant::now();
            let out = e.runtime.install(|| m.embed(&texts, batch)).unwrap().unwrap();
            rates[i].push(n as f64 / t.elapsed().as_secs_f64());
            vectors[i] = out.vectors;
        }
    }
    for (i, &batch) in a.batches.iter().enumerate() {
        let rounds: Vec<String> = rates[i].iter().map(|r| format!("{r:.1}")).collect();
        say(format!(
            "candle batch {batch}: median {:.1} sentences/s, rounds [{}]",
            median(&rates[i]),
            rounds.join(", ")
        ));
        if let Some(dir) = &a.vectors_out {
            let bytes: Vec<u8> =
                vectors[i].iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(format!("{dir}/candle-b{batch}.f32"), bytes).expect("write vectors");
        }
    }
    if a.batches.len() > 1 {
        let worst =
            vectors[0].iter().zip(&vectors[1]).map(|(x, y)| cosine(x, y)).fold(1.0f32, f32::min);
        say(format!("worst cosine batch {} vs batch {}: {worst:.7}", a.batches[0], a.batches[1]));
    }
    say(format!(
        "candle barrier-pool threads alive after the timed rounds: {} (0: the embedding path \
         never started candle's process-wide pool)",
        bkg_plugin_candle::runtime::barrier_threads_alive()
    ));
    if a.json {
        let rates: serde_json::Map<String, serde_json::Value> =
            a.batches.iter().zip(&rates).map(|(b, r)| (b.to_string(), json!(r))).collect();
        println!("{}", json!({ "side": "candle", "rates": rates }));
    }

    if a.reference {
        // Reference: candle_transformers' BertModel, one sentence at a time.
        let dir = default_models_dir().join(&a.model);
        let st =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(st, DType::F32, &Device::Cpu);
        let cfg: candle_transformers::models::bert::Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
        let ours = &vectors[0];
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
                    let h =
                        reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
                    let v = bkg_plugin_candle::bert::masked_mean_normalized(&h, &mask).unwrap();
                    let v = v.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
                    worst = worst.min(cosine(&v, &ours[i]));
                }
                worst
            })
            .unwrap();
        println!("worst cosine vs candle_transformers BertModel over {n} sentences: {worst:.7}");
    }
    e.stop().unwrap();
}

//! Benchmark of the generation kernels (`gen::quant`) on SmolLM2-135M-Instruct's real Q4_1
//! weights, against candle's `QMatMul` on the same data (the Q4_1 blocks as they are, and
//! requantized to Q8_0 as `chat.rs` does today).
//!
//! For each shape (576x576 q/o, 192x576 k/v, 1536x576 gate/up, 576x1536 down, 49152x576 the
//! output/embedding) and n = 1 (decode) and n = 64 (a prompt batch) it cycles through that
//! matrix of all 30 layers (the working set of a token, not one matrix hot in L1/L2); the last
//! line sums them: the products of one token. Times include quantizing the activations (both
//! sides do); each is the fastest of ~20 ms batches (the machine may be shared). GB/s counts the weight bytes read per
//! product; GFLOP/s counts 2 * rows * cols * n.
//!
//! ```text
//! cargo run --release -p bkg-plugin-candle --example bench_qmatmul -- [threads (2)] [seconds per line (1)] [n list (1,64)] [kernels (best)]
//! ```
//! candle's quantized matmul runs on its own barrier pool: `CANDLE_NUM_THREADS` is set to the
//! same thread count before candle starts it, so both sides use the same number of threads.
use std::time::Instant;

use bkg_plugin_candle::default_models_dir;
use bkg_plugin_candle::gen::quant::{isa, Isa, QActs, QMatrix};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

struct Mat {
    ours: QMatrix,
    q41: QMatMul,
    q80: QMatMul,
    bytes_q80: usize,
}

fn load(content: &gguf_file::Content, f: &mut std::fs::File, name: &str) -> Mat {
    let t = content.tensor(f, name, &Device::Cpu).expect(name);
    let ours = QMatrix::from_gguf(&t).expect(name);
    let deq = t.dequantize(&Device::Cpu).unwrap();
    let q80 = QTensor::quantize(&deq, GgmlDType::Q8_0).unwrap();
    let bytes_q80 = q80.storage_size_in_bytes();
    Mat {
        ours,
        q41: QMatMul::from_qtensor(t).unwrap(),
        q80: QMatMul::from_qtensor(q80).unwrap(),
        bytes_q80,
    }
}

/// Seconds per pass of `f`: the fastest of batches of passes (~20 ms each) run for about
/// `secs` after one warm-up pass (the minimum: other processes only ever add time).
fn time(secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut best = f64::MAX;
    while t.elapsed().as_secs_f64() < secs || best == f64::MAX {
        let b = Instant::now();
        let mut passes = 0u32;
        while b.elapsed().as_secs_f64() < 0.02 || passes < 2 {
            f();
            passes += 1;
        }
        best = best.min(b.elapsed().as_secs_f64() / passes as f64);
    }
    best
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map(|s| s.parse().expect("threads")).unwrap_or(2);
    let secs: f64 = args.get(2).map(|s| s.parse().expect("seconds")).unwrap_or(1.0);
    // candle's barrier pool: the calling thread plus CANDLE_NUM_THREADS - 1 workers.
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let kernels = match args.get(4).map(String::as_str) {
        None | Some("best") => isa(),
        Some("avx512") => Isa::Avx512,
        Some("vnni256") => Isa::Avx512Vnni,
        Some("avx2") => Isa::Avx2,
        Some("scalar") => Isa::Scalar,
        Some(other) => panic!("kernels: best, avx512, vnni256, avx2 or scalar, not {other:?}"),
    }
    .supported();

    let path = default_models_dir()
        .join("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut f = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", path.display()));
    let content = gguf_file::Content::read(&mut f).unwrap();
    let layers = (0..)
        .take_while(|l| content.tensor_infos.contains_key(&format!("blk.{l}.attn_q.weight")))
        .count();
    let kinds = [
        ("q/o 576x576", vec!["attn_q", "attn_output"]),
        ("k/v 192x576", vec!["attn_k", "attn_v"]),
        ("gate/up 1536x576", vec!["ffn_gate", "ffn_up"]),
        ("down 576x1536", vec!["ffn_down"]),
    ];
    let mut groups: Vec<(&str, Vec<Mat>)> = Vec::new();
    for (label, names) in &kinds {
        let mut v = Vec::new();
        for l in 0..layers {
            for n in names {
                v.push(load(&content, &mut f, &format!("blk.{l}.{n}.weight")));
            }
        }
        groups.push((label, v));
    }
    let out_name = if content.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let output = load(&content, &mut f, out_name);
    println!(
        "SmolLM2-135M Q4_1, {layers} layers, {threads} threads, kernels {:?}, output = {out_name} ({:?})",
        kernels,
        output.ours.qtype
    );
    // A plain read of the output matrix's bytes (summed as u64) on the same pool, for scale.
    let data = output.ours.data();
    let read = time(secs, || {
        let s: u64 = pool.install(|| {
            use rayon::prelude::*;
            data.par_chunks(1 << 20)
                .map(|c| {
                    c.chunks_exact(8)
                        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                        .fold(0u64, u64::wrapping_add)
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(s);
    });
    println!(
        "plain read loop: {:.1} GB/s ({} MB, {threads} threads)",
        data.len() as f64 / read / 1e9,
        data.len() >> 20
    );
    groups.push(("output 49152x576", vec![output]));

    let ns: Vec<usize> = match args.get(3) {
        Some(s) => s.split(',').map(|v| v.parse().expect("n list")).collect(),
        None => vec![1, 64],
    };
    for n in ns {
        println!("\nn = {n}");
        println!(
            "{:<18} {:>10} {:>8} {:>8} | {:>10} {:>8} | {:>10} {:>8} | {:>7} {:>7}",
            "shape",
            "ours us",
            "GB/s",
            "GFLOP/s",
            "c.q4_1 us",
            "GB/s",
            "c.q8_0 us",
            "GB/s",
            "vs q4_1",
            "vs q8_0"
        );
        let mut tot = [0f64; 3];
        let mut tot_bytes = [0usize; 2];
        for (label, mats) in &groups {
            let (rows, cols) = (mats[0].ours.rows, mats[0].ours.cols);
            let x = values(n * cols, 7);
            let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
            // Same answers (the products are ggml's: equal up to float rounding).
            let mut out = vec![0f32; n * rows];
            pool.install(|| mats[0].ours.forward(&x, n, &mut out)).unwrap();
            let c =
                mats[0].q41.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = c.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
            let err = out.iter().zip(&c).fold(0f32, |a, (o, c)| a.max((o - c).abs())) / scale;
            assert!(err < 1e-2, "{label}: ours and candle differ by {err} (relative to max)");

            let mut acts = QActs::default();
            let ours = time(secs, || {
                pool.install(|| {
                    for m in mats {
                        acts.quantize_into(&x, n, cols, m.ours.qtype).unwrap();
                        m.ours.matmul_with(kernels, &acts, &mut out).unwrap();
                    }
                })
            }) / mats.len() as f64;
            let c41 = time(secs, || {
                for m in mats {
                    m.q41.forward(&xt).unwrap();
                }
            }) / mats.len() as f64;
            let c80 = time(secs, || {
                for m in mats {
                    m.q80.forward(&xt).unwrap();
                }
            }) / mats.len() as f64;
            let bytes = mats[0].ours.data().len();
            let flops = 2.0 * (rows * cols * n) as f64;
            println!(
                "{:<18} {:>10.1} {:>8.1} {:>8.1} | {:>10.1} {:>8.1} | {:>10.1} {:>8.1} | {:>6.2}x {:>6.2}x",
                label,
                ours * 1e6,
                bytes as f64 / ours / 1e9,
                flops / ours / 1e9,
                c41 * 1e6,
                bytes as f64 / c41 / 1e9,
                c80 * 1e6,
                mats[0].bytes_q80 as f64 / c80 / 1e9,
                c41 / ours,
                c80 / ours,
            );
            let k = mats.len() as f64;
            tot[0] += ours * k;
            tot[1] += c41 * k;
            tot[2] += c80 * k;
            tot_bytes[0] += bytes * mats.len();
            tot_bytes[1] += mats[0].bytes_q80 * mats.len();
        }
        println!(
            "{:<18} {:>10.1} {:>8.1} {:>8} | {:>10.1} {:>8.1} | {:>10.1} {:>8.1} | {:>6.2}x {:>6.2}x",
            "sum (one token)",
            tot[0] * 1e6,
            tot_bytes[0] as f64 / tot[0] / 1e9,
            "",
            tot[1] * 1e6,
            tot_bytes[0] as f64 / tot[1] / 1e9,
            tot[2] * 1e6,
            tot_bytes[1] as f64 / tot[2] / 1e9,
            tot[1] / tot[0],
            tot[2] / tot[0],
        );
    }
}

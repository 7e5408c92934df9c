//! Micro-benchmark of candle's f32 CPU matmul on the encoder's shapes (`(m, k) @ (k, n)`), on a
//! rayon pool of 1 and 2 threads: how well gemm uses the threads for few rows (batch 1), and the
//! plugin's own kernel (`fused::matmul`) on the same shapes.
//!
//! ```text
//! cargo run --release --example bench_matmul
//! ```
use std::time::Instant;

use bkg_plugin_candle::fused::matmul::matmul as fused_matmul;
use candle_core::{Device, Tensor};

fn main() {
    let shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for m in [22usize, 704] {
                let mut line = format!("threads {threads} m {m:>4}:");
                for (k, n) in shapes {
                    let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
                    let w = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
                    let reps = if m < 100 { 400 } else { 20 };
                    let _ = x.matmul(&w).unwrap();
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let t = Instant::now();
                        for _ in 0..reps {
                            let _ = x.matmul(&w).unwrap();
                        }
                        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                    }
                    let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
                    let mut ours = f64::MAX;
                    for _ in 0..5 {
                        let t = Instant::now();
                        for _ in 0..reps {
                            let _ = fused_matmul(&x, &w).unwrap();
                        }
                        ours = ours.min(t.elapsed().as_secs_f64() / reps as f64);
                    }
                    line += &format!(
                        "  {k}x{n}: candle {:.1} us, fused {:.1} us ({gflops:.0} GFLOP/s candle)",
                        best * 1e6,
                        ours * 1e6
                    );
                }
                println!("{line}");
            }
        });
    }
}

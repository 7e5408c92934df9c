//! The encoder's f32 matmul `x (m, k) @ w (k, n)` (the linear layers), used instead of
//! candle's (gemm) for every batch size.
//!
//! Why: for few rows (one sentence of ~20 tokens, batch 1) gemm runs most of the product on
//! one thread (its split stays below its threading threshold), and candle asks
//! `num_cpus::get_physical()` on every matmul, which reads and parses `/proc/cpuinfo` (tens of
//! microseconds, a large share of a 20-row product) unless `RAYON_NUM_THREADS` is set. On this
//! machine's shapes (k, n in 384..1536) this kernel was 1.5-2.2x faster than candle's at 22
//! rows and ~1.2x at 704 rows on 2 threads (`examples/bench_matmul`).
//! Here the columns are split into blocks that run on the current rayon pool (the plugin's),
//! and the inner kernel is a register-blocked `MR x NR` outer-product loop compiled for
//! AVX-512 or AVX2+FMA (picked at run time) or the baseline target.
//!
//! `w` is used as stored (row-major `(k, n)`, the transposed weight the encoder keeps anyway):
//! no packing, no extra copy of the weights.

use candle_core::{bail, Device, Result, Tensor};
use rayon::prelude::*;

/// Columns per rayon task.
const COLS_PER_TASK: usize = 64;

struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint column ranges of the output (see `matmul_slices`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `c[r][j] = sum_k a[r][kk] * b[kk][j]` for `r < rows` (`rows <= MR`), `j` in `cols` (`NR`
/// wide). `a` row `r` starts at `r * lda`, `b` row `kk` at `kk * ldb`.
///
/// # Safety
/// `a` must be readable for `rows` rows of `k` floats at stride `lda`, `b` for `k` rows of
/// `NR` floats at stride `ldb`, and `c` writable for `rows` rows of `NR` floats at stride
/// `ldc`, with no other thread writing those `c` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const MR: usize, const NR: usize>(
    a: *const f32,
    lda: usize,
    rows: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[0f32; NR]; MR];
    let mut arow = [a; MR];
    for (r, p) in arow.iter_mut().enumerate() {
        // Rows past `rows` repeat the last one (computed, never stored).
        *p = a.add(r.min(rows - 1) * lda);
    }
    for kk in 0..k {
        let brow = &*(b.add(kk * ldb) as *const [f32; NR]);
        for r in 0..MR {
            let av = *arow[r].add(kk);
            for j in 0..NR {
                acc[r][j] = av.mul_add(brow[j], acc[r][j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        std::ptr::copy_nonoverlapping(row.as_ptr(), c.add(r * ldc), NR);
    }
}

/// One task: all rows, columns `c0..c0 + width` (`width` a multiple of `NR`).
///
/// # Safety
/// `c` must point to an `m x n` row-major output with `c0 + width <= n`, and no other thread
/// may write columns `c0..c0 + width` of it meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const MR: usize, const NR: usize>(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: *mut f32,
    c0: usize,
    width: usize,
) {
    let mut r0 = 0;
    while r0 < m {
        let rows = MR.min(m - r0);
        let mut j = c0;
        while j < c0 + width {
            tile::<MR, NR>(
                a.as_ptr().add(r0 * k),
                k,
                rows,
                b.as_ptr().add(j),
                n,
                k,
                c.add(r0 * n + j),
                n,
            );
            j += NR;
        }
        r0 += MR;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
/// # Safety
/// As [`block`], and the CPU must support AVX-512F, AVX2 and FMA (checked at run time by the caller).
unsafe fn block_avx512(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: *mut f32,
    c0: usize,
    w: usize,
) {
    block::<8, 32>(a, m, k, b, n, c, c0, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
/// # Safety
/// As [`block`], and the CPU must support AVX2 and FMA (checked at run time by the caller).
unsafe fn block_avx2(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: *mut f32,
    c0: usize,
    w: usize,
) {
    block::<6, 16>(a, m, k, b, n, c, c0, w)
}

#[derive(Clone, Copy)]
enum Isa {
    Avx512,
    Avx2,
    Base,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Base
}

/// `a (m, k) @ b (k, n)` on slices (row-major), into a new `(m, n)` vector.
pub fn matmul_slices(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
    assert!(a.len() >= m * k && b.len() >= k * n, "matmul_slices: short inputs");
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let isa = isa();
    let nr = match isa {
        Isa::Avx512 => 32,
        Isa::Avx2 => 16,
        Isa::Base => 8,
    };
    let vec_cols = n / nr * nr;
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = vec_cols.div_ceil(COLS_PER_TASK);
    (0..tasks).into_par_iter().for_each(|t| {
        let c0 = t * COLS_PER_TASK;
        let width = COLS_PER_TASK.min(vec_cols - c0);
        let c = ptr.get();
        // SAFETY: the tile stays within rows < m and columns < c0 + width <= n; the tasks
        // write disjoint column ranges; `b` rows are read NR columns at a time from column j
        // with j + NR <= vec_cols <= n.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => block_avx512(a, m, k, b, n, c, c0, width),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => block_avx2(a, m, k, b, n, c, c0, width),
                _ => block::<4, 8>(a, m, k, b, n, c, c0, width),
            }
        }
    });
    // Columns that do not fill a vector tile.
    if vec_cols < n {
        for r in 0..m {
            for j in vec_cols..n {
                let mut s = 0f32;
                for kk in 0..k {
                    s += a[r * k + kk] * b[kk * n + j];
                }
                out[r * n + j] = s;
            }
        }
    }
    out
}

/// `x (m, k) @ w (k, n)` for contiguous f32 CPU tensors, through [`matmul_slices`].
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (k2, n) = w.dims2()?;
    if k != k2 {
        bail!("matmul: ({m}, {k}) @ ({k2}, {n})");
    }
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(xv)),
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(wv)),
    ) = (&*xs, &*ws)
    else {
        bail!("matmul: f32 CPU tensors only");
    };
    let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
    else {
        bail!("matmul: contiguous tensors only");
    };
    let out = matmul_slices(&xv[x0..x1], m, k, &wv[w0..w1], n);
    drop((xs, ws));
    Tensor::from_vec(out, (m, n), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product() {
        for (m, k, n) in [(1, 3, 5), (7, 33, 70), (22, 384, 1152), (9, 16, 64), (64, 40, 100)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let got = matmul_slices(&a, m, k, &b, n);
            for r in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|kk| a[r * k + kk] * b[kk * n + j]).sum();
                    assert!((got[r * n + j] - want).abs() < 1e-4, "{m}x{k}x{n} at {r},{j}");
                }
            }
        }
    }
}

//! Fused CPU kernels for the BERT encoder, plugged into candle through its custom-op API
//! (`CustomOp2`, `InplaceOp1`, `InplaceOp2`).
//!
//! Why: with candle's stock ops, one encoder layer ran ~15 separate passes over the
//! activations (bias adds, residual adds, layer norms, gelu, transposes to contiguous, mask
//! add, softmax, ...), each allocating its output, and every element-wise op on 64Ki+ elements
//! went to candle's process-wide "barrier pool" whose thread busy-waits (it competed with the
//! plugin's own threads for the 2 cores). Here each step between two matmuls is one pass:
//!
//! - [`bias_gelu_`]: `x = gelu(x + b)` in place (erf form through a rational approximation
//!   accurate to a few ulp, or the tanh form);
//! - [`bias_residual_layer_norm_`]: `x = LayerNorm(x + b + residual)` in place;
//! - [`attention`]: multi-head self-attention straight from the fused QKV projection, over
//!   *packed* sequences (no padding: each sentence attends to its own tokens only), with the
//!   query bias added on the fly, the key bias dropped (it adds the same number to every score
//!   of a query row, which softmax ignores) and the value bias added once to the output (the
//!   probabilities sum to 1);
//! - [`embed_layer_norm`]: word + position + token-type embeddings and their layer norm;
//! - [`mean_pool_normalized`]: mean over each sentence's tokens, L2-normalised.
//!
//! All of it runs on the current rayon pool (the plugin's own) and never on candle's barrier
//! pool. The inner loops are written so that LLVM vectorises them; they are compiled twice,
//! for the baseline target and for AVX2+FMA, picked at run time.

pub mod matmul;

use candle_core::{
    bail, CpuStorage, CustomOp1, Device, InplaceOp1, InplaceOp2, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// Parameters of a layer norm (and the bias added before it).
#[derive(Clone, Debug)]
pub struct NormParams {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected f32") };
    let Some((start, end)) = l.contiguous_offsets() else { bail!("{op}: input not contiguous") };
    Ok(&v[start..end])
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expected f32") };
    let Some((start, end)) = l.contiguous_offsets() else { bail!("{op}: input not contiguous") };
    Ok(&mut v[start..end])
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Define `$name(args)` that runs `$imp(args)` compiled for AVX2+FMA when the CPU has it.
macro_rules! dispatch {
    ($name:ident, $avx:ident, $imp:ident, ($($a:ident: $t:ty),*) $(-> $r:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        fn $avx($($a: $t),*) $(-> $r)? {
            $imp($($a),*)
        }
        #[allow(clippy::too_many_arguments)]
        fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports the features the function was compiled for.
                return unsafe { $avx($($a),*) };
            }
            $imp($($a),*)
        }
    };
}

/// Rows per rayon task: enough work to pay for the split (~`target` floats).
fn min_rows(row_len: usize, target: usize) -> usize {
    (target / row_len.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// Small vector helpers (8 independent lanes so that the loops vectorise).

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for v in rest {
        s += v;
    }
    s
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// In place: `x = (x - mean) / sqrt(var + eps) * gamma + beta`.
#[inline(always)]
fn layer_norm_row(x: &mut [f32], p: &NormParams) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let mut var = acc.iter().sum::<f32>();
    for v in rest {
        var += (v - mean) * (v - mean);
    }
    let inv = 1.0 / (var / n + p.eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(&p.gamma).zip(&p.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

// ---------------------------------------------------------------------------------------------
// gelu

/// erf(x) as a rational function (the approximation Eigen and XLA use for f32): a few ulp,
/// saturating at |x| = 4 where erf is 1 to f32 precision. Branch-free, so it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let p = p * x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    p / q
}

#[inline(always)]
fn bias_gelu_rows_imp(x: &mut [f32], bias: &[f32], approximate: bool) {
    if approximate {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                let y = *v + b;
                let t = (std::f32::consts::FRAC_2_SQRT_PI
                    * std::f32::consts::FRAC_1_SQRT_2
                    * (y + 0.044_715 * y * y * y))
                    .tanh();
                *v = 0.5 * y * (1.0 + t);
            }
        }
    } else {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                let y = *v + b;
                *v = 0.5 * y * (1.0 + erf(y * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }
}
dispatch!(bias_gelu_rows, bias_gelu_rows_avx2, bias_gelu_rows_imp, (x: &mut [f32], bias: &[f32], approximate: bool));

struct BiasGelu<'a> {
    bias: &'a [f32],
    approximate: bool,
}

impl InplaceOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "bkg-bias-gelu"
    }
    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let x = f32_slice_mut(storage, layout, self.name())?;
        let w = self.bias.len();
        if w == 0 || !x.len().is_multiple_of(w) {
            bail!("bias-gelu: {} elements, bias of {w}", x.len());
        }
        x.par_chunks_mut(w)
            .with_min_len(min_rows(w, 16 * 1024))
            .for_each(|row| bias_gelu_rows(row, self.bias, self.approximate));
        Ok(())
    }
}

/// In place: `x = gelu(x + bias)` on a contiguous `(rows, bias.len())` f32 tensor.
pub fn bias_gelu_(x: &Tensor, bias: &[f32], approximate: bool) -> Result<()> {
    x.inplace_op1(&BiasGelu { bias, approximate })
}

// ---------------------------------------------------------------------------------------------
// bias + residual + layer norm

#[inline(always)]
fn bias_residual_norm_row_imp(x: &mut [f32], res: &[f32], bias: &[f32], p: &NormParams) {
    for ((v, r), b) in x.iter_mut().zip(res).zip(bias) {
        *v += r + b;
    }
    layer_norm_row(x, p);
}
dispatch!(bias_residual_norm_row, bias_residual_norm_row_avx2, bias_residual_norm_row_imp,
    (x: &mut [f32], res: &[f32], bias: &[f32], p: &NormParams));

struct BiasResidualNorm<'a> {
    bias: &'a [f32],
    norm: &'a NormParams,
}

impl InplaceOp2 for BiasResidualNorm<'_> {
    fn name(&self) -> &'static str {
        "bkg-bias-residual-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let x = f32_slice_mut(s1, l1, self.name())?;
        let res = f32_slice(s2, l2, self.name())?;
        let w = self.bias.len();
        if w == 0
            || x.len() != res.len()
            || !x.len().is_multiple_of(w)
            || self.norm.gamma.len() != w
        {
            bail!("bias-residual-layer-norm: shapes do not match");
        }
        x.par_chunks_mut(w)
            .zip(res.par_chunks(w))
            .with_min_len(min_rows(w, 8 * 1024))
            .for_each(|(row, r)| bias_residual_norm_row(row, r, self.bias, self.norm));
        Ok(())
    }
}

/// In place: `x = LayerNorm(x + bias + residual)`, both contiguous `(rows, bias.len())` f32.
pub fn bias_residual_layer_norm_(
    x: &Tensor,
    residual: &Tensor,
    bias: &[f32],
    norm: &NormParams,
) -> Result<()> {
    x.inplace_op2(residual, &BiasResidualNorm { bias, norm })
}

// ---------------------------------------------------------------------------------------------
// attention

struct Attention<'a> {
    /// Start row of each sequence in the packed rows, plus the total at the end.
    offsets: &'a [usize],
    heads: usize,
    head_dim: usize,
    bias_q: &'a [f32],
    bias_v: &'a [f32],
}

/// One query row, all heads: `out = softmax(q k^T) v + bias_v` over the keys `seq` (rows of
/// `qkv`, each `[q | k | v]`, `3 * hidden` wide).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_row_imp(
    out: &mut [f32],
    q: &[f32],
    seq: &[f32],
    bias_q: &[f32],
    bias_v: &[f32],
    head_dim: usize,
    qbuf: &mut [f32],
    scores: &mut [f32],
) {
    let hidden = out.len();
    let w3 = 3 * hidden;
    let keys = seq.len() / w3;
    for ((b, x), y) in qbuf.iter_mut().zip(q).zip(bias_q) {
        *b = x + y;
    }
    for (h, o) in out.chunks_exact_mut(head_dim).enumerate() {
        let qh = &qbuf[h * head_dim..(h + 1) * head_dim];
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores[..keys].iter_mut().enumerate() {
            let k = &seq[j * w3 + hidden + h * head_dim..][..head_dim];
            *s = dot(qh, k);
            max = max.max(*s);
        }
        let mut total = 0.0;
        for s in scores[..keys].iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        o.fill(0.0);
        for (j, p) in scores[..keys].iter().enumerate() {
            let v = &seq[j * w3 + 2 * hidden + h * head_dim..][..head_dim];
            for (a, b) in o.iter_mut().zip(v) {
                *a += p * b;
            }
        }
        let inv = 1.0 / total;
        for (a, b) in o.iter_mut().zip(&bias_v[h * head_dim..]) {
            *a = *a * inv + b;
        }
    }
}
dispatch!(attention_row, attention_row_avx2, attention_row_imp,
    (out: &mut [f32], q: &[f32], seq: &[f32], bias_q: &[f32], bias_v: &[f32], head_dim: usize,
     qbuf: &mut [f32], scores: &mut [f32]));

impl CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "bkg-packed-attention"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s1, l1, self.name())?;
        let hidden = self.heads * self.head_dim;
        let w3 = 3 * hidden;
        let rows = *self.offsets.last().unwrap_or(&0);
        if qkv.len() != rows * w3 || self.bias_q.len() != hidden || self.bias_v.len() != hidden {
            bail!("attention: qkv has {} elements, expected {rows} x {w3}", qkv.len());
        }
        let longest = self.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let mut out = vec![0f32; rows * hidden];
        // Which sequence each row belongs to.
        let mut seq_of = Vec::with_capacity(rows);
        for (i, w) in self.offsets.windows(2).enumerate() {
            seq_of.extend(std::iter::repeat_n(i, w[1] - w[0]));
        }
        out.par_chunks_mut(hidden)
            .enumerate()
            .with_min_len(min_rows(longest * hidden, 64 * 1024))
            .for_each_init(
                || (vec![0f32; hidden], vec![0f32; longest]),
                |(qbuf, scores), (row, o)| {
                    let si = seq_of[row];
                    let (start, end) = (self.offsets[si], self.offsets[si + 1]);
                    attention_row(
                        o,
                        &qkv[row * w3..row * w3 + hidden],
                        &qkv[start * w3..end * w3],
                        self.bias_q,
                        self.bias_v,
                        self.head_dim,
                        qbuf,
                        scores,
                    );
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

/// Multi-head self-attention over packed sequences: `qkv` is `(rows, 3 * hidden)` (the fused
/// projection without its bias; the query scale already folded in), sequence `i` is rows
/// `offsets[i]..offsets[i + 1]`. Returns the context `(rows, hidden)`, value bias included.
pub fn attention(
    qkv: &Tensor,
    offsets: &[usize],
    heads: usize,
    bias_q: &[f32],
    bias_v: &[f32],
) -> Result<Tensor> {
    let (_, w3) = qkv.dims2()?;
    if heads == 0 || !w3.is_multiple_of(3 * heads) {
        bail!("attention: width {w3} is not 3 x {heads} heads");
    }
    let head_dim = w3 / 3 / heads;
    qkv.apply_op1_no_bwd(&Attention { offsets, heads, head_dim, bias_q, bias_v })
}

// ---------------------------------------------------------------------------------------------
// embeddings and pooling

/// `LayerNorm(word[id] + position[i] + token_type[0])` for packed sequences (position `i`
/// restarts at each offset). `word`, `position`, `token_type` are row-major with `hidden` columns.
pub fn embed_layer_norm(
    ids: &[u32],
    offsets: &[usize],
    word: &[f32],
    position: &[f32],
    token_type: &[f32],
    norm: &NormParams,
) -> Result<Tensor> {
    let hidden = norm.gamma.len();
    let vocab = word.len() / hidden.max(1);
    let positions = position.len() / hidden.max(1);
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        bail!("token id {bad} out of the vocabulary ({vocab})");
    }
    let mut pos = Vec::with_capacity(ids.len());
    for w in offsets.windows(2) {
        if w[1] - w[0] > positions {
            bail!("sequence of {} tokens, the model has {positions} positions", w[1] - w[0]);
        }
        pos.extend(0..w[1] - w[0]);
    }
    if pos.len() != ids.len() {
        bail!("offsets cover {} tokens, {} ids given", pos.len(), ids.len());
    }
    let mut out = vec![0f32; ids.len() * hidden];
    out.par_chunks_mut(hidden).enumerate().with_min_len(min_rows(hidden, 8 * 1024)).for_each(
        |(i, row)| {
            let wr = &word[ids[i] as usize * hidden..][..hidden];
            let pr = &position[pos[i] * hidden..][..hidden];
            embed_row(row, wr, pr, &token_type[..hidden], norm);
        },
    );
    Tensor::from_vec(out, (ids.len(), hidden), &Device::Cpu)
}

#[inline(always)]
fn embed_row_imp(out: &mut [f32], w: &[f32], p: &[f32], t: &[f32], norm: &NormParams) {
    for (((o, a), b), c) in out.iter_mut().zip(w).zip(p).zip(t) {
        *o = a + b + c;
    }
    layer_norm_row(out, norm);
}
dispatch!(embed_row, embed_row_avx2, embed_row_imp,
    (out: &mut [f32], w: &[f32], p: &[f32], t: &[f32], norm: &NormParams));

/// Mean of each packed sequence's rows of `hidden` `(rows, width)`, L2-normalised.
pub fn mean_pool_normalized(hidden: &Tensor, offsets: &[usize]) -> Result<Vec<Vec<f32>>> {
    let (rows, width) = hidden.dims2()?;
    if offsets.last() != Some(&rows) {
        bail!("pooling: offsets end at {:?}, {rows} rows", offsets.last());
    }
    let (storage, layout) = hidden.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { bail!("pooling: not on the CPU") };
    let x = f32_slice(cpu, layout, "pooling")?;
    Ok(offsets
        .windows(2)
        .map(|w| {
            let mut v = vec![0f32; width];
            for r in w[0]..w[1] {
                for (a, b) in v.iter_mut().zip(&x[r * width..(r + 1) * width]) {
                    *a += b;
                }
            }
            let n = (w[1] - w[0]).max(1) as f32;
            let norm = (v.iter().map(|a| (a / n) * (a / n)).sum::<f32>()).sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a = *a / n / norm);
            v
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let d = (erf(x) as f64 - libm_erf(x as f64)).abs();
            worst = worst.max(d as f32);
        }
        assert!(worst < 5e-7, "worst abs error {worst}");
    }

    // erf through the complementary series, f64 (only for the test).
    fn libm_erf(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.26 is too coarse; integrate exp(-t^2) with Simpson instead.
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }
}

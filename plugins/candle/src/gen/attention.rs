//! Causal attention over a sequence's KV cache, flash-attention style (session 10): per query
//! an online softmax over key blocks of [`BLOCK`] positions, no score matrix beyond one block,
//! the causal mask as loop bounds, f32 throughout, the products on `pulp`'s vector types
//! (dispatched at run time to AVX2+FMA where the CPU has it; no `unsafe`).
//!
//! The keys are cached block-transposed (see [`k_index`]): a block of [`BLOCK`] positions of
//! one KV head is `[head_dim][BLOCK]`, so that `q . k` for 16 keys at once is 16 lanes of
//! multiply-adds over `head_dim` with no horizontal sums; the values stay position-major
//! (`[pos][kv_head][head_dim]`). Both are written in place, block by block.
//!
//! Every query is computed the same way whatever else is in the step: its scores, its block
//! boundaries (absolute positions `0, BLOCK, 2 BLOCK, ...`) and its summation orders depend
//! only on its own position, never on the chunk, the batch, the task split or which queries
//! share a tile; so a prompt run as one batch equals it run token by token bit for bit.

use rayon::prelude::*;

/// Key positions per block (a multiple of 16; the KV cache grows by multiples of it).
pub const BLOCK: usize = 64;

/// Query rows per task (each task: one sequence, one KV head, up to this many rows).
const ROWS: usize = 16;

/// Queries computed together (sharing each key load).
const QN: usize = 4;

/// Head geometry.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl Heads {
    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Index of dimension `d` of KV head `h` at position `t` in a block-transposed key cache.
#[inline]
pub fn k_index(h: &Heads, t: usize, kvh: usize, d: usize) -> usize {
    ((t / BLOCK * h.n_kv_head + kvh) * h.head_dim + d) * BLOCK + t % BLOCK
}

/// Values a key cache of `positions` positions holds (whole blocks).
pub fn k_len(h: &Heads, positions: usize) -> usize {
    positions.div_ceil(BLOCK) * BLOCK * h.kv_dim()
}

/// Write the keys of positions `pos..pos + n` (`keys`: `[n][kv_dim]`, position-major) into a
/// block-transposed cache, in place (the cache is extended with zeros to whole blocks; with
/// enough capacity reserved nothing is copied).
pub fn store_keys(h: &Heads, cache: &mut Vec<f32>, pos: usize, keys: &[f32]) {
    let kv = h.kv_dim();
    let n = keys.len() / kv;
    let len = k_len(h, pos + n);
    if cache.len() < len {
        cache.resize(len, 0.0);
    }
    for (i, key) in keys.chunks_exact(kv).enumerate() {
        let t = pos + i;
        for (kvh, head) in key.chunks_exact(h.head_dim).enumerate() {
            let base = k_index(h, t, kvh, 0);
            for (d, x) in head.iter().enumerate() {
                cache[base + d * BLOCK] = *x;
            }
        }
    }
}

/// One sequence's cache for one layer, as [`attend`] reads it.
pub struct Cache<'a> {
    /// Block-transposed keys ([`store_keys`]).
    pub k: &'a [f32],
    /// Position-major values, `[pos][kv_dim]`.
    pub v: &'a [f32],
}

/// Causal attention: query row `r` (`q[r * dim..]`, all heads, RoPE applied) belongs to
/// sequence `rows[r].0` at position `rows[r].1` and sees that sequence's positions
/// `0..=rows[r].1`; the result goes to `out[r * dim..]` (heads in order). Rows of one sequence
/// must be consecutive. Runs on the current rayon pool when there is enough work (outside a
/// pool everything runs on this thread).
pub fn attend(h: &Heads, caches: &[Cache], rows: &[(usize, usize)], q: &[f32], out: &mut [f32]) {
    let dim = h.n_head * h.head_dim;
    assert!(h.n_kv_head > 0 && h.n_head.is_multiple_of(h.n_kv_head), "heads {h:?}");
    assert!(q.len() >= rows.len() * dim && out.len() >= rows.len() * dim);
    // Tasks: runs of up to ROWS consecutive rows of one sequence, times the KV heads.
    let mut tasks = Vec::new();
    let mut work = 0usize;
    let mut r0 = 0;
    while r0 < rows.len() {
        let si = rows[r0].0;
        let mut r1 = r0 + 1;
        while r1 < rows.len() && r1 - r0 < ROWS && rows[r1].0 == si {
            r1 += 1;
        }
        for kvh in 0..h.n_kv_head {
            tasks.push((r0, r1, kvh));
        }
        work += rows[r0..r1].iter().map(|r| r.1 + 1).sum::<usize>();
        r0 = r1;
    }
    let run = |&(r0, r1, kvh): &(usize, usize, usize)| {
        let task = Task {
            h,
            cache: &caches[rows[r0].0],
            rows: &rows[r0..r1],
            q: &q[r0 * dim..r1 * dim],
            kvh,
        };
        pulp::Arch::new().dispatch(task)
    };
    // Under ~2M multiply-adds (a decode step over a few hundred positions: tens of
    // microseconds) a trip through the pool costs more than it saves; rayon's global pool is
    // never used (no worker thread: everything runs here).
    let results: Vec<Vec<f32>> =
        if work * dim < 1 << 21 || tasks.len() == 1 || rayon::current_thread_index().is_none() {
            tasks.iter().map(run).collect()
        } else {
            tasks.par_iter().map(run).collect()
        };
    let (hd, g) = (h.head_dim, h.n_head / h.n_kv_head);
    for (&(r0, r1, kvh), o) in tasks.iter().zip(&results) {
        for (r, o) in (r0..r1).zip(o.chunks_exact(g * hd)) {
            let at = r * dim + kvh * g * hd;
            out[at..at + g * hd].copy_from_slice(o);
        }
    }
}

/// One task: rows of one sequence, the query heads of one KV head.
struct Task<'a> {
    h: &'a Heads,
    cache: &'a Cache<'a>,
    rows: &'a [(usize, usize)],
    q: &'a [f32],
    kvh: usize,
}

impl pulp::WithSimd for Task<'_> {
    /// `[row][head of the group][head_dim]`.
    type Output = Vec<f32>;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        self.run(simd)
    }
}

impl Task<'_> {
    // Indices run over several per-query arrays at once.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        let Task { h, cache, rows, q, kvh } = self;
        let (hd, kv, dim) = (h.head_dim, h.kv_dim(), h.n_head * h.head_dim);
        let g = h.n_head / h.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let nq = rows.len() * g;
        // Query i: row i / g, head kvh * g + i % g; it sees positions 0..=pos[i].
        let query = |i: usize| {
            let at = (i / g) * dim + (kvh * g + i % g) * hd;
            &q[at..at + hd]
        };
        let pos = |i: usize| rows[i / g].1;
        let mut o = vec![0f32; nq * hd];
        let mut m = vec![f32::NEG_INFINITY; nq];
        let mut lsum = vec![0f32; nq * BLOCK];
        let last = (0..nq).map(pos).max().unwrap_or(0);
        let lanes = S::F32_LANES;
        let nc = 16 / lanes.min(16);
        let hd16 = hd / 16 * 16;
        for b in 0..=last / BLOCK {
            let b0 = b * BLOCK;
            let kt = &cache.k[k_index(h, b0, kvh, 0)..][..hd * BLOCK];
            for i0 in (0..nq).step_by(QN) {
                // The group's queries (the last one repeated to fill it: computed, not used).
                let ids: [usize; QN] = std::array::from_fn(|j| (i0 + j).min(nq - 1));
                let valid: [usize; QN] = std::array::from_fn(|j| {
                    let p = pos(ids[j]);
                    if i0 + j >= nq || p < b0 {
                        0
                    } else {
                        (p + 1 - b0).min(BLOCK)
                    }
                });
                let vmax = valid.iter().copied().max().unwrap_or(0);
                if vmax == 0 {
                    continue;
                }
                // Scores q . k for 16 keys at a time: lanes are keys, d runs in order.
                let qs: [&[f32]; QN] = std::array::from_fn(|j| query(ids[j]));
                let mut s = [[0f32; BLOCK]; QN];
                for kc in 0..vmax.div_ceil(16) {
                    let mut acc = [[simd.splat_f32s(0.0); 16]; QN];
                    for d in 0..hd {
                        let (kv, _) = S::as_simd_f32s(&kt[d * BLOCK + kc * 16..][..16]);
                        for j in 0..QN {
                            let qd = simd.splat_f32s(qs[j][d]);
                            for c in 0..nc {
                                acc[j][c] = simd.mul_add_e_f32s(qd, kv[c], acc[j][c]);
                            }
                        }
                    }
                    for j in 0..QN {
                        let (sv, _) = S::as_mut_simd_f32s(&mut s[j][kc * 16..][..16]);
                        sv.copy_from_slice(&acc[j][..nc]);
                    }
                }
                // Online softmax: the block's probabilities against the running maximum.
                let mut p = [[0f32; BLOCK]; QN];
                let mut corr = [0f32; QN];
                for j in 0..QN {
                    if valid[j] == 0 {
                        continue;
                    }
                    let i = ids[j];
                    let sj = &mut s[j];
                    let mut mb = f32::NEG_INFINITY;
                    for (t, x) in sj.iter_mut().enumerate() {
                        *x = if t < valid[j] { *x * scale } else { f32::NEG_INFINITY };
                        mb = mb.max(*x);
                    }
                    let mn = m[i].max(mb);
                    corr[j] = exp_neg(m[i] - mn);
                    m[i] = mn;
                    for (t, (pt, x)) in p[j].iter_mut().zip(sj.iter()).enumerate() {
                        let e = exp_neg(*x - mn);
                        *pt = if t < valid[j] { e } else { 0.0 };
                    }
                    for (l, pt) in lsum[i * BLOCK..(i + 1) * BLOCK].iter_mut().zip(&p[j]) {
                        *l = *l * corr[j] + *pt;
                    }
                }
                // o = o * corr + sum_t p_t v_t, t in order, 16 dimensions at a time (the
                // filler queries of a short group have valid 0: they never join).
                let vmin = (0..QN).filter(|j| i0 + j < nq).map(|j| valid[j]).min().unwrap_or(0);
                for dc in (0..hd16).step_by(16) {
                    let mut acc = [[simd.splat_f32s(0.0); 16]; QN];
                    for j in 0..QN {
                        if valid[j] > 0 {
                            let (ov, _) = S::as_simd_f32s(&o[ids[j] * hd + dc..][..16]);
                            let cj = simd.splat_f32s(corr[j]);
                            for c in 0..nc {
                                acc[j][c] = simd.mul_f32s(ov[c], cj);
                            }
                        }
                    }
                    // Positions every query of the group sees, without a test per query.
                    for t in 0..vmin {
                        let at = (b0 + t) * kv + kvh * hd + dc;
                        let (vv, _) = S::as_simd_f32s(&cache.v[at..at + 16]);
                        for j in 0..QN {
                            let pj = simd.splat_f32s(p[j][t]);
                            for c in 0..nc {
                                acc[j][c] = simd.mul_add_e_f32s(pj, vv[c], acc[j][c]);
                            }
                        }
                    }
                    for t in vmin..vmax {
                        let at = (b0 + t) * kv + kvh * hd + dc;
                        let (vv, _) = S::as_simd_f32s(&cache.v[at..at + 16]);
                        for j in 0..QN {
                            if t < valid[j] {
                                let pj = simd.splat_f32s(p[j][t]);
                                for c in 0..nc {
                                    acc[j][c] = simd.mul_add_e_f32s(pj, vv[c], acc[j][c]);
                                }
                            }
                        }
                    }
                    for j in 0..QN {
                        if valid[j] > 0 && i0 + j < nq {
                            let (ov, _) = S::as_mut_simd_f32s(&mut o[ids[j] * hd + dc..][..16]);
                            ov.copy_from_slice(&acc[j][..nc]);
                        }
                    }
                }
                // Head dimensions past a multiple of 16 (none in llama models), one at a time.
                for j in 0..QN {
                    if valid[j] == 0 || i0 + j >= nq {
                        continue;
                    }
                    let i = ids[j];
                    for d in hd16..hd {
                        let mut acc = o[i * hd + d] * corr[j];
                        for t in 0..valid[j] {
                            acc = mul_then_add(p[j][t], cache.v[(b0 + t) * kv + kvh * hd + d], acc);
                        }
                        o[i * hd + d] = acc;
                    }
                }
            }
        }
        for i in 0..nq {
            let l = lsum[i * BLOCK..(i + 1) * BLOCK].iter().sum::<f32>();
            for x in &mut o[i * hd..(i + 1) * hd] {
                *x /= l;
            }
        }
        o
    }
}

#[inline(always)]
fn mul_then_add(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// `exp(x)` for `x <= 0` (anything below -87, `-inf` included, gives ~1e-38): `2^n * p(r)`
/// with `n = round(x / ln 2)`, `r = x - n ln 2` and a degree-7 polynomial (a few ulp); plain
/// float operations, so it vectorises and gives the same bits wherever it runs.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let bits = (t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32 + 127) as u32;
    p * f32::from_bits(bits << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Plain f64 attention of the query at `pos` over keys/values 0..=pos (position-major).
    fn reference(h: &Heads, q: &[f32], k: &[f32], v: &[f32], pos: usize) -> Vec<f64> {
        let (hd, kv) = (h.head_dim, h.kv_dim());
        let g = h.n_head / h.n_kv_head;
        let mut out = vec![0f64; h.n_head * hd];
        for head in 0..h.n_head {
            let kvh = head / g;
            let qh = &q[head * hd..(head + 1) * hd];
            let s: Vec<f64> = (0..=pos)
                .map(|t| {
                    let kt = &k[t * kv + kvh * hd..t * kv + (kvh + 1) * hd];
                    qh.iter().zip(kt).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (t, e) in e.iter().enumerate() {
                for d in 0..hd {
                    out[head * hd + d] += e / sum * v[t * kv + kvh * hd + d] as f64;
                }
            }
        }
        out
    }

    /// Run `total` positions through a cache in chunks of `chunk` rows; the output rows.
    fn chunked(h: &Heads, q: &[f32], k: &[f32], v: &[f32], total: usize, chunk: usize) -> Vec<f32> {
        let (dim, kv) = (h.n_head * h.head_dim, h.kv_dim());
        let (mut kc, mut vc) = (Vec::new(), Vec::new());
        let mut out = vec![0f32; total * dim];
        let mut pos = 0;
        while pos < total {
            let n = chunk.min(total - pos);
            store_keys(h, &mut kc, pos, &k[pos * kv..(pos + n) * kv]);
            vc.extend_from_slice(&v[pos * kv..(pos + n) * kv]);
            let rows: Vec<(usize, usize)> = (pos..pos + n).map(|p| (0, p)).collect();
            let caches = [Cache { k: &kc, v: &vc }];
            attend(
                h,
                &caches,
                &rows,
                &q[pos * dim..(pos + n) * dim],
                &mut out[pos * dim..(pos + n) * dim],
            );
            pos += n;
        }
        out
    }

    fn inputs(h: &Heads, total: usize, seed: u64, spread: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (dim, kv) = (h.n_head * h.head_dim, h.kv_dim());
        let mut rng = Rng(seed);
        let q = (0..total * dim).map(|_| rng.next() * spread).collect();
        let k = (0..total * kv).map(|_| rng.next() * spread).collect();
        let v = (0..total * kv).map(|_| rng.next()).collect();
        (q, k, v)
    }

    #[test]
    fn attention_matches_an_f64_reference_for_lengths_chunks_and_head_groups() {
        let shapes = [(9, 3, 64), (4, 4, 32), (8, 2, 16), (2, 1, 24)];
        for (si, &(n_head, n_kv_head, head_dim)) in shapes.iter().enumerate() {
            let h = Heads { n_head, n_kv_head, head_dim };
            let dim = n_head * head_dim;
            for &(total, chunk) in
                &[(1, 1), (63, 63), (64, 64), (65, 7), (130, 64), (300, 97), (200, 1)]
            {
                // spread 3: scores up to ~+-30 (peaked softmaxes), 0.3: flat ones.
                for spread in [0.3f32, 3.0] {
                    let (q, k, v) = inputs(&h, total, 7 + si as u64 * 31 + total as u64, spread);
                    let out = chunked(&h, &q, &k, &v, total, chunk);
                    for pos in 0..total {
                        let want = reference(&h, &q[pos * dim..(pos + 1) * dim], &k, &v, pos);
                        for (d, (got, want)) in
                            out[pos * dim..(pos + 1) * dim].iter().zip(&want).enumerate()
                        {
                            assert!(
                                (*got as f64 - want).abs() < 2e-5,
                                "heads {h:?}, {total} positions in chunks of {chunk}, spread \
                                 {spread}: position {pos} value {d} is {got}, the reference {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// With all scores equal, position p's output is the mean of values 0..=p: value t is the
    /// vector (t, t, ...), so the mean is p / 2; a mask one position too wide gives (p + 1) / 2,
    /// one too narrow (p - 1) / 2 (or a division by zero at position 0).
    #[test]
    fn the_causal_mask_covers_exactly_the_positions_up_to_the_query() {
        let h = Heads { n_head: 6, n_kv_head: 2, head_dim: 16 };
        let (dim, kv) = (h.n_head * h.head_dim, h.kv_dim());
        let total = 3 * BLOCK + 5;
        let q = vec![0.5f32; total * dim];
        let k = vec![0f32; total * kv];
        let v: Vec<f32> = (0..total * kv).map(|i| (i / kv) as f32).collect();
        for chunk in [1, 16, BLOCK, total] {
            let out = chunked(&h, &q, &k, &v, total, chunk);
            for pos in 0..total {
                for got in &out[pos * dim..(pos + 1) * dim] {
                    let want = pos as f32 / 2.0;
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want),
                        "chunks of {chunk}: position {pos} gives {got}, the mean of 0..={pos} is {want}"
                    );
                }
            }
        }
    }

    /// The same query gives the same bits whatever the chunking, the rows computed beside it
    /// and the task split (sequential here, on a 2-thread pool there).
    #[test]
    fn each_row_gives_the_same_bits_in_any_chunk_or_batch() {
        let h = Heads { n_head: 9, n_kv_head: 3, head_dim: 64 };
        let total = 333;
        let (q, k, v) = inputs(&h, total, 99, 2.0);
        let one_by_one = chunked(&h, &q, &k, &v, total, 1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        for chunk in [5, 64, 256, total] {
            let seq = chunked(&h, &q, &k, &v, total, chunk);
            let par = pool.install(|| chunked(&h, &q, &k, &v, total, chunk));
            for (i, ((a, b), c)) in one_by_one.iter().zip(&seq).zip(&par).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "chunks of {chunk}: value {i}");
                assert_eq!(a.to_bits(), c.to_bits(), "chunks of {chunk} on a pool: value {i}");
            }
        }
    }

    #[test]
    fn exp_neg_is_close_to_exp() {
        let mut x = 0f32;
        while x > -100.0 {
            let (got, want) = (exp_neg(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 4e-7 * want + 1e-37, "exp({x}) = {got}, want {want}");
            x -= 0.0137;
        }
        assert!(exp_neg(f32::NEG_INFINITY) < 1e-37);
    }
}

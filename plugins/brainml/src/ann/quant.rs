//! Scalar int8 quantization: per dimension, `x ≈ min + scale * code` with `code` in 0..=255,
//! `min` and `scale` learnt from the vectors the index was trained on (a later vector outside
//! that range is clamped to it). A query stays f32: `q·x ≈ q·min + Σ (q_i scale_i) code_i`.

use crate::ann::space::Metric;

pub struct Int8 {
    pub dim: usize,
    pub min: Vec<f32>,
    pub scale: Vec<f32>,
    /// Slot `i`'s code is `codes[i * dim..]`.
    pub codes: Vec<u8>,
    /// The squared norm of each decoded vector (for l2 only; empty otherwise).
    pub norms: Vec<f32>,
}

/// A query ready for scoring against codes.
pub struct Prepared {
    qs: Vec<f32>,
    c: f32,
    qn: f32,
}

#[inline]
fn dot_u8(q: &[f32], c: &[u8]) -> f32 {
    let n = q.len().min(c.len());
    let (q, c) = (&q[..n], &c[..n]);
    let mut acc = [0f32; 16];
    let (cq, cc) = (q.chunks_exact(16), c.chunks_exact(16));
    let mut tail = 0f32;
    for (x, y) in cq.remainder().iter().zip(cc.remainder()) {
        tail += x * *y as f32;
    }
    for (x, y) in cq.zip(cc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i] as f32;
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl Int8 {
    /// Learn the ranges from `rows` (each `dim` long).
    pub fn train<'a>(dim: usize, rows: impl Iterator<Item = &'a [f32]>) -> Int8 {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for r in rows {
            for i in 0..dim {
                lo[i] = lo[i].min(r[i]);
                hi[i] = hi[i].max(r[i]);
            }
        }
        let mut min = Vec::with_capacity(dim);
        let mut scale = Vec::with_capacity(dim);
        for i in 0..dim {
            let (l, h) = if lo[i].is_finite() { (lo[i], hi[i]) } else { (0.0, 0.0) };
            min.push(l);
            scale.push(if h > l { (h - l) / 255.0 } else { 1.0 });
        }
        Int8 { dim, min, scale, codes: Vec::new(), norms: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.codes.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.codes.capacity()
            + (self.min.capacity() + self.scale.capacity() + self.norms.capacity()) * 4
    }

    /// Store `v` as slot `id`'s code (growing the arrays as needed).
    pub fn set(&mut self, id: u32, v: &[f32], metric: Metric) {
        let (i, dim) = (id as usize, self.dim);
        if self.codes.len() < (i + 1) * dim {
            crate::ann::vectors::grow_gently(&mut self.codes, (i + 1) * dim);
            self.codes.resize((i + 1) * dim, 0);
        }
        for (j, x) in v.iter().enumerate().take(dim) {
            let c = ((x - self.min[j]) / self.scale[j]).round().clamp(0.0, 255.0);
            self.codes[i * dim + j] = c as u8;
        }
        if metric == Metric::L2 {
            if self.norms.len() <= i {
                self.norms.resize(i + 1, 0.0);
            }
            let d = self.decode(id);
            self.norms[i] = d.iter().map(|x| x * x).sum();
        }
    }

    pub fn decode(&self, id: u32) -> Vec<f32> {
        let c = &self.codes[id as usize * self.dim..(id as usize + 1) * self.dim];
        c.iter().zip(&self.min).zip(&self.scale).map(|((c, m), s)| m + s * *c as f32).collect()
    }

    pub fn prepare(&self, q: &[f32], _metric: Metric) -> Prepared {
        Prepared {
            qs: q.iter().zip(&self.scale).map(|(a, s)| a * s).collect(),
            c: q.iter().zip(&self.min).map(|(a, m)| a * m).sum(),
            qn: q.iter().map(|a| a * a).sum(),
        }
    }

    #[inline]
    pub fn score(&self, q: &Prepared, id: u32, metric: Metric) -> f32 {
        let c = &self.codes[id as usize * self.dim..(id as usize + 1) * self.dim];
        let ip = q.c + dot_u8(&q.qs, c);
        match metric {
            Metric::Dot => ip,
            Metric::L2 => -(q.qn - 2.0 * ip + self.norms.get(id as usize).copied().unwrap_or(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_values_are_within_half_a_step_and_scores_close() {
        let dim = 24;
        let rows: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                (0..dim).map(|j| ((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.3 * j as f32).collect()
            })
            .collect();
        for metric in [Metric::Dot, Metric::L2] {
            let mut q = Int8::train(dim, rows.iter().map(|r| r.as_slice()));
            for (i, r) in rows.iter().enumerate() {
                q.set(i as u32, r, metric);
            }
            assert_eq!(q.len(), 200);
            for (i, r) in rows.iter().enumerate() {
                let d = q.decode(i as u32);
                for j in 0..dim {
                    assert!(
                        (d[j] - r[j]).abs() <= q.scale[j] * 0.5 + 1e-5,
                        "dim {j}: {} vs {}",
                        d[j],
                        r[j]
                    );
                }
                // The score against codes is the exact score against the decoded vector.
                let query = &rows[(i * 7) % 200];
                let p = q.prepare(query, metric);
                let want = crate::ann::space::score(metric, query, &d);
                let got = q.score(&p, i as u32, metric);
                assert!((want - got).abs() <= 1e-3 * want.abs().max(1.0), "{want} vs {got}");
            }
        }
    }

    #[test]
    fn values_outside_the_trained_range_are_clamped() {
        let rows = [vec![0.0f32, 1.0], vec![1.0, 2.0]];
        let mut q = Int8::train(2, rows.iter().map(|r| r.as_slice()));
        q.set(0, &[5.0, -3.0], Metric::Dot);
        assert_eq!(q.decode(0), vec![1.0, 1.0]);
    }
}

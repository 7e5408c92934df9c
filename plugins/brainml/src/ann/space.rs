//! What the graph scores against: f32 vectors (the collection's own, borrowed) or int8 codes
//! (the index's own, see [`crate::ann::quant`]). Scores are "higher is better": the inner
//! product (cosine on unit vectors) or minus the squared euclidean distance.

use crate::ann::hnsw::Space;
use crate::ann::quant::Int8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Inner product; cosine is this on unit vectors.
    Dot,
    L2,
}

/// Sixteen running sums, which the compiler keeps in vector registers.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = [0f32; 4];
    for i in 0..4 {
        s[i] = acc[i] + acc[i + 4] + acc[i + 8] + acc[i + 12];
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += (x - y) * (x - y);
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s = [0f32; 4];
    for i in 0..4 {
        s[i] = acc[i] + acc[i + 4] + acc[i + 8] + acc[i + 12];
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// The score of `a` against `b` under `metric`.
#[inline]
pub fn score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Dot => dot(a, b),
        Metric::L2 => -l2_squared(a, b),
    }
}

/// Row `id` of `dim`-wide vectors.
#[inline]
fn row(v: &[f32], dim: usize, id: u32) -> &[f32] {
    &v[id as usize * dim..(id as usize + 1) * dim]
}

/// The collection's f32 vectors, slot `i` at `vectors[i * dim..]`.
pub struct FlatSpace<'a> {
    pub vectors: &'a [f32],
    pub dim: usize,
    pub metric: Metric,
}

impl Space for FlatSpace<'_> {
    type Query = Vec<f32>;

    fn prepare(&self, q: &[f32]) -> Vec<f32> {
        q.to_vec()
    }

    fn prepare_node(&self, id: u32) -> Vec<f32> {
        row(self.vectors, self.dim, id).to_vec()
    }

    #[inline]
    fn score(&self, q: &Vec<f32>, id: u32) -> f32 {
        score(self.metric, q, row(self.vectors, self.dim, id))
    }

    #[inline]
    fn score_pair(&self, a: u32, b: u32) -> f32 {
        score(self.metric, row(self.vectors, self.dim, a), row(self.vectors, self.dim, b))
    }

    #[inline]
    fn touch(&self, id: u32) -> u32 {
        let r = row(self.vectors, self.dim, id);
        let mut t = 0;
        for x in r.iter().step_by(16) {
            t ^= x.to_bits();
        }
        t ^ r.last().map_or(0, |x| x.to_bits())
    }
}

/// Int8 codes: the query stays f32, each code is decoded on the fly.
pub struct CodeSpace<'a> {
    pub codes: &'a Int8,
    pub metric: Metric,
}

impl Space for CodeSpace<'_> {
    type Query = crate::ann::quant::Prepared;

    fn prepare(&self, q: &[f32]) -> Self::Query {
        self.codes.prepare(q, self.metric)
    }

    fn prepare_node(&self, id: u32) -> Self::Query {
        let v = self.codes.decode(id);
        self.codes.prepare(&v, self.metric)
    }

    #[inline]
    fn score(&self, q: &Self::Query, id: u32) -> f32 {
        self.codes.score(q, id, self.metric)
    }

    fn score_pair(&self, a: u32, b: u32) -> f32 {
        let q = self.prepare_node(a);
        self.score(&q, b)
    }
}

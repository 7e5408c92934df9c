//! Quantized matrix kernels for generation (issue 17): GGUF weights used as stored in the file
//! (ggml's Q4_1 / Q8_0 blocks, no requantization) times activations quantized to 8 bits per
//! row, the way ggml's `vec_dot_q4_1_q8_1` / `vec_dot_q8_0_q8_0` do.
//!
//! - [`QMatrix`]: a `rows x cols` weight matrix (GGUF's `(rows, cols)`: one output per row), its
//!   raw blocks in one buffer. [`QMatrix::matmul`] computes `out[n][rows] = acts[n] . W[rows]`
//!   for `n` input rows; [`QMatrix::dequantize_row`] is the quantized embedding lookup.
//! - [`QActs`]: input rows quantized in blocks of 32 to `i8` with a scale `d` (and the block's
//!   `s = d * sum(q)`, which Q4_1's offset `m` needs), ggml's Q8_1 numbers (`d` and `s` rounded
//!   to f16 as ggml stores them, so the products equal ggml's) kept in an unpacked layout: the
//!   8-bit values row-major, the scales block-major (`[block][row]`) so a tile of rows loads
//!   them as one vector.
//!
//! Kernels: AVX-512 on 512-bit vectors (two blocks per `vpdpbusd`), AVX-512 VNNI on 256-bit
//! vectors (one instruction per block instead of AVX2's two), AVX2+FMA+F16C, and portable
//! scalar code, picked once at run time ([`isa`]); the x86 ones prefetch the weights 4 KiB
//! ahead. For `n > 1` a tile of `R` weight rows x `C` input rows is computed at once: each
//! weight block is loaded and unpacked once and used for `C` input rows, so the batched prompt
//! is a matrix-matrix product, not `n` matrix-vector ones.
//!
//! Threads: the output rows are split into chunks run on the *current* rayon pool (the
//! plugin's own, `runtime.rs`). Called from a thread that is in no rayon pool the product runs
//! on the calling thread: these kernels never start or use rayon's global pool, and never
//! candle's barrier pool.

use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Elements per quantization block (Q4_1, Q8_0, Q8_1).
pub const QK: usize = 32;

/// The storage type of a [`QMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum QType {
    /// ggml Q4_1: blocks of 32 weights `d * q + m`, `q` in 0..16 (20 bytes).
    Q4_1,
    /// ggml Q8_0: blocks of 32 weights `d * q`, `q` in -127..=127 (34 bytes).
    Q8_0,
    /// IEEE half floats (GGUF F16 tensors).
    F16,
    /// Plain f32 (small tensors, tests).
    F32,
}

impl QType {
    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::Q4_1 => std::mem::size_of::<BlockQ4_1>(),
            QType::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            QType::F16 => 2,
            QType::F32 => 4,
        }
    }

    /// Elements of one block.
    pub fn block_elems(self) -> usize {
        match self {
            QType::Q4_1 | QType::Q8_0 => QK,
            QType::F16 | QType::F32 => 1,
        }
    }

    /// Whether matrices of this type take 8-bit activations (else f32 ones).
    pub fn is_quantized(self) -> bool {
        matches!(self, QType::Q4_1 | QType::Q8_0)
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::Q4_1 => "q4_1",
            QType::Q8_0 => "q8_0",
            QType::F16 => "f16",
            QType::F32 => "f32",
        }
    }
}

/// ggml's `block_q4_1` (the layout in the file; `d` and `m` are f16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    /// Element `j` in the low nibble of `qs[j]`, element `j + 16` in the high one.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// ggml's `block_q8_0` (`d` is f16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// ggml's `block_q8_1` (`d` and `s = d * sum(qs)` are f16 bits). [`QActs`] holds the same
/// numbers unpacked (`d` and `s` as f32 values of those f16s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// IEEE half (bits) to f32, exact.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man * 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// f32 to IEEE half (bits), rounding to nearest even (as the `half` crate and ggml do).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let mut h = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rem > half || (rem == half && h & 1 == 1) {
            h += 1;
        }
        return sign | h as u16;
    }
    let mut h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1; // a carry into the exponent is the right result (up to infinity)
    }
    sign | h as u16
}

fn f16_round(x: f32) -> f32 {
    f16_to_f32(f32_to_f16(x))
}

fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// A weight matrix of `rows x cols` in one of the [`QType`]s, its blocks row by row.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub qtype: QType,
    pub rows: usize,
    pub cols: usize,
    data: Vec<u8>,
}

impl QMatrix {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.qtype.block_elems() * self.qtype.block_bytes()
    }

    /// The raw blocks (ggml's layout).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// From raw blocks in ggml's layout (`data.len()` must be `rows` rows of `cols`).
    pub fn from_raw(qtype: QType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(qtype.block_elems()) {
            return Err(Error::bad_request(format!(
                "a {} matrix needs a positive multiple of {} columns, got {cols}",
                qtype.name(),
                qtype.block_elems()
            )));
        }
        let m = Self { qtype, rows, cols, data: Vec::new() };
        let want = rows * m.row_bytes();
        if data.len() != want {
            return Err(Error::bad_request(format!(
                "a {rows} x {cols} {} matrix is {want} bytes, got {}",
                qtype.name(),
                data.len()
            )));
        }
        Ok(Self { data, ..m })
    }

    /// The tensor's blocks as they are in the GGUF file (no requantization). A 1-D tensor is
    /// one row; a 2-D one is `(rows, cols)` as candle reports it (ggml's `ne[1], ne[0]`).
    pub fn from_gguf(tensor: &QTensor) -> Result<Self> {
        let qtype = match tensor.dtype() {
            GgmlDType::Q4_1 => QType::Q4_1,
            GgmlDType::Q8_0 => QType::Q8_0,
            GgmlDType::F16 => QType::F16,
            GgmlDType::F32 => QType::F32,
            other => {
                return Err(Error::bad_request(format!(
                    "tensor type {other:?} is not supported by the generation kernels \
                     (q4_1, q8_0, f16, f32)"
                )))
            }
        };
        let (rows, cols) = match tensor.shape().dims() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            d => {
                return Err(Error::bad_request(format!(
                    "a weight matrix has 1 or 2 dimensions, this tensor has shape {d:?}"
                )))
            }
        };
        let data =
            tensor.data().map_err(|e| Error::internal(crate::error::candle_msg(&e)))?.into_owned();
        Self::from_raw(qtype, rows, cols, data)
    }

    /// The rows of `parts` one after the other (e.g. q, k and v as one matrix: one product,
    /// one hand-out to the threads, instead of three). All must have the same type and columns.
    pub fn concat_rows(parts: &[&QMatrix]) -> Result<Self> {
        let first =
            parts.first().ok_or_else(|| Error::bad_request("concat_rows: no matrices given"))?;
        let mut data = Vec::with_capacity(parts.iter().map(|m| m.data.len()).sum());
        for m in parts {
            if (m.qtype, m.cols) != (first.qtype, first.cols) {
                return Err(Error::bad_request(format!(
                    "concat_rows: a {} matrix of {} columns cannot follow a {} one of {}",
                    m.qtype.name(),
                    m.cols,
                    first.qtype.name(),
                    first.cols
                )));
            }
            data.extend_from_slice(&m.data);
        }
        let rows = parts.iter().map(|m| m.rows).sum();
        Self::from_raw(first.qtype, rows, first.cols, data)
    }

    /// Quantizes `x` (`rows x cols`, row-major) the way ggml (and candle's `k_quants`) do.
    pub fn from_f32(rows: usize, cols: usize, x: &[f32], qtype: QType) -> Result<Self> {
        if x.len() != rows * cols {
            return Err(Error::bad_request(format!(
                "from_f32: {rows} x {cols} needs {} values, got {}",
                rows * cols,
                x.len()
            )));
        }
        if cols == 0 || !cols.is_multiple_of(qtype.block_elems()) {
            return Err(Error::bad_request(format!(
                "a {} matrix needs a positive multiple of {} columns, got {cols}",
                qtype.name(),
                qtype.block_elems()
            )));
        }
        let mut data = Vec::with_capacity(rows * cols / qtype.block_elems() * qtype.block_bytes());
        match qtype {
            QType::F32 => x.iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes())),
            QType::F16 => {
                x.iter().for_each(|v| data.extend_from_slice(&f32_to_f16(*v).to_le_bytes()))
            }
            QType::Q4_1 => {
                for xs in x.chunks_exact(QK) {
                    let b = quantize_q4_1(xs);
                    data.extend_from_slice(&b.d.to_le_bytes());
                    data.extend_from_slice(&b.m.to_le_bytes());
                    data.extend_from_slice(&b.qs);
                }
            }
            QType::Q8_0 => {
                for xs in x.chunks_exact(QK) {
                    let (d, qs, _) = quantize_q8(xs);
                    data.extend_from_slice(&f32_to_f16(d).to_le_bytes());
                    data.extend(qs.iter().map(|q| *q as u8));
                }
            }
        }
        Self::from_raw(qtype, rows, cols, data)
    }

    /// Row `r` as f32 (the quantized embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(Error::bad_request(format!(
                "row {r} is out of range: the matrix has {} rows",
                self.rows
            )));
        }
        if out.len() != self.cols {
            return Err(Error::bad_request(format!(
                "dequantize_row: the output holds {} values, a row has {}",
                out.len(),
                self.cols
            )));
        }
        let rb = self.row_bytes();
        let row = &self.data[r * rb..(r + 1) * rb];
        match self.qtype {
            QType::F32 => {
                for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            QType::F16 => {
                for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            QType::Q4_1 => {
                for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(20)) {
                    let d = f16_to_f32(rd_u16(b, 0));
                    let m = f16_to_f32(rd_u16(b, 2));
                    for j in 0..QK / 2 {
                        o[j] = (b[4 + j] & 0x0f) as f32 * d + m;
                        o[j + QK / 2] = (b[4 + j] >> 4) as f32 * d + m;
                    }
                }
            }
            QType::Q8_0 => {
                for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(34)) {
                    let d = f16_to_f32(rd_u16(b, 0));
                    for j in 0..QK {
                        o[j] = (b[2 + j] as i8) as f32 * d;
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole matrix as f32 (tests, small tensors).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, o).expect("in range");
        }
        out
    }

    /// `out[i][r] = sum_k acts[i][k] * W[r][k]` for the `acts.n` input rows: `out` holds
    /// `acts.n * rows` values. Runs on the current rayon pool (see the module docs).
    pub fn matmul(&self, acts: &QActs, out: &mut [f32]) -> Result<()> {
        self.matmul_with(isa(), acts, out)
    }

    /// Quantizes `x` (`n x cols`) for this matrix and multiplies (a convenience for callers
    /// that do not reuse the activations).
    pub fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        let acts = QActs::quantize(x, n, self.cols, self.qtype)?;
        self.matmul(&acts, out)
    }

    fn check(&self, acts: &QActs, out: &[f32]) -> Result<()> {
        if acts.cols != self.cols {
            return Err(Error::bad_request(format!(
                "matmul: the input rows have {} values, the matrix has {} columns",
                acts.cols, self.cols
            )));
        }
        if acts.quantized != self.qtype.is_quantized() {
            return Err(Error::bad_request(format!(
                "matmul: the activations were prepared for {} weights, this matrix is {}",
                if acts.quantized { "quantized" } else { "f32/f16" },
                self.qtype.name()
            )));
        }
        if out.len() != acts.n * self.rows {
            return Err(Error::bad_request(format!(
                "matmul: the output holds {} values, {} input rows x {} outputs need {}",
                out.len(),
                acts.n,
                self.rows,
                acts.n * self.rows
            )));
        }
        Ok(())
    }

    /// [`QMatrix::matmul`] with a chosen kernel set (tests run every one the CPU has).
    pub fn matmul_with(&self, isa: Isa, acts: &QActs, out: &mut [f32]) -> Result<()> {
        self.check(acts, out)?;
        if acts.n == 0 || self.rows == 0 {
            return Ok(());
        }
        match self.qtype {
            QType::F32 | QType::F16 => {
                self.matmul_float(acts, out);
                Ok(())
            }
            QType::Q4_1 | QType::Q8_0 => {
                let isa = isa.supported();
                let job = Job {
                    w: self.data.as_ptr(),
                    row_bytes: self.row_bytes(),
                    nb: self.cols / QK,
                    aq: acts.qs.as_ptr(),
                    cols: self.cols,
                    dt: acts.d.as_ptr(),
                    st: acts.s.as_ptr(),
                    npad: acts.npad,
                    n: acts.n,
                    out: out.as_mut_ptr(),
                    ldo: self.rows,
                    q4: self.qtype == QType::Q4_1,
                };
                run_parallel(&job, self.rows, acts.n, self.row_bytes(), isa);
                Ok(())
            }
        }
    }

    fn matmul_float(&self, acts: &QActs, out: &mut [f32]) {
        let mut row = vec![0f32; self.cols];
        for r in 0..self.rows {
            self.dequantize_row(r, &mut row).expect("in range");
            for i in 0..acts.n {
                let x = &acts.f[i * self.cols..(i + 1) * self.cols];
                out[i * self.rows + r] = x.iter().zip(&row).map(|(a, b)| a * b).sum();
            }
        }
    }
}

fn quantize_q4_1(xs: &[f32]) -> BlockQ4_1 {
    // quantize_row_q4_1_ref
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in xs {
        min = min.min(x);
        max = max.max(x);
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut b = BlockQ4_1 { d: f32_to_f16(d), m: f32_to_f16(min), qs: [0; QK / 2] };
    for j in 0..QK / 2 {
        let x0 = (xs[j] - min) * id;
        let x1 = (xs[QK / 2 + j] - min) * id;
        let q0 = ((x0 + 0.5) as u8).min(15);
        let q1 = ((x1 + 0.5) as u8).min(15);
        b.qs[j] = q0 | (q1 << 4);
    }
    b
}

/// quantize_row_q8_1_ref on one block: the unrounded scale, the values and their sum.
fn quantize_q8(xs: &[f32]) -> (f32, [i8; QK], i32) {
    let amax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, x) in qs.iter_mut().zip(xs) {
        *q = (x * id).round() as i8;
        sum += *q as i32;
    }
    (d, qs, sum)
}

/// Input rows prepared for a [`QMatrix::matmul`]: quantized to 8 bits (for Q4_1 / Q8_0
/// weights) or kept as f32 (for F32 / F16 ones).
#[derive(Debug, Clone, Default)]
pub struct QActs {
    pub n: usize,
    pub cols: usize,
    quantized: bool,
    /// The 8-bit values, row-major (`n * cols`).
    qs: Vec<i8>,
    /// Block scales `d` (f16-rounded), block-major: `d[b * npad + i]` for input row `i`.
    d: Vec<f32>,
    /// `s = d * sum(q)` of each block (f16-rounded, ggml's Q8_1 `s`), laid out as `d`.
    s: Vec<f32>,
    /// Rows per block in `d` / `s`: `n` rounded up to 8, plus 8 (a tile loads 8 lanes).
    npad: usize,
    /// The f32 rows (F32 / F16 weights).
    f: Vec<f32>,
}

impl QActs {
    /// `x` holds `n_rows` rows of `cols` values.
    pub fn quantize(x: &[f32], n_rows: usize, cols: usize, for_type: QType) -> Result<Self> {
        let mut a = QActs::default();
        a.quantize_into(x, n_rows, cols, for_type)?;
        Ok(a)
    }

    /// [`QActs::quantize`] reusing this value's buffers.
    pub fn quantize_into(
        &mut self,
        x: &[f32],
        n_rows: usize,
        cols: usize,
        for_type: QType,
    ) -> Result<()> {
        if x.len() != n_rows * cols {
            return Err(Error::bad_request(format!(
                "quantize: {n_rows} rows of {cols} need {} values, got {}",
                n_rows * cols,
                x.len()
            )));
        }
        self.n = n_rows;
        self.cols = cols;
        self.quantized = for_type.is_quantized();
        if !self.quantized {
            self.f.clear();
            self.f.extend_from_slice(x);
            return Ok(());
        }
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(Error::bad_request(format!(
                "quantize: rows for {} weights need a positive multiple of {QK} values, got {cols}",
                for_type.name()
            )));
        }
        let nb = cols / QK;
        self.npad = n_rows.div_ceil(8) * 8 + 8;
        self.qs.clear();
        self.qs.resize(n_rows * cols, 0);
        self.d.clear();
        self.d.resize(nb * self.npad, 0.0);
        self.s.clear();
        self.s.resize(nb * self.npad, 0.0);
        self.fill(x, isa());
        Ok(())
    }

    /// Quantizes every block of `x` (the buffers are sized) with the given kernel set: the
    /// vector one gives the same numbers as the scalar one.
    fn fill(&mut self, x: &[f32], isa: Isa) {
        let (n, cols, npad) = (self.n, self.cols, self.npad);
        #[cfg(target_arch = "x86_64")]
        if isa.supported() != Isa::Scalar {
            // SAFETY: AVX2, FMA and F16C are present (every non-scalar set has them); the
            // buffers hold `n * cols` values and `cols / QK * npad` scales (sized above).
            unsafe { quantize_avx2(x, n, cols, npad, &mut self.qs, &mut self.d, &mut self.s) };
            return;
        }
        let _ = isa;
        for i in 0..n {
            for b in 0..cols / QK {
                let at = i * cols + b * QK;
                let (d, qs, sum) = quantize_q8(&x[at..at + QK]);
                self.qs[at..at + QK].copy_from_slice(&qs);
                self.d[b * npad + i] = f16_round(d);
                self.s[b * npad + i] = f16_round(sum as f32 * d);
            }
        }
    }
}

/// [`quantize_q8`] on every block, 8 lanes at a time: the same scale (`amax / 127`, then
/// `1 / d`), the same rounding (half away from zero, as `f32::round`), the same f16 rounding
/// of `d` and `s` (F16C, nearest even).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `x` and `qs` hold `n * cols` values, `d` and `s`
/// `cols / QK * npad` with `npad >= n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_avx2(
    x: &[f32],
    n: usize,
    cols: usize,
    npad: usize,
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(x.len() >= n * cols && qs.len() >= n * cols && npad >= n);
    assert!(d.len() >= cols / QK * npad && s.len() >= cols / QK * npad);
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for i in 0..n {
        for b in 0..cols / QK {
            let at = i * cols + b * QK;
            let p = x.as_ptr().add(at);
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for x in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *x));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            let dd = amax / 127.0;
            let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
            let idv = _mm256_set1_ps(id);
            let mut q = [_mm256_setzero_si256(); 4];
            let mut sum = _mm256_setzero_si256();
            for (k, x) in v.iter().enumerate() {
                let y = _mm256_mul_ps(*x, idv);
                let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
                let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
                let step = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(sign, y)));
                q[k] = _mm256_cvtps_epi32(_mm256_add_ps(t, step));
                sum = _mm256_add_epi32(sum, q[k]);
            }
            let p16a = _mm256_packs_epi32(q[0], q[1]);
            let p16b = _mm256_packs_epi32(q[2], q[3]);
            let p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), perm);
            _mm256_storeu_si256(qs.as_mut_ptr().add(at) as *mut __m256i, p8);
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
            let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<1>(s2)));
            let ds = _mm_setr_ps(dd, total as f32 * dd, 0.0, 0.0);
            let r = _mm_cvtph_ps(_mm_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(ds));
            d[b * npad + i] = _mm_cvtss_f32(r);
            s[b * npad + i] = _mm_cvtss_f32(_mm_movehdup_ps(r));
        }
    }
}

/// The kernel sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW, DQ, VL, VNNI) on 512-bit vectors: two blocks per instruction.
    Avx512,
    /// AVX-512 VNNI + VL on 256-bit vectors (with AVX2, FMA, F16C).
    Avx512Vnni,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Portable Rust.
    Scalar,
}

impl Isa {
    /// Every kernel set this CPU can run, best first.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|i| i.supported() == *i)
            .collect()
    }

    /// This set if the CPU has it, else the best one below it.
    pub fn supported(self) -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c");
            let vnni = avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni");
            let wide = vnni
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq");
            match self {
                Isa::Avx512 if wide => Isa::Avx512,
                Isa::Avx512 | Isa::Avx512Vnni if vnni => Isa::Avx512Vnni,
                Isa::Avx512 | Isa::Avx512Vnni | Isa::Avx2 if avx2 => Isa::Avx2,
                _ => Isa::Scalar,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            Isa::Scalar
        }
    }
}

/// The best kernel set of this CPU (detected once).
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| Isa::Avx512.supported())
}

/// One quantized product, as raw pointers for the kernels.
struct Job {
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    aq: *const i8,
    cols: usize,
    dt: *const f32,
    st: *const f32,
    npad: usize,
    n: usize,
    out: *mut f32,
    ldo: usize,
    q4: bool,
}
// SAFETY: a Job is built in `matmul_with` from borrowed slices that outlive the parallel call;
// the tasks only read `w`, `aq`, `dt`, `st`, and write disjoint output rows (`run_parallel`).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

/// How far ahead of the weight tile being read the kernels prefetch (bytes).
/// Without it the n = 1 product stalled on its loads (rows of a tile are separate streams):
/// 2-3x slower on this machine's SmolLM2 shapes (`examples/bench_qmatmul`).
const PREFETCH: usize = 4096;

/// Weight bytes one task reads at least (times the input rows): below this, rayon's
/// hand-off costs more than the work.
const TASK_BYTES: usize = 48 * 1024;

fn run_parallel(job: &Job, rows: usize, n: usize, row_bytes: usize, isa: Isa) {
    let threads = if rayon::current_thread_index().is_some() {
        rayon::current_num_threads()
    } else {
        1 // not on a rayon pool: never fall through to the global one
    };
    let work = rows * row_bytes * n.min(16);
    let tasks = if threads <= 1 { 1 } else { (work / TASK_BYTES).clamp(1, threads * 4) };
    // Chunks are multiples of 8 rows (every tile height divides 8).
    let chunk = rows.div_ceil(tasks).div_ceil(8) * 8;
    let tasks = rows.div_ceil(chunk);
    let run = |t: usize| {
        let r0 = t * chunk;
        let r1 = (r0 + chunk).min(rows);
        // SAFETY: `check` verified the shapes the pointers in `job` describe; task `t` writes
        // only output rows r0..r1, disjoint from every other task's; the kernel functions are
        // called only for a kernel set `Isa::supported` confirmed on this CPU.
        unsafe { run_rows(job, r0, r1, isa) }
    };
    if tasks <= 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// # Safety
/// `job` must describe valid buffers (see [`Job`]), rows `r0..r1` must be in range and no
/// other thread may write them, and `isa` must be supported by this CPU.
unsafe fn run_rows(job: &Job, r0: usize, r1: usize, isa: Isa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86_512::rows(job, r0, r1),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86_vnni::rows(job, r0, r1),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86_avx2::rows(job, r0, r1),
        _ => scalar_rows(job, r0, r1),
    }
}

/// The portable kernel: one weight row x one input row at a time.
///
/// # Safety
/// As [`run_rows`].
unsafe fn scalar_rows(job: &Job, r0: usize, r1: usize) {
    // SAFETY: the caller guarantees the buffers: `rows * row_bytes` weight bytes, `n * cols`
    // activations, `nb * npad` scales, and exclusive use of output rows r0..r1.
    let w = std::slice::from_raw_parts(job.w.add(r0 * job.row_bytes), (r1 - r0) * job.row_bytes);
    let aq = std::slice::from_raw_parts(job.aq, job.n * job.cols);
    let dt = std::slice::from_raw_parts(job.dt, job.nb * job.npad);
    let st = std::slice::from_raw_parts(job.st, job.nb * job.npad);
    for r in r0..r1 {
        let row = &w[(r - r0) * job.row_bytes..(r - r0 + 1) * job.row_bytes];
        for i in 0..job.n {
            let a = &aq[i * job.cols..(i + 1) * job.cols];
            let mut acc = 0f32;
            for b in 0..job.nb {
                let qa = &a[b * QK..(b + 1) * QK];
                let da = dt[b * job.npad + i];
                if job.q4 {
                    let blk = &row[b * 20..(b + 1) * 20];
                    let mut sumi = 0i32;
                    for j in 0..QK / 2 {
                        sumi += (blk[4 + j] & 0x0f) as i32 * qa[j] as i32
                            + (blk[4 + j] >> 4) as i32 * qa[j + QK / 2] as i32;
                    }
                    acc += sumi as f32 * (f16_to_f32(rd_u16(blk, 0)) * da)
                        + f16_to_f32(rd_u16(blk, 2)) * st[b * job.npad + i];
                } else {
                    let blk = &row[b * 34..(b + 1) * 34];
                    let mut sumi = 0i32;
                    for j in 0..QK {
                        sumi += (blk[2 + j] as i8) as i32 * qa[j] as i32;
                    }
                    acc += sumi as f32 * (f16_to_f32(rd_u16(blk, 0)) * da);
                }
            }
            // SAFETY: i < n and r0 <= r < r1 <= rows: inside the output, in this task's rows.
            *job.out.add(i * job.ldo + r) = acc;
        }
    }
}

/// The x86 kernels, once per instruction set: `$dot(w, a)` is the dot product of 32 unsigned
/// bytes by 32 signed ones into eight i32 partial sums.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_kernels {
    ($module:ident, $features:literal, $r1:literal, $rn:literal, $cn:literal,
     |$w:ident, $a:ident| $dot:expr) => {
        mod $module {
            use super::{Job, QK};
            use std::arch::x86_64::*;

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot($w: __m256i, $a: __m256i) -> __m256i {
                $dot
            }

            /// Asks for the cache lines of `len` bytes from `p` (a hint: never faults, so
            /// `p` may be past the end of the weights).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn prefetch(p: *const u8, len: usize) {
                let mut k = 0;
                while k < len {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(k) as *const i8);
                    k += 64;
                }
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            /// Output rows `r..r + R` for input rows `i..i + C`.
            ///
            /// # Safety
            /// As [`rows`], with `r + R <= r1` and `i + C <= n`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile_q4_1<const R: usize, const C: usize>(j: &Job, r: usize, i: usize) {
                let m4 = _mm_set1_epi8(0x0f);
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let mut accm = [_mm256_setzero_ps(); R];
                let w = j.w.add(r * j.row_bytes);
                let aq = j.aq.add(i * j.cols);
                for b in 0..j.nb {
                    prefetch(w.wrapping_add(super::PREFETCH + b * R * 20), R * 20);
                    let dt = j.dt.add(b * j.npad + i);
                    // Lanes i..i+8 of the block's `s` (npad leaves 8 lanes past the rows).
                    let sv = _mm256_loadu_ps(j.st.add(b * j.npad + i));
                    let mut av = [_mm256_setzero_si256(); C];
                    for (c, v) in av.iter_mut().enumerate() {
                        *v = _mm256_loadu_si256(aq.add(c * j.cols + b * QK) as *const __m256i);
                    }
                    for rr in 0..R {
                        let wp = w.add(rr * j.row_bytes + b * 20);
                        let dm =
                            _mm_cvtph_ps(_mm_cvtsi32_si128((wp as *const i32).read_unaligned()));
                        let q = _mm_loadu_si128(wp.add(4) as *const __m128i);
                        let lo = _mm_and_si128(q, m4);
                        let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m4);
                        let wv = _mm256_set_m128i(hi, lo);
                        let dw = _mm256_broadcastss_ps(dm);
                        let mw = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
                        accm[rr] = _mm256_fmadd_ps(mw, sv, accm[rr]);
                        for c in 0..C {
                            let p = _mm256_cvtepi32_ps(dot(wv, av[c]));
                            let sc = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*dt.add(c)));
                            acc[rr][c] = _mm256_fmadd_ps(p, sc, acc[rr][c]);
                        }
                    }
                }
                for rr in 0..R {
                    let mut m = [0f32; 8];
                    _mm256_storeu_ps(m.as_mut_ptr(), accm[rr]);
                    for c in 0..C {
                        *j.out.add((i + c) * j.ldo + r + rr) = hsum(acc[rr][c]) + m[c];
                    }
                }
            }

            /// As [`tile_q4_1`] for Q8_0 weights.
            ///
            /// # Safety
            /// As [`tile_q4_1`].
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile_q8_0<const R: usize, const C: usize>(j: &Job, r: usize, i: usize) {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let w = j.w.add(r * j.row_bytes);
                let aq = j.aq.add(i * j.cols);
                for b in 0..j.nb {
                    prefetch(w.wrapping_add(super::PREFETCH + b * R * 34), R * 34);
                    let dt = j.dt.add(b * j.npad + i);
                    let mut av = [_mm256_setzero_si256(); C];
                    for (c, v) in av.iter_mut().enumerate() {
                        *v = _mm256_loadu_si256(aq.add(c * j.cols + b * QK) as *const __m256i);
                    }
                    for rr in 0..R {
                        let wp = w.add(rr * j.row_bytes + b * 34);
                        let d16 = (wp as *const u16).read_unaligned();
                        let dw = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d16 as i32)));
                        let wv = _mm256_loadu_si256(wp.add(2) as *const __m256i);
                        // |w| (unsigned) times a with w's sign: the same products.
                        let aw = _mm256_sign_epi8(wv, wv);
                        for c in 0..C {
                            let sa = _mm256_sign_epi8(av[c], wv);
                            let p = _mm256_cvtepi32_ps(dot(aw, sa));
                            let sc = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*dt.add(c)));
                            acc[rr][c] = _mm256_fmadd_ps(p, sc, acc[rr][c]);
                        }
                    }
                }
                for rr in 0..R {
                    for c in 0..C {
                        *j.out.add((i + c) * j.ldo + r + rr) = hsum(acc[rr][c]);
                    }
                }
            }

            /// Output rows `r..r + R` for every input row: `C` at a time, then one by one.
            ///
            /// # Safety
            /// As [`rows`], with `r + R <= r1`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn row_tile<const R: usize, const C: usize>(j: &Job, r: usize) {
                let mut i = 0;
                while i + C <= j.n {
                    if j.q4 {
                        tile_q4_1::<R, C>(j, r, i)
                    } else {
                        tile_q8_0::<R, C>(j, r, i)
                    }
                    i += C;
                }
                while i < j.n {
                    if j.q4 {
                        tile_q4_1::<R, 1>(j, r, i)
                    } else {
                        tile_q8_0::<R, 1>(j, r, i)
                    }
                    i += 1;
                }
            }

            /// Rows `r0..r1`: weight tiles outside, input tiles inside (the weight tile stays
            /// in L1 while every input row passes).
            ///
            /// # Safety
            /// As [`rows`].
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn rows_t<const R: usize, const C: usize>(j: &Job, r0: usize, r1: usize) {
                let mut r = r0;
                while r + R <= r1 {
                    row_tile::<R, C>(j, r);
                    r += R;
                }
                while r < r1 {
                    row_tile::<1, C>(j, r);
                    r += 1;
                }
            }

            /// # Safety
            /// As `super::run_rows`, and the CPU must have the features this module is
            /// compiled for.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn rows(j: &Job, r0: usize, r1: usize) {
                if j.n == 1 {
                    rows_t::<$r1, 1>(j, r0, r1)
                } else {
                    rows_t::<$rn, $cn>(j, r0, r1)
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
x86_kernels!(x86_avx2, "avx2,fma,f16c", 4, 2, 4, |w, a| _mm256_madd_epi16(
    _mm256_maddubs_epi16(w, a),
    _mm256_set1_epi16(1)
));

#[cfg(target_arch = "x86_64")]
x86_kernels!(x86_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", 4, 4, 4, |w, a| {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
});

/// The 512-bit kernels: each step takes two blocks (64 weights) of a row, so one `vpdpbusd`,
/// one conversion and one FMA cover both; the two blocks' scales sit in the two halves of a
/// vector. An odd last block is paired with itself and its upper half scaled by zero.
#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use super::{Job, PREFETCH, QK};
    use std::arch::x86_64::*;

    /// `[a; 8] ++ [b; 8]`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    #[inline]
    unsafe fn pair(a: f32, b: f32) -> __m512 {
        _mm512_insertf32x8::<1>(_mm512_castps256_ps512(_mm256_set1_ps(a)), _mm256_set1_ps(b))
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    #[inline]
    unsafe fn prefetch(p: *const u8, len: usize) {
        let mut k = 0;
        while k < len {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(k) as *const i8);
            k += 64;
        }
    }

    /// Output rows `r..r + R` for input rows `i..i + C` (Q4_1 when `Q4`, else Q8_0).
    ///
    /// # Safety
    /// As `super::run_rows`, with `r + R` within the task's rows and `i + C <= n`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    #[inline]
    unsafe fn tile<const Q4: bool, const R: usize, const C: usize>(j: &Job, r: usize, i: usize) {
        let bb = if Q4 { 20 } else { 34 };
        let m4 = _mm256_set1_epi8(0x0f);
        let interleave = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let idx_d = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
        let idx_m = _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut accm = [_mm512_setzero_ps(); R];
        let w = j.w.add(r * j.row_bytes);
        let aq = j.aq.add(i * j.cols);
        let mut b = 0;
        while b < j.nb {
            let tail = b + 1 == j.nb;
            let b1 = if tail { b } else { b + 1 };
            let hmask: __mmask16 = if tail { 0x00ff } else { 0xffff };
            prefetch(w.wrapping_add(PREFETCH + b * R * bb), 2 * R * bb);
            let mut da = [_mm512_setzero_ps(); C];
            let mut av = [_mm512_setzero_si512(); C];
            for c in 0..C {
                let d1 = if tail { 0.0 } else { *j.dt.add(b1 * j.npad + i + c) };
                da[c] = pair(*j.dt.add(b * j.npad + i + c), d1);
                av[c] = _mm512_loadu_si512(aq.add(c * j.cols + b * QK) as *const _);
            }
            if tail {
                // Only block b's 32 values are the row's: load them alone.
                for (c, v) in av.iter_mut().enumerate() {
                    *v = _mm512_castsi256_si512(_mm256_loadu_si256(
                        aq.add(c * j.cols + b * QK) as *const __m256i
                    ));
                }
            }
            let sv = _mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm256_loadu_ps(j.st.add(b * j.npad + i))),
                _mm256_loadu_ps(j.st.add(b1 * j.npad + i)),
            );
            for rr in 0..R {
                let p0 = w.add(rr * j.row_bytes + b * bb);
                let p1 = w.add(rr * j.row_bytes + b1 * bb);
                if Q4 {
                    let dm = _mm_cvtph_ps(_mm_setr_epi32(
                        (p0 as *const i32).read_unaligned(),
                        (p1 as *const i32).read_unaligned(),
                        0,
                        0,
                    ));
                    let dm = _mm512_castps128_ps512(dm);
                    let dw = _mm512_maskz_permutexvar_ps(hmask, idx_d, dm);
                    let mw = _mm512_maskz_permutexvar_ps(hmask, idx_m, dm);
                    accm[rr] = _mm512_fmadd_ps(mw, sv, accm[rr]);
                    let q = _mm256_set_m128i(
                        _mm_loadu_si128(p1.add(4) as *const __m128i),
                        _mm_loadu_si128(p0.add(4) as *const __m128i),
                    );
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    // [lo(b), hi(b), lo(b1), hi(b1)]: elements 0..16, 16..32 of each block.
                    let wv = _mm512_permutex2var_epi64(
                        _mm512_castsi256_si512(lo),
                        interleave,
                        _mm512_castsi256_si512(hi),
                    );
                    for c in 0..C {
                        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av[c]);
                        let sc = _mm512_mul_ps(dw, da[c]);
                        acc[rr][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[rr][c]);
                    }
                } else {
                    // 16-bit lanes [d0, 0, d1, 0]: converted, d0 and d1 are in lanes 0 and 2.
                    let d = _mm_cvtph_ps(_mm_setr_epi32(
                        (p0 as *const u16).read_unaligned() as i32,
                        (p1 as *const u16).read_unaligned() as i32,
                        0,
                        0,
                    ));
                    let dw = _mm512_maskz_permutexvar_ps(hmask, idx_d, _mm512_castps128_ps512(d));
                    let wv = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(p0.add(2) as *const __m256i)),
                        _mm256_loadu_si256(p1.add(2) as *const __m256i),
                    );
                    let aw = _mm512_abs_epi8(wv);
                    let neg = _mm512_movepi8_mask(wv);
                    for c in 0..C {
                        // a with w's sign: the same products as w * a.
                        let sa = _mm512_mask_sub_epi8(av[c], neg, _mm512_setzero_si512(), av[c]);
                        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sa);
                        let sc = _mm512_mul_ps(dw, da[c]);
                        acc[rr][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[rr][c]);
                    }
                }
            }
            b += 2;
        }
        for rr in 0..R {
            let m = _mm256_add_ps(
                _mm512_castps512_ps256(accm[rr]),
                _mm512_extractf32x8_ps::<1>(accm[rr]),
            );
            let mut mv = [0f32; 8];
            _mm256_storeu_ps(mv.as_mut_ptr(), m);
            for c in 0..C {
                let v = _mm512_reduce_add_ps(acc[rr][c]) + if Q4 { mv[c] } else { 0.0 };
                *j.out.add((i + c) * j.ldo + r + rr) = v;
            }
        }
    }

    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    #[inline]
    unsafe fn row_tile<const R: usize, const C: usize>(j: &Job, r: usize) {
        let mut i = 0;
        while i + C <= j.n {
            if j.q4 {
                tile::<true, R, C>(j, r, i)
            } else {
                tile::<false, R, C>(j, r, i)
            }
            i += C;
        }
        while i < j.n {
            if j.q4 {
                tile::<true, R, 1>(j, r, i)
            } else {
                tile::<false, R, 1>(j, r, i)
            }
            i += 1;
        }
    }

    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    #[inline]
    unsafe fn rows_t<const R: usize, const C: usize>(j: &Job, r0: usize, r1: usize) {
        let mut r = r0;
        while r + R <= r1 {
            row_tile::<R, C>(j, r);
            r += R;
        }
        while r < r1 {
            row_tile::<1, C>(j, r);
            r += 1;
        }
    }

    /// # Safety
    /// As `super::run_rows`, and the CPU must have AVX-512 F, BW, DQ, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw,avx512dq")]
    pub(super) unsafe fn rows(j: &Job, r0: usize, r1: usize) {
        if j.n == 1 {
            rows_t::<4, 1>(j, r0, r1)
        } else {
            rows_t::<4, 4>(j, r0, r1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{self, GgmlType};
    use candle_core::{Device, Tensor};

    /// Deterministic pseudo-random values in [-1, 1) (xorshift).
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

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// ggml's definition in f64: per block `d_w * d_a * sum(q_w * q_a)`, plus `m_w * s_a`
    /// for Q4_1 (`s_a` is Q8_1's stored `d * sum(q)`, not `d_a * sum(q_a)`).
    fn reference(m: &QMatrix, a: &QActs) -> Vec<f64> {
        let nb = m.cols / QK;
        let rb = m.row_bytes();
        let mut out = vec![0f64; a.n * m.rows];
        for i in 0..a.n {
            for r in 0..m.rows {
                let row = &m.data()[r * rb..(r + 1) * rb];
                let mut acc = 0f64;
                for b in 0..nb {
                    let qa = &a.qs[i * m.cols + b * QK..i * m.cols + (b + 1) * QK];
                    let da = a.d[b * a.npad + i] as f64;
                    let (dw, qw, mw): (f64, Vec<i32>, f64) = match m.qtype {
                        QType::Q4_1 => {
                            let blk = &row[b * 20..(b + 1) * 20];
                            let q = (0..QK)
                                .map(|j| {
                                    let byte = blk[4 + j % 16];
                                    (if j < 16 { byte & 0x0f } else { byte >> 4 }) as i32
                                })
                                .collect();
                            let mw = f16_to_f32(rd_u16(blk, 2)) as f64;
                            (f16_to_f32(rd_u16(blk, 0)) as f64, q, mw)
                        }
                        _ => {
                            let blk = &row[b * 34..(b + 1) * 34];
                            let q = (0..QK).map(|j| blk[2 + j] as i8 as i32).collect();
                            (f16_to_f32(rd_u16(blk, 0)) as f64, q, 0.0)
                        }
                    };
                    for j in 0..QK {
                        acc += dw * qw[j] as f64 * da * qa[j] as f64;
                    }
                    acc += mw * a.s[b * a.npad + i] as f64;
                }
                out[i * m.rows + r] = acc;
            }
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(err <= tol * scale, "{what}: [{k}] got {g}, want {w} (err {err:e})");
        }
    }

    #[test]
    fn f16_conversions_match_candle() {
        let mut xs = values(4096, 7);
        xs.extend([
            0.0,
            -0.0,
            1.0,
            65504.0,
            70000.0,
            -1e-7,
            6e-8,
            3e-5,
            1e-4,
            0.1,
            2.0f32.powi(-24),
        ]);
        xs.extend((0..4096).map(|k| (k as f32 - 2048.0) * 1.37e-6));
        let t = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F16).unwrap();
        let bytes = q.data().unwrap();
        let back = q.dequantize(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        for (k, x) in xs.iter().enumerate() {
            let h = u16::from_le_bytes([bytes[2 * k], bytes[2 * k + 1]]);
            assert_eq!(f32_to_f16(*x), h, "f32_to_f16({x:e})");
            assert_eq!(f16_to_f32(h).to_bits(), back[k].to_bits(), "f16_to_f32({h:#x})");
        }
    }

    #[test]
    fn from_f32_writes_candles_blocks() {
        for (qt, gt) in [(QType::Q4_1, GgmlDType::Q4_1), (QType::Q8_0, GgmlDType::Q8_0)] {
            let (rows, cols) = (7, 96);
            let x = values(rows * cols, 3);
            let m = QMatrix::from_f32(rows, cols, &x, qt).unwrap();
            let t = Tensor::from_vec(x, (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, gt).unwrap();
            assert_eq!(m.data(), &q.data().unwrap()[..], "{qt:?}");
            let g = QMatrix::from_gguf(&q).unwrap();
            assert_eq!((g.qtype, g.rows, g.cols), (qt, rows, cols));
        }
    }

    #[test]
    fn dequantize_row_equals_candles_dequantize() {
        for (qt, gt) in [
            (QType::Q4_1, GgmlDType::Q4_1),
            (QType::Q8_0, GgmlDType::Q8_0),
            (QType::F16, GgmlDType::F16),
            (QType::F32, GgmlDType::F32),
        ] {
            let (rows, cols) = (5, 64);
            let t = Tensor::from_vec(values(rows * cols, 11), (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, gt).unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let m = QMatrix::from_gguf(&q).unwrap();
            let mut row = vec![0f32; cols];
            for (r, w) in want.iter().enumerate() {
                m.dequantize_row(r, &mut row).unwrap();
                assert_eq!(&row, w, "{qt:?} row {r}");
            }
            assert!(m.dequantize_row(rows, &mut row).is_err());
        }
    }

    #[test]
    fn every_kernel_matches_the_f64_reference() {
        let isas = Isa::available();
        println!("kernel sets on this CPU: {isas:?}");
        let p = pool(2);
        for qt in [QType::Q4_1, QType::Q8_0] {
            for (rows, cols) in [(1, 32), (13, 64), (37, 96), (67, 160), (9, 576)] {
                let m =
                    QMatrix::from_f32(rows, cols, &values(rows * cols, rows as u64), qt).unwrap();
                for n in 1..=9 {
                    let x = values(n * cols, 100 + n as u64);
                    let a = QActs::quantize(&x, n, cols, qt).unwrap();
                    let want = reference(&m, &a);
                    for &isa in &isas {
                        let mut out = vec![f32::NAN; n * rows];
                        p.install(|| m.matmul_with(isa, &a, &mut out)).unwrap();
                        assert_close(
                            &out,
                            &want,
                            1e-5,
                            &format!("{qt:?} {isa:?} {rows}x{cols} n={n}"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn vector_activation_quantization_equals_scalar() {
        // Ties: a block whose amax is 127 has d = 1, so x.5 values hit the rounding rule.
        let mut x: Vec<f32> = (0..32).map(|k| k as f32 - 15.5).collect();
        x[0] = 127.0;
        x.extend((0..32).map(|k| -(k as f32) * 0.5));
        x[63] = -127.0;
        x.extend(values(32 * 40, 4));
        x.extend([0f32; 32]); // amax 0
        x.extend((0..32).map(|k| k as f32 * 1e-6));
        x.extend((0..32).map(|k| (k as f32 - 16.0) * 3e4));
        let cols = 96;
        let n = x.len() / cols;
        let mut vector = QActs::quantize(&x, n, cols, QType::Q4_1).unwrap();
        let mut scalar = vector.clone();
        scalar.fill(&x, Isa::Scalar);
        vector.fill(&x, isa());
        assert_eq!(vector.qs, scalar.qs);
        assert_eq!(vector.d, scalar.d);
        assert_eq!(vector.s, scalar.s);
        assert_eq!(&scalar.qs[1..4], &[-15, -14, -13]); // -14.5, -13.5, -12.5: away from 0
    }

    #[test]
    fn parallel_split_covers_every_row() {
        // Big enough for several tasks on a 2-thread pool, with a ragged last chunk.
        let (rows, cols) = (1029, 576);
        let m = QMatrix::from_f32(rows, cols, &values(rows * cols, 5), QType::Q4_1).unwrap();
        for n in [1, 6] {
            let a = QActs::quantize(&values(n * cols, 6), n, cols, QType::Q4_1).unwrap();
            let want = reference(&m, &a);
            let mut serial = vec![f32::NAN; n * rows];
            m.matmul(&a, &mut serial).unwrap(); // no pool: the calling thread
            assert_close(&serial, &want, 1e-5, "serial");
            let mut par = vec![f32::NAN; n * rows];
            pool(2).install(|| m.matmul(&a, &mut par)).unwrap();
            assert_eq!(serial, par, "n={n}");
        }
    }

    #[test]
    fn results_equal_candles_vec_dot() {
        let (rows, cols, n) = (11, 192, 3);
        let wx = values(rows * cols, 21);
        let xx = values(n * cols, 22);
        let nb = cols / QK;
        for qt in [QType::Q4_1, QType::Q8_0] {
            let m = QMatrix::from_f32(rows, cols, &wx, qt).unwrap();
            let a = QActs::quantize(&xx, n, cols, qt).unwrap();
            for &isa in &Isa::available() {
                let mut out = vec![0f32; n * rows];
                m.matmul_with(isa, &a, &mut out).unwrap();
                for i in 0..n {
                    let xr = &xx[i * cols..(i + 1) * cols];
                    for r in 0..rows {
                        let wr = &wx[r * cols..(r + 1) * cols];
                        let want = match qt {
                            QType::Q4_1 => {
                                let mut wb = vec![k_quants::BlockQ4_1::zeros(); nb];
                                k_quants::BlockQ4_1::from_float(wr, &mut wb);
                                let mut xb = vec![k_quants::BlockQ8_1::zeros(); nb];
                                k_quants::BlockQ8_1::from_float(xr, &mut xb);
                                k_quants::BlockQ4_1::vec_dot(cols, &wb, &xb)
                            }
                            _ => {
                                let mut wb = vec![k_quants::BlockQ8_0::zeros(); nb];
                                k_quants::BlockQ8_0::from_float(wr, &mut wb);
                                let mut xb = vec![k_quants::BlockQ8_0::zeros(); nb];
                                k_quants::BlockQ8_0::from_float(xr, &mut xb);
                                k_quants::BlockQ8_0::vec_dot(cols, &wb, &xb)
                            }
                        };
                        let got = out[i * rows + r];
                        // candle rounds Q8_1's `s` through f16 arithmetic (ggml: f16(sum * d)):
                        // a relative 2^-11 of each block's `m * s`, so the bound scales with
                        // the sum of |w * x|, not with the (cancelling) result.
                        let mag: f32 = wr.iter().zip(xr).map(|(w, x)| (w * x).abs()).sum();
                        assert!(
                            (got - want).abs() <= 1e-3 * mag + 1e-5,
                            "{qt:?} {isa:?} [{i}][{r}]: {got} vs candle {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn concatenated_rows_give_the_parts_products() {
        let cols = 64;
        let a = QMatrix::from_f32(5, cols, &values(5 * cols, 1), QType::Q4_1).unwrap();
        let b = QMatrix::from_f32(3, cols, &values(3 * cols, 2), QType::Q4_1).unwrap();
        let ab = QMatrix::concat_rows(&[&a, &b]).unwrap();
        assert_eq!((ab.rows, ab.cols), (8, cols));
        let n = 2;
        let x = QActs::quantize(&values(n * cols, 3), n, cols, QType::Q4_1).unwrap();
        let (mut oa, mut ob, mut oab) = (vec![0f32; n * 5], vec![0f32; n * 3], vec![0f32; n * 8]);
        a.matmul(&x, &mut oa).unwrap();
        b.matmul(&x, &mut ob).unwrap();
        ab.matmul(&x, &mut oab).unwrap();
        for i in 0..n {
            assert_eq!(&oab[i * 8..i * 8 + 5], &oa[i * 5..(i + 1) * 5]);
            assert_eq!(&oab[i * 8 + 5..(i + 1) * 8], &ob[i * 3..(i + 1) * 3]);
        }
        let c = QMatrix::from_f32(1, cols, &values(cols, 4), QType::Q8_0).unwrap();
        let e = QMatrix::concat_rows(&[&a, &c]).unwrap_err();
        assert!(e.to_string().contains("cannot follow"), "{e}");
        assert!(QMatrix::concat_rows(&[]).is_err());
    }

    #[test]
    fn bad_shapes_are_refused_with_a_message() {
        let m = QMatrix::from_f32(4, 64, &values(256, 1), QType::Q4_1).unwrap();
        let e = QMatrix::from_f32(4, 60, &values(240, 1), QType::Q4_1).unwrap_err();
        assert!(e.to_string().contains("multiple of 32"), "{e}");
        let a = QActs::quantize(&values(96, 1), 1, 96, QType::Q4_1).unwrap();
        let e = m.matmul(&a, &mut [0f32; 4]).unwrap_err();
        assert!(e.to_string().contains("96 values"), "{e}");
        let a = QActs::quantize(&values(128, 1), 2, 64, QType::Q4_1).unwrap();
        let e = m.matmul(&a, &mut [0f32; 4]).unwrap_err();
        assert!(e.to_string().contains("need 8"), "{e}");
        let a = QActs::quantize(&values(64, 1), 1, 64, QType::F32).unwrap();
        let e = m.matmul(&a, &mut [0f32; 4]).unwrap_err();
        assert!(e.to_string().contains("prepared for"), "{e}");
    }

    #[test]
    fn f32_and_f16_matrices_multiply_in_float() {
        let (rows, cols, n) = (5, 48, 2);
        let wx = values(rows * cols, 8);
        let xx = values(n * cols, 9);
        for qt in [QType::F32, QType::F16] {
            let m = QMatrix::from_f32(rows, cols, &wx, qt).unwrap();
            let w = m.dequantize();
            let mut out = vec![0f32; n * rows];
            m.forward(&xx, n, &mut out).unwrap();
            for i in 0..n {
                for r in 0..rows {
                    let want: f64 =
                        (0..cols).map(|k| w[r * cols + k] as f64 * xx[i * cols + k] as f64).sum();
                    assert!((out[i * rows + r] as f64 - want).abs() < 1e-4, "{qt:?}");
                }
            }
        }
    }

    #[test]
    fn from_gguf_reads_smollm2_with_the_files_shapes() {
        let path = crate::default_models_dir()
            .join("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run `bash scripts/fetch-models.sh` first (or set BKG_MODELS_DIR)",
            path.display()
        );
        let mut f = std::fs::File::open(&path).unwrap();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        let mut types = std::collections::BTreeMap::new();
        for (name, info) in &content.tensor_infos {
            let t = content.tensor(&mut f, name, &Device::Cpu).unwrap();
            let m = QMatrix::from_gguf(&t).unwrap();
            let dims = info.shape.dims();
            let (rows, cols) = if dims.len() == 1 { (1, dims[0]) } else { (dims[0], dims[1]) };
            assert_eq!((m.rows, m.cols), (rows, cols), "{name}");
            assert_eq!(m.data().len(), rows * m.row_bytes(), "{name}");
            *types.entry(format!("{:?}", m.qtype)).or_insert(0) += 1;
        }
        println!("tensor types: {types:?}");
        let emb = content.tensor(&mut f, "token_embd.weight", &Device::Cpu).unwrap();
        let m = QMatrix::from_gguf(&emb).unwrap();
        assert_eq!((m.rows, m.cols), (49152, 576));
        let q = content.tensor(&mut f, "blk.0.attn_k.weight", &Device::Cpu).unwrap();
        let k = QMatrix::from_gguf(&q).unwrap();
        assert_eq!((k.rows, k.cols), (192, 576));
        // The embedding lookup equals candle's dequantized row.
        let want =
            emb.dequantize(&Device::Cpu).unwrap().get(1234).unwrap().to_vec1::<f32>().unwrap();
        let mut row = vec![0f32; 576];
        m.dequantize_row(1234, &mut row).unwrap();
        assert_eq!(row, want);
    }
}

//! The kernels face-api's networks need, on plain `f32` buffers in HWC order (one image, rows
//! of pixels, channels innermost: TensorFlow's NHWC without the batch), which is the order the
//! tfjs weights are stored in (conv filters HWIO, depthwise filters HW-C-1), so no filter is
//! transposed at run time.
//!
//! - [`conv2d`]: any `kh x kw` convolution as im2col + a register-blocked matmul against the
//!   filter packed once at load ([`ConvFilter`]); a 1x1 stride-1 convolution is the matmul on
//!   the feature map itself;
//! - [`depthwise3x3`]: 9 shifted multiply-adds over whole rows of channels;
//! - [`max_pool`], [`letterbox`] (pad to a square at the bottom/right, then TensorFlow's
//!   bilinear resize, as face-api's `toBatchTensor(size, false)` does);
//! - every conv ends in an [`Epilogue`]: per-channel `y * scale + shift` (a bias, a folded batch
//!   norm) and an activation ([`Act`]: ReLU, ReLU6, leaky ReLU), applied while the row is hot.
//!
//! Padding follows TensorFlow ([`Padding::Same`] is asymmetric when the padding is odd: the extra
//! row/column goes at the bottom/right).
//!
//! Threads: the kernels split their output into rows and run them with `rayon` on the *current*
//! pool. Callers run them inside the plugin's pool (`Pool::install`), so rayon's global pool is
//! never started; nothing here uses candle (no barrier pool). The inner loops are plain Rust that
//! LLVM vectorises; on x86-64 they are compiled a second time for AVX2+FMA and picked at run time
//! through `pulp` (safe dispatch, no `unsafe` here).

use rayon::prelude::*;

/// A feature map: `h x w` pixels of `c` channels, HWC.
#[derive(Clone, Debug, PartialEq)]
pub struct Fmap {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Fmap {
    pub fn zeros(h: usize, w: usize, c: usize) -> Fmap {
        Fmap { h, w, c, data: vec![0.0; h * w * c] }
    }

    /// The value at row `y`, column `x`, channel `ch`.
    pub fn at(&self, y: usize, x: usize, ch: usize) -> f32 {
        self.data[(y * self.w + x) * self.c + ch]
    }
}

/// An activation applied after a conv.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, else `alpha * x`.
    Leaky(f32),
}

impl Act {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::Leaky(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
        }
    }
}

/// What follows a conv, per output channel: `act(y * scale[c] + shift[c])`.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub act: Act,
}

impl Epilogue {
    /// `act(y + bias)`.
    pub fn bias(bias: Vec<f32>, act: Act) -> Epilogue {
        Epilogue { scale: None, shift: Some(bias), act }
    }

    /// A batch norm in inference form (`(y - mean) / sqrt(var + eps) * gamma + beta`) folded
    /// into one scale and shift per channel, then `act`.
    pub fn batch_norm(
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        variance: &[f32],
        eps: f32,
        act: Act,
    ) -> Epilogue {
        let scale: Vec<f32> =
            gamma.iter().zip(variance).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        Epilogue { scale: Some(scale), shift: Some(shift), act }
    }

    /// Nothing: the conv's output as is.
    pub fn none() -> Epilogue {
        Epilogue { scale: None, shift: None, act: Act::None }
    }

    /// Channels this epilogue is for (`None` when it has no per-channel part).
    pub fn channels(&self) -> Option<usize> {
        self.scale.as_ref().or(self.shift.as_ref()).map(|v| v.len())
    }

    /// Apply to one pixel's channels (or several pixels' back to back).
    #[inline(always)]
    fn apply(&self, out: &mut [f32]) {
        match (&self.scale, &self.shift) {
            (Some(s), Some(b)) => {
                for px in out.chunks_exact_mut(s.len()) {
                    for ((y, s), b) in px.iter_mut().zip(s).zip(b) {
                        *y = self.act.apply(*y * s + b);
                    }
                }
            }
            (None, Some(b)) => {
                for px in out.chunks_exact_mut(b.len()) {
                    for (y, b) in px.iter_mut().zip(b) {
                        *y = self.act.apply(*y + b);
                    }
                }
            }
            (Some(s), None) => {
                for px in out.chunks_exact_mut(s.len()) {
                    for (y, s) in px.iter_mut().zip(s) {
                        *y = self.act.apply(*y * s);
                    }
                }
            }
            (None, None) => {
                if self.act != Act::None {
                    for y in out.iter_mut() {
                        *y = self.act.apply(*y);
                    }
                }
            }
        }
    }
}

/// Padding of a conv or pool, as TensorFlow means it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    /// Output `ceil(in / stride)`; the padding needed is split with the odd one at the end.
    Same,
    /// No padding: output `(in - k) / stride + 1`.
    Valid,
    /// `p` zeros on every side, then valid.
    Explicit(usize),
}

/// Output length and padding before, along one axis. `None` when the window does not fit.
pub fn out_len(input: usize, k: usize, stride: usize, pad: Padding) -> Option<(usize, usize)> {
    if input == 0 || k == 0 || stride == 0 {
        return None;
    }
    match pad {
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + k).saturating_sub(input);
            Some((out, total / 2))
        }
        Padding::Valid => (input >= k).then(|| ((input - k) / stride + 1, 0)),
        Padding::Explicit(p) => (input + 2 * p >= k).then(|| ((input + 2 * p - k) / stride + 1, p)),
    }
}

/// Rows of a matmul tile.
const MR: usize = 6;
/// Columns of a matmul tile (and of a packed filter panel).
const NR: usize = 16;

/// A conv filter (HWIO as tfjs stores it) packed for the matmul: `ceil(cout / NR)` panels of
/// `k = kh * kw * cin` rows of `NR` columns, the last panel zero-padded.
#[derive(Clone, Debug)]
pub struct ConvFilter {
    pub kh: usize,
    pub kw: usize,
    pub cin: usize,
    pub cout: usize,
    packed: Vec<f32>,
}

impl ConvFilter {
    /// From HWIO data of shape `[kh, kw, cin, cout]`. `None` if the length does not match.
    pub fn from_hwio(data: &[f32], shape: [usize; 4]) -> Option<ConvFilter> {
        let [kh, kw, cin, cout] = shape;
        let k = kh * kw * cin;
        if k == 0 || cout == 0 || data.len() != k * cout {
            return None;
        }
        let panels = cout.div_ceil(NR);
        let mut packed = vec![0f32; panels * k * NR];
        for (p, panel) in packed.chunks_exact_mut(k * NR).enumerate() {
            let c0 = p * NR;
            let width = NR.min(cout - c0);
            for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..width].copy_from_slice(&data[kk * cout + c0..kk * cout + c0 + width]);
            }
        }
        Some(ConvFilter { kh, kw, cin, cout, packed })
    }

    /// Rows of the matmul (`kh * kw * cin`).
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `c (m x cout) = a (m x k) @ filter`, then the epilogue on each row. Serial.
struct Gemm<'a> {
    a: &'a [f32],
    m: usize,
    f: &'a ConvFilter,
    c: &'a mut [f32],
    ep: &'a Epilogue,
}

impl Gemm<'_> {
    /// Written with `pulp`'s vector types: LLVM did not vectorise the plain-array version of
    /// this tile loop (scalar FMAs on a stack array, ~3 GFLOP/s), this one runs on registers.
    #[inline(always)]
    fn run<S: pulp::Simd>(self, simd: S) {
        let Gemm { a, m, f, c, ep } = self;
        let k = f.k();
        let n = f.cout;
        // A packed in tiles of MR rows, k-major (`[tile][kk][r]`), so the inner loop reads
        // both sides contiguously; rows past `m` repeat the last one (computed, never stored).
        let tiles = m.div_ceil(MR);
        let mut packed = vec![0f32; tiles * k * MR];
        for (t, tile) in packed.chunks_exact_mut(k * MR).enumerate() {
            for r in 0..MR {
                let row = (t * MR + r).min(m - 1);
                for (kk, v) in a[row * k..row * k + k].iter().enumerate() {
                    tile[kk * MR + r] = *v;
                }
            }
        }
        // Vectors per panel row (NR is a multiple of every lane count pulp has: 1, 4, 8, 16).
        let nv = NR / S::F32_LANES;
        for (p, panel) in f.packed.chunks_exact(k * NR).enumerate() {
            let (pv, _) = S::as_simd_f32s(panel);
            let c0 = p * NR;
            let width = NR.min(n - c0);
            for (t, tile) in packed.chunks_exact(k * MR).enumerate() {
                let mut acc = [[simd.splat_f32s(0.0); NR]; MR];
                for (av, bv) in tile.chunks_exact(MR).zip(pv.chunks_exact(nv)) {
                    let av: &[f32; MR] = av.try_into().expect("MR rows");
                    for r in 0..MR {
                        let ar = simd.splat_f32s(av[r]);
                        for v in 0..nv {
                            acc[r][v] = simd.mul_add_e_f32s(ar, bv[v], acc[r][v]);
                        }
                    }
                }
                let rows = MR.min(m - t * MR);
                let mut out = [0f32; NR];
                for (r, row) in acc.iter().enumerate().take(rows) {
                    let (ov, _) = S::as_mut_simd_f32s(&mut out);
                    ov.copy_from_slice(&row[..nv]);
                    let at = (t * MR + r) * n + c0;
                    c[at..at + width].copy_from_slice(&out[..width]);
                }
            }
        }
        ep.apply(&mut c[..m * n]);
    }
}

impl pulp::WithSimd for Gemm<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        self.run(simd)
    }
}

fn gemm(g: Gemm<'_>) {
    pulp::Arch::new().dispatch(g)
}

/// Pixels per rayon task in a matmul.
const PIXELS_PER_TASK: usize = 8 * MR;

fn check_epilogue(ep: &Epilogue, channels: usize, what: &str) {
    if let Some(n) = ep.channels() {
        assert_eq!(n, channels, "{what}: epilogue for {n} channels, conv has {channels}");
    }
}

/// A convolution (no groups) with a packed filter, stride `stride` on both axes.
///
/// Panics if `x.c` differs from the filter's input channels or the window does not fit (the
/// networks check their shapes when they load).
pub fn conv2d(x: &Fmap, f: &ConvFilter, stride: usize, pad: Padding, ep: &Epilogue) -> Fmap {
    assert_eq!(x.c, f.cin, "conv2d: input has {} channels, filter wants {}", x.c, f.cin);
    check_epilogue(ep, f.cout, "conv2d");
    let (oh, pt) = out_len(x.h, f.kh, stride, pad).expect("conv2d: window larger than input");
    let (ow, pl) = out_len(x.w, f.kw, stride, pad).expect("conv2d: window larger than input");
    let n = f.cout;
    let mut out = Fmap::zeros(oh, ow, n);
    if f.kh == 1 && f.kw == 1 && stride == 1 && pt == 0 && pl == 0 {
        // Pointwise: the feature map is already the matmul's left side.
        out.data
            .par_chunks_mut(PIXELS_PER_TASK * n)
            .zip(x.data.par_chunks(PIXELS_PER_TASK * x.c))
            .for_each(|(c, a)| gemm(Gemm { a, m: c.len() / n, f, c, ep }));
        return out;
    }
    let k = f.k();
    let rows_per_task = (PIXELS_PER_TASK / ow).max(1);
    out.data.par_chunks_mut(rows_per_task * ow * n).enumerate().for_each(|(t, c)| {
        let oy0 = t * rows_per_task;
        let m = c.len() / n;
        let mut cols = vec![0f32; m * k];
        for (i, col) in cols.chunks_exact_mut(k).enumerate() {
            let oy = oy0 + i / ow;
            let ox = i % ow;
            for ky in 0..f.kh {
                let iy = (oy * stride + ky) as isize - pt as isize;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                for kx in 0..f.kw {
                    let ix = (ox * stride + kx) as isize - pl as isize;
                    if ix < 0 || ix >= x.w as isize {
                        continue;
                    }
                    let src = (iy as usize * x.w + ix as usize) * x.c;
                    let dst = (ky * f.kw + kx) * x.c;
                    col[dst..dst + x.c].copy_from_slice(&x.data[src..src + x.c]);
                }
            }
        }
        gemm(Gemm { a: &cols, m, f, c, ep });
    });
    out
}

/// A 3x3 depthwise filter (channel multiplier 1): 9 taps of `c` weights, tap-major, as tfjs
/// stores it (`[3, 3, c, 1]`).
#[derive(Clone, Debug)]
pub struct DepthwiseFilter {
    pub c: usize,
    taps: Vec<f32>,
}

impl DepthwiseFilter {
    /// From data of shape `[3, 3, c, 1]`. `None` if the length does not match.
    pub fn from_hwc1(data: &[f32], c: usize) -> Option<DepthwiseFilter> {
        (c > 0 && data.len() == 9 * c).then(|| DepthwiseFilter { c, taps: data.to_vec() })
    }
}

struct DwRows<'a> {
    x: &'a Fmap,
    f: &'a DepthwiseFilter,
    stride: usize,
    pt: usize,
    pl: usize,
    oy0: usize,
    ow: usize,
    out: &'a mut [f32],
    ep: &'a Epilogue,
}

impl DwRows<'_> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let DwRows { x, f, stride, pt, pl, oy0, ow, out, ep } = self;
        let c = x.c;
        for (r, orow) in out.chunks_exact_mut(ow * c).enumerate() {
            let oy = oy0 + r;
            for ky in 0..3 {
                let iy = (oy * stride + ky) as isize - pt as isize;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                let irow = &x.data[iy as usize * x.w * c..(iy as usize + 1) * x.w * c];
                for kx in 0..3 {
                    let wt = &f.taps[(ky * 3 + kx) * c..(ky * 3 + kx + 1) * c];
                    for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
                        let ix = (ox * stride + kx) as isize - pl as isize;
                        if ix < 0 || ix >= x.w as isize {
                            continue;
                        }
                        let i = &irow[ix as usize * c..(ix as usize + 1) * c];
                        for ((o, i), w) in o.iter_mut().zip(i).zip(wt) {
                            *o = madd::<FMA>(*i, *w, *o);
                        }
                    }
                }
            }
            ep.apply(orow);
        }
    }
}

impl pulp::WithSimd for DwRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run::<true>()
    }
}

fn dw_rows(d: DwRows<'_>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(v3, d);
    }
    d.run::<false>()
}

/// A 3x3 depthwise convolution (channel multiplier 1), stride `stride` on both axes.
pub fn depthwise3x3(
    x: &Fmap,
    f: &DepthwiseFilter,
    stride: usize,
    pad: Padding,
    ep: &Epilogue,
) -> Fmap {
    assert_eq!(x.c, f.c, "depthwise3x3: input has {} channels, filter {}", x.c, f.c);
    check_epilogue(ep, f.c, "depthwise3x3");
    let (oh, pt) = out_len(x.h, 3, stride, pad).expect("depthwise3x3: window larger than input");
    let (ow, pl) = out_len(x.w, 3, stride, pad).expect("depthwise3x3: window larger than input");
    let mut out = Fmap::zeros(oh, ow, x.c);
    let rows_per_task = (4096 / (ow * x.c)).max(1);
    out.data.par_chunks_mut(rows_per_task * ow * x.c).enumerate().for_each(|(t, o)| {
        dw_rows(DwRows { x, f, stride, pt, pl, oy0: t * rows_per_task, ow, out: o, ep })
    });
    out
}

/// Max pooling over `k x k` windows; padded positions never win (TensorFlow's SAME pooling).
pub fn max_pool(x: &Fmap, k: usize, stride: usize, pad: Padding) -> Fmap {
    let (oh, pt) = out_len(x.h, k, stride, pad).expect("max_pool: window larger than input");
    let (ow, pl) = out_len(x.w, k, stride, pad).expect("max_pool: window larger than input");
    let c = x.c;
    let mut out = Fmap { h: oh, w: ow, c, data: vec![f32::NEG_INFINITY; oh * ow * c] };
    out.data.par_chunks_mut(ow * c).enumerate().for_each(|(oy, orow)| {
        for ky in 0..k {
            let iy = (oy * stride + ky) as isize - pt as isize;
            if iy < 0 || iy >= x.h as isize {
                continue;
            }
            for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
                for kx in 0..k {
                    let ix = (ox * stride + kx) as isize - pl as isize;
                    if ix < 0 || ix >= x.w as isize {
                        continue;
                    }
                    let at = (iy as usize * x.w + ix as usize) * c;
                    for (o, i) in o.iter_mut().zip(&x.data[at..at + c]) {
                        *o = o.max(*i);
                    }
                }
            }
        }
    });
    out
}

/// The width and height an image of `width x height` takes inside a `size x size` letterbox
/// (face-api's `computeReshapedDimensions`: the longer side becomes `size`, rounded).
pub fn letterbox_dims(width: usize, height: usize, size: usize) -> (usize, usize) {
    let scale = size as f64 / width.max(height) as f64;
    ((width as f64 * scale).round() as usize, (height as f64 * scale).round() as usize)
}

/// face-api's input tensor: the RGB image (`data` HWC u8, `width x height`) padded with black
/// at the bottom or right to a square of its longer side, then resized to `size x size` with
/// TensorFlow's bilinear resize (`alignCorners: false`, no half-pixel centres), each channel then
/// mapped by `v * mul[ch] + add[ch]` (the net's normalisation). Values before mapping are
/// 0..255.
pub fn letterbox(
    data: &[u8],
    width: usize,
    height: usize,
    size: usize,
    mul: [f32; 3],
    add: [f32; 3],
) -> Fmap {
    assert_eq!(data.len(), width * height * 3, "letterbox: data is not {width}x{height} RGB");
    assert!(width > 0 && height > 0 && size > 0, "letterbox: empty image");
    let side = width.max(height);
    let ratio = side as f64 / size as f64;
    // Source coordinates along one axis: (floor, ceil, fraction).
    let axis: Vec<(usize, usize, f32)> = (0..size)
        .map(|o| {
            let s = ratio * o as f64;
            let lo = s.floor();
            let hi = (s.ceil() as usize).min(side - 1);
            (lo as usize, hi, (s - lo) as f32)
        })
        .collect();
    let px = |y: usize, x: usize| -> [f32; 3] {
        if y >= height || x >= width {
            return [0.0; 3];
        }
        let at = (y * width + x) * 3;
        [data[at] as f32, data[at + 1] as f32, data[at + 2] as f32]
    };
    let mut out = Fmap::zeros(size, size, 3);
    out.data.par_chunks_mut(size * 3).enumerate().for_each(|(oy, row)| {
        let (y0, y1, fy) = axis[oy];
        for (ox, o) in row.chunks_exact_mut(3).enumerate() {
            let (x0, x1, fx) = axis[ox];
            let (tl, tr, bl, br) = (px(y0, x0), px(y0, x1), px(y1, x0), px(y1, x1));
            for ch in 0..3 {
                let top = tl[ch] + (tr[ch] - tl[ch]) * fx;
                let bottom = bl[ch] + (br[ch] - bl[ch]) * fx;
                o[ch] = (top + (bottom - top) * fy) * mul[ch] + add[ch];
            }
        }
    });
    out
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no test depends on a seed's luck: all compare two ways
    /// of computing the same thing).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap()
    }

    /// Direct convolution, HWC / HWIO, zero padding `pt`/`pl` before.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &Fmap,
        w: &[f32],
        kh: usize,
        kw: usize,
        cout: usize,
        stride: usize,
        oh: usize,
        ow: usize,
        pt: usize,
        pl: usize,
    ) -> Fmap {
        let mut out = Fmap::zeros(oh, ow, cout);
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let mut s = 0f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pt as isize;
                            let ix = (ox * stride + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            for ci in 0..x.c {
                                s += x.at(iy as usize, ix as usize, ci) as f64
                                    * w[((ky * kw + kx) * x.c + ci) * cout + co] as f64;
                            }
                        }
                    }
                    out.data[(oy * ow + ox) * cout + co] = s as f32;
                }
            }
        }
        out
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn same_padding_is_tensorflows() {
        // TensorFlow: out = ceil(in / s), pad_total = max((out - 1) * s + k - in, 0), the odd
        // one at the end.
        assert_eq!(out_len(512, 3, 2, Padding::Same), Some((256, 0)));
        assert_eq!(out_len(16, 3, 2, Padding::Same), Some((8, 0)));
        assert_eq!(out_len(15, 3, 2, Padding::Same), Some((8, 1)));
        assert_eq!(out_len(2, 3, 2, Padding::Same), Some((1, 0)));
        assert_eq!(out_len(1, 3, 2, Padding::Same), Some((1, 1)));
        assert_eq!(out_len(32, 3, 1, Padding::Same), Some((32, 1)));
        assert_eq!(out_len(207, 2, 2, Padding::Same), Some((104, 0)));
        assert_eq!(out_len(13, 2, 1, Padding::Same), Some((13, 0)));
        assert_eq!(out_len(416, 3, 1, Padding::Valid), Some((414, 0)));
        assert_eq!(out_len(2, 3, 1, Padding::Valid), None);
        assert_eq!(out_len(5, 3, 1, Padding::Explicit(1)), Some((5, 1)));
    }

    #[test]
    fn conv2d_matches_direct_loops() {
        let mut g = Lcg(7);
        let pool = pool();
        // (h, w, cin, cout, k, stride, padding): odd sizes, cout not a multiple of the panel
        // width, pointwise and strided cases.
        let cases = [
            (9, 7, 3, 5, 3, 2, Padding::Same),
            (8, 8, 3, 32, 3, 2, Padding::Same),
            (5, 6, 4, 17, 3, 1, Padding::Same),
            (7, 7, 5, 9, 1, 1, Padding::Same),
            (13, 11, 20, 40, 1, 1, Padding::Valid),
            (6, 6, 8, 25, 3, 1, Padding::Valid),
            (6, 5, 3, 16, 3, 1, Padding::Explicit(1)),
            (4, 4, 6, 12, 3, 2, Padding::Same),
            (2, 2, 6, 7, 3, 2, Padding::Same),
        ];
        for (h, w, cin, cout, k, stride, pad) in cases {
            let x = Fmap { h, w, c: cin, data: g.vec(h * w * cin) };
            let wt = g.vec(k * k * cin * cout);
            let f = ConvFilter::from_hwio(&wt, [k, k, cin, cout]).unwrap();
            let got = pool.install(|| conv2d(&x, &f, stride, pad, &Epilogue::none()));
            let (oh, pt) = out_len(h, k, stride, pad).unwrap();
            let (ow, pl) = out_len(w, k, stride, pad).unwrap();
            let want = naive_conv(&x, &wt, k, k, cout, stride, oh, ow, pt, pl);
            assert_eq!((got.h, got.w, got.c), (oh, ow, cout), "{h}x{w} k{k} s{stride}");
            assert_close(&got.data, &want.data, 1e-5);
        }
    }

    #[test]
    fn epilogues_apply_per_channel() {
        let mut g = Lcg(11);
        let (h, w, cin, cout) = (5, 5, 4, 6);
        let x = Fmap { h, w, c: cin, data: g.vec(h * w * cin).iter().map(|v| v * 8.0).collect() };
        let wt = g.vec(cin * cout);
        let f = ConvFilter::from_hwio(&wt, [1, 1, cin, cout]).unwrap();
        let pool = pool();
        let conv2d =
            |x: &Fmap, f: &ConvFilter, s, p, ep: &Epilogue| pool.install(|| conv2d(x, f, s, p, ep));
        let raw = conv2d(&x, &f, 1, Padding::Same, &Epilogue::none());
        let gamma = g.vec(cout);
        let beta = g.vec(cout);
        let mean = g.vec(cout);
        let var: Vec<f32> = g.vec(cout).iter().map(|v| v.abs() + 0.1).collect();
        let eps = 1e-3;
        for act in [Act::None, Act::Relu, Act::Relu6, Act::Leaky(0.1)] {
            let ep = Epilogue::batch_norm(&gamma, &beta, &mean, &var, eps, act);
            let got = conv2d(&x, &f, 1, Padding::Same, &ep);
            let want: Vec<f32> = raw
                .data
                .iter()
                .enumerate()
                .map(|(i, y)| {
                    let c = i % cout;
                    let v = (y - mean[c]) / (var[c] + eps).sqrt() * gamma[c] + beta[c];
                    match act {
                        Act::None => v,
                        Act::Relu => v.max(0.0),
                        Act::Relu6 => v.clamp(0.0, 6.0),
                        Act::Leaky(a) => {
                            if v < 0.0 {
                                a * v
                            } else {
                                v
                            }
                        }
                    }
                })
                .collect();
            assert_close(&got.data, &want, 1e-5);
        }
        let bias = g.vec(cout);
        let got = conv2d(&x, &f, 1, Padding::Same, &Epilogue::bias(bias.clone(), Act::Relu6));
        let want: Vec<f32> = raw
            .data
            .iter()
            .enumerate()
            .map(|(i, y)| (y + bias[i % cout]).clamp(0.0, 6.0))
            .collect();
        assert_close(&got.data, &want, 1e-6);
        assert!(want.contains(&6.0) && want.contains(&0.0), "the clamp was exercised");
    }

    #[test]
    fn depthwise_matches_direct_loops() {
        let mut g = Lcg(3);
        let pool = pool();
        for (h, w, c, stride, pad) in [
            (9, 7, 5, 1, Padding::Same),
            (9, 7, 5, 2, Padding::Same),
            (8, 8, 32, 2, Padding::Same),
            (3, 4, 64, 1, Padding::Explicit(1)),
            (2, 2, 3, 2, Padding::Same),
            (6, 6, 7, 1, Padding::Valid),
        ] {
            let x = Fmap { h, w, c, data: g.vec(h * w * c) };
            let taps = g.vec(9 * c);
            let f = DepthwiseFilter::from_hwc1(&taps, c).unwrap();
            let got = pool.install(|| depthwise3x3(&x, &f, stride, pad, &Epilogue::none()));
            let (oh, pt) = out_len(h, 3, stride, pad).unwrap();
            let (ow, pl) = out_len(w, 3, stride, pad).unwrap();
            // A depthwise conv is a full conv whose filter is zero off the diagonal.
            let mut full = vec![0f32; 9 * c * c];
            for t in 0..9 {
                for ch in 0..c {
                    full[(t * c + ch) * c + ch] = taps[t * c + ch];
                }
            }
            let want = naive_conv(&x, &full, 3, 3, c, stride, oh, ow, pt, pl);
            assert_eq!((got.h, got.w, got.c), (oh, ow, c));
            assert_close(&got.data, &want.data, 1e-5);
        }
    }

    #[test]
    fn max_pool_ignores_padding() {
        let mut g = Lcg(5);
        let x = Fmap { h: 7, w: 5, c: 3, data: g.vec(7 * 5 * 3).iter().map(|v| v - 2.0).collect() };
        for (k, s) in [(2, 2), (2, 1), (3, 2)] {
            let got = max_pool(&x, k, s, Padding::Same);
            let (oh, pt) = out_len(7, k, s, Padding::Same).unwrap();
            let (ow, pl) = out_len(5, k, s, Padding::Same).unwrap();
            assert_eq!((got.h, got.w), (oh, ow));
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..3 {
                        let mut m = f32::NEG_INFINITY;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - pt as isize;
                                let ix = (ox * s + kx) as isize - pl as isize;
                                if iy >= 0 && ix >= 0 && iy < 7 && ix < 5 {
                                    m = m.max(x.at(iy as usize, ix as usize, ch));
                                }
                            }
                        }
                        assert_eq!(got.at(oy, ox, ch), m);
                        // All inputs are negative: a zero pad would have won.
                        assert!(m < 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn letterbox_pads_bottom_right_and_resizes_like_tensorflow() {
        // A 4 x 2 (w x h) image into 8 x 8: the square is 4 x 4 with rows 2..4 black; the
        // ratio is 0.5, so output pixel (y, x) samples (y / 2, x / 2).
        let (w, h) = (4usize, 2usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 10) as u8).collect();
        let got = letterbox(&data, w, h, 8, [1.0; 3], [0.0; 3]);
        let src = |y: usize, x: usize, c: usize| -> f32 {
            if y < h && x < w {
                data[(y * w + x) * 3 + c] as f32
            } else {
                0.0
            }
        };
        for oy in 0..8 {
            for ox in 0..8 {
                for c in 0..3 {
                    let (sy, sx) = (oy as f32 * 0.5, ox as f32 * 0.5);
                    let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                    let (y1, x1) = ((sy.ceil() as usize).min(3), (sx.ceil() as usize).min(3));
                    let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
                    let top = src(y0, x0, c) + (src(y0, x1, c) - src(y0, x0, c)) * fx;
                    let bot = src(y1, x0, c) + (src(y1, x1, c) - src(y1, x0, c)) * fx;
                    let want = top + (bot - top) * fy;
                    assert!((got.at(oy, ox, c) - want).abs() < 1e-4, "({oy},{ox},{c})");
                }
            }
        }
        assert_eq!(got.at(0, 0, 0), 0.0);
        assert_eq!(got.at(2, 2, 1), data[(w + 1) * 3 + 1] as f32);
        assert_eq!(got.at(7, 3, 0), 0.0, "the padding is black");
        // Normalisation applies after the resize, padding included (face-api: 0 -> -1).
        let norm = letterbox(&data, w, h, 8, [1.0 / 127.5; 3], [-1.0; 3]);
        assert_eq!(norm.at(7, 7, 2), -1.0);
        assert_eq!(letterbox_dims(640, 480, 512), (512, 384));
        assert_eq!(letterbox_dims(3, 7, 416), (178, 416));
    }
}

//! face-api's 68-point landmark net (`FaceLandmark68Net`, weights `face_landmark_68_model`).
//!
//! Layer order from face-api's `src/faceFeatureExtractor` and `src/faceLandmarkNet`:
//! - input: the face box cut out of the photo (clipped to the photo, floored), padded with black
//!   to a square (centred: `padToSquare(x, true)` puts `round(d / 2)` after and the rest
//!   before), resized bilinearly to 112x112 (tf `resizeBilinear`, no corner alignment, no
//!   half-pixel centres), minus the RGB mean (122.782, 117.001, 104.298), divided by 255;
//! - four dense blocks (32, 64, 128, 256 channels), each halving the size: `out1 =
//!   relu(conv0(x))` (a 3x3/2 conv with bias in the first block, a depthwise-separable 3x3/2
//!   conv elsewhere), then `out2 = sep(out1)`, `out3 = sep(relu(out1 + out2))`, `out4 =
//!   sep(relu(out1 + out2 + out3))`, the block's output `relu(out1 + out2 + out3 + out4)`;
//!   every conv has TensorFlow's SAME padding (at stride 2 on an even size: one pixel after);
//! - a 7x7/2 VALID average pool (the 7x7 map's mean) and a fully connected 256 -> 136 layer:
//!   68 (x, y) pairs in 0..1 of the padded square.
//!
//! The net is small (about 45 M multiply-adds per face); it runs on the calling thread (the
//! plugin's pool), on plain `f32` slices, with the shared kernels of [`super::ops`].

use bkg_abi::Error;

use crate::image_io::Rgb;
use crate::tfjs::Weights;

use super::ops;

/// The net's input side.
pub const INPUT_SIZE: usize = 112;
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// A 3x3 conv with bias (HWIO: `[ky][kx][ci][co]`).
struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
}

/// A depthwise-separable conv: depthwise 3x3 (`[ky][kx][c]`), pointwise 1x1 (`[ci][co]`), bias.
struct Separable {
    dw: Vec<f32>,
    pw: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
}

enum First {
    Conv(Conv),
    Separable(Separable),
}

struct DenseBlock {
    conv0: First,
    rest: [Separable; 3],
}

/// The loaded landmark net.
pub struct Landmarks {
    blocks: Vec<DenseBlock>,
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
}

/// A feature map, HWC.
struct Map {
    h: usize,
    w: usize,
    c: usize,
    data: Vec<f32>,
}

fn separable(w: &Weights, prefix: &str, cin: usize, cout: usize) -> Result<Separable, Error> {
    Ok(Separable {
        dw: w.raw_shaped(&format!("{prefix}/depthwise_filter"), &[3, 3, cin, 1])?.data.clone(),
        pw: w.raw_shaped(&format!("{prefix}/pointwise_filter"), &[1, 1, cin, cout])?.data.clone(),
        b: w.raw_shaped(&format!("{prefix}/bias"), &[cout])?.data.clone(),
        cin,
        cout,
    })
}

impl Landmarks {
    /// Build the net from `face_landmark_68_model`'s weights; errors name a missing or
    /// misshapen tensor.
    pub fn load(w: &Weights) -> Result<Landmarks, Error> {
        let mut blocks = Vec::new();
        let mut cin = 3;
        for (i, cout) in [32usize, 64, 128, 256].into_iter().enumerate() {
            let p = format!("dense{i}");
            let conv0 = if i == 0 {
                First::Conv(Conv {
                    w: w.raw_shaped(&format!("{p}/conv0/filters"), &[3, 3, cin, cout])?
                        .data
                        .clone(),
                    b: w.raw_shaped(&format!("{p}/conv0/bias"), &[cout])?.data.clone(),
                    cin,
                    cout,
                })
            } else {
                First::Separable(separable(w, &format!("{p}/conv0"), cin, cout)?)
            };
            let rest = [
                separable(w, &format!("{p}/conv1"), cout, cout)?,
                separable(w, &format!("{p}/conv2"), cout, cout)?,
                separable(w, &format!("{p}/conv3"), cout, cout)?,
            ];
            blocks.push(DenseBlock { conv0, rest });
            cin = cout;
        }
        Ok(Landmarks {
            blocks,
            fc_w: w.raw_shaped("fc/weights", &[256, 136])?.data.clone(),
            fc_b: w.raw_shaped("fc/bias", &[136])?.data.clone(),
        })
    }

    /// The 68 landmarks (image pixels) of the face in the box `(x, y, w, h)` (image pixels).
    /// A box that leaves no pixel of the photo is refused.
    pub fn landmarks_in(
        &self,
        img: &Rgb,
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    ) -> Result<[[f32; 2]; 68], Error> {
        let (iw, ih) = (img.width as usize, img.height as usize);
        // face-api's `clipAtImageBorders` then `floor`.
        let cx = x.max(0.0);
        let cy = y.max(0.0);
        let cw = (x + w - cx).min(iw as f32 - cx);
        let ch = (y + h - cy).min(ih as f32 - cy);
        if !(cw.is_finite() && ch.is_finite() && cx.is_finite() && cy.is_finite()) {
            return Err(Error::bad_request("face box is not finite"));
        }
        let (bx, by, bw, bh) = (cx.floor() as usize, cy.floor() as usize, cw.floor(), ch.floor());
        if bw < 1.0 || bh < 1.0 || bx >= iw || by >= ih {
            return Err(Error::bad_request(format!(
                "face box ({x}, {y}, {w}, {h}) has no pixel inside the {iw}x{ih} image"
            )));
        }
        let (bw, bh) = ((bw as usize).min(iw - bx), (bh as usize).min(ih - by));
        let input = preprocess(img, bx, by, bw, bh);
        let out = self.forward(input);
        // Undo the padding: the net answers in 0..1 of the padded square of side `s`.
        let s = bw.max(bh) as f32;
        let (pad_x, pad_y) = ((s - bw as f32) / 2.0, (s - bh as f32) / 2.0);
        let mut lm = [[0f32; 2]; 68];
        for (k, p) in lm.iter_mut().enumerate() {
            p[0] = bx as f32 + out[2 * k] * s - pad_x;
            p[1] = by as f32 + out[2 * k + 1] * s - pad_y;
        }
        Ok(lm)
    }

    /// The raw 136 outputs for a 112x112x3 normalised input (HWC).
    fn forward(&self, input: Map) -> Vec<f32> {
        let mut x = input;
        for block in &self.blocks {
            x = dense_block(&x, block);
        }
        // 7x7/2 VALID average pool on a 7x7 map: the mean over positions.
        let n = (x.h * x.w) as f32;
        let mut pooled = vec![0f32; x.c];
        for px in x.data.chunks_exact(x.c) {
            for (a, v) in pooled.iter_mut().zip(px) {
                *a += v;
            }
        }
        pooled.iter_mut().for_each(|v| *v /= n);
        let mut out = self.fc_b.clone();
        ops::matmul_acc(&pooled, &self.fc_w, &mut out, 1, pooled.len(), out.len());
        out
    }
}

/// Cut, pad to a centred square, resize to 112 (tf bilinear), normalise.
fn preprocess(img: &Rgb, bx: usize, by: usize, bw: usize, bh: usize) -> Map {
    let iw = img.width as usize;
    let s = bw.max(bh);
    let d = s - bw.min(bh);
    // padToSquare(centre): round(d / 2) (JS rounds .5 up) after, the rest before.
    let before = d - (d + 1) / 2;
    let (pad_l, pad_t) = if bw < bh { (before, 0) } else { (0, before) };
    let sample = |sx: usize, sy: usize, c: usize| -> f32 {
        // (sx, sy) in the padded square.
        if sx < pad_l || sy < pad_t || sx - pad_l >= bw || sy - pad_t >= bh {
            return 0.0;
        }
        let (x, y) = (bx + sx - pad_l, by + sy - pad_t);
        img.data[(y * iw + x) * 3 + c] as f32
    };
    let n = INPUT_SIZE;
    let mut data = vec![0f32; n * n * 3];
    let ratio = s as f32 / n as f32;
    for oy in 0..n {
        let fy = oy as f32 * ratio;
        let y0 = (fy.floor() as usize).min(s - 1);
        let y1 = (y0 + 1).min(s - 1);
        let dy = fy - y0 as f32;
        for ox in 0..n {
            let fx = ox as f32 * ratio;
            let x0 = (fx.floor() as usize).min(s - 1);
            let x1 = (x0 + 1).min(s - 1);
            let dx = fx - x0 as f32;
            for c in 0..3 {
                let top = sample(x0, y0, c) + (sample(x1, y0, c) - sample(x0, y0, c)) * dx;
                let bottom = sample(x0, y1, c) + (sample(x1, y1, c) - sample(x0, y1, c)) * dx;
                let v = top + (bottom - top) * dy;
                data[(oy * n + ox) * 3 + c] = (v - MEAN_RGB[c]) / 255.0;
            }
        }
    }
    Map { h: n, w: n, c: 3, data }
}

fn relu_sum(parts: &[&Map]) -> Map {
    let first = parts[0];
    let mut data = first.data.clone();
    for p in &parts[1..] {
        for (a, b) in data.iter_mut().zip(&p.data) {
            *a += b;
        }
    }
    data.iter_mut().for_each(|v| *v = v.max(0.0));
    Map { h: first.h, w: first.w, c: first.c, data }
}

fn dense_block(x: &Map, block: &DenseBlock) -> Map {
    let mut out1 = match &block.conv0 {
        First::Conv(c) => conv3x3(x, c, 2),
        First::Separable(s) => sep_conv(x, s, 2),
    };
    out1.data.iter_mut().for_each(|v| *v = v.max(0.0));
    let out2 = sep_conv(&out1, &block.rest[0], 1);
    let in3 = relu_sum(&[&out1, &out2]);
    let out3 = sep_conv(&in3, &block.rest[1], 1);
    let in4 = relu_sum(&[&out1, &out2, &out3]);
    let out4 = sep_conv(&in4, &block.rest[2], 1);
    relu_sum(&[&out1, &out2, &out3, &out4])
}

/// TensorFlow SAME padding for a 3x3 kernel: (output size, padding before).
fn same(n: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + 3).saturating_sub(n);
    (out, total / 2)
}

/// A dense 3x3 conv with bias, SAME padding.
fn conv3x3(x: &Map, c: &Conv, stride: usize) -> Map {
    debug_assert_eq!(x.c, c.cin);
    let (oh, pt) = same(x.h, stride);
    let (ow, pl) = same(x.w, stride);
    let mut data = vec![0f32; oh * ow * c.cout];
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut data[(oy * ow + ox) * c.cout..(oy * ow + ox + 1) * c.cout];
            o.copy_from_slice(&c.b);
            for ky in 0..3 {
                let Some(iy) = (oy * stride + ky).checked_sub(pt).filter(|&v| v < x.h) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = (ox * stride + kx).checked_sub(pl).filter(|&v| v < x.w) else {
                        continue;
                    };
                    let px = &x.data[(iy * x.w + ix) * x.c..(iy * x.w + ix + 1) * x.c];
                    for (ci, &v) in px.iter().enumerate() {
                        let wrow = &c.w[((ky * 3 + kx) * c.cin + ci) * c.cout..][..c.cout];
                        for (a, &w) in o.iter_mut().zip(wrow) {
                            *a += v * w;
                        }
                    }
                }
            }
        }
    }
    Map { h: oh, w: ow, c: c.cout, data }
}

/// Depthwise 3x3 (SAME) then pointwise 1x1, plus bias (TensorFlow's `separableConv2d`).
fn sep_conv(x: &Map, s: &Separable, stride: usize) -> Map {
    debug_assert_eq!(x.c, s.cin);
    let (oh, pt) = same(x.h, stride);
    let (ow, pl) = same(x.w, stride);
    let c = x.c;
    let mut dw = vec![0f32; oh * ow * c];
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut dw[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            for ky in 0..3 {
                let Some(iy) = (oy * stride + ky).checked_sub(pt).filter(|&v| v < x.h) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = (ox * stride + kx).checked_sub(pl).filter(|&v| v < x.w) else {
                        continue;
                    };
                    let px = &x.data[(iy * x.w + ix) * c..(iy * x.w + ix + 1) * c];
                    let k = &s.dw[(ky * 3 + kx) * c..(ky * 3 + kx + 1) * c];
                    for ((a, &v), &w) in o.iter_mut().zip(px).zip(k) {
                        *a += v * w;
                    }
                }
            }
        }
    }
    let positions = oh * ow;
    let mut data = Vec::with_capacity(positions * s.cout);
    for _ in 0..positions {
        data.extend_from_slice(&s.b);
    }
    ops::matmul_acc(&dw, &s.pw, &mut data, positions, c, s.cout);
    Map { h: oh, w: ow, c: s.cout, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 112 -> 56 at stride 2: one pixel of padding, after (none before).
        assert_eq!(same(112, 2), (56, 0));
        // 7 at stride 2 -> 4, one before and one after.
        assert_eq!(same(7, 2), (4, 1));
        assert_eq!(same(56, 1), (56, 1));
    }

    #[test]
    fn preprocess_pads_a_tall_box_on_both_sides() {
        // A 3x5 white box: padded to 5x5 with one black column before and one after.
        let (w, h) = (10usize, 10usize);
        let img = Rgb { width: w as _, height: h as _, data: vec![255u8; w * h * 3] };
        let m = preprocess(&img, 2, 2, 3, 5);
        let at = |x: usize, y: usize| m.data[(y * INPUT_SIZE + x) * 3];
        let black = (0.0 - MEAN_RGB[0]) / 255.0;
        let white = (255.0 - MEAN_RGB[0]) / 255.0;
        assert!((at(0, 50) - black).abs() < 1e-6, "left column padded");
        assert!((at(56, 50) - white).abs() < 1e-6, "centre from the box");
        assert!((at(111, 50) - black).abs() < 1e-6, "right column padded");
    }
}

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

use super::ops::{self, Act, ConvFilter, DepthwiseFilter, Epilogue, Fmap, Padding};

/// The net's input side.
pub const INPUT_SIZE: usize = 112;
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// A depthwise-separable conv: depthwise 3x3, pointwise 1x1, bias.
struct Separable {
    dw: DepthwiseFilter,
    pw: ConvFilter,
    bias: Vec<f32>,
}

impl Separable {
    fn run(&self, x: &Fmap, stride: usize, act: Act) -> Fmap {
        let d = ops::depthwise3x3(x, &self.dw, stride, Padding::Same, &Epilogue::none());
        ops::conv2d(&d, &self.pw, 1, Padding::Same, &Epilogue::bias(self.bias.clone(), act))
    }
}

enum First {
    Conv(ConvFilter, Vec<f32>),
    Separable(Separable),
}

struct DenseBlock {
    conv0: First,
    rest: [Separable; 3],
}

/// The loaded landmark net.
pub struct Landmarks {
    blocks: Vec<DenseBlock>,
    fc: ConvFilter,
    fc_bias: Vec<f32>,
}

fn filter(w: &Weights, name: &str, shape: [usize; 4]) -> Result<ConvFilter, Error> {
    let t = w.raw_shaped(name, &shape)?;
    ConvFilter::from_hwio(&t.data, shape)
        .ok_or_else(|| Error::internal(format!("face_landmark_68_model: {name}: bad filter")))
}

fn bias(w: &Weights, name: &str, n: usize) -> Result<Vec<f32>, Error> {
    Ok(w.raw_shaped(name, &[n])?.data.clone())
}

fn separable(w: &Weights, prefix: &str, cin: usize, cout: usize) -> Result<Separable, Error> {
    let name = format!("{prefix}/depthwise_filter");
    let dw = DepthwiseFilter::from_hwc1(&w.raw_shaped(&name, &[3, 3, cin, 1])?.data, cin)
        .ok_or_else(|| Error::internal(format!("face_landmark_68_model: {name}: bad filter")))?;
    Ok(Separable {
        dw,
        pw: filter(w, &format!("{prefix}/pointwise_filter"), [1, 1, cin, cout])?,
        bias: bias(w, &format!("{prefix}/bias"), cout)?,
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
                First::Conv(
                    filter(w, &format!("{p}/conv0/filters"), [3, 3, cin, cout])?,
                    bias(w, &format!("{p}/conv0/bias"), cout)?,
                )
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
            fc: ConvFilter::from_hwio(
                &w.raw_shaped("fc/weights", &[256, 136])?.data,
                [1, 1, 256, 136],
            )
            .ok_or_else(|| Error::internal("face_landmark_68_model: fc/weights: bad matrix"))?,
            fc_bias: bias(w, "fc/bias", 136)?,
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
        if !(x.is_finite() && y.is_finite() && w.is_finite() && h.is_finite()) {
            return Err(Error::bad_request("face box is not finite"));
        }
        // face-api's `clipAtImageBorders`, then `floor`.
        let cx = x.max(0.0);
        let cy = y.max(0.0);
        let cw = (x + w - cx).min(iw as f32 - cx).floor();
        let ch = (y + h - cy).min(ih as f32 - cy).floor();
        let (bx, by) = (cx.floor() as usize, cy.floor() as usize);
        if x + w <= 0.0 || y + h <= 0.0 || bx >= iw || by >= ih || w < 0.0 || h < 0.0 {
            return Err(Error::bad_request(format!(
                "face box ({x}, {y}, {w}, {h}) has no pixel inside the {iw}x{ih} image"
            )));
        }
        // A sliver under a pixel wide (a detector box at the border) still gets one pixel.
        let (bw, bh) = ((cw.max(1.0) as usize).min(iw - bx), (ch.max(1.0) as usize).min(ih - by));
        let out = self.forward(&preprocess(img, bx, by, bw, bh));
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

    /// The raw 136 outputs for a 112x112x3 normalised input.
    fn forward(&self, input: &Fmap) -> Vec<f32> {
        let mut x = dense_block(input, &self.blocks[0]);
        for block in &self.blocks[1..] {
            x = dense_block(&x, block);
        }
        // 7x7/2 VALID average pool on the 7x7 map: the mean over positions.
        let n = (x.h * x.w) as f32;
        let mut pooled = Fmap::zeros(1, 1, x.c);
        for px in x.data.chunks_exact(x.c) {
            for (a, v) in pooled.data.iter_mut().zip(px) {
                *a += v;
            }
        }
        pooled.data.iter_mut().for_each(|v| *v /= n);
        let ep = Epilogue::bias(self.fc_bias.clone(), Act::None);
        ops::conv2d(&pooled, &self.fc, 1, Padding::Valid, &ep).data
    }
}

/// Cut, pad to a centred square, resize to 112 (tf bilinear), normalise.
fn preprocess(img: &Rgb, bx: usize, by: usize, bw: usize, bh: usize) -> Fmap {
    let iw = img.width as usize;
    let s = bw.max(bh);
    let d = s - bw.min(bh);
    // padToSquare(centre): round(d / 2) (JS rounds .5 up) after, the rest before.
    let before = d - d.div_ceil(2);
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
    let mut out = Fmap::zeros(n, n, 3);
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
            for (c, mean) in MEAN_RGB.iter().enumerate() {
                let top = sample(x0, y0, c) + (sample(x1, y0, c) - sample(x0, y0, c)) * dx;
                let bottom = sample(x0, y1, c) + (sample(x1, y1, c) - sample(x0, y1, c)) * dx;
                let v = top + (bottom - top) * dy;
                out.data[(oy * n + ox) * 3 + c] = (v - mean) / 255.0;
            }
        }
    }
    out
}

fn relu_sum(parts: &[&Fmap]) -> Fmap {
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (a, b) in out.data.iter_mut().zip(&p.data) {
            *a += b;
        }
    }
    out.data.iter_mut().for_each(|v| *v = v.max(0.0));
    out
}

fn dense_block(x: &Fmap, block: &DenseBlock) -> Fmap {
    let out1 = match &block.conv0 {
        First::Conv(f, b) => {
            ops::conv2d(x, f, 2, Padding::Same, &Epilogue::bias(b.clone(), Act::Relu))
        }
        First::Separable(s) => s.run(x, 2, Act::Relu),
    };
    let out2 = block.rest[0].run(&out1, 1, Act::None);
    let in3 = relu_sum(&[&out1, &out2]);
    let out3 = block.rest[1].run(&in3, 1, Act::None);
    let in4 = relu_sum(&[&out1, &out2, &out3]);
    let out4 = block.rest[2].run(&in4, 1, Act::None);
    relu_sum(&[&out1, &out2, &out3, &out4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelName, FACE_API_DIR};

    /// face-api's own landmarks for face_recognition's portraits, on its own SSD boxes
    /// (`scripts/face-api-landmarks-reference.mjs`): given the same boxes, the port lands on the
    /// same points. face-api shifts the points by the unfloored box while it crops at the
    /// floored one (this port shifts by the crop it used, under a pixel apart): the test takes
    /// that difference out. What is left comes from the JPEG decoders (jpeg-js there, `image`
    /// here) and float rounding.
    #[test]
    fn landmarks_match_face_api_on_its_boxes() {
        let models = crate::default_models_dir();
        let dir = models.join(FACE_API_DIR);
        let w = Weights::open(&dir, ModelName::Landmarks.file_stem())
            .unwrap_or_else(|e| panic!("{e}: run `bash scripts/fetch-models.sh` first"));
        let net = Landmarks::load(&w).unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../host/tests/fixtures/face-landmarks-reference.json");
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (name, image) in reference["images"].as_object().unwrap() {
            let path = models.join("test-images/face_recognition").join(name);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (scripts/fetch-models.sh)", path.display()));
            let img = crate::image_io::decode(&bytes, None, 40_000_000).unwrap();
            let face = &image["faces"][0];
            let b = |k: &str| face["box"][k].as_f64().unwrap() as f32;
            let lm =
                pool.install(|| net.landmarks_in(&img, b("x"), b("y"), b("w"), b("h"))).unwrap();
            let want = face["landmarks"].as_array().unwrap();
            assert_eq!(want.len(), 68);
            let errors: Vec<f32> = lm
                .iter()
                .zip(want)
                .map(|(p, q)| {
                    // face-api's points, shifted by the crop's (floored) corner as here.
                    let qx = q[0].as_f64().unwrap() as f32 - b("x").fract();
                    let qy = q[1].as_f64().unwrap() as f32 - b("y").fract();
                    ((p[0] - qx).powi(2) + (p[1] - qy).powi(2)).sqrt()
                })
                .collect();
            let mean = errors.iter().sum::<f32>() / 68.0;
            let max = errors.iter().cloned().fold(0.0, f32::max);
            eprintln!(
                "{name}: landmarks off face-api's by {mean:.3} px on average, {max:.3} at most"
            );
            assert!(mean < 0.3 && max < 1.0, "{name}: mean {mean} px, max {max} px");
        }
    }

    #[test]
    fn landmarks_in_refuses_boxes_outside_the_image_and_takes_slivers_at_its_border() {
        let dir = crate::default_models_dir().join(FACE_API_DIR);
        let w = Weights::open(&dir, ModelName::Landmarks.file_stem())
            .unwrap_or_else(|e| panic!("{e}: run `bash scripts/fetch-models.sh` first"));
        let net = Landmarks::load(&w).unwrap();
        let img = Rgb { width: 40, height: 30, data: vec![128u8; 40 * 30 * 3] };
        for (x, y, bw, bh) in
            [(40.0, 0.0, 5.0, 5.0), (-10.0, 0.0, 9.0, 5.0), (0.0, 0.0, f32::NAN, 1.0)]
        {
            let e = net.landmarks_in(&img, x, y, bw, bh).unwrap_err();
            assert_eq!(e.kind, bkg_abi::ErrorKind::BAD_REQUEST, "{e}");
        }
        // A zero-width box on the right border, half a pixel inside.
        let lm = net.landmarks_in(&img, 39.5, 3.0, 0.0, 20.0).unwrap();
        assert!(lm.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
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

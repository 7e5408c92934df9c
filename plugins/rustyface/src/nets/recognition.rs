//! face-api's face recognition net: a port of dlib's ResNet-34 face descriptor
//! (`src/faceRecognitionNet/` in `@vladmandic/face-api`), 150x150 RGB in, 128 floats out.
//!
//! The graph, as face-api runs it (all convs: `conv + bias`, then a per-channel scale layer
//! `* weights + biases`, then ReLU unless said otherwise):
//!
//! - input: `(rgb - (122.782, 117.001, 104.298)) / 255`;
//! - `conv32_down`: 7x7 stride 2 VALID (150 -> 72), then max pool 3x3 stride 2 VALID (-> 35);
//! - `residual` x3 at 32 channels: `relu(convNoRelu(conv(x)) + x)`, 3x3 stride 1 SAME;
//! - `residualDown` to 64 (35 -> 17), `residual` x3; down to 128 (-> 8), x2; down to 256
//!   (-> 3, padded to 4), x2; `conv256_down_out` (-> 1, padded to 2). A down block is
//!   `relu(convNoRelu(convDown(x)) + pad_channels(avgPool2x2(x)))`, its first conv 3x3 stride 2
//!   VALID; where the conv's output is smaller than the pool's, it gets a row and a column of
//!   zeros at the bottom/right (face-api's `isAdjustShape`), and the pooled input gets zero
//!   channels up to the new width;
//! - the mean over the spatial positions, then `fc` (256 x 128).
//!
//! The kernels are `nets::ops` (the plugin's own, run on the plugin's pool): no candle op, so
//! candle's barrier pool is never started.

use bkg_abi::Error;

use crate::image_io::Rgb;
use crate::nets::ops::{conv2d, max_pool, Act, ConvFilter, Epilogue, Fmap, Padding};
use crate::tfjs::Weights;

/// The chip side the network takes.
pub const CHIP: u32 = 150;
/// face-api's mean RGB.
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// A conv with its folded epilogue: `act((conv(x) + bias) * sw + sb)`.
struct Conv {
    filter: ConvFilter,
    relu: Epilogue,
    plain: Epilogue,
}

impl Conv {
    fn load(w: &Weights, prefix: &str, cin: usize, cout: usize, k: usize) -> Result<Conv, Error> {
        let filters = w.raw_shaped(&format!("{prefix}/conv/filters"), &[k, k, cin, cout])?;
        let bias = &w.raw_shaped(&format!("{prefix}/conv/bias"), &[cout])?.data;
        let sw = &w.raw_shaped(&format!("{prefix}/scale/weights"), &[cout])?.data;
        let sb = &w.raw_shaped(&format!("{prefix}/scale/biases"), &[cout])?.data;
        let filter = ConvFilter::from_hwio(&filters.data, [k, k, cin, cout]).ok_or_else(|| {
            Error::internal(format!("{}: bad filter {prefix}", w.manifest.display()))
        })?;
        let shift: Vec<f32> = bias.iter().zip(sw).zip(sb).map(|((b, s), c)| b * s + c).collect();
        let epilogue = |act| Epilogue { scale: Some(sw.clone()), shift: Some(shift.clone()), act };
        Ok(Conv { filter, relu: epilogue(Act::Relu), plain: epilogue(Act::None) })
    }
}

struct Block {
    conv1: Conv,
    conv2: Conv,
    down: bool,
}

impl Block {
    fn load(
        w: &Weights,
        prefix: &str,
        cin: usize,
        cout: usize,
        down: bool,
    ) -> Result<Block, Error> {
        Ok(Block {
            conv1: Conv::load(w, &format!("{prefix}/conv1"), cin, cout, 3)?,
            conv2: Conv::load(w, &format!("{prefix}/conv2"), cout, cout, 3)?,
            down,
        })
    }

    fn forward(&self, x: &Fmap) -> Fmap {
        if !self.down {
            let h = conv2d(x, &self.conv1.filter, 1, Padding::Same, &self.conv1.relu);
            let mut out = conv2d(&h, &self.conv2.filter, 1, Padding::Same, &self.conv2.plain);
            for (o, i) in out.data.iter_mut().zip(&x.data) {
                *o = (*o + i).max(0.0);
            }
            return out;
        }
        let h = conv2d(x, &self.conv1.filter, 2, Padding::Valid, &self.conv1.relu);
        let out = conv2d(&h, &self.conv2.filter, 1, Padding::Same, &self.conv2.plain);
        let pooled = avg_pool2(x);
        // The conv's output, zero-padded at the bottom/right to the pool's size, plus the pool
        // zero-padded in channels.
        let mut sum = Fmap::zeros(pooled.h, pooled.w, out.c);
        for y in 0..sum.h {
            for xx in 0..sum.w {
                let at = (y * sum.w + xx) * sum.c;
                let px = &mut sum.data[at..at + sum.c];
                if y < out.h && xx < out.w {
                    let src = (y * out.w + xx) * out.c;
                    px.copy_from_slice(&out.data[src..src + out.c]);
                }
                let src = (y * pooled.w + xx) * pooled.c;
                for (o, p) in px.iter_mut().zip(&pooled.data[src..src + pooled.c]) {
                    *o += p;
                }
                for o in px.iter_mut() {
                    *o = o.max(0.0);
                }
            }
        }
        sum
    }
}

/// 2x2 average pooling, stride 2, VALID.
fn avg_pool2(x: &Fmap) -> Fmap {
    let (oh, ow) = (x.h / 2, x.w / 2);
    let mut out = Fmap::zeros(oh, ow, x.c);
    for y in 0..oh {
        for xx in 0..ow {
            let o = (y * ow + xx) * x.c;
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = ((2 * y + dy) * x.w + 2 * xx + dx) * x.c;
                for c in 0..x.c {
                    out.data[o + c] += x.data[i + c] * 0.25;
                }
            }
        }
    }
    out
}

/// The loaded network.
pub struct Recognizer {
    stem: Conv,
    blocks: Vec<Block>,
    /// `fc`, 256 x 128 (row-major: input channel, descriptor element).
    fc: Vec<f32>,
}

impl Recognizer {
    /// Build from `face_recognition_model`'s weights, checking every tensor's shape.
    pub fn load(w: &Weights) -> Result<Recognizer, Error> {
        let stem = Conv::load(w, "conv32_down", 3, 32, 7)?;
        let plan: [(&str, usize, usize, bool); 14] = [
            ("conv32_1", 32, 32, false),
            ("conv32_2", 32, 32, false),
            ("conv32_3", 32, 32, false),
            ("conv64_down", 32, 64, true),
            ("conv64_1", 64, 64, false),
            ("conv64_2", 64, 64, false),
            ("conv64_3", 64, 64, false),
            ("conv128_down", 64, 128, true),
            ("conv128_1", 128, 128, false),
            ("conv128_2", 128, 128, false),
            ("conv256_down", 128, 256, true),
            ("conv256_1", 256, 256, false),
            ("conv256_2", 256, 256, false),
            ("conv256_down_out", 256, 256, true),
        ];
        let blocks = plan
            .iter()
            .map(|&(name, cin, cout, down)| Block::load(w, name, cin, cout, down))
            .collect::<Result<Vec<_>, _>>()?;
        let fc = w.raw_shaped("fc", &[256, 128])?.data.clone();
        Ok(Recognizer { stem, blocks, fc })
    }

    /// The 128-d descriptor of an aligned `150x150` face chip. Runs its kernels on the current
    /// rayon pool: call it inside the plugin's pool.
    pub fn descriptor(&self, chip: &Rgb) -> Result<[f32; 128], Error> {
        if chip.width != CHIP || chip.height != CHIP {
            return Err(Error::bad_request(format!(
                "an aligned face chip is {CHIP}x{CHIP} pixels, this image is {}x{}",
                chip.width, chip.height
            )));
        }
        let mut x = Fmap::zeros(CHIP as usize, CHIP as usize, 3);
        for (o, px) in x.data.chunks_exact_mut(3).zip(chip.data.chunks_exact(3)) {
            for c in 0..3 {
                o[c] = (px[c] as f32 - MEAN_RGB[c]) / 255.0;
            }
        }
        let x = conv2d(&x, &self.stem.filter, 2, Padding::Valid, &self.stem.relu);
        let mut x = max_pool(&x, 3, 2, Padding::Valid);
        for b in &self.blocks {
            x = b.forward(&x);
        }
        let n = (x.h * x.w) as f32;
        let mut mean = [0f32; 256];
        for px in x.data.chunks_exact(x.c) {
            for (m, v) in mean.iter_mut().zip(px) {
                *m += v / n;
            }
        }
        let mut out = [0f32; 128];
        for (m, row) in mean.iter().zip(self.fc.chunks_exact(128)) {
            for (o, w) in out.iter_mut().zip(row) {
                *o += m * w;
            }
        }
        Ok(out)
    }
}

/// Euclidean distance between two descriptors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelName, FACE_API_DIR};

    fn weights() -> Option<Weights> {
        let dir = crate::default_models_dir().join(FACE_API_DIR);
        if !dir.join("face_recognition_model.bin").is_file() {
            eprintln!("skipped: no face-api weights (scripts/fetch-models.sh)");
            return None;
        }
        Some(Weights::open(&dir, ModelName::Recognition.file_stem()).unwrap())
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap()
    }

    /// Keep in step with `chipPixel` in scripts/face-api-reference.mjs.
    fn chip_pixel(k: u32, x: u32, y: u32) -> [u8; 3] {
        if k == 2 {
            let (xi, yi) = (x as i32, y as i32);
            let d = (xi - 75) * (xi - 75) + (yi - 80) * (yi - 80);
            let eye = (xi - 52) * (xi - 52) + (yi - 62) * (yi - 62) < 64
                || (xi - 98) * (xi - 98) + (yi - 62) * (yi - 62) < 64;
            let mouth = (108..=112).contains(&y) && (55..=95).contains(&x);
            if eye || mouth {
                return [40, 25, 20];
            }
            if d < 55 * 55 {
                return [(200 - (y >> 2)) as u8, (160 - (y >> 3)) as u8, 130];
            }
            return [110, 110, 115];
        }
        [
            ((x * (3 + k) + y * 2 + 40 * k) % 256) as u8,
            ((x * y / (11 + k) + 13 * k) % 256) as u8,
            (((x ^ (y * (k + 1))) + 7 * k) % 256) as u8,
        ]
    }

    fn pattern_chip(k: u32) -> Rgb {
        let mut data = Vec::with_capacity(150 * 150 * 3);
        for y in 0..CHIP {
            for x in 0..CHIP {
                data.extend_from_slice(&chip_pixel(k, x, y));
            }
        }
        Rgb { width: CHIP, height: CHIP, data }
    }

    #[test]
    fn descriptors_match_face_api_itself() {
        let Some(w) = weights() else { return };
        let net = Recognizer::load(&w).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../host/tests/fixtures/face-recognition-reference.json"
        );
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let chips = reference["chips"].as_array().unwrap();
        assert_eq!(chips.len(), 3);
        let pool = pool();
        let mut ours = Vec::new();
        for c in chips {
            let k = c["pattern"].as_u64().unwrap() as u32;
            let want: Vec<f32> = c["descriptor"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(want.len(), 128);
            let got = pool.install(|| net.descriptor(&pattern_chip(k))).unwrap();
            let d = distance(&got, &want);
            eprintln!("pattern {k}: distance to face-api's descriptor {d:.6}");
            assert!(d < 0.03, "pattern {k}: distance {d} to face-api's descriptor");
            ours.push(got);
        }
        // Different chips give different descriptors (the check above is not vacuous).
        assert!(distance(&ours[0], &ours[2]) > 0.1);
    }

    #[test]
    fn a_chip_of_another_size_is_refused() {
        let Some(w) = weights() else { return };
        let net = Recognizer::load(&w).unwrap();
        let small = Rgb { width: 100, height: 150, data: vec![0; 100 * 150 * 3] };
        let e = net.descriptor(&small).unwrap_err();
        assert!(e.message.contains("150x150") && e.message.contains("100x150"), "{}", e.message);
    }
}

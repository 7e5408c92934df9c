//! Tiny Face Detector (`tiny_face_detector_model`), face-api's fast detector, as face-api's
//! `src/tinyFaceDetector/` + `src/tinyYolov2/` (separable-conv variant) run it:
//!
//! - input: the image padded black at the bottom/right to a square, resized (bilinear) to
//!   `input_size` (416 by default, a multiple of 32), minus the mean RGB (117.001, 114.697,
//!   97.404), divided by 255;
//! - a 3x3 VALID conv (+ bias, leaky ReLU 0.1), then 5 times a 2x2/2 max pool and a separable
//!   conv (zero-pad 1, 3x3 depthwise, 1x1 pointwise, + bias, leaky ReLU), a 2x2/1 max pool, and a
//!   1x1 conv to 5 anchors x (x, y, w, h, score) per cell (13x13 at 416);
//! - YOLOv2 decoding against face-api's 5 anchors, the score is the sigmoid of the 5th number;
//!   then face-api's NMS (IoU 0.4) over every box above the threshold.

use bkg_abi::Error;

use super::ops::{
    conv2d, depthwise3x3, letterbox, letterbox_dims, max_pool, sigmoid, Act, ConvFilter,
    DepthwiseFilter, Epilogue, Fmap, Padding,
};
use super::FaceBox;
use crate::image_io::Rgb;
use crate::tfjs::Weights;

/// face-api's default input size.
pub const DEFAULT_INPUT_SIZE: usize = 416;
/// face-api's NMS IoU threshold for this detector.
pub const IOU_THRESHOLD: f32 = 0.4;
/// face-api's anchors (width, height in cells).
const ANCHORS: [(f32, f32); 5] = [
    (1.603231, 2.094468),
    (6.041143, 7.080126),
    (2.882459, 3.518061),
    (4.266906, 5.178857),
    (9.041765, 10.66308),
];
const MEAN_RGB: [f32; 3] = [117.001, 114.697, 97.404];
const LEAKY: f32 = 0.1;
/// Channels of the separable layers conv1..conv5: (in, out).
const SEPARABLE: [(usize, usize); 5] = [(16, 32), (32, 64), (64, 128), (128, 256), (256, 512)];

struct Separable {
    depthwise: DepthwiseFilter,
    pointwise: ConvFilter,
    ep: Epilogue,
}

/// The Tiny Face Detector with its weights.
pub struct Detector {
    conv0: ConvFilter,
    conv0_ep: Epilogue,
    layers: Vec<Separable>,
    head: ConvFilter,
    head_ep: Epilogue,
}

fn filter(w: &Weights, name: &str, shape: [usize; 4]) -> Result<ConvFilter, Error> {
    let t = w.raw_shaped(name, &shape)?;
    ConvFilter::from_hwio(&t.data, shape)
        .ok_or_else(|| Error::internal(format!("tiny: tensor '{name}': bad length")))
}

fn bias(w: &Weights, name: &str, n: usize, act: Act) -> Result<Epilogue, Error> {
    Ok(Epilogue::bias(w.raw_shaped(name, &[n])?.data.clone(), act))
}

impl Detector {
    /// Build the net from `tiny_face_detector_model`'s weights, each tensor checked against the
    /// shape the graph needs.
    pub fn load(w: &Weights) -> Result<Detector, Error> {
        let conv0 = filter(w, "conv0/filters", [3, 3, 3, 16])?;
        let conv0_ep = bias(w, "conv0/bias", 16, Act::Leaky(LEAKY))?;
        let mut layers = Vec::with_capacity(SEPARABLE.len());
        for (i, &(cin, cout)) in SEPARABLE.iter().enumerate() {
            let p = format!("conv{}", i + 1);
            let t = w.raw_shaped(&format!("{p}/depthwise_filter"), &[3, 3, cin, 1])?;
            let depthwise = DepthwiseFilter::from_hwc1(&t.data, cin)
                .ok_or_else(|| Error::internal(format!("tiny: {p}: bad depthwise length")))?;
            let pointwise = filter(w, &format!("{p}/pointwise_filter"), [1, 1, cin, cout])?;
            let ep = bias(w, &format!("{p}/bias"), cout, Act::Leaky(LEAKY))?;
            layers.push(Separable { depthwise, pointwise, ep });
        }
        let head = filter(w, "conv8/filters", [1, 1, 512, 25])?;
        let head_ep = bias(w, "conv8/bias", 25, Act::None)?;
        Ok(Detector { conv0, conv0_ep, layers, head, head_ep })
    }

    /// The raw head output (`cells x cells x 25`) for a normalised square input.
    pub fn forward(&self, x: &Fmap) -> Fmap {
        let mut out = conv2d(x, &self.conv0, 1, Padding::Valid, &self.conv0_ep);
        let none = Epilogue::none();
        // face-api pools (2x2/2) before each separable conv, and once more (2x2/1) after.
        for l in &self.layers {
            out = max_pool(&out, 2, 2, Padding::Same);
            out = depthwise3x3(&out, &l.depthwise, 1, Padding::Explicit(1), &none);
            out = conv2d(&out, &l.pointwise, 1, Padding::Valid, &l.ep);
        }
        out = max_pool(&out, 2, 1, Padding::Same);
        conv2d(&out, &self.head, 1, Padding::Valid, &self.head_ep)
    }

    /// The faces in `img` scoring above `min_confidence`, at most `max_faces`, best first, in
    /// image pixels, at face-api's default input size (416).
    pub fn detect(&self, img: &Rgb, min_confidence: f32, max_faces: usize) -> Vec<FaceBox> {
        let (w, h) = (img.width as usize, img.height as usize);
        self.detect_pixels(&img.data, w, h, min_confidence, max_faces, DEFAULT_INPUT_SIZE)
    }

    /// The faces in an RGB image (`data` HWC, `width x height`) scoring above
    /// `min_confidence`, at most `max_faces`, best first, in image pixels. `input_size` must be
    /// a positive multiple of 32.
    pub fn detect_pixels(
        &self,
        data: &[u8],
        width: usize,
        height: usize,
        min_confidence: f32,
        max_faces: usize,
        input_size: usize,
    ) -> Vec<FaceBox> {
        let mul = [1.0 / 255.0; 3];
        let add = MEAN_RGB.map(|m| -m / 255.0);
        let x = letterbox(data, width, height, input_size, mul, add);
        let out = self.forward(&x);
        let (rw, rh) = letterbox_dims(width, height, input_size);
        let side = rw.max(rh) as f32;
        let (fx, fy) = (side / rw.max(1) as f32, side / rh.max(1) as f32);
        let cells = out.h;
        let n = cells as f32;
        // Relative boxes [left, top, right, bottom] and scores.
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        for row in 0..cells {
            for col in 0..out.w {
                for (a, &(aw, ah)) in ANCHORS.iter().enumerate() {
                    let v = |i: usize| out.at(row, col, a * 5 + i);
                    let score = sigmoid(v(4));
                    if score <= min_confidence {
                        continue;
                    }
                    let cx = (col as f32 + sigmoid(v(0))) / n * fx;
                    let cy = (row as f32 + sigmoid(v(1))) / n * fy;
                    let bw = v(2).exp() * aw / n * fx;
                    let bh = v(3).exp() * ah / n * fy;
                    let (x, y) = (cx - bw / 2.0, cy - bh / 2.0);
                    boxes.push([x, y, x + bw, y + bh]);
                    scores.push(score);
                }
            }
        }
        nms(&boxes, &scores, IOU_THRESHOLD)
            .into_iter()
            .take(max_faces)
            .map(|i| {
                let b = boxes[i];
                let (w, h) = (width as f32, height as f32);
                let left = (b[0] * w).max(0.0);
                let top = (b[1] * h).max(0.0);
                let right = (b[2] * w).min(w);
                let bottom = (b[3] * h).min(h);
                FaceBox {
                    x: left,
                    y: top,
                    w: (right - left).max(0.0),
                    h: (bottom - top).max(0.0),
                    score: scores[i],
                }
            })
            .collect()
    }
}

/// IoU of two `[left, top, right, bottom]` boxes (face-api's `iou`).
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |b: [f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area(a) + area(b) - inter)
}

/// face-api's `ops/nonMaxSuppression`: take the best remaining box, drop every remaining box
/// overlapping it by more than `iou_threshold`, repeat.
fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Ascending and stable, popped from the end, as face-api does.
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut pick = Vec::new();
    while let Some(cur) = order.pop() {
        pick.push(cur);
        order.retain(|&i| iou(boxes[cur], boxes[i]) <= iou_threshold);
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_picks_best_first_and_drops_overlaps() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.1, 0.0, 1.1, 1.0], // IoU ~0.82 with 0
            [0.0, 0.7, 1.0, 1.7], // IoU ~0.18 with 0
            [3.0, 3.0, 4.0, 4.0],
        ];
        let scores = [0.9, 0.95, 0.6, 0.7];
        assert_eq!(nms(&boxes, &scores, 0.4), vec![1, 3, 2]);
        assert!((iou(boxes[0], boxes[2]) - 0.3 / 1.7).abs() < 1e-6);
    }
}

//! SSD MobileNetV1, face-api's default face detector (`ssd_mobilenetv1_model`), as face-api's
//! `src/ssdMobilenetv1/` runs it:
//!
//! - input: the image padded black at the bottom/right to a square, resized (bilinear) to
//!   512x512, mapped to `v / 127.5 - 1`;
//! - MobileNetV1: a 3x3/2 conv (+ offset, ReLU6), then 13 pairs of a 3x3 depthwise conv (stride
//!   2 at pairs 2, 4, 6, 12; batch norm, ReLU6) and a 1x1 conv (+ offset, ReLU6); all SAME;
//! - 8 more convs (1x1 and 3x3/2 alternating, + offset, ReLU6) down to 1x1;
//! - 6 box predictors (a 1x1 conv for 4 box numbers and one for 3 class scores per anchor) on
//!   pair 11's output (32x32, 3 anchors per cell), the backbone's output (16x16, 6) and the
//!   extra convs 1, 3, 5, 7 (8x8 .. 1x1, 6 each): 5118 anchors, shipped as `Output/extra_dim`;
//! - decoding (`[y, x, h, w]` scales 10, 10, 5, 5 against the anchors), the score is the
//!   sigmoid of class 1, then face-api's greedy NMS (IoU 0.5) over scores above the threshold.

use bkg_abi::Error;

use super::ops::{
    conv2d, depthwise3x3, letterbox, letterbox_dims, sigmoid, Act, ConvFilter, DepthwiseFilter,
    Epilogue, Fmap, Padding,
};
use super::FaceBox;
use crate::image_io::Rgb;
use crate::tfjs::Weights;

/// The net's input size.
pub const INPUT_SIZE: usize = 512;
/// face-api's NMS IoU threshold for this detector.
pub const IOU_THRESHOLD: f32 = 0.5;
/// Anchors in `Output/extra_dim`.
pub const ANCHORS: usize = 5118;
/// The batch norm epsilon face-api uses.
const BN_EPSILON: f32 = 0.001;

/// Channels in and out of MobileNetV1's 13 depthwise/pointwise pairs.
const PAIRS: [(usize, usize); 13] = [
    (32, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 1024),
    (1024, 1024),
];

/// The prediction layer's 8 convs: (kernel, in, out); odd ones have stride 2.
const EXTRA: [(usize, usize, usize); 8] = [
    (1, 1024, 256),
    (3, 256, 512),
    (1, 512, 128),
    (3, 128, 256),
    (1, 256, 128),
    (3, 128, 256),
    (1, 256, 64),
    (3, 64, 128),
];

/// The box predictors: (input channels, anchors per cell).
const PREDICTORS: [(usize, usize); 6] =
    [(512, 3), (1024, 6), (512, 6), (256, 6), (256, 6), (128, 6)];

struct Conv {
    filter: ConvFilter,
    ep: Epilogue,
}

struct Pair {
    depthwise: DepthwiseFilter,
    dw_ep: Epilogue,
    pointwise: Conv,
}

struct Predictor {
    boxes: Conv,
    classes: Conv,
    anchors: usize,
}

/// SSD MobileNetV1 with its weights.
pub struct Detector {
    conv0: Conv,
    pairs: Vec<Pair>,
    extra: Vec<Conv>,
    predictors: Vec<Predictor>,
    /// `[y_min, x_min, y_max, x_max]` per anchor, relative to the input.
    anchors: Vec<[f32; 4]>,
}

fn conv(
    w: &Weights,
    weights: &str,
    bias: &str,
    shape: [usize; 4],
    act: Act,
) -> Result<Conv, Error> {
    let t = w.raw_shaped(weights, &shape)?;
    let filter = ConvFilter::from_hwio(&t.data, shape)
        .ok_or_else(|| Error::internal(format!("ssd: tensor '{weights}': bad length")))?;
    let b = w.raw_shaped(bias, &[shape[3]])?;
    Ok(Conv { filter, ep: Epilogue::bias(b.data.clone(), act) })
}

impl Detector {
    /// Build the net from `ssd_mobilenetv1_model`'s weights; every tensor is checked against
    /// the shape the graph needs.
    pub fn load(w: &Weights) -> Result<Detector, Error> {
        let pw = |prefix: &str, i: usize, k: usize, cin: usize, cout: usize| {
            conv(
                w,
                &format!("{prefix}/Conv2d_{i}_pointwise/weights"),
                &format!("{prefix}/Conv2d_{i}_pointwise/convolution_bn_offset"),
                [k, k, cin, cout],
                Act::Relu6,
            )
        };
        let conv0 = pw("MobilenetV1", 0, 3, 3, 32)?;
        let mut pairs = Vec::with_capacity(PAIRS.len());
        for (i, &(cin, cout)) in PAIRS.iter().enumerate() {
            let i = i + 1;
            let p = format!("MobilenetV1/Conv2d_{i}_depthwise");
            let t = w.raw_shaped(&format!("{p}/depthwise_weights"), &[3, 3, cin, 1])?;
            let depthwise = DepthwiseFilter::from_hwc1(&t.data, cin)
                .ok_or_else(|| Error::internal(format!("ssd: {p}: bad depthwise length")))?;
            let v = |n: &str| w.raw_shaped(&format!("{p}/BatchNorm/{n}"), &[cin]);
            let dw_ep = Epilogue::batch_norm(
                &v("gamma")?.data,
                &v("beta")?.data,
                &v("moving_mean")?.data,
                &v("moving_variance")?.data,
                BN_EPSILON,
                Act::Relu6,
            );
            let pointwise = pw("MobilenetV1", i, 1, cin, cout)?;
            pairs.push(Pair { depthwise, dw_ep, pointwise });
        }
        let extra = EXTRA
            .iter()
            .enumerate()
            .map(|(i, &(k, cin, cout))| pw("Prediction", i, k, cin, cout))
            .collect::<Result<Vec<_>, _>>()?;
        let mut predictors = Vec::with_capacity(PREDICTORS.len());
        for (i, &(cin, anchors)) in PREDICTORS.iter().enumerate() {
            let p = format!("Prediction/BoxPredictor_{i}");
            let boxes = conv(
                w,
                &format!("{p}/BoxEncodingPredictor/weights"),
                &format!("{p}/BoxEncodingPredictor/biases"),
                [1, 1, cin, 4 * anchors],
                Act::None,
            )?;
            let classes = conv(
                w,
                &format!("{p}/ClassPredictor/weights"),
                &format!("{p}/ClassPredictor/biases"),
                [1, 1, cin, 3 * anchors],
                Act::None,
            )?;
            predictors.push(Predictor { boxes, classes, anchors });
        }
        let a = w.raw_shaped("Output/extra_dim", &[1, ANCHORS, 4])?;
        let anchors = a.data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        Ok(Detector { conv0, pairs, extra, predictors, anchors })
    }

    /// The network's raw output for a 512x512 input: per anchor the decoded box
    /// (`[y_min, x_min, y_max, x_max]` relative to the input) and the face score.
    pub fn forward(&self, x: &Fmap) -> (Vec<[f32; 4]>, Vec<f32>) {
        let pw =
            |x: &Fmap, c: &Conv, stride: usize| conv2d(x, &c.filter, stride, Padding::Same, &c.ep);
        let mut out = pw(x, &self.conv0, 2);
        let mut conv11 = None;
        for (i, p) in self.pairs.iter().enumerate() {
            let layer = i + 1;
            let stride = if [2, 4, 6, 12].contains(&layer) { 2 } else { 1 };
            out = depthwise3x3(&out, &p.depthwise, stride, Padding::Same, &p.dw_ep);
            out = pw(&out, &p.pointwise, 1);
            if layer == 11 {
                conv11 = Some(out.clone());
            }
        }
        let conv11 = conv11.expect("13 pairs");
        let mut extra = Vec::with_capacity(self.extra.len());
        for (i, c) in self.extra.iter().enumerate() {
            let input = extra.last().unwrap_or(&out);
            extra.push(pw(input, c, if i % 2 == 1 { 2 } else { 1 }));
        }
        let inputs = [&conv11, &out, &extra[1], &extra[3], &extra[5], &extra[7]];
        let mut boxes = Vec::with_capacity(self.anchors.len());
        let mut scores = Vec::with_capacity(self.anchors.len());
        for (input, p) in inputs.iter().zip(&self.predictors) {
            let enc = pw(input, &p.boxes, 1);
            let cls = pw(input, &p.classes, 1);
            for (e, c) in enc.data.chunks_exact(4).zip(cls.data.chunks_exact(3)) {
                let anchor = self.anchors.get(boxes.len()).copied().unwrap_or([0.0; 4]);
                boxes.push(decode(anchor, [e[0], e[1], e[2], e[3]]));
                scores.push(sigmoid(c[1]));
            }
            debug_assert_eq!(enc.data.len() / 4, enc.h * enc.w * p.anchors);
        }
        (boxes, scores)
    }

    /// The faces in `img` scoring above `min_confidence`, at most `max_faces`, best first, in
    /// image pixels.
    pub fn detect(&self, img: &Rgb, min_confidence: f32, max_faces: usize) -> Vec<FaceBox> {
        let (w, h) = (img.width as usize, img.height as usize);
        self.detect_pixels(&img.data, w, h, min_confidence, max_faces)
    }

    /// The faces in an RGB image (`data` HWC, `width x height`) scoring above
    /// `min_confidence`, at most `max_faces`, best first, in image pixels.
    pub fn detect_pixels(
        &self,
        data: &[u8],
        width: usize,
        height: usize,
        min_confidence: f32,
        max_faces: usize,
    ) -> Vec<FaceBox> {
        let x = letterbox(data, width, height, INPUT_SIZE, [1.0 / 127.5; 3], [-1.0; 3]);
        let (boxes, scores) = self.forward(&x);
        let keep = nms(&boxes, &scores, max_faces, IOU_THRESHOLD, min_confidence);
        let (rw, rh) = letterbox_dims(width, height, INPUT_SIZE);
        // face-api: relative to the resized image, then times the image's size.
        let pad_x = INPUT_SIZE as f32 / rw.max(1) as f32;
        let pad_y = INPUT_SIZE as f32 / rh.max(1) as f32;
        keep.into_iter()
            .map(|i| {
                let b = boxes[i];
                let top = b[0].max(0.0) * pad_y * height as f32;
                let bottom = (b[2].min(1.0) * pad_y * height as f32).min(height as f32);
                let left = b[1].max(0.0) * pad_x * width as f32;
                let right = (b[3].min(1.0) * pad_x * width as f32).min(width as f32);
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

/// face-api's `decodeBoxesLayer`: an encoding `[ty, tx, th, tw]` against an anchor
/// `[y_min, x_min, y_max, x_max]`.
fn decode(anchor: [f32; 4], e: [f32; 4]) -> [f32; 4] {
    let (ah, aw) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (cy, cx) = (anchor[0] + ah / 2.0, anchor[1] + aw / 2.0);
    let half_h = (e[2] / 5.0).exp() * ah / 2.0;
    let half_w = (e[3] / 5.0).exp() * aw / 2.0;
    let y = e[0] / 10.0 * ah + cy;
    let x = e[1] / 10.0 * aw + cx;
    [y - half_h, x - half_w, y + half_h, x + half_w]
}

/// IoU of two `[y_min, x_min, y_max, x_max]` boxes (corners in any order), 0 for an empty one.
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let norm = |b: [f32; 4]| [b[0].min(b[2]), b[1].min(b[3]), b[0].max(b[2]), b[1].max(b[3])];
    let (a, b) = (norm(a), norm(b));
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let ih = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iw = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ih * iw;
    inter / (area_a + area_b - inter)
}

/// face-api's `ssdMobilenetv1/nonMaxSuppression`: candidates above `score_threshold` by
/// descending score; one is kept unless it overlaps a kept box by more than `iou_threshold`;
/// at most `max_output` kept.
fn nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    max_output: usize,
    iou_threshold: f32,
    score_threshold: f32,
) -> Vec<usize> {
    let mut candidates: Vec<usize> =
        (0..scores.len()).filter(|&i| scores[i] > score_threshold).collect();
    // A stable sort, as JavaScript's: equal scores keep their anchor order.
    candidates.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let limit = max_output.min(boxes.len());
    let mut selected: Vec<usize> = Vec::new();
    for c in candidates {
        if selected.len() >= limit {
            break;
        }
        let suppressed = selected.iter().rev().any(|&s| iou(boxes[c], boxes[s]) > iou_threshold);
        if !suppressed {
            selected.push(c);
        }
    }
    selected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_is_identity_for_a_zero_encoding() {
        let a = [0.1, 0.2, 0.5, 0.4];
        let d = decode(a, [0.0; 4]);
        for (x, y) in d.iter().zip(a) {
            assert!((x - y).abs() < 1e-6);
        }
        // ty = 10 moves the centre down by one anchor height; th = 5 * ln 2 doubles the height.
        let d = decode(a, [10.0, 0.0, 5.0 * 2f32.ln(), 0.0]);
        assert!((d[0] - 0.3).abs() < 1e-5 && (d[2] - 1.1).abs() < 1e-5, "{d:?}");
        assert!((d[1] - 0.2).abs() < 1e-6 && (d[3] - 0.4).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.05, 1.0, 1.05], // IoU ~0.9 with 0
            [2.0, 2.0, 3.0, 3.0],   // apart
            [0.0, 0.6, 1.0, 1.6],   // IoU 0.25 with 0
            [5.0, 5.0, 6.0, 6.0],   // below the threshold
        ];
        let scores = [0.8, 0.9, 0.7, 0.6, 0.4];
        assert_eq!(nms(&boxes, &scores, 100, 0.5, 0.5), vec![1, 2, 3]);
        assert_eq!(nms(&boxes, &scores, 2, 0.5, 0.5), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 100, 0.5, 0.95), Vec::<usize>::new());
        assert!((iou(boxes[0], boxes[3]) - 0.25).abs() < 1e-6);
        assert_eq!(iou([0.0, 0.0, 0.0, 1.0], boxes[0]), 0.0);
    }
}

//! The networks (face-api's four models) and the kernels they share (`ops`).
//!
//! - [`ssd`]: SSD MobileNetV1, the default face detector;
//! - [`tiny`]: the Tiny Face Detector (fast, misses small faces);
//! - [`recognition`]: the 128-d face descriptor (dlib's ResNet-34, face-api's port);
//! - [`landmarks`]: the 68-point landmark net;
//! - [`ops`]: the kernels (conv, depthwise, pooling, resize) on HWC `f32` buffers.

pub mod landmarks;
pub mod ops;
pub mod recognition;
pub mod ssd;
pub mod tiny;

use serde::Serialize;

/// A detected face: its box in image pixels (`x`, `y` the top-left corner) and its score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
}

impl FaceBox {
    /// Intersection over union with `other` (0 when either is empty).
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let iw = ((self.x + self.w).min(other.x + other.w) - self.x.max(other.x)).max(0.0);
        let ih = ((self.y + self.h).min(other.y + other.h) - self.y.max(other.y)).max(0.0);
        let inter = iw * ih;
        let union = self.w * self.h + other.w * other.h - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

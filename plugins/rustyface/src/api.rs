//! The capabilities' requests and answers, in one place: the API reads like a table.
//!
//! An image comes as the raw body (`Content-Type: image/jpeg | image/png | image/webp |
//! image/bmp`, options in the query string) or as JSON `{"image": "<base64>", ...options}`
//! (see [`crate::image_io::ImageInput`]). A decoded size over `max_pixels` is refused with 413
//! before decoding; not an image, a truncated one, 0x0 or 1x1 with 400.
//!
//! | capability   | request                  | answer |
//! |--------------|--------------------------|--------|
//! | `model.load` | [`LoadRequest`]          | [`ModelInfo`] (models also load lazily on first use) |
//! | `face.detect` | [`DetectOptions`] + image | [`DetectAnswer`]: the faces, best first, boxes in image pixels |
//! | `face.embed` | [`EmbedOptions`] + image | [`EmbedAnswer`]; `aligned: true`: the image is one aligned 150x150 chip, `faces: [{descriptor}]` |
//! | `face.compare` | `{image_a, image_b, threshold?: 0.6}` (base64) | `{distance, same, threshold}` of the largest face of each |
//! | `gallery.enrol` | `{gallery?, person, image or descriptor, face_index?}` | the stored entry (see [`crate::gallery`], whose types are still its own) |
//! | `gallery.list` | `{gallery?}` | persons with their counts, and the galleries |
//! | `gallery.person` | `{gallery?, person}` | its entries (id, created_ms, box, crop) |
//! | `gallery.crop` | `{gallery?, person, entry}` | `image/jpeg` bytes |
//! | `gallery.delete` | `{gallery?, person}` | every descriptor and crop of them removed, on disk too |
//! | `face.recognize` | `{image, gallery?, threshold?: 0.6}` | per face: box, `person` or null, `distance`, `candidates` |

use serde::{Deserialize, Serialize};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Compute threads owned by the plugin (1..=64).
    pub threads: usize,
    /// The largest decoded image, in pixels (width x height), checked from the header.
    pub max_pixels: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { threads: 2, max_pixels: 40_000_000 }
    }
}

/// The largest request body of the image capabilities (raw bytes or base64 JSON).
pub const MAX_IMAGE_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// face-api's four networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelName {
    Ssd,
    Tiny,
    Landmarks,
    Recognition,
}

impl ModelName {
    /// The manifest's file stem under `vladmandic/face-api/` in the models folder.
    pub fn file_stem(self) -> &'static str {
        match self {
            ModelName::Ssd => "ssd_mobilenetv1_model",
            ModelName::Tiny => "tiny_face_detector_model",
            ModelName::Landmarks => "face_landmark_68_model",
            ModelName::Recognition => "face_recognition_model",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::Ssd => "ssd",
            ModelName::Tiny => "tiny",
            ModelName::Landmarks => "landmarks",
            ModelName::Recognition => "recognition",
        }
    }
}

/// The folder under the models folder that holds face-api's weights.
pub const FACE_API_DIR: &str = "vladmandic/face-api";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    pub model: ModelName,
}

/// A loaded network.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    pub model: ModelName,
    /// The manifest it was read from, relative to the models folder.
    pub path: String,
    pub tensors: usize,
    pub parameters: usize,
    /// Bytes of the weights as stored (the shards).
    pub bytes: u64,
    pub load_ms: f64,
}

/// `face.embed`'s options (beside the image).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedOptions {
    /// The image is one aligned 150x150 face chip: no detection, one descriptor.
    #[serde(default)]
    pub aligned: bool,
}

#[derive(Debug, Serialize)]
pub struct EmbeddedFace {
    pub descriptor: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct EmbedAnswer {
    pub width: u32,
    pub height: u32,
    pub faces: Vec<EmbeddedFace>,
    pub took_ms: f64,
}

/// The face detectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorName {
    /// SSD MobileNetV1 (512x512 input): the default, finds smaller faces.
    #[default]
    Ssd,
    /// The Tiny Face Detector (416x416 input): several times faster, misses small faces.
    Tiny,
}

impl DetectorName {
    pub fn model(self) -> ModelName {
        match self {
            DetectorName::Ssd => ModelName::Ssd,
            DetectorName::Tiny => ModelName::Tiny,
        }
    }
}

/// `face.detect`'s options (beside the image); `face.embed` on a photo detects with them too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectOptions {
    pub detector: DetectorName,
    /// Faces scoring at or below this are dropped (0 < min_confidence < 1; face-api's 0.5).
    pub min_confidence: f32,
    /// Faces whose box is narrower or lower than this many pixels are dropped.
    pub min_size: f32,
    /// At most this many faces, the best first (1..=1000).
    pub max_faces: usize,
    /// Also the 68 landmarks of each face.
    pub landmarks: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            detector: DetectorName::Ssd,
            min_confidence: 0.5,
            min_size: 0.0,
            max_faces: 100,
            landmarks: false,
        }
    }
}

impl DetectOptions {
    /// The most faces one request may ask for.
    pub const MAX_FACES: usize = 1000;

    /// 400 naming the option that is out of range.
    pub fn check(&self) -> Result<(), bkg_abi::Error> {
        let bad = |m: String| Err(bkg_abi::Error::bad_request(m));
        if !(self.min_confidence > 0.0 && self.min_confidence < 1.0) {
            return bad(format!(
                "min_confidence must be between 0 and 1 (exclusive), got {}",
                self.min_confidence
            ));
        }
        if !(self.min_size >= 0.0 && self.min_size.is_finite()) {
            return bad(format!("min_size must be a number of pixels >= 0, got {}", self.min_size));
        }
        if !(1..=Self::MAX_FACES).contains(&self.max_faces) {
            return bad(format!(
                "max_faces must be within 1..={}, got {}",
                Self::MAX_FACES,
                self.max_faces
            ));
        }
        Ok(())
    }
}

/// A face box in image pixels: `x`, `y` the top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxPx {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectedFace {
    #[serde(rename = "box")]
    pub bbox: BoxPx,
    pub score: f32,
    /// 68 `[x, y]` points in image pixels, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landmarks: Option<Vec<[f32; 2]>>,
}

#[derive(Debug, Serialize)]
pub struct DetectAnswer {
    pub width: u32,
    pub height: u32,
    pub detector: DetectorName,
    pub faces: Vec<DetectedFace>,
    pub took_ms: f64,
}

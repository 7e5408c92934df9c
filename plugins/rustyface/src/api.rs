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
//! | `face.embed` | [`EmbedOptions`] + image | [`EmbedAnswer`]; `aligned: true`: the image is one aligned 150x150 chip, `faces: [{descriptor}]` |

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

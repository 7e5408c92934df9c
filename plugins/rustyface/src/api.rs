//! The capabilities' requests and answers, in one place: the API reads like a table.
//!
//! An image comes as the raw body (`Content-Type: image/jpeg | image/png | image/webp |
//! image/bmp`, options in the query string) or as JSON `{"image": "<base64>", ...options}`
//! (see [`crate::image_io::ImageRequest`]). A decoded size over `max_pixels` is refused with 413
//! (`payload_too_large`, naming the limit) from the header, before decoding; not an image, a
//! truncated one, 0x0 or 1x1 with 400. `face.detect` and `face.embed` also take a batch,
//! `{"images": ["<base64>", ...], ...options}` (at most [`MAX_BATCH`]) -> [`BatchAnswer`]: per
//! image, in order, its answer or `{error: {status, code, message}}` ([`ItemError`]).
//!
//! | capability   | request                  | answer |
//! |--------------|--------------------------|--------|
//! | `model.load` | [`LoadRequest`]          | [`ModelInfo`] (models also load lazily on first use) |
//! | `face.detect` | [`DetectOptions`] + image (or `images`) | [`DetectAnswer`]: the faces, best first, boxes in image pixels |
//! | `face.embed` | [`DetectOptions`] + image (or `images`) | [`PhotoEmbedAnswer`]: per face box, score, 68 landmarks, [`PhotoFace::descriptor`] |
//! | `face.embed` `aligned: true` | [`EmbedOptions`] + one aligned 150x150 chip | [`EmbedAnswer`]: `faces: [{descriptor}]` |
//! | `face.compare` | [`CompareRequest`] | [`CompareAnswer`]: the largest face of each |
//! | `gallery.enrol` | [`EnrolRequest`] + image, or its `descriptor` | [`EnrolAnswer`]: the stored entry |
//! | `gallery.list` | [`ListRequest`] | [`ListAnswer`]: persons with their counts, and the galleries |
//! | `gallery.person` | [`PersonRequest`] | [`PersonAnswer`]: its entries (id, created_ms, box, crop) |
//! | `gallery.crop` | [`CropRequest`] | `image/jpeg` bytes |
//! | `gallery.delete` | [`PersonRequest`] | [`DeleteAnswer`]: every descriptor and crop of them removed, on disk too |
//! | `face.recognize` | [`RecognizeOptions`] + image | [`RecognizeAnswer`]: per face ([`RecognizedFace`]) box, `person` or null, `distance`, `candidates` |

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

/// The options `gallery.enrol` / `face.recognize` take for finding faces, as a [`DetectOptions`]
/// (defaults for what is not given), checked.
pub fn detect_options(
    detector: DetectorName,
    min_confidence: Option<f32>,
    min_size: Option<f32>,
    max_faces: Option<usize>,
) -> Result<DetectOptions, bkg_abi::Error> {
    let d = DetectOptions::default();
    let o = DetectOptions {
        detector,
        min_confidence: min_confidence.unwrap_or(d.min_confidence),
        min_size: min_size.unwrap_or(d.min_size),
        max_faces: max_faces.unwrap_or(d.max_faces),
        landmarks: false,
    };
    o.check()?;
    Ok(o)
}

// ---- face.embed on a photo, face.compare ----

/// One face of a photo, embedded.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoFace {
    #[serde(rename = "box")]
    pub bbox: BoxPx,
    pub score: f32,
    /// 68 `[x, y]` points in image pixels.
    pub landmarks: Vec<[f32; 2]>,
    pub descriptor: Vec<f32>,
}

/// `face.embed` on a photo.
#[derive(Debug, Serialize)]
pub struct PhotoEmbedAnswer {
    pub width: u32,
    pub height: u32,
    pub detector: DetectorName,
    pub faces: Vec<PhotoFace>,
    pub took_ms: f64,
}

/// `face.compare`'s request: two base64 images (JSON), and how to find their faces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    pub image_a: String,
    pub image_b: String,
    /// Distances below this are the same person (0 < threshold <= 2; default 0.6).
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub detector: DetectorName,
    #[serde(default)]
    pub min_confidence: Option<f32>,
}

/// `face.compare`'s answer: the distance between the largest face of each image.
#[derive(Debug, Serialize)]
pub struct CompareAnswer {
    pub distance: f32,
    pub same: bool,
    pub threshold: f64,
    /// The face compared in each image (the largest).
    pub face_a: BoxPx,
    pub face_b: BoxPx,
    /// Faces found in each image.
    pub faces_a: usize,
    pub faces_b: usize,
    pub took_ms: f64,
}

// ---- batches: face.detect / face.embed with `images: [...]` ----

/// The most images one `images: [...]` request may hold.
pub const MAX_BATCH: usize = 64;

/// One image of a batch that failed: the error it would have had alone.
#[derive(Debug, Serialize)]
pub struct ItemError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// `face.detect` / `face.embed` with `images: [...]`: one result per image, in order, each the
/// single-image answer or `{error}`; one bad image does not fail the others.
#[derive(Debug, Serialize)]
pub struct BatchAnswer {
    pub results: Vec<serde_json::Value>,
    /// Images that failed.
    pub errors: usize,
    pub took_ms: f64,
}

// ---- galleries (gallery.rs) ----

/// `gallery.enrol`'s options: beside a base64 `image` (or the raw body, options in the query
/// string), or with a `descriptor` instead of an image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    #[serde(default)]
    pub gallery: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
    /// 128 finite numbers (checked by the gallery, which names a bad one).
    #[serde(default)]
    pub descriptor: Option<serde_json::Value>,
    /// Which face, in `face.embed`'s order, when the photo has several.
    #[serde(default)]
    pub face_index: Option<usize>,
    #[serde(default)]
    pub detector: DetectorName,
    #[serde(default)]
    pub min_confidence: Option<f32>,
    #[serde(default)]
    pub min_size: Option<f32>,
    #[serde(default)]
    pub max_faces: Option<usize>,
}

/// `gallery.enrol`'s answer: the stored entry.
#[derive(Debug, Serialize)]
pub struct EnrolAnswer {
    pub gallery: String,
    pub person: String,
    pub id: String,
    pub created_ms: u64,
    #[serde(rename = "box")]
    pub bbox: Option<BoxPx>,
    /// Whether a face crop was stored (enrolled from a photo).
    pub crop: bool,
    pub faces_in_image: Option<usize>,
}

/// `gallery.list {gallery?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub gallery: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PersonCount {
    pub person: String,
    pub entries: usize,
}

#[derive(Debug, Serialize)]
pub struct ListAnswer {
    pub gallery: String,
    /// Persons with at least one entry, by name.
    pub persons: Vec<PersonCount>,
    /// Every gallery, by name.
    pub galleries: Vec<String>,
}

/// `gallery.person` and `gallery.delete`: `{gallery?, person}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonRequest {
    #[serde(default)]
    pub gallery: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
}

/// One entry of `gallery.person`.
#[derive(Debug, Serialize)]
pub struct PersonEntry {
    pub id: String,
    pub created_ms: u64,
    #[serde(rename = "box")]
    pub bbox: Option<BoxPx>,
    /// The face crop as base64 JPEG (none when enrolled from a descriptor).
    pub crop: Option<String>,
    pub crop_via: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PersonAnswer {
    pub gallery: String,
    pub person: String,
    pub entries: Vec<PersonEntry>,
}

/// `gallery.crop {gallery?, person, entry}` -> `image/jpeg`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropRequest {
    #[serde(default)]
    pub gallery: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub entry: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeleteAnswer {
    pub gallery: String,
    pub person: String,
    pub deleted_entries: usize,
    pub deleted_files: usize,
}

/// `face.recognize`'s options, beside the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecognizeOptions {
    #[serde(default)]
    pub gallery: Option<String>,
    /// A face is a person when its nearest descriptor of them is closer than this (0..=2).
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub detector: DetectorName,
    #[serde(default)]
    pub min_confidence: Option<f32>,
    #[serde(default)]
    pub min_size: Option<f32>,
    #[serde(default)]
    pub max_faces: Option<usize>,
}

/// A person's best (smallest) distance to a face: its nearest descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub person: String,
    pub distance: f32,
}

#[derive(Debug, Serialize)]
pub struct RecognizedFace {
    #[serde(rename = "box")]
    pub bbox: BoxPx,
    pub score: f32,
    /// The nearest person, when closer than the threshold; else null (unknown).
    pub person: Option<String>,
    /// The nearest person's distance (null when the gallery is empty).
    pub distance: Option<f32>,
    /// Up to 3 next persons, nearest first.
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Serialize)]
pub struct RecognizeAnswer {
    pub width: u32,
    pub height: u32,
    pub gallery: String,
    pub threshold: f64,
    pub persons_known: usize,
    pub faces: Vec<RecognizedFace>,
    pub took_ms: f64,
}

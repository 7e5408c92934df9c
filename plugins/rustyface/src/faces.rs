//! The whole-photo pipeline: detect -> 68 landmarks -> aligned 150x150 chip -> 128-d
//! descriptor, per face (`face.embed` on a photo, `face.detect {landmarks: true}`), and
//! `face.compare` of two photos.
//!
//! Everything that runs a network runs on the plugin's pool ([`crate::pool::Pool::install`]).

use std::sync::Arc;
use std::time::Instant;

use bkg_abi::serde_json::{self, Value};
use bkg_abi::Error;

use crate::align;
use crate::api::{
    BoxPx, CompareAnswer, CompareRequest, DetectOptions, ModelName, PhotoEmbedAnswer, PhotoFace,
};
use crate::image_io::{self, Rgb};
use crate::nets::landmarks::Landmarks;
use crate::nets::FaceBox;
use crate::Engine;

/// The customary match threshold for face-api / dlib descriptors (Euclidean distance).
pub const DEFAULT_THRESHOLD: f64 = 0.6;

/// Euclidean distance between two descriptors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

fn boxed(f: &FaceBox) -> BoxPx {
    BoxPx { x: f.x, y: f.y, w: f.w, h: f.h }
}

/// Prefix an error's message with the image it is about, keeping its kind (400, 413, ...).
fn about(which: &str, e: Error) -> Error {
    Error::new(e.kind, format!("{which}: {}", e.message))
}

impl Engine {
    /// The landmark net, loaded on first use.
    pub fn landmarker(&self) -> Result<Arc<Landmarks>, Error> {
        Ok(self.net(ModelName::Landmarks, Landmarks::load)?.0)
    }

    /// The 68 landmarks of each face box, on the plugin's pool.
    pub fn landmarks_for(
        &self,
        img: &Rgb,
        faces: &[FaceBox],
    ) -> Result<Vec<[[f32; 2]; 68]>, Error> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let net = self.landmarker()?;
        self.pool
            .install(|| faces.iter().map(|f| net.landmarks_in(img, f.x, f.y, f.w, f.h)).collect())?
    }

    /// Detect, landmark, align and describe every face of `img`.
    pub fn embed_faces(&self, img: &Rgb, opts: &DetectOptions) -> Result<Vec<PhotoFace>, Error> {
        let faces = self.detect_faces(img, opts)?;
        self.embed_boxes(img, &faces)
    }

    /// Landmark, align and describe the faces in these boxes.
    pub fn embed_boxes(&self, img: &Rgb, faces: &[FaceBox]) -> Result<Vec<PhotoFace>, Error> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let landmarks = self.landmarks_for(img, faces)?;
        let recognizer = self.recognizer()?;
        self.pool.install(|| {
            faces
                .iter()
                .zip(&landmarks)
                .map(|(f, lm)| {
                    let chip = align::chip(img, lm).ok_or_else(|| {
                        Error::bad_request(format!(
                            "the face at ({:.0}, {:.0}) cannot be aligned (degenerate landmarks)",
                            f.x, f.y
                        ))
                    })?;
                    Ok(PhotoFace {
                        bbox: boxed(f),
                        score: f.score,
                        landmarks: lm.to_vec(),
                        descriptor: recognizer.descriptor(&chip)?.to_vec(),
                    })
                })
                .collect()
        })?
    }

    /// `face.embed` on a photo.
    pub fn embed_photo(
        &self,
        img: &Rgb,
        opts: &DetectOptions,
        started: Instant,
    ) -> Result<Value, Error> {
        let faces = self.embed_faces(img, opts)?;
        let answer = PhotoEmbedAnswer {
            width: img.width,
            height: img.height,
            detector: opts.detector,
            faces,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }

    /// `face.compare {image_a, image_b, threshold?}`: the largest face of each.
    pub fn compare(&self, body: &[u8]) -> Result<Value, Error> {
        let started = Instant::now();
        let req: CompareRequest = serde_json::from_slice(body).map_err(|e| {
            Error::bad_request(format!(
                "face.compare takes JSON {{\"image_a\": \"<base64>\", \"image_b\": \"<base64>\", \
                 \"threshold\"?: 0.6}}: {e}"
            ))
        })?;
        let threshold = req.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if !(threshold > 0.0 && threshold <= 2.0) {
            return Err(Error::bad_request(format!(
                "threshold must be within (0, 2] (descriptors are unit vectors), got {threshold}"
            )));
        }
        let mut opts = DetectOptions { detector: req.detector, ..DetectOptions::default() };
        if let Some(c) = req.min_confidence {
            opts.min_confidence = c;
        }
        opts.check()?;
        let max_pixels = self.settings().max_pixels;
        let one = |which: &str, b64: &str| -> Result<(PhotoFace, usize), Error> {
            let bytes = image_io::base64_bytes(which, b64)?;
            let img = image_io::decode(&bytes, None, max_pixels).map_err(|e| about(which, e))?;
            let faces = self.detect_faces(&img, &opts)?;
            let largest = faces
                .iter()
                .max_by(|a, b| (a.w * a.h).total_cmp(&(b.w * b.h)))
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "{which}: no face found in the {}x{} image (detector {}, min_confidence \
                         {})",
                        img.width,
                        img.height,
                        opts.detector.model().as_str(),
                        opts.min_confidence
                    ))
                })?;
            let face = self.embed_boxes(&img, std::slice::from_ref(largest))?.pop();
            let face = face.ok_or_else(|| Error::internal("the largest face was not embedded"))?;
            Ok((face, faces.len()))
        };
        let (a, faces_a) = one("image_a", &req.image_a)?;
        let (b, faces_b) = one("image_b", &req.image_b)?;
        let d = distance(&a.descriptor, &b.descriptor);
        let answer = CompareAnswer {
            distance: d,
            same: (d as f64) < threshold,
            threshold,
            face_a: a.bbox,
            face_b: b.bbox,
            faces_a,
            faces_b,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }
}

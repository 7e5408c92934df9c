//! `rustyface`: face detection, landmarks and 128-d face descriptors with face-api's networks
//! (weights from npm `@vladmandic/face-api`, read by `tfjs`), run on CPU in the plugin's own
//! threads (`pool`) with the plugin's own kernels (`nets::ops`), so that the library unloads.
//!
//! The request and answer shapes are in `api`; this file is the glue to the host: the
//! [`Engine`] (usable without a host, by tests) and the [`Plugin`] impl.

pub mod align;
pub mod api;
pub mod faces;
pub mod gallery;
pub mod image_io;
pub mod nets;
pub mod pool;
pub mod tfjs;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bkg_abi::serde_json::{json, Map, Value};
use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};

use crate::api::{BatchAnswer, BoxPx, DetectAnswer, DetectOptions, DetectedFace, DetectorName};
use crate::api::{
    EmbedAnswer, EmbedOptions, EmbeddedFace, ItemError, LoadRequest, ModelInfo, ModelName,
    Settings, FACE_API_DIR, MAX_BATCH, MAX_IMAGE_BODY_BYTES,
};
use crate::image_io::{Batch, ImageRequest, Rgb};
use crate::nets::recognition::Recognizer;
use crate::nets::{ssd, tiny, FaceBox};
use crate::pool::{barrier_threads_alive, Pool};
use crate::tfjs::Weights;

const VERSION: &str = env!("CARGO_PKG_VERSION");

type Net = Arc<dyn Any + Send + Sync>;

/// The plugin's state, usable without a host (tests): give it the models folder.
pub struct Engine {
    pub models_dir: PathBuf,
    pub pool: Pool,
    settings: Mutex<Settings>,
    /// Loaded networks by name, each with what `model.load` reports about it.
    nets: Mutex<HashMap<ModelName, (Net, ModelInfo)>>,
    running: AtomicBool,
    /// candle barrier-pool threads alive when this engine was made.
    barrier_before: usize,
}

impl Engine {
    pub fn new(models_dir: PathBuf) -> Self {
        Self {
            models_dir,
            pool: Pool::default(),
            settings: Mutex::new(Settings::default()),
            nets: Mutex::new(HashMap::new()),
            running: AtomicBool::new(false),
            barrier_before: barrier_threads_alive(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Start the compute threads.
    pub fn start(&self) -> Result<(), Error> {
        self.pool.start(self.settings().threads)?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Join the compute threads and drop every network.
    pub fn stop(&self) -> Result<(), Error> {
        self.running.store(false, Ordering::SeqCst);
        self.pool.shutdown()?;
        if let Ok(mut nets) = self.nets.lock() {
            nets.clear();
        }
        Ok(())
    }

    pub fn configure(&self, value: Value) -> Result<(), Error> {
        let new: Settings = if value.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(value).map_err(|e| Error::bad_request(format!("config: {e}")))?
        };
        if !(1..=64).contains(&new.threads) {
            return Err(Error::bad_request("config: threads must be within 1..=64"));
        }
        if new.max_pixels < 4 {
            return Err(Error::bad_request("config: max_pixels must be at least 4"));
        }
        let old = self.settings();
        *self.settings.lock().map_err(|_| Error::internal("settings: poisoned"))? = new.clone();
        if self.running.load(Ordering::SeqCst) && old.threads != new.threads {
            self.pool.start(new.threads)?;
        }
        Ok(())
    }

    /// The network `model`, loaded on first use by `build` from its weights.
    pub fn net<T: Send + Sync + 'static>(
        &self,
        model: ModelName,
        build: impl FnOnce(&Weights) -> Result<T, Error>,
    ) -> Result<(Arc<T>, ModelInfo), Error> {
        let mut nets = self.nets.lock().map_err(|_| Error::internal("models: poisoned"))?;
        if let Some((net, info)) = nets.get(&model) {
            let net = Arc::clone(net)
                .downcast::<T>()
                .map_err(|_| Error::internal(format!("model {}: wrong type", model.as_str())))?;
            return Ok((net, info.clone()));
        }
        let started = Instant::now();
        let dir = self.models_dir.join(FACE_API_DIR);
        let weights = Weights::open(&dir, model.file_stem())?;
        let net = Arc::new(build(&weights)?);
        let info = ModelInfo {
            model,
            path: format!("{FACE_API_DIR}/{}-weights_manifest.json", model.file_stem()),
            tensors: weights.names().len(),
            parameters: weights.parameters(),
            bytes: weights.bytes,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        nets.insert(model, (Arc::clone(&net) as Net, info.clone()));
        Ok((net, info))
    }

    /// The loaded networks.
    pub fn loaded(&self) -> Vec<ModelInfo> {
        let mut v: Vec<ModelInfo> = self
            .nets
            .lock()
            .map(|n| n.values().map(|(_, i)| i.clone()).collect())
            .unwrap_or_default();
        v.sort_by_key(|i| i.model.as_str());
        v
    }

    pub fn status(&self) -> Value {
        let alive = barrier_threads_alive();
        json!({
            "running": self.running.load(Ordering::SeqCst),
            "threads": self.pool.threads(),
            "threads_spawned": self.pool.spawned_total(),
            "threads_joined": self.pool.joined_total(),
            "models": self.loaded(),
            "candle_bp_threads": alive.saturating_sub(self.barrier_before),
        })
    }

    /// Run one capability: `content_type`, `query` and `body` as the request brought them.
    pub fn invoke(
        &self,
        capability: &str,
        content_type: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Value, Error> {
        match capability {
            "model.load" => {
                let r: LoadRequest = json_body(body)?;
                Ok(serde_json::to_value(self.load(r.model)?).unwrap_or(Value::Null))
            }
            "face.embed" => self.embed(content_type, query, body),
            "face.compare" => self.compare(body),
            "face.detect" => self.detect(content_type, query, body),
            _ => Err(Error::not_found(format!("rustyface has no capability '{capability}'"))),
        }
    }

    /// Load `model` (if it is not loaded yet) and report it.
    pub fn load(&self, model: ModelName) -> Result<ModelInfo, Error> {
        match model {
            ModelName::Recognition => Ok(self.net(model, Recognizer::load)?.1),
            ModelName::Landmarks => Ok(self.net(model, nets::landmarks::Landmarks::load)?.1),
            ModelName::Ssd => Ok(self.net(model, ssd::Detector::load)?.1),
            ModelName::Tiny => Ok(self.net(model, tiny::Detector::load)?.1),
        }
    }

    /// The recognizer, loaded on first use.
    pub fn recognizer(&self) -> Result<Arc<Recognizer>, Error> {
        Ok(self.net(ModelName::Recognition, Recognizer::load)?.0)
    }

    /// The faces in `img` as `opts` asks (detector, thresholds, size, count), best first, in
    /// image pixels. The detector is loaded on first use; it runs on the plugin's pool.
    pub fn detect_faces(&self, img: &Rgb, opts: &DetectOptions) -> Result<Vec<FaceBox>, Error> {
        opts.check()?;
        // No cap inside the detector: small faces dropped by `min_size` must not use up
        // `max_faces` (greedy NMS keeps the same best-first prefix either way).
        let mut faces = match opts.detector {
            DetectorName::Ssd => {
                let net = self.net(ModelName::Ssd, ssd::Detector::load)?.0;
                self.pool.install(|| net.detect(img, opts.min_confidence, usize::MAX))?
            }
            DetectorName::Tiny => {
                let net = self.net(ModelName::Tiny, tiny::Detector::load)?.0;
                self.pool.install(|| net.detect(img, opts.min_confidence, usize::MAX))?
            }
        };
        faces.retain(|f| f.w >= opts.min_size && f.h >= opts.min_size);
        faces.truncate(opts.max_faces);
        Ok(faces)
    }

    /// `face.detect`: one image, or a batch (`images: [...]`).
    fn detect(&self, content_type: &str, query: &str, body: &[u8]) -> Result<Value, Error> {
        if let Some(batch) = Batch::parse(content_type, body, MAX_BATCH)? {
            let opts: DetectOptions = serde_json::from_value(Value::Object(batch.options))
                .map_err(|e| Error::bad_request(format!("bad options: {e}")))?;
            opts.check()?;
            return Ok(run_batch(batch.images, |bytes| self.detect_one(bytes, None, &opts)));
        }
        let req: ImageRequest<DetectOptions> = ImageRequest::parse(content_type, query, body)?;
        req.options.check()?;
        self.detect_one(&req.bytes, req.content_type.as_deref(), &req.options)
    }

    /// `face.detect` of one image's bytes.
    fn detect_one(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        opts: &DetectOptions,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let img = image_io::decode(bytes, content_type, self.settings().max_pixels)?;
        let faces = self.detect_faces(&img, opts)?;
        let landmarks = if opts.landmarks { self.landmarks_for(&img, &faces)? } else { Vec::new() };
        let answer = DetectAnswer {
            width: img.width,
            height: img.height,
            detector: opts.detector,
            faces: faces
                .iter()
                .enumerate()
                .map(|(i, f)| DetectedFace {
                    bbox: BoxPx { x: f.x, y: f.y, w: f.w, h: f.h },
                    score: f.score,
                    landmarks: landmarks.get(i).map(|l| l.to_vec()),
                })
                .collect(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }

    /// `face.embed`: one image, or a batch (`images: [...]`).
    fn embed(&self, content_type: &str, query: &str, body: &[u8]) -> Result<Value, Error> {
        if let Some(batch) = Batch::parse(content_type, body, MAX_BATCH)? {
            let mode = EmbedMode::of(batch.options)?;
            return Ok(run_batch(batch.images, |bytes| self.embed_one(bytes, None, &mode)));
        }
        let req: ImageRequest<Map<String, Value>> = ImageRequest::parse(content_type, query, body)?;
        let mode = EmbedMode::of(req.options)?;
        self.embed_one(&req.bytes, req.content_type.as_deref(), &mode)
    }

    /// `face.embed` of one image's bytes.
    fn embed_one(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        mode: &EmbedMode,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let img = image_io::decode(bytes, content_type, self.settings().max_pixels)?;
        // A photo: detect, landmark, align, describe every face (faces.rs).
        if let EmbedMode::Photo(opts) = mode {
            return self.embed_photo(&img, opts, started);
        }
        let recognizer = self.recognizer()?;
        let descriptor = self.pool.install(|| recognizer.descriptor(&img))??;
        let answer = EmbedAnswer {
            width: img.width,
            height: img.height,
            faces: vec![EmbeddedFace { descriptor: descriptor.to_vec() }],
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }
}

/// What `face.embed` does with an image: find and describe its faces, or describe it as one
/// aligned 150x150 chip (`aligned: true`).
enum EmbedMode {
    Photo(DetectOptions),
    Aligned,
}

impl EmbedMode {
    /// From the request's options (beside the image); 400 naming a bad one.
    fn of(mut options: Map<String, Value>) -> Result<Self, Error> {
        let bad = |e: serde_json::Error| Error::bad_request(format!("bad options: {e}"));
        match options.remove("aligned") {
            None | Some(Value::Bool(false)) => {
                let opts: DetectOptions =
                    serde_json::from_value(Value::Object(options)).map_err(bad)?;
                opts.check()?;
                Ok(EmbedMode::Photo(opts))
            }
            Some(aligned) => {
                // Only `aligned` itself: a chip is not searched for faces.
                options.insert("aligned".into(), aligned);
                let _: EmbedOptions =
                    serde_json::from_value(Value::Object(options)).map_err(bad)?;
                Ok(EmbedMode::Aligned)
            }
        }
    }
}

/// Run `one` on every image of a batch, in order: each result is its answer or `{error}`.
fn run_batch(
    images: Vec<Result<Vec<u8>, Error>>,
    one: impl Fn(&[u8]) -> Result<Value, Error>,
) -> Value {
    let started = Instant::now();
    let mut errors = 0;
    let results = images
        .into_iter()
        .map(|image| match image.and_then(|bytes| one(&bytes)) {
            Ok(v) => v,
            Err(e) => {
                errors += 1;
                let status = if e.kind.0 >= 590 { 500 } else { e.kind.0 };
                json!({ "error": ItemError { status, code: e.kind.code(), message: e.message } })
            }
        })
        .collect();
    let answer = BatchAnswer { results, errors, took_ms: started.elapsed().as_secs_f64() * 1000.0 };
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// Parse a JSON body (an empty body is `{}`); errors are 400s naming the problem.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("bad request body: {e}")))
}

/// The plugin object the host drives.
pub struct RustyFace {
    host: Host,
    engine: Engine,
    gallery: gallery::Store,
}

impl Plugin for RustyFace {
    fn manifest() -> Manifest {
        Manifest::new("rustyface", "Rusty face", VERSION)
            .description(
                "face detection, 68-point landmarks and 128-d face descriptors with face-api's \
                 networks, on CPU in the plugin's own threads",
            )
            .admin_capability(
                "model.load",
                "load a network now (they also load on first use): \
                 {model: ssd | tiny | landmarks | recognition}",
            )
            .capability(
                "face.detect",
                "the faces in a photo, best first, boxes in image pixels: the raw image body \
                 (options in the query string) or {image: <base64>, detector?: ssd | tiny, \
                 min_confidence?: 0.5, min_size?: 0, max_faces?: 100, landmarks?: false (68 \
                 [x, y] points per face)}; with images: [<base64>, ...] (at most 64) instead \
                 of image -> {results: [one answer or {error} per image, in order]}",
            )
            .max_body_bytes("face.detect", MAX_IMAGE_BODY_BYTES)
            .capability(
                "face.embed",
                "every face of a photo with its box, 68 landmarks and 128-d descriptor (computed \
                 on a chip aligned by a similarity transform): the raw image body or {image: \
                 <base64>, detector?, min_confidence?, min_size?, max_faces?}; with \
                 aligned: true the image is one aligned 150x150 face chip; with images: \
                 [<base64>, ...] (at most 64) instead of image -> {results: [one answer or \
                 {error} per image, in order]}",
            )
            .max_body_bytes("face.embed", MAX_IMAGE_BODY_BYTES)
            .capability(
                "face.compare",
                "the descriptor distance between the largest face of two photos: {image_a: \
                 <base64>, image_b: <base64>, threshold?: 0.6, detector?, min_confidence?} -> \
                 {distance, same, threshold}",
            )
            .max_body_bytes("face.compare", 2 * MAX_IMAGE_BODY_BYTES)
            .capability(
                "gallery.enrol",
                "enrol a face into a gallery (kept in the plugin's data folder): {gallery?: \
                 default, person, image: <base64> | descriptor: [128 floats], face_index? (which \
                 face, in face.embed's order, when the photo has several)}",
            )
            .max_body_bytes("gallery.enrol", MAX_IMAGE_BODY_BYTES)
            .capability(
                "gallery.list",
                "the persons of a gallery with their entry counts, and the galleries: {gallery?}",
            )
            .capability(
                "gallery.person",
                "a person's entries (id, created_ms, box, crop as base64 JPEG): {gallery?, person}",
            )
            .capability(
                "gallery.crop",
                "an entry's face crop as image/jpeg: {gallery?, person, entry}",
            )
            .capability(
                "gallery.delete",
                "remove a person: every descriptor and crop, on disk too: {gallery?, person}",
            )
            .capability(
                "face.recognize",
                "every face of a photo matched against a gallery: {image: <base64>, gallery?, \
                 threshold?: 0.6, detector?, min_confidence?} -> faces: [{box, person (null when \
                 the nearest is at >= threshold), distance, candidates: up to 3 next persons}]",
            )
            .max_body_bytes("face.recognize", MAX_IMAGE_BODY_BYTES)
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "threads": { "type": "integer", "minimum": 1, "maximum": 64, "default": 2,
                                 "description": "compute threads owned by the plugin" },
                    "max_pixels": { "type": "integer", "minimum": 4, "default": 40_000_000,
                                    "description": "the largest decoded image (width x height), checked before decoding" }
                },
                "additionalProperties": false
            }))
    }

    fn new(host: Host) -> Result<Self, Error> {
        let engine = Engine::new(host.models_dir());
        let gallery = gallery::Store::new(&host.data_dir());
        Ok(RustyFace { host, engine, gallery })
    }

    fn start(&self) -> Result<(), Error> {
        self.engine.start()?;
        self.host.info(&format!(
            "started: {} compute threads, models from {}",
            self.engine.pool.threads(),
            self.engine.models_dir.display()
        ));
        Ok(())
    }

    fn stop(&self) -> Result<(), Error> {
        self.engine.stop()?;
        self.host.info("stopped: compute threads joined, models dropped");
        Ok(())
    }

    fn status(&self) -> Value {
        let mut status = self.engine.status();
        let (loads, hits) = self.gallery.cache_stats();
        status["gallery_cache"] = json!({ "loads": loads, "hits": hits });
        status
    }

    fn config(&self) -> Value {
        serde_json::to_value(self.engine.settings()).unwrap_or(Value::Null)
    }

    fn configure(&self, config: Value) -> Result<(), Error> {
        self.engine.configure(config)
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        _ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        if capability == "gallery.crop" {
            return Ok(Response::bytes("image/jpeg", gallery::crop(&self.gallery, req.body)?));
        }
        let result = gallery::invoke(
            &self.engine,
            &self.gallery,
            capability,
            req.content_type,
            req.query,
            req.body,
        )
        .unwrap_or_else(|| self.engine.invoke(capability, req.content_type, req.query, req.body));
        if let Err(e) = &result {
            if e.kind.0 >= 500 {
                self.host.warn(&format!("{capability}: {e}"));
            }
        }
        Response::json(&result?)
    }
}

/// The models folder a test uses: `$BKG_MODELS_DIR`, else `<repo>/models`.
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("BKG_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

export_plugin!(RustyFace);

//! rustyface's side of `scripts/bench-rustyface.sh` (not run in CI): the plugin's [`Engine`]
//! in process (through the crate's rlib), on its own pool of `--threads` threads, timing each
//! stage on the photos named on the command line:
//!
//! - `decode_ms`: the JPEG/PNG decode (`image_io::decode`), per photo (not in the others);
//! - `detect_ms` / `tiny_ms`: SSD MobileNetV1 / Tiny Face Detector on the decoded photo;
//! - `landmarks_ms`, `chip_ms`, `descriptor_ms`: per face (68 points, aligned 150x150 chip,
//!   128-d descriptor on that chip);
//! - `pipeline_ms`: detect + landmarks + align + describe every face (`Engine::embed_faces`);
//! - `invoke_ms`: `face.embed` as the host calls it (raw JPEG body: decode, pipeline, JSON).
//!
//! Each photo is run `--warmup` times first (not recorded), then `--runs` times. The aligned
//! chips of every face are written to `--chips-out` as raw RGB (`<photo>-<i>.rgb`, 150x150x3) (for the other tools' descriptor
//! timing on the same chips) and every face's descriptor into the JSON. Prints one JSON object.
//!
//! `cargo run --release -p bkg-plugin-rustyface --example bench -- --threads 2 --runs 5
//!  --chips-out /tmp/chips models/test-images/face_recognition/obama.jpg ...`

use std::path::PathBuf;
use std::time::Instant;

use bkg_abi::serde_json::{json, Value};
use bkg_plugin_rustyface::api::{DetectOptions, DetectorName};
use bkg_plugin_rustyface::{align, default_models_dir, image_io, Engine};

struct Args {
    threads: usize,
    runs: usize,
    warmup: usize,
    models: PathBuf,
    chips_out: Option<PathBuf>,
    photos: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        runs: 5,
        warmup: 1,
        models: default_models_dir(),
        chips_out: None,
        photos: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| {
            v.parse::<usize>().map_err(|e| format!("{name}: '{v}' is not a count: {e}"))
        };
        match arg.as_str() {
            "--threads" => a.threads = num("--threads", value("--threads")?)?,
            "--runs" => a.runs = num("--runs", value("--runs")?)?,
            "--warmup" => a.warmup = num("--warmup", value("--warmup")?)?,
            "--models" => a.models = PathBuf::from(value("--models")?),
            "--chips-out" => a.chips_out = Some(PathBuf::from(value("--chips-out")?)),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => a.photos.push(PathBuf::from(arg)),
        }
    }
    if a.photos.is_empty() || a.runs == 0 {
        return Err("usage: bench [--threads N] [--runs N] [--warmup N] [--models DIR] \
                    [--chips-out DIR] PHOTO..."
            .into());
    }
    Ok(a)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let engine = Engine::new(args.models.clone());
    engine.configure(json!({ "threads": args.threads })).map_err(|e| e.to_string())?;
    engine.start().map_err(|e| e.to_string())?;
    let load_started = Instant::now();
    for m in ["ssd", "tiny", "landmarks", "recognition"] {
        engine
            .invoke(
                "model.load",
                "application/json",
                "",
                json!({ "model": m }).to_string().as_bytes(),
            )
            .map_err(|e| format!("model.load {m}: {e}"))?;
    }
    let load_ms = ms(load_started);
    let ssd = DetectOptions::default();
    let tiny = DetectOptions { detector: DetectorName::Tiny, ..DetectOptions::default() };
    let recognizer = engine.recognizer().map_err(|e| e.to_string())?;
    let landmarker = engine.landmarker().map_err(|e| e.to_string())?;
    if let Some(dir) = &args.chips_out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut photos = Vec::new();
    for path in &args.photos {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let max_pixels = engine.settings().max_pixels;
        let decode =
            || image_io::decode(&bytes, None, max_pixels).map_err(|e| format!("{name}: {e}"));
        let img = decode()?;
        let faces = engine.detect_faces(&img, &ssd).map_err(|e| e.to_string())?;
        let landmarks = engine.landmarks_for(&img, &faces).map_err(|e| e.to_string())?;
        let chips: Vec<_> = landmarks
            .iter()
            .map(|lm| align::chip(&img, lm).ok_or(format!("{name}: a face cannot be aligned")))
            .collect::<Result<_, _>>()?;
        let mut descriptors = Vec::new();
        for (i, chip) in chips.iter().enumerate() {
            if let Some(dir) = &args.chips_out {
                let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&name);
                let file = dir.join(format!("{stem}-{i}.rgb"));
                std::fs::write(&file, &chip.data)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
            let d =
                engine.pool.install(|| recognizer.descriptor(chip)).map_err(|e| e.to_string())?;
            descriptors.push(d.map_err(|e| e.to_string())?.to_vec());
        }
        let mut rec: [Vec<f64>; 9] = Default::default();
        let [decode_ms, detect_ms, tiny_ms, landmarks_ms, chip_ms, descriptor_ms, pipeline_ms, invoke_ms, tiny_faces] =
            &mut rec;
        for round in 0..args.warmup + args.runs {
            let keep = round >= args.warmup;
            let put = |v: &mut Vec<f64>, x: f64| {
                if keep {
                    v.push(x)
                }
            };
            let t = Instant::now();
            let _ = decode()?;
            put(decode_ms, ms(t));
            let t = Instant::now();
            let _ = engine.detect_faces(&img, &ssd).map_err(|e| e.to_string())?;
            put(detect_ms, ms(t));
            let t = Instant::now();
            let found = engine.detect_faces(&img, &tiny).map_err(|e| e.to_string())?;
            put(tiny_ms, ms(t));
            put(tiny_faces, found.len() as f64);
            for (f, lm) in faces.iter().zip(&landmarks) {
                let t = Instant::now();
                let _ = engine
                    .pool
                    .install(|| landmarker.landmarks_in(&img, f.x, f.y, f.w, f.h))
                    .map_err(|e| e.to_string())?;
                put(landmarks_ms, ms(t));
                let t = Instant::now();
                let _ = align::chip(&img, lm);
                put(chip_ms, ms(t));
            }
            for chip in &chips {
                let t = Instant::now();
                let _ = engine
                    .pool
                    .install(|| recognizer.descriptor(chip))
                    .map_err(|e| e.to_string())?;
                put(descriptor_ms, ms(t));
            }
            let t = Instant::now();
            let _ = engine.embed_faces(&img, &ssd).map_err(|e| e.to_string())?;
            put(pipeline_ms, ms(t));
            let t = Instant::now();
            let _ =
                engine.invoke("face.embed", "image/jpeg", "", &bytes).map_err(|e| e.to_string())?;
            put(invoke_ms, ms(t));
        }
        let [decode_ms, detect_ms, tiny_ms, landmarks_ms, chip_ms, descriptor_ms, pipeline_ms, invoke_ms, tiny_faces] =
            rec;
        photos.push(json!({
            "name": name,
            "width": img.width,
            "height": img.height,
            "faces": faces.len(),
            "tiny_faces": tiny_faces.first().copied().unwrap_or(0.0),
            "boxes": faces.iter().map(|f| [f.x, f.y, f.w, f.h]).collect::<Vec<_>>(),
            "descriptors": descriptors,
            "decode_ms": decode_ms,
            "detect_ms": detect_ms,
            "tiny_ms": tiny_ms,
            "landmarks_ms": landmarks_ms,
            "chip_ms": chip_ms,
            "descriptor_ms": descriptor_ms,
            "pipeline_ms": pipeline_ms,
            "invoke_ms": invoke_ms,
        }));
    }
    let status = engine.status();
    engine.stop().map_err(|e| e.to_string())?;
    let out: Value = json!({
        "tool": "rustyface",
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "load_ms": load_ms,
        "photos": photos,
        "candle_bp_threads": status["candle_bp_threads"],
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{out}");
    Ok(())
}

//! `rustyface`'s face detectors in a real host, with the real plugin, face-api's real weights and
//! real photos (all laid out by `scripts/fetch-models.sh`):
//! - `model.load {model: ssd | tiny}` reports each network;
//! - `face.detect` finds exactly one face in each of face_recognition's portraits (obama.jpg,
//!   obama2.jpg, obama3.jpg, biden.jpg), with both detectors, at IoU >= 0.8 with the box face-api
//!   itself finds (host/tests/fixtures/face-detect-reference.json, from
//!   scripts/face-api-detect-reference.mjs), raw or as base64 JSON;
//! - in face-api's demo group photos, the faces face-api finds (3 to 5 a photo), each at
//!   IoU >= 0.8 with face-api's box, with both detectors;
//! - no face in real photos without one (scikit-learn's sample images);
//! - two faces in a picture made of two portraits, `max_faces`, `min_size` and `min_confidence`
//!   cut them down; bad options get 400s naming them and the plugin keeps serving;
//! - after detection, deleting the plugin file unloads the library (`unloaded`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{lib_name, link_models, product_plugin, Host};

const DETECT: &str = "/api/plugins/rustyface/face.detect";
const PORTRAITS: [&str; 4] = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];

/// A photo from the cache scripts/fetch-models.sh fills (`folder` under models/test-images).
fn photo(folder: &str, name: &str) -> Vec<u8> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(models);
    let path = models.join("test-images").join(folder).join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `bash scripts/fetch-models.sh` first)", path.display())
    })
}

/// A box `[x, y, w, h]` from a JSON object with those fields.
fn rect(v: &Value) -> [f64; 4] {
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    [f("x"), f("y"), f("w"), f("h")]
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// face-api's own answers for the portraits.
fn reference() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face-detect-reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `face.detect` of raw image bytes with a query string: the answer (asserting a 200).
fn detect(host: &Host, query: &str, content_type: &str, bytes: &[u8]) -> Value {
    let (status, body) = host.post_bytes(&format!("{DETECT}{query}"), content_type, bytes);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    v
}

fn faces(v: &Value) -> &Vec<Value> {
    v["faces"].as_array().unwrap_or_else(|| panic!("no faces in {v}"))
}

/// The plugin's own status report.
fn status_report(host: &Host) -> Value {
    let (code, v) = host.get_json("/api/core/plugins/rustyface/status");
    assert_eq!(code, 200, "{v}");
    v["status"].clone()
}

/// obama.jpg's and biden.jpg's faces side by side in one 800x460 PNG: crops of 400x460 around
/// each face (obama's face is at x 374..601, y 109..418 of its photo; biden's at 441..702,
/// 155..550).
fn two_portraits() -> Vec<u8> {
    let obama = image::load_from_memory(&photo("face_recognition", "obama.jpg")).unwrap().to_rgb8();
    let biden = image::load_from_memory(&photo("face_recognition", "biden.jpg")).unwrap().to_rgb8();
    let mut canvas = image::RgbImage::new(800, 460);
    for y in 0..460 {
        for x in 0..400 {
            canvas.put_pixel(x, y, *obama.get_pixel(300 + x, 40 + y));
            canvas.put_pixel(400 + x, y, *biden.get_pixel(380 + x, 120 + y));
        }
    }
    let mut png = Vec::new();
    canvas.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

#[test]
fn rustyface_detects_the_faces_face_api_finds_and_none_in_a_landscape_then_unloads() {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &["vladmandic/face-api"]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");

    // (1) model.load reports each detector.
    for (model, tensors) in [("ssd", 151), ("tiny", 19)] {
        let (status, info) = host
            .post_json("/api/plugins/rustyface/model.load", &json!({ "model": model }).to_string());
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["model"], model, "{info}");
        assert_eq!(info["tensors"], tensors, "{info}");
        assert!(info["parameters"].as_u64().unwrap() > 100_000, "{info}");
    }

    // (2) One face per portrait, where face-api finds it, with either detector.
    let want = reference();
    for name in PORTRAITS {
        let jpeg = photo("face_recognition", name);
        let reference = &want["images"][name];
        for detector in ["ssd", "tiny"] {
            let v = detect(&host, &format!("?detector={detector}"), "image/jpeg", &jpeg);
            assert_eq!(v["width"], reference["width"], "{name}: {v}");
            assert_eq!(v["height"], reference["height"], "{name}: {v}");
            assert_eq!(v["detector"], detector, "{v}");
            assert_eq!(faces(&v).len(), 1, "{name} {detector}: {v}");
            let (got, face_api) = (&faces(&v)[0], &reference[detector][0]);
            let overlap = iou(rect(&got["box"]), rect(face_api));
            assert!(
                overlap >= 0.8,
                "{name} {detector}: IoU {overlap} with face-api's {face_api}: {v}"
            );
            let score = got["score"].as_f64().unwrap();
            assert!(score > 0.5 && score <= 1.0, "{name} {detector}: {v}");
        }
    }
    // The same photo as base64 JSON (the default detector is ssd).
    let biden = photo("face_recognition", "biden.jpg");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&biden);
    let (status, v) = host.post_json(DETECT, &json!({ "image": b64 }).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["detector"], "ssd", "{v}");
    assert_eq!(faces(&v).len(), 1, "{v}");
    let face_api = rect(&want["images"]["biden.jpg"]["ssd"][0]);
    assert!(iou(rect(&faces(&v)[0]["box"]), face_api) >= 0.8, "{v}");

    // (3) No face in photos without one.
    for name in ["china.jpg", "flower.jpg"] {
        let jpeg = photo("no-face", name);
        for detector in ["ssd", "tiny"] {
            let v = detect(&host, &format!("?detector={detector}"), "image/jpeg", &jpeg);
            assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(640), Some(427)));
            assert_eq!(faces(&v).len(), 0, "{name} {detector}: {v}");
        }
    }

    // (4) Two faces; the options cut them down.
    let png = two_portraits();
    let v = detect(&host, "", "image/png", &png);
    let found = faces(&v);
    assert_eq!(found.len(), 2, "{v}");
    let mut centres: Vec<f64> =
        found.iter().map(|f| rect(&f["box"])).map(|b| b[0] + b[2] / 2.0).collect();
    centres.sort_by(f64::total_cmp);
    assert!(centres[0] < 400.0 && centres[1] > 400.0, "one face in each half: {v}");
    let best = found[0]["score"].as_f64().unwrap();
    assert!(best >= found[1]["score"].as_f64().unwrap(), "best first: {v}");
    let one = detect(&host, "?max_faces=1", "image/png", &png);
    assert_eq!(faces(&one).len(), 1, "{one}");
    assert_eq!(faces(&one)[0], found[0], "max_faces keeps the best: {one}");
    let smallest = found.iter().map(|f| rect(&f["box"])[2].min(rect(&f["box"])[3]));
    let smallest = smallest.fold(f64::INFINITY, f64::min);
    let v = detect(&host, &format!("?min_size={}", smallest.ceil() + 1.0), "image/png", &png);
    assert_eq!(faces(&v).len(), 1, "min_size drops the smaller face: {v}");
    let v = detect(&host, &format!("?min_size={}", 2000), "image/png", &png);
    assert_eq!(faces(&v).len(), 0, "{v}");
    let weakest = found.iter().map(|f| f["score"].as_f64().unwrap()).fold(1.0, f64::min);
    let v =
        detect(&host, &format!("?min_confidence={}", (weakest + best) / 2.0), "image/png", &png);
    assert_eq!(faces(&v).len(), 1, "min_confidence between the two scores: {v}");

    // (5) Bad options: 400 naming them; the plugin keeps serving.
    let obama = photo("face_recognition", "obama.jpg");
    for (query, needle) in [
        ("?min_confidence=1.5", "min_confidence"),
        ("?min_confidence=0", "min_confidence"),
        ("?max_faces=0", "max_faces"),
        ("?max_faces=100000", "max_faces"),
        ("?min_size=-3", "min_size"),
        ("?detector=yolo", "yolo"),
        ("?colour=blue", "colour"),
    ] {
        let (status, body) = host.post_bytes(&format!("{DETECT}{query}"), "image/jpeg", &obama);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body} lacks {needle:?}");
    }
    let (status, body) = host.post_bytes(DETECT, "image/jpeg", b"not a photo at all");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(faces(&detect(&host, "", "image/jpeg", &obama)).len(), 1);

    // Both detectors loaded, and no candle op ran (candle's barrier pool was never started).
    let report = status_report(&host);
    let loaded: Vec<&str> =
        report["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert!(loaded.contains(&"ssd") && loaded.contains(&"tiny"), "{report}");
    assert_eq!(report["candle_bp_threads"], 0, "{report}");

    // (6) The detectors ran on the plugin's own threads: removing the file unloads the library.
    host.remove(&lib_name("bkg_plugin_rustyface"));
    let p = host.wait_residency("rustyface");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

#[test]
fn rustyface_finds_the_faces_face_api_finds_in_its_demo_group_photos() {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &["vladmandic/face-api"]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");
    let want = reference();
    let mut total = 0;
    for i in 1..=6 {
        let name = format!("sample{i}.jpg");
        let jpeg = photo("face-api-demo", &name);
        let reference = &want["images"][name.as_str()];
        for detector in ["ssd", "tiny"] {
            let v = detect(&host, &format!("?detector={detector}"), "image/jpeg", &jpeg);
            let face_api = reference[detector].as_array().unwrap();
            assert!(face_api.len() >= 3 || detector == "tiny", "{name}: a group photo");
            assert_eq!(faces(&v).len(), face_api.len(), "{name} {detector}: {v}");
            // Every face face-api finds is found, each by a different box of ours.
            let mut ours: Vec<[f64; 4]> = faces(&v).iter().map(|f| rect(&f["box"])).collect();
            for theirs in face_api {
                let (at, overlap) = ours
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i, iou(*b, rect(theirs))))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or_else(|| panic!("{name} {detector}: no box left for {theirs}"));
                assert!(overlap >= 0.8, "{name} {detector}: {theirs} best IoU {overlap}: {v}");
                ours.remove(at);
                total += 1;
            }
        }
    }
    assert!(total >= 40, "{total} faces in all");
}

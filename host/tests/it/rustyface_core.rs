//! `rustyface`'s core in a real host, with the real plugin and face-api's real weights (laid out
//! by `scripts/fetch-models.sh`):
//! - `model.load {model: recognition}` reports the network (117 tensors);
//! - `face.embed` of an aligned 150x150 chip, sent raw (`image/bmp`, `?aligned=true`) and as
//!   base64 JSON, gives the descriptor face-api itself computes for it
//!   (host/tests/fixtures/face-recognition-reference.json, from scripts/face-api-reference.mjs);
//! - bad inputs (not an image, a truncated JPEG, 1x1, a header claiming 3.6 gigapixels, an
//!   unknown model, a chip of the wrong size) get clear 4xx answers and the plugin keeps serving;
//! - after the recognizer ran, deleting the plugin file unloads the library.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{lib_name, link_models, product_plugin, Host};

const EMBED: &str = "/api/plugins/rustyface/face.embed";

/// An uncompressed 24-bit BMP of `w x h` pixels from `pixel(x, y) -> [r, g, b]`.
fn bmp(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    for y in (0..h).rev() {
        let start = out.len();
        for x in 0..w {
            let [r, g, b] = pixel(x, y);
            out.extend_from_slice(&[b, g, r]);
        }
        out.resize(start + row as usize, 0);
    }
    out
}

/// The synthetic chips of scripts/face-api-reference.mjs (`chipPixel`).
fn chip_pixel(k: u32, x: u32, y: u32) -> [u8; 3] {
    if k == 2 {
        let (xi, yi) = (x as i32, y as i32);
        let d = (xi - 75) * (xi - 75) + (yi - 80) * (yi - 80);
        let eye = (xi - 52) * (xi - 52) + (yi - 62) * (yi - 62) < 64
            || (xi - 98) * (xi - 98) + (yi - 62) * (yi - 62) < 64;
        if eye || ((108..=112).contains(&y) && (55..=95).contains(&x)) {
            return [40, 25, 20];
        }
        if d < 55 * 55 {
            return [(200 - (y >> 2)) as u8, (160 - (y >> 3)) as u8, 130];
        }
        return [110, 110, 115];
    }
    [
        ((x * (3 + k) + y * 2 + 40 * k) % 256) as u8,
        ((x * y / (11 + k) + 13 * k) % 256) as u8,
        (((x ^ (y * (k + 1))) + 7 * k) % 256) as u8,
    ]
}

fn chip(k: u32) -> Vec<u8> {
    bmp(150, 150, |x, y| chip_pixel(k, x, y))
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn reference() -> Vec<Vec<f32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/face-recognition-reference.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["chips"].as_array().unwrap().iter().map(|c| floats(&c["descriptor"])).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

fn photo(name: &str) -> Vec<u8> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(models);
    let path = models.join("test-images/face_recognition").join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `bash scripts/fetch-models.sh` first)", path.display())
    })
}

/// The plugin's own status report.
fn status_report(host: &Host) -> Value {
    let (code, v) = host.get_json("/api/core/plugins/rustyface/status");
    assert_eq!(code, 200, "{v}");
    v["status"].clone()
}

/// `face.embed` of chip `k` sent raw: its descriptor.
fn embed_raw(host: &Host, k: u32) -> Vec<f32> {
    let (status, body) = host.post_bytes(&format!("{EMBED}?aligned=true"), "image/bmp", &chip(k));
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(150), Some(150)), "{v}");
    assert_eq!(v["faces"].as_array().map(Vec::len), Some(1), "{v}");
    floats(&v["faces"][0]["descriptor"])
}

#[test]
fn rustyface_embeds_aligned_chips_like_face_api_refuses_bad_images_and_unloads() {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &["vladmandic/face-api"]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");

    // (1) model.load reports the network.
    let (status, info) = host.post_json(
        "/api/plugins/rustyface/model.load",
        &json!({"model": "recognition"}).to_string(),
    );
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["model"], "recognition", "{info}");
    assert_eq!(info["tensors"], 117, "{info}");
    assert_eq!(info["parameters"], 5_614_592, "{info}");
    let report = status_report(&host);
    assert_eq!(report["models"][0]["model"], "recognition", "{report}");
    assert_eq!(report["threads"], 2, "{report}");

    // (2) The descriptors are face-api's own, raw or as base64 JSON.
    let want = reference();
    let mut got = Vec::new();
    for k in 0..3 {
        let d = embed_raw(&host, k);
        let dist = distance(&d, &want[k as usize]);
        assert!(dist < 0.03, "chip {k}: distance {dist} to face-api's descriptor");
        got.push(d);
    }
    assert!(distance(&got[0], &got[2]) > 0.1, "different chips, different descriptors");
    let (status, v) =
        host.post_json(EMBED, &json!({"image": b64(&chip(2)), "aligned": true}).to_string());
    assert_eq!(status, 200, "{v}");
    assert!(distance(&floats(&v["faces"][0]["descriptor"]), &got[2]) < 1e-6, "{v}");

    // (3) Bad inputs: clear 4xx answers, and the plugin keeps serving after each.
    let jpeg = photo("obama.jpg");
    let mut huge = bmp(2, 2, |_, _| [0, 0, 0]);
    // A header claiming 60000 x 60000 pixels (3.6 gigapixels) and no pixel data.
    huge[18..22].copy_from_slice(&60_000u32.to_le_bytes());
    huge[22..26].copy_from_slice(&60_000u32.to_le_bytes());
    let bad: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("?aligned=true", "image/jpeg", b"this is not a picture".to_vec(), 400, "not an image"),
        ("?aligned=true", "image/jpeg", jpeg[..jpeg.len() / 2].to_vec(), 400, "truncated"),
        ("?aligned=true", "image/bmp", bmp(1, 1, |_, _| [9, 9, 9]), 400, "1x1"),
        ("?aligned=true", "image/bmp", huge, 413, "max_pixels"),
        ("?aligned=true", "image/gif", b"GIF89a".to_vec(), 400, "image/gif"),
        ("?aligned=true", "image/bmp", bmp(100, 150, |_, _| [1, 2, 3]), 400, "150x150"),
        ("?aligned=true&colour=blue", "image/bmp", chip(0), 400, "colour"),
        ("", "application/json", br#"{"aligned": true}"#.to_vec(), 400, "no 'image'"),
        (
            "",
            "application/json",
            br#"{"image": "@@not base64@@", "aligned": true}"#.to_vec(),
            400,
            "base64",
        ),
    ];
    for (query, content_type, body, status, needle) in bad {
        let (got_status, answer) = host.post_bytes(&format!("{EMBED}{query}"), content_type, &body);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(got_status, status, "{content_type} {query}: {answer}");
        assert!(answer.contains(needle), "{content_type} {query}: {answer} lacks {needle:?}");
        assert!(distance(&embed_raw(&host, 1), &got[1]) < 1e-6, "after {needle}");
    }
    for (body, needle) in [
        (json!({"model": "bogus"}), "bogus"),
        (json!({}), "model"),
        (json!({"model": "recognition", "extra": 1}), "extra"),
    ] {
        let (status, v) = host.post_json("/api/plugins/rustyface/model.load", &body.to_string());
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v.to_string().contains(needle), "{body}: {v} lacks {needle:?}");
    }
    assert!(distance(&embed_raw(&host, 0), &got[0]) < 1e-6);

    // (4) Config: a smaller `max_pixels` refuses the chip with a 413 naming it, a new thread
    // count replaces the pool (the chip embeds the same on it), bad values are refused.
    let config = "/api/core/plugins/rustyface/config";
    let (status, v) =
        host.post_json(config, &json!({"max_pixels": 10_000, "threads": 1}).to_string());
    assert_eq!(status, 200, "{v}");
    let (status, answer) = host.post_bytes(&format!("{EMBED}?aligned=true"), "image/bmp", &chip(0));
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("22500") && answer.contains("10000"), "{answer}");
    let (status, v) = host.post_json(config, &json!({"threads": 3}).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(status_report(&host)["threads"], 3);
    assert!(distance(&embed_raw(&host, 2), &got[2]) < 1e-5);
    for bad in [json!({"threads": 0}), json!({"max_pixels": 1}), json!({"colour": 1})] {
        let (status, v) = host.post_json(config, &bad.to_string());
        assert!((400..500).contains(&status), "{bad}: {status} {v}");
    }
    assert!(distance(&embed_raw(&host, 2), &got[2]) < 1e-5);

    // No candle op ran: candle's never-joined barrier pool was not started.
    assert_eq!(status_report(&host)["candle_bp_threads"], 0);

    // (5) The recognizer ran on the plugin's own threads: removing the file unloads the library.
    host.remove(&lib_name("bkg_plugin_rustyface"));
    let p = host.wait_residency("rustyface");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

//! `rustyface` against bad input, in a real host with the real plugin, face-api's real weights
//! and real photos (laid out by `scripts/fetch-models.sh`):
//! - every kind of bad image (not an image, a truncated JPEG, 0x0, 1x1, a real 8000x7500 PNG of
//!   60 megapixels, decompression bombs whose headers claim 50000x50000 or 65535x65535), bad
//!   JSON, a wrong Content-Type, bad base64, a photo with no face, an unknown person or
//!   gallery, a descriptor of the wrong length or with NaN: each a clear 4xx naming the
//!   problem; the big ones a 413 `payload_too_large` naming `max_pixels`, refused from the
//!   header: the host's peak memory does not grow by the size of the decoded image;
//! - batches (`images: [...]`) answer per image, in order, each bad one with its own error;
//! - after all of it the plugin still finds the face in obama.jpg.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{lib_name, link_models, product_plugin, Host};

const DETECT: &str = "/api/plugins/rustyface/face.detect";

fn test_images() -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(models);
    models.join("test-images")
}

fn photo(rel: &str) -> Vec<u8> {
    let path = test_images().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `bash scripts/fetch-models.sh` first)", path.display())
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn start() -> (Host, tempfile::TempDir) {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &["vladmandic/face-api"]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");
    (host, models)
}

/// The number of faces `face.detect` finds in obama.jpg (sent raw).
fn faces_in_obama(host: &Host) -> usize {
    let (status, body) =
        host.post_bytes(DETECT, "image/jpeg", &photo("face_recognition/obama.jpg"));
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    v["faces"].as_array().map(Vec::len).unwrap_or_else(|| panic!("{v}"))
}

/// Reset the host process's peak resident memory (`VmHWM`) to its current one.
fn reset_peak_rss(host: &Host) {
    std::fs::write(format!("/proc/{}/clear_refs", host.pid()), "5")
        .expect("reset VmHWM through /proc/<pid>/clear_refs");
}

/// The host process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(host: &Host) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn png_of(img: &image::RgbImage) -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    )
    .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
    .unwrap();
    out.into_inner()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A decompression bomb: a valid 2x2 PNG whose header (CRC fixed up) claims `w x h`.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_of(&image::RgbImage::new(2, 2));
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A real JPEG whose frame header (SOF) claims 65535x65535 pixels.
fn jpeg_claiming_65535() -> Vec<u8> {
    let mut jpeg = photo("face_recognition/obama.jpg");
    // Walk the segments after SOI (FF D8): FF xx, a big-endian length counting itself.
    let mut at = 2;
    loop {
        assert_eq!(jpeg[at], 0xff, "a marker at {at}");
        let marker = jpeg[at + 1];
        if (0xc0..=0xc2).contains(&marker) {
            break;
        }
        assert_ne!(marker, 0xda, "no frame header before the scan");
        at += 2 + u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
    }
    // FF Cn, length (2), precision (1), height (2), width (2).
    jpeg[at + 5..at + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    jpeg
}

/// A 24-bit BMP header claiming `w x h` with no pixels.
fn bmp_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

/// `capability` answers `status` with an error naming `needle`; 413s carry the code
/// `payload_too_large`.
fn refused(host: &Host, path: &str, content_type: &str, body: &[u8], status: u16, needle: &str) {
    let (code, answer) = host.post_bytes(path, content_type, body);
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(code, status, "{path} {content_type} ({needle}): {text}");
    let v: Value = serde_json::from_slice(&answer)
        .unwrap_or_else(|e| panic!("{path}: the error is not JSON ({e}): {text}"));
    let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {v}"));
    assert!(message.contains(needle), "{path} {content_type}: {message:?} lacks {needle:?}");
    if status == 413 {
        assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
        assert!(message.contains("max_pixels = 40000000"), "names the limit: {message}");
        assert!(message.contains("config"), "says how to raise it: {message}");
    }
}

fn json_refused(host: &Host, capability: &str, body: &Value, status: u16, needle: &str) {
    let path = format!("/api/plugins/rustyface/{capability}");
    refused(host, &path, "application/json", body.to_string().as_bytes(), status, needle);
}

#[test]
fn rustyface_refuses_every_bad_input_clearly_without_ballooning_and_keeps_serving() {
    let (host, _models) = start();
    assert_eq!(faces_in_obama(&host), 1);

    // A real 60-megapixel PNG (8000x7500, a gradient), and two decompression bombs: refused
    // from their headers. Decoding the PNG alone would take 171 MiB (RGB, 8 bits).
    let big = image::RgbImage::from_fn(8000, 7500, |x, y| {
        image::Rgb([(x / 32) as u8, (y / 30) as u8, ((x + y) / 64) as u8])
    });
    let big = png_of(&big);
    let dims = image::ImageReader::new(Cursor::new(&big)).with_guessed_format().unwrap();
    assert_eq!(dims.into_dimensions().unwrap(), (8000, 7500), "a real PNG of 8000x7500");
    reset_peak_rss(&host);
    let before = peak_rss_kib(&host);
    for _ in 0..3 {
        refused(&host, DETECT, "image/png", &big, 413, "8000x7500 = 60000000 pixels");
        json_refused(&host, "face.detect", &json!({ "image": b64(&big) }), 413, "8000x7500");
        refused(&host, DETECT, "image/png", &png_claiming(50_000, 50_000), 413, "50000x50000");
        refused(&host, DETECT, "image/jpeg", &jpeg_claiming_65535(), 413, "65535x65535");
        json_refused(
            &host,
            "face.embed",
            &json!({ "image": b64(&png_claiming(50_000, 50_000)) }),
            413,
            "50000x50000",
        );
        json_refused(
            &host,
            "gallery.enrol",
            &json!({ "person": "bomb", "image": b64(&jpeg_claiming_65535()) }),
            413,
            "65535x65535",
        );
    }
    let grown_mib = peak_rss_kib(&host).saturating_sub(before) / 1024;
    assert!(grown_mib < 100, "the host's peak memory grew by {grown_mib} MiB: something decoded");
    // The control: with max_pixels raised, the same PNG is decoded, and the peak shows it.
    let config = "/api/core/plugins/rustyface/config";
    let (status, v) = host.post_json(config, &json!({ "max_pixels": 60_000_000 }).to_string());
    assert_eq!(status, 200, "{v}");
    reset_peak_rss(&host);
    let before = peak_rss_kib(&host);
    let (status, body) = host.post_bytes(DETECT, "image/png", &big);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let grown_mib = peak_rss_kib(&host).saturating_sub(before) / 1024;
    assert!(grown_mib > 150, "decoding 60 megapixels should show: grew {grown_mib} MiB");
    let (status, v) = host.post_json(config, "{}");
    assert_eq!(status, 200, "{v}");
    refused(&host, DETECT, "image/png", &big, 413, "8000x7500");

    // Bad images, raw and as base64.
    let jpeg = photo("face_recognition/obama.jpg");
    let one = png_of(&image::RgbImage::new(1, 1));
    let gif = b"GIF89a\x01\x00\x01\x00".to_vec();
    for (content_type, body, needle, as_base64) in [
        ("image/jpeg", b"this is not a picture".to_vec(), "not an image", "not an image"),
        ("image/jpeg", jpeg[..jpeg.len() * 2 / 3].to_vec(), "truncated", "truncated"),
        ("image/bmp", bmp_claiming(0, 0), "BMP", "BMP"),
        ("image/png", one.clone(), "1x1", "1x1"),
        ("image/gif", gif, "unsupported image type 'image/gif'", "not an image"),
        ("text/plain", b"hello".to_vec(), "not an image", "not an image"),
        ("image/png", Vec::new(), "no image", "the image is empty"),
    ] {
        refused(&host, DETECT, content_type, &body, 400, needle);
        json_refused(&host, "face.detect", &json!({ "image": b64(&body) }), 400, as_base64);
    }
    // Bad JSON.
    for (body, needle) in [
        (r#"{"image": "#.to_string(), "not valid JSON"),
        ("[1, 2]".to_string(), "not an object"),
        (r#"{"image": "@@ not base64 @@"}"#.to_string(), "'image' is not valid base64"),
        (r#"{"image": 42}"#.to_string(), "'image' must be a base64 string"),
        (format!(r#"{{"image": "{}", "detector": "yolo"}}"#, b64(&jpeg)), "yolo"),
        (format!(r#"{{"image": "{}", "max_faces": 0}}"#, b64(&jpeg)), "max_faces"),
        (format!(r#"{{"image": "{}", "colour": 1}}"#, b64(&jpeg)), "colour"),
    ] {
        refused(&host, DETECT, "application/json", body.as_bytes(), 400, needle);
    }
    // A photo with no face: no faces (detect), a 400 where a face is needed.
    let flower = photo("no-face/flower.jpg");
    let (status, body) = host.post_bytes(DETECT, "image/jpeg", &flower);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["faces"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    json_refused(
        &host,
        "face.compare",
        &json!({ "image_a": b64(&flower), "image_b": b64(&jpeg) }),
        400,
        "image_a: no face found",
    );
    json_refused(
        &host,
        "gallery.enrol",
        &json!({ "person": "flower", "image": b64(&flower) }),
        400,
        "no face found",
    );
    // Galleries: unknown person or gallery, bad descriptors, bad names.
    let mut nan = vec![json!(0.1); 128];
    nan[7] = json!("NaN");
    for (capability, body, status, needle) in [
        ("gallery.person", json!({ "person": "nobody" }), 404, "no person 'nobody'"),
        ("gallery.delete", json!({ "person": "nobody" }), 404, "no person 'nobody'"),
        ("gallery.list", json!({ "gallery": "nowhere" }), 404, "no gallery 'nowhere'"),
        (
            "face.recognize",
            json!({ "gallery": "nowhere", "image": b64(&jpeg) }),
            404,
            "no gallery 'nowhere'",
        ),
        ("gallery.crop", json!({ "person": "nobody", "entry": "x" }), 404, "no person 'nobody'"),
        (
            "gallery.enrol",
            json!({ "person": "x", "descriptor": vec![0.1; 127] }),
            400,
            "128 numbers, got 127",
        ),
        ("gallery.enrol", json!({ "person": "x", "descriptor": nan }), 400, "'descriptor'[7]"),
        ("gallery.enrol", json!({ "person": "../x", "image": b64(&jpeg) }), 400, "person name"),
        ("gallery.person", json!({ "gallery": "A B", "person": "x" }), 400, "gallery name"),
        ("gallery.list", json!({ "colour": 1 }), 400, "colour"),
        ("face.recognize", json!({ "image": b64(&jpeg), "threshold": 5 }), 400, "threshold"),
    ] {
        json_refused(&host, capability, &body, status, needle);
    }
    refused(
        &host,
        "/api/plugins/rustyface/face.recognize",
        "image/jpeg",
        &jpeg_claiming_65535(),
        413,
        "65535x65535",
    );
    let (status, v) = host.post_json("/api/plugins/rustyface/gallery.list", "{}");
    assert_eq!((status, &v["persons"]), (200, &json!([])), "nothing was stored: {v}");

    // After all of it, the plugin still serves.
    assert_eq!(faces_in_obama(&host), 1);
    assert_eq!(host.state("rustyface"), "running");
}

#[test]
fn rustyface_batches_answer_per_image_in_order_with_each_bad_images_own_error() {
    let (host, _models) = start();
    let obama = photo("face_recognition/obama.jpg");
    let group = photo("face-api-demo/sample1.jpg");
    let flower = photo("no-face/flower.jpg");
    let truncated = obama[..obama.len() / 2].to_vec();
    let bomb = png_claiming(50_000, 50_000);
    let images = json!([b64(&obama), b64(&truncated), b64(&group), "@@", b64(&flower), b64(&bomb)]);

    // face.detect: the same answers as one image at a time, in order.
    let (status, v) =
        host.post_json(DETECT, &json!({ "images": images, "min_confidence": 0.5 }).to_string());
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(results.len(), 6, "{v}");
    assert_eq!(v["errors"], 3, "{v}");
    for (i, bytes) in [(0, &obama), (2, &group), (4, &flower)] {
        let (status, alone) = host.post_json(DETECT, &json!({ "image": b64(bytes) }).to_string());
        assert_eq!(status, 200, "{alone}");
        assert_eq!(results[i]["faces"], alone["faces"], "image {i}");
        assert_eq!(results[i]["width"], alone["width"], "image {i}");
    }
    assert_eq!(results[0]["faces"].as_array().unwrap().len(), 1);
    assert!(results[2]["faces"].as_array().unwrap().len() >= 2, "{}", results[2]);
    assert_eq!(results[4]["faces"].as_array().unwrap().len(), 0);
    let error = |i: usize| &results[i]["error"];
    assert_eq!(
        (error(1)["status"].as_u64(), error(1)["code"].as_str()),
        (Some(400), Some("bad_request"))
    );
    assert!(error(1)["message"].as_str().unwrap().contains("truncated"), "{}", error(1));
    assert!(error(3)["message"].as_str().unwrap().contains("'images[3]' is not valid base64"));
    assert_eq!(error(5)["status"], 413, "{}", error(5));
    assert_eq!(error(5)["code"], "payload_too_large", "{}", error(5));
    assert!(error(5)["message"].as_str().unwrap().contains("max_pixels"), "{}", error(5));

    // face.embed: descriptors per image, the same as alone.
    let (status, v) = host.post_json(
        "/api/plugins/rustyface/face.embed",
        &json!({ "images": [b64(&obama), "@@", b64(&photo("face_recognition/obama2.jpg"))] })
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{v}");
    assert!(results[1]["error"]["message"].as_str().unwrap().contains("base64"), "{v}");
    let (_, alone) = host.post_json(
        "/api/plugins/rustyface/face.embed",
        &json!({ "image": b64(&obama) }).to_string(),
    );
    assert_eq!(results[0]["faces"][0]["descriptor"], alone["faces"][0]["descriptor"]);
    let d = |v: &Value| -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    };
    let (a, b) =
        (d(&results[0]["faces"][0]["descriptor"]), d(&results[2]["faces"][0]["descriptor"]));
    let dist = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    assert!(dist < 0.6, "obama and obama2 are one person: {dist}");

    // What fails a batch as a whole: its shared options and its shape.
    for (body, needle) in [
        (json!({ "images": [b64(&obama)], "max_faces": 0 }), "max_faces"),
        (json!({ "images": [] }), "1 to 64 images, got 0"),
        (json!({ "images": vec![b64(&flower); 65] }), "got 65"),
        (json!({ "images": b64(&obama) }), "must be an array"),
        (json!({ "images": [b64(&obama)], "image": b64(&obama) }), "not both"),
    ] {
        json_refused(&host, "face.detect", &body, 400, needle);
    }
    assert_eq!(faces_in_obama(&host), 1);
}

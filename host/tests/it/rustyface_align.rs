//! `rustyface`'s landmarks, alignment, `face.embed` on photos and `face.compare`, in a real host
//! with the real plugin, face-api's real weights and the `face_recognition==1.3.0` sdist's test
//! photos (both laid out by `scripts/fetch-models.sh`):
//! - every Obama-Obama distance < 0.6 < every Obama-Biden distance, through `face.embed` and
//!   through `face.compare` (the same numbers);
//! - a photo rotated by 25 degrees still matches: its landmarks are the original ones rotated,
//!   and the aligned chip gives nearly the same descriptor;
//! - a photo with no face in `face.compare` -> 400 naming which image;
//! - after all that, deleting the plugin file unloads the library (`residency: unloaded`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{lib_name, link_models, product_plugin, Host};

const FACE_API: &str = "vladmandic/face-api";

/// The folder `scripts/fetch-models.sh` puts the face_recognition sdist's test photos in.
fn photos_dir() -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(models);
    models.join("test-images/face_recognition")
}

fn photo(name: &str) -> Vec<u8> {
    let path = photos_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `bash scripts/fetch-models.sh` first)", path.display())
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn face_host(models: &tempfile::TempDir) -> Host {
    let dir = link_models(models.path(), &[FACE_API]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");
    host
}

fn call(host: &Host, capability: &str, body: &Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/rustyface/{capability}"), &body.to_string())
}

fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, &body);
    assert_eq!(status, 200, "{capability} -> {v}");
    v
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!((a.len(), b.len()), (128, 128));
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// `face.embed` of a photo sent as the raw body: its only face's descriptor and landmarks.
fn embed_one(
    host: &Host,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) -> (Vec<f32>, Vec<[f32; 2]>) {
    let (status, body) = host.post_bytes("/api/plugins/rustyface/face.embed", content_type, bytes);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "face.embed {name} -> {}", String::from_utf8_lossy(&body));
    let faces = v["faces"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(faces.len(), 1, "{name}: exactly one face in the portrait: {v}");
    let face = &faces[0];
    let landmarks: Vec<[f32; 2]> = face["landmarks"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no landmarks: {face}"))
        .iter()
        .map(|p| {
            let p = floats(p);
            [p[0], p[1]]
        })
        .collect();
    assert_eq!(landmarks.len(), 68, "{name}");
    let descriptor = floats(&face["descriptor"]);
    assert_eq!(descriptor.len(), 128, "{name}");
    (descriptor, landmarks)
}

/// `img` rotated by `deg` degrees (counter-clockwise on screen) about its centre, on a canvas
/// big enough to hold all of it (black around), bilinear; and the map from a point of `img` to
/// the rotated image.
fn rotate(img: &image::RgbImage, deg: f64) -> (image::RgbImage, impl Fn([f32; 2]) -> [f32; 2]) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (s, c) = (-deg.to_radians()).sin_cos();
    let (nw, nh) = ((w * c.abs() + h * s.abs()).ceil(), (w * s.abs() + h * c.abs()).ceil());
    let (cx, cy, ncx, ncy) = (w / 2.0, h / 2.0, nw / 2.0, nh / 2.0);
    let mut out = image::RgbImage::new(nw as u32, nh as u32);
    for y in 0..nh as u32 {
        for x in 0..nw as u32 {
            // Inverse map: rotated -> original.
            let (dx, dy) = (x as f64 - ncx, y as f64 - ncy);
            let (sx, sy) = (c * dx + s * dy + cx, -s * dx + c * dy + cy);
            if sx < 0.0 || sy < 0.0 || sx > w - 1.0 || sy > h - 1.0 {
                continue;
            }
            let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
            let (x1, y1) = ((x0 + 1).min(img.width() - 1), (y0 + 1).min(img.height() - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let mut px = [0u8; 3];
            for (ch, v) in px.iter_mut().enumerate() {
                let p = |xx: u32, yy: u32| img.get_pixel(xx, yy)[ch] as f64;
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                *v = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
            out.put_pixel(x, y, image::Rgb(px));
        }
    }
    let forward = move |p: [f32; 2]| {
        let (dx, dy) = (p[0] as f64 - cx, p[1] as f64 - cy);
        [(c * dx - s * dy + ncx) as f32, (s * dx + c * dy + ncy) as f32]
    };
    (out, forward)
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[test]
fn rustyface_align_separates_obama_from_biden_matches_a_rotated_photo_and_unloads() {
    let models = tempfile::tempdir().unwrap();
    let host = face_host(&models);

    // face.embed on each portrait: one face each; the distances separate at 0.6.
    let names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];
    let photos: Vec<Vec<u8>> = names.iter().map(|n| photo(n)).collect();
    let embedded: Vec<(Vec<f32>, Vec<[f32; 2]>)> =
        names.iter().zip(&photos).map(|(n, p)| embed_one(&host, n, p, "image/jpeg")).collect();
    let mut same = Vec::new();
    let mut different = Vec::new();
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            let d = distance(&embedded[i].0, &embedded[j].0);
            let pair_is_same = names[i] != "biden.jpg" && names[j] != "biden.jpg";
            eprintln!("face.embed {} - {}: {d:.4}", names[i], names[j]);
            if pair_is_same {
                same.push(d)
            } else {
                different.push(d)
            }
            // face.compare (base64 JSON) gives the same number and says whether it is < 0.6.
            let v = ok(
                &host,
                "face.compare",
                json!({ "image_a": b64(&photos[i]), "image_b": b64(&photos[j]) }),
            );
            let cd = v["distance"].as_f64().unwrap() as f32;
            eprintln!("face.compare {} - {}: {cd:.4} same={}", names[i], names[j], v["same"]);
            assert!((cd - d).abs() < 1e-4, "compare {cd} vs embed {d}");
            assert_eq!(v["threshold"], 0.6, "{v}");
            assert_eq!(v["same"], json!(pair_is_same), "{} - {}: {v}", names[i], names[j]);
        }
    }
    let worst_same = same.iter().cloned().fold(0.0f32, f32::max);
    let best_different = different.iter().cloned().fold(f32::INFINITY, f32::min);
    eprintln!("Obama-Obama max {worst_same:.4} < 0.6 < Obama-Biden min {best_different:.4}");
    assert_eq!((same.len(), different.len()), (3, 3));
    assert!(worst_same < 0.6, "Obama-Obama distances {same:?}");
    assert!(best_different > 0.6, "Obama-Biden distances {different:?}");

    // face.detect {landmarks: true} gives the same 68 points as face.embed; without, none.
    let v = ok(&host, "face.detect", json!({ "image": b64(&photos[0]), "landmarks": true }));
    let detected: Vec<[f32; 2]> = v["faces"][0]["landmarks"]
        .as_array()
        .unwrap_or_else(|| panic!("no landmarks: {v}"))
        .iter()
        .map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
        .collect();
    assert_eq!(detected, embedded[0].1, "{v}");
    let v = ok(&host, "face.detect", json!({ "image": b64(&photos[0]) }));
    assert!(v["faces"][0].get("landmarks").is_none(), "{v}");
    let info = ok(&host, "model.load", json!({ "model": "landmarks" }));
    assert_eq!(info["tensors"], 49, "{info}");

    // A custom threshold is used and echoed.
    let v = ok(
        &host,
        "face.compare",
        json!({ "image_a": b64(&photos[0]), "image_b": b64(&photos[1]), "threshold": 0.05 }),
    );
    assert_eq!((v["same"].clone(), v["threshold"].clone()), (json!(false), json!(0.05)), "{v}");

    // obama.jpg rotated by 25 degrees: the landmarks follow the rotation, and the aligned
    // chip gives nearly the descriptor of the upright photo, still far below 0.6.
    let upright = image::load_from_memory(&photos[0]).unwrap().to_rgb8();
    for deg in [25.0, -25.0] {
        let (rotated, forward) = rotate(&upright, deg);
        let (descriptor, landmarks) =
            embed_one(&host, "obama rotated", &png(&rotated), "image/png");
        let original = &embedded[0].1;
        // Outer eye corners: the scale of the face.
        let eyes = ((original[36][0] - original[45][0]).powi(2)
            + (original[36][1] - original[45][1]).powi(2))
        .sqrt();
        let mean_error = original
            .iter()
            .zip(&landmarks)
            .map(|(p, q)| {
                let m = forward(*p);
                ((m[0] - q[0]).powi(2) + (m[1] - q[1]).powi(2)).sqrt()
            })
            .sum::<f32>()
            / 68.0;
        let d_upright = distance(&descriptor, &embedded[0].0);
        let d_other = distance(&descriptor, &embedded[1].0);
        let d_biden = distance(&descriptor, &embedded[3].0);
        eprintln!(
            "obama.jpg rotated {deg}: landmarks off by {mean_error:.2} px on average (eye corners \
             {eyes:.0} px apart); distance to upright {d_upright:.4}, to obama2 {d_other:.4}, \
             to biden {d_biden:.4}"
        );
        assert!(mean_error < 0.08 * eyes, "landmarks {mean_error} px off ({eyes} px eyes)");
        assert!(d_upright < 0.3, "rotated vs upright: {d_upright}");
        assert!(d_other < 0.6 && d_biden > 0.6, "{d_other} {d_biden}");
        let v = ok(
            &host,
            "face.compare",
            json!({ "image_a": b64(&png(&rotated)), "image_b": b64(&photos[2]) }),
        );
        assert_eq!(v["same"], true, "rotated obama vs obama3: {v}");
    }

    // A photo with no face (the lower part of obama.jpg: suit and desk): 400 naming the image.
    let lower = image::DynamicImage::ImageRgb8(upright.clone()).crop_imm(
        0,
        upright.height() * 3 / 4,
        upright.width(),
        upright.height() / 4,
    );
    let no_face = png(&lower.to_rgb8());
    let v = ok(&host, "face.detect", json!({ "image": b64(&no_face) }));
    assert_eq!(v["faces"], json!([]), "the crop has no face: {v}");
    for (a, b, which) in [(&photos[0], &no_face, "image_b"), (&no_face, &photos[0], "image_a")] {
        let (status, v) =
            call(&host, "face.compare", &json!({ "image_a": b64(a), "image_b": b64(b) }));
        assert_eq!(status, 400, "{v}");
        let message = v.to_string();
        assert!(message.contains(which) && message.contains("no face"), "{message}");
    }
    // Bad input names the image too, and the plugin keeps serving.
    let (status, v) = call(
        &host,
        "face.compare",
        &json!({ "image_a": b64(b"not an image"), "image_b": b64(&photos[0]) }),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("image_a"), "{v}");
    let (status, v) = call(&host, "face.compare", &json!({ "image_a": b64(&photos[0]) }));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("image_b"), "{v}");
    ok(&host, "face.compare", json!({ "image_a": b64(&photos[0]), "image_b": b64(&photos[1]) }));

    // After detection, landmarks and embedding, deleting the plugin file unloads the library.
    host.remove(&lib_name("bkg_plugin_rustyface"));
    let p = host.wait_residency("rustyface");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

//! `rustyface`'s galleries and `face.recognize`, in a real host with the real plugin, face-api's
//! real weights and the `face_recognition==1.3.0` sdist's test photos (laid out by
//! `scripts/fetch-models.sh`):
//! - enrol Obama (obama.jpg) and Biden; obama2/obama3 are recognized as Obama, biden.jpg as
//!   Biden; the same after the host is killed and restarted (the gallery lives on disk);
//! - deleting Obama removes his files from the plugin's data folder, and he is unknown from
//!   then on;
//! - bad inputs (unknown gallery / person, bad descriptor, face_index out of range, a photo
//!   with no face) -> 4xx naming the problem, and the plugin keeps serving;
//! - a hot swap to a new build of the plugin, then a restart: the gallery is still there;
//! - enrolments and deletes of one person racing each other leave only whole entries (a
//!   `.json` with its `.jpg` crop), and only 200 / 404 answers.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{lib_name, link_models, product_plugin, Host};

const FACE_API: &str = "vladmandic/face-api";

fn test_images() -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(models);
    models.join("test-images")
}

fn photo(rel: &str) -> String {
    let path = test_images().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run `bash scripts/fetch-models.sh` first)", path.display())
    });
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn call(host: &Host, capability: &str, body: &Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/rustyface/{capability}"), &body.to_string())
}

fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, &body);
    assert_eq!(status, 200, "{capability} -> {v}");
    v
}

/// `capability` answers `status` with an error message containing `needle`.
fn refused(host: &Host, capability: &str, body: Value, status: u16, needle: &str) {
    let (code, v) = call(host, capability, &body);
    assert_eq!(code, status, "{capability} {needle}: {v}");
    assert!(v.to_string().contains(needle), "{capability}: expected '{needle}' in {v}");
}

/// The person `face.recognize` gives the only face of `photo`.
fn recognized(host: &Host, name: &str) -> Value {
    let v = ok(host, "face.recognize", json!({ "image": photo(name) }));
    let faces = v["faces"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(faces.len(), 1, "{name}: one face: {v}");
    let f = &faces[0];
    if f["person"].is_null() {
        assert!(f["distance"].is_null() || f["distance"].as_f64().unwrap() >= 0.6, "{f}");
    } else {
        assert!(f["distance"].as_f64().unwrap() < 0.6, "{f}");
    }
    f["person"].clone()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn rustyface_gallery_enrols_recognizes_survives_a_restart_and_deletes_on_disk() {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &[FACE_API]);
    let args = ["--models-dir", dir.to_str().unwrap()];
    let host = Host::start_with(&args);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");

    // Empty default gallery: faces are unknown.
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), Value::Null);

    let e = ok(
        &host,
        "gallery.enrol",
        json!({ "person": "obama", "image": photo("face_recognition/obama.jpg") }),
    );
    assert_eq!(e["gallery"], "default", "{e}");
    assert_eq!(e["crop"], true, "{e}");
    ok(
        &host,
        "gallery.enrol",
        json!({ "person": "biden", "image": photo("face_recognition/biden.jpg") }),
    );
    // A descriptor enrolled as is, in a second gallery.
    let emb = ok(&host, "face.embed", json!({ "image": photo("face_recognition/biden.jpg") }));
    let biden_descriptor = emb["faces"][0]["descriptor"].clone();
    ok(
        &host,
        "gallery.enrol",
        json!({ "gallery": "staff", "person": "joe", "descriptor": biden_descriptor }),
    );

    let list = ok(&host, "gallery.list", json!({}));
    assert_eq!(
        list["persons"],
        json!([{ "person": "biden", "entries": 1 }, { "person": "obama", "entries": 1 }]),
        "{list}"
    );
    assert_eq!(list["galleries"], json!(["default", "staff"]), "{list}");

    let check = |host: &Host| {
        assert_eq!(recognized(host, "face_recognition/obama2.jpg"), "obama");
        assert_eq!(recognized(host, "face_recognition/obama3.jpg"), "obama");
        assert_eq!(recognized(host, "face_recognition/biden.jpg"), "biden");
        let v =
            ok(host, "face.recognize", json!({ "image": photo("face_recognition/obama2.jpg") }));
        let candidates = v["faces"][0]["candidates"].as_array().unwrap();
        assert_eq!(candidates.len(), 1, "{v}");
        assert_eq!(candidates[0]["person"], "biden", "{v}");
        assert!(candidates[0]["distance"].as_f64().unwrap() >= 0.6, "{v}");
        let v = ok(
            host,
            "face.recognize",
            json!({ "gallery": "staff", "image": photo("face_recognition/biden.jpg") }),
        );
        assert_eq!(v["faces"][0]["person"], "joe", "{v}");
    };
    check(&host);

    // The person's entries, and the crop both inline and through gallery.crop.
    let p = ok(&host, "gallery.person", json!({ "person": "obama" }));
    let entries = p["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{p}");
    let id = entries[0]["id"].as_str().unwrap().to_string();
    assert!(entries[0]["box"]["w"].as_f64().unwrap() > 50.0, "{p}");
    let inline = base64::engine::general_purpose::STANDARD
        .decode(entries[0]["crop"].as_str().unwrap())
        .unwrap();
    let body = json!({ "person": "obama", "entry": id }).to_string();
    let (status, jpeg) =
        host.post_bytes("/api/plugins/rustyface/gallery.crop", "application/json", body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&jpeg));
    assert_eq!(jpeg, inline);
    assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff], "a JPEG");

    // Killed and restarted: the galleries are still there.
    let host = host.kill_and_restart(&args);
    host.wait_state("rustyface", "running");
    check(&host);

    // Delete Obama: his files are gone, and he is unknown from then on.
    let obama_dir = host.data_dir().join("plugin-data/rustyface/galleries/default/obama");
    let files = files_under(&obama_dir);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "jpg")), "{files:?}");
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "json")), "{files:?}");
    let d = ok(&host, "gallery.delete", json!({ "person": "obama" }));
    assert_eq!(d["deleted_entries"], 1, "{d}");
    assert!(!obama_dir.exists(), "{} still exists", obama_dir.display());
    for f in &files {
        assert!(!f.exists(), "{} still exists", f.display());
    }
    let leftovers: Vec<PathBuf> = files_under(&host.data_dir().join("plugin-data/rustyface"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(&id))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), Value::Null);
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), "biden");
    let list = ok(&host, "gallery.list", json!({}));
    assert_eq!(list["persons"], json!([{ "person": "biden", "entries": 1 }]), "{list}");

    // Bad inputs: clear 4xx.
    refused(&host, "gallery.list", json!({ "gallery": "nope" }), 404, "no gallery 'nope'");
    refused(
        &host,
        "face.recognize",
        json!({ "gallery": "nope", "image": photo("face_recognition/biden.jpg") }),
        404,
        "no gallery 'nope'",
    );
    refused(&host, "gallery.person", json!({ "person": "obama" }), 404, "no person 'obama'");
    refused(&host, "gallery.delete", json!({ "person": "obama" }), 404, "no person 'obama'");
    refused(&host, "gallery.list", json!({ "gallery": "Bad Name" }), 400, "gallery name");
    refused(
        &host,
        "gallery.enrol",
        json!({ "person": "x", "descriptor": [0.1, 0.2] }),
        400,
        "128 numbers, got 2",
    );
    let mut nan = vec![json!(0.0); 128];
    nan[5] = json!("NaN");
    refused(
        &host,
        "gallery.enrol",
        json!({ "person": "x", "descriptor": nan }),
        400,
        "'descriptor'[5] must be a finite number",
    );
    refused(
        &host,
        "gallery.enrol",
        json!({ "person": "x", "image": photo("face_recognition/biden.jpg"), "face_index": 3 }),
        400,
        "face_index 3 is out of range: the image has 1 face",
    );
    refused(
        &host,
        "gallery.enrol",
        json!({ "person": "x", "image": photo("no-face/flower.jpg") }),
        400,
        "no face found",
    );
    refused(
        &host,
        "gallery.enrol",
        json!({ "image": photo("face_recognition/biden.jpg") }),
        400,
        "'person' is required",
    );
    // A group photo: which face must be said; any index below the count is taken.
    let group = photo("face-api-demo/sample1.jpg");
    let (code, v) = call(&host, "gallery.enrol", &json!({ "person": "x", "image": group }));
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("say which with face_index"), "{v}");
    let faces =
        ok(&host, "face.embed", json!({ "image": group }))["faces"].as_array().unwrap().len();
    assert!(faces >= 2, "{faces}");
    assert!(v.to_string().contains(&format!("the image has {faces} faces")), "{v}");
    refused(
        &host,
        "gallery.enrol",
        json!({ "person": "x", "image": group, "face_index": faces }),
        400,
        &format!("face_index {faces} is out of range: the image has {faces} face(s)"),
    );
    let e = ok(
        &host,
        "gallery.enrol",
        json!({ "gallery": "group", "person": "second", "image": group, "face_index": 1 }),
    );
    assert_eq!(e["faces_in_image"], faces, "{e}");
    let v = ok(&host, "face.recognize", json!({ "gallery": "group", "image": group }));
    let named: Vec<&Value> =
        v["faces"].as_array().unwrap().iter().filter(|f| f["person"] == "second").collect();
    assert_eq!(named.len(), 1, "exactly the enrolled face is recognized: {v}");
    assert_eq!(named[0]["box"], e["box"], "{v}");

    // None of the refused enrolments stored anything; the plugin still serves.
    refused(&host, "gallery.person", json!({ "person": "x" }), 404, "no person 'x'");
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), "biden");
    assert_eq!(host.state("rustyface"), "running");
}

/// Every `.json` entry under `person_dir` has its `.jpg` crop and every crop its entry; no temp
/// file is left. Returns the entry ids.
fn whole_entries(person_dir: &Path) -> Vec<String> {
    let (mut json, mut jpg) = (Vec::new(), Vec::new());
    for f in files_under(person_dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".json") {
            json.push(id.to_string());
        } else if let Some(id) = name.strip_suffix(".jpg") {
            jpg.push(id.to_string());
        } else {
            panic!("a leftover in the gallery: {}", f.display());
        }
    }
    json.sort();
    jpg.sort();
    assert_eq!(json, jpg, "an entry without its crop or a crop without its entry");
    json
}

#[test]
fn rustyface_gallery_survives_a_hot_swap_and_a_restart() {
    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &[FACE_API]);
    let args = ["--models-dir", dir.to_str().unwrap()];
    let host = Host::start_with(&args);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");
    ok(
        &host,
        "gallery.enrol",
        json!({ "person": "obama", "image": photo("face_recognition/obama.jpg") }),
    );
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), "obama");
    let generation = host.plugin("rustyface")["generation"].as_u64().unwrap();

    // A new build of the plugin (the same code with bytes appended: another file hash).
    let mut bytes = std::fs::read(product_plugin("rustyface")).unwrap();
    bytes.extend_from_slice(&[0; 7]);
    host.install_bytes(&bytes, &lib_name("bkg_plugin_rustyface"));
    host.wait_for("the swap", || {
        let p = host.plugin("rustyface");
        p["generation"].as_u64() == Some(generation + 1) && p["state"] == "running"
    });
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), "obama");
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), Value::Null);
    // The new generation enrols; the old one, which detected, embedded and enrolled, unloaded.
    ok(
        &host,
        "gallery.enrol",
        json!({ "person": "biden", "image": photo("face_recognition/biden.jpg") }),
    );
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), "biden");
    host.wait_for("the old generation's residency", || {
        !host.plugin("rustyface")["history"][0]["residency"].is_null()
    });
    let old = &host.plugin("rustyface")["history"][0];
    assert_eq!(old["reason"], "swapped", "{old}");
    assert_eq!(old["residency"], "unloaded", "after detection, embedding and enrolment: {old}");

    // And a restart of the host.
    let host = host.restart(&args);
    host.wait_state("rustyface", "running");
    assert_eq!(recognized(&host, "face_recognition/obama3.jpg"), "obama");
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), "biden");
    let list = ok(&host, "gallery.list", json!({}));
    assert_eq!(
        list["persons"],
        json!([{ "person": "biden", "entries": 1 }, { "person": "obama", "entries": 1 }]),
        "{list}"
    );

    // An unchanged gallery is matched from memory: no load from disk, one hit per request.
    let cache = |host: &Host| {
        let (status, v) = host.get_json("/api/core/plugins/rustyface/status");
        assert_eq!(status, 200, "{v}");
        let c = &v["status"]["gallery_cache"];
        (c["loads"].as_u64().unwrap(), c["hits"].as_u64().unwrap())
    };
    let (loads, hits) = cache(&host);
    assert!(loads >= 1, "loaded once since the restart: {loads}");
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), "obama");
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), "biden");
    assert_eq!(cache(&host), (loads, hits + 2));
    // A change reloads it.
    ok(&host, "gallery.delete", json!({ "person": "biden" }));
    assert_eq!(recognized(&host, "face_recognition/biden.jpg"), Value::Null);
    assert_eq!(cache(&host), (loads + 1, hits + 2));
}

#[test]
fn rustyface_concurrent_enrol_and_delete_leave_only_whole_entries() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    let models = tempfile::tempdir().unwrap();
    let dir = link_models(models.path(), &[FACE_API]);
    let host = Host::start_with(&["--models-dir", dir.to_str().unwrap()]);
    host.install(&product_plugin("rustyface"), &lib_name("bkg_plugin_rustyface"));
    host.wait_state("rustyface", "running");
    let obama = photo("face_recognition/obama.jpg");
    let person_dir = host.data_dir().join("plugin-data/rustyface/galleries/default/obama");

    // Two threads enrol obama.jpg (a crop and an entry each time) while two delete him.
    let enrolled = std::sync::atomic::AtomicUsize::new(0);
    let deletes = std::sync::atomic::AtomicUsize::new(0);
    let enrolling = AtomicBool::new(true);
    let unexpected = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let enrollers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..6 {
                        let body = json!({ "person": "obama", "image": obama });
                        match call(&host, "gallery.enrol", &body) {
                            (200, _) => {
                                enrolled.fetch_add(1, Ordering::SeqCst);
                            }
                            (code, v) => {
                                unexpected.lock().unwrap().push(format!("enrol {code} {v}"))
                            }
                        }
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            s.spawn(|| {
                while enrolling.load(Ordering::SeqCst) {
                    match call(&host, "gallery.delete", &json!({ "person": "obama" })) {
                        (200, _) => {
                            deletes.fetch_add(1, Ordering::SeqCst);
                        }
                        (404, _) => {}
                        (code, v) => unexpected.lock().unwrap().push(format!("delete {code} {v}")),
                    }
                }
            });
        }
        for e in enrollers {
            e.join().unwrap();
        }
        enrolling.store(false, Ordering::SeqCst);
    });
    let unexpected = unexpected.into_inner().unwrap();
    assert!(unexpected.is_empty(), "only 200 or 404 answers: {unexpected:?}");
    assert_eq!(enrolled.load(Ordering::SeqCst), 12);
    assert!(deletes.load(Ordering::SeqCst) > 0, "the deletes raced the enrolments");

    // Whatever survived is whole, and the plugin reports exactly it.
    let ids = whole_entries(&person_dir);
    let list = ok(&host, "gallery.list", json!({}));
    let listed = list["persons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["person"] == "obama")
        .map_or(0, |p| p["entries"].as_u64().unwrap() as usize);
    assert_eq!(listed, ids.len(), "{list}");
    let gallery = person_dir.parent().unwrap();
    let stray: Vec<String> = std::fs::read_dir(gallery)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "obama" && n != ".generation")
        .collect();
    assert!(stray.is_empty(), "leftovers of deletes or writes: {stray:?}");

    // One more delete, then an enrolment: each lands whole.
    if !ids.is_empty() {
        ok(&host, "gallery.delete", json!({ "person": "obama" }));
    }
    assert!(!person_dir.exists());
    ok(&host, "gallery.enrol", json!({ "person": "obama", "image": obama }));
    assert_eq!(whole_entries(&person_dir).len(), 1);
    assert_eq!(recognized(&host, "face_recognition/obama2.jpg"), "obama");
}

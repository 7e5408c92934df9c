//! Galleries of known faces and `face.recognize`.
//!
//! A gallery is a folder under the plugin's data dir, `galleries/<gallery>/<person>/`, holding
//! per enrolled face `<entry>.json` (descriptor, box, time) and, when enrolled from a photo,
//! `<entry>.jpg` (the face's crop). The disk is the only state: every request reads it again,
//! so during a hot swap the old and the new generation (which overlap) see each other's
//! writes, and a restart finds everything. Writes are crash-safe (temp file, fsync, rename;
//! the crop is written before the `.json` that makes the entry visible); a person is deleted by
//! renaming its folder away (atomic) and then removing it.
//!
//! | capability | request | answer |
//! |---|---|---|
//! | `gallery.enrol` | `{gallery?, person, image \| descriptor, face_index?}` | the entry |
//! | `gallery.list` | `{gallery?}` | `{gallery, persons: [{person, entries}], galleries}` |
//! | `gallery.person` | `{gallery?, person}` | `{gallery, person, entries: [{id, created_ms, box, crop}]}` |
//! | `gallery.crop` | `{gallery?, person, entry}` | the crop, `image/jpeg` |
//! | `gallery.delete` | `{gallery?, person}` | `{deleted_entries, deleted_files}` |
//! | `face.recognize` | `{image, gallery?, threshold?: 0.6}` + detect options | `{faces: [{box, person, distance, candidates}]}` |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bkg_abi::serde_json::{self, json, Map, Value};
use bkg_abi::Error;
use serde::{Deserialize, Serialize};

use crate::api::{BoxPx, DetectOptions};
use crate::faces::{distance, DEFAULT_THRESHOLD};
use crate::image_io::{self, ImageRequest, Rgb};
use crate::Engine;

/// The gallery used when a request names none.
pub const DEFAULT_GALLERY: &str = "default";

/// Write `bytes` to `path` crash-safely: a temp file beside it, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// One enrolled face, as stored in `<entry>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub person: String,
    pub created_ms: u64,
    /// The face's box in the enrolled photo (none when enrolled from a descriptor).
    #[serde(rename = "box")]
    pub bbox: Option<BoxPx>,
    pub descriptor: Vec<f32>,
}

/// The galleries under a plugin's data dir.
pub struct Store {
    root: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

/// 400 unless `name` is 1..=64 of `[a-z0-9_-]` (`upper` also allows A-Z).
fn check_name(what: &str, name: &str, upper: bool) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'_'
                || b == b'-'
                || (upper && b.is_ascii_uppercase())
        });
    if ok {
        Ok(())
    } else {
        let set = if upper { "[A-Za-z0-9_-]" } else { "[a-z0-9_-]" };
        Err(Error::bad_request(format!("{what} name must be 1 to 64 of {set}, got {name:?}")))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A new entry id, unique across generations (time in ns + a counter + the process).
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{ns:x}-{:x}-{n:x}", std::process::id())
}

/// Folder names that are live (not dot-prefixed leftovers of a delete or a write).
fn live_dirs(dir: &Path) -> Result<Vec<String>, Error> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", dir, e)),
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    Ok(v)
}

impl Store {
    pub fn new(data_dir: &Path) -> Self {
        Store { root: data_dir.join("galleries") }
    }

    fn gallery_dir(&self, gallery: &str) -> Result<PathBuf, Error> {
        check_name("gallery", gallery, false)?;
        Ok(self.root.join(gallery))
    }

    /// The gallery's folder; 404 when it does not exist (the default gallery always does).
    fn existing_gallery(&self, gallery: &str) -> Result<PathBuf, Error> {
        let dir = self.gallery_dir(gallery)?;
        if !dir.is_dir() && gallery != DEFAULT_GALLERY {
            return Err(Error::not_found(format!("no gallery '{gallery}'")));
        }
        Ok(dir)
    }

    fn existing_person(&self, gallery: &str, person: &str) -> Result<PathBuf, Error> {
        check_name("person", person, true)?;
        let dir = self.existing_gallery(gallery)?.join(person);
        if !dir.is_dir() {
            return Err(Error::not_found(format!("no person '{person}' in gallery '{gallery}'")));
        }
        Ok(dir)
    }

    pub fn galleries(&self) -> Result<Vec<String>, Error> {
        live_dirs(&self.root)
    }

    pub fn persons(&self, gallery: &str) -> Result<Vec<String>, Error> {
        live_dirs(&self.existing_gallery(gallery)?)
    }

    /// The entries of a person folder, oldest first.
    fn entries_in(dir: &Path) -> Result<Vec<Entry>, Error> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            // Deleted meanwhile (by this or the other generation).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", dir, e)),
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = match std::fs::read(e.path()) {
                Ok(b) => b,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io("read", &e.path(), err)),
            };
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|err| {
                Error::internal(format!("gallery entry {}: {err}", e.path().display()))
            })?;
            v.push(entry);
        }
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(v)
    }

    pub fn entries(&self, gallery: &str, person: &str) -> Result<Vec<Entry>, Error> {
        Self::entries_in(&self.existing_person(gallery, person)?)
    }

    /// Store an entry (and its crop, written first).
    pub fn add(&self, gallery: &str, entry: &Entry, crop: Option<&[u8]>) -> Result<(), Error> {
        check_name("person", &entry.person, true)?;
        let dir = self.gallery_dir(gallery)?.join(&entry.person);
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        if let Some(jpeg) = crop {
            let path = dir.join(format!("{}.jpg", entry.id));
            write_atomic(&path, jpeg).map_err(|e| io("write", &path, e))?;
        }
        let path = dir.join(format!("{}.json", entry.id));
        let text = serde_json::to_vec(entry).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&path, &text).map_err(|e| io("write", &path, e))
    }

    pub fn crop(&self, gallery: &str, person: &str, entry: &str) -> Result<Vec<u8>, Error> {
        let dir = self.existing_person(gallery, person)?;
        check_name("entry", entry, false)?;
        let path = dir.join(format!("{entry}.jpg"));
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!(
                "no crop for entry '{entry}' of '{person}' in gallery '{gallery}'"
            )),
            _ => io("read", &path, e),
        })
    }

    /// Remove a person: its folder is renamed away (atomic), then removed with every file.
    pub fn delete(&self, gallery: &str, person: &str) -> Result<(usize, usize), Error> {
        let dir = self.existing_person(gallery, person)?;
        let entries = Self::entries_in(&dir)?.len();
        let files = std::fs::read_dir(&dir).map(|rd| rd.count()).unwrap_or(0);
        let gone = dir.with_file_name(format!(".deleted-{person}-{}", new_id()));
        std::fs::rename(&dir, &gone).map_err(|e| io("rename", &dir, e))?;
        std::fs::remove_dir_all(&gone).map_err(|e| io("remove", &gone, e))?;
        if let Some(parent) = gone.parent() {
            let _ = std::fs::File::open(parent).and_then(|f| f.sync_all());
        }
        Ok((entries, files))
    }
}

/// The face crop stored with an entry: the box with a 20% margin, as JPEG.
fn crop_jpeg(img: &Rgb, b: &BoxPx) -> Result<Vec<u8>, Error> {
    let mx = b.w * 0.2;
    let my = b.h * 0.2;
    let x = (b.x - mx).max(0.0) as u32;
    let y = (b.y - my).max(0.0) as u32;
    let w = (b.w + 2.0 * mx).max(1.0) as u32;
    let h = (b.h + 2.0 * my).max(1.0) as u32;
    let c = img.crop(x, y, w, h);
    let buf = image::RgbImage::from_raw(c.width, c.height, c.data)
        .ok_or_else(|| Error::internal("crop: bad buffer size"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|e| Error::internal(format!("crop: JPEG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

fn json_map(body: &[u8]) -> Result<Map<String, Value>, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::bad_request("the JSON body is not an object")),
        Err(e) => Err(Error::bad_request(format!("bad request body: {e}"))),
    }
}

fn take_str(m: &mut Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::bad_request(format!("'{key}' must be a string, got {v}"))),
    }
}

fn need_str(m: &mut Map<String, Value>, key: &str) -> Result<String, Error> {
    take_str(m, key)?.ok_or_else(|| Error::bad_request(format!("'{key}' is required")))
}

fn gallery_of(m: &mut Map<String, Value>) -> Result<String, Error> {
    Ok(take_str(m, "gallery")?.unwrap_or_else(|| DEFAULT_GALLERY.to_string()))
}

fn no_more(m: &Map<String, Value>, capability: &str) -> Result<(), Error> {
    match m.keys().next() {
        Some(k) => Err(Error::bad_request(format!("{capability}: unknown field '{k}'"))),
        None => Ok(()),
    }
}

/// A 128-float descriptor, or 400 naming what is wrong.
fn descriptor_of(v: &Value) -> Result<Vec<f32>, Error> {
    let arr = v
        .as_array()
        .ok_or_else(|| Error::bad_request("'descriptor' must be an array of 128 numbers"))?;
    if arr.len() != 128 {
        return Err(Error::bad_request(format!(
            "'descriptor' must have 128 numbers, got {}",
            arr.len()
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_f64() {
            Some(f) if f.is_finite() && (f as f32).is_finite() => Ok(f as f32),
            _ => Err(Error::bad_request(format!(
                "'descriptor'[{i}] must be a finite number, got {x}"
            ))),
        })
        .collect()
}

fn detect_options(m: Map<String, Value>) -> Result<DetectOptions, Error> {
    let o: DetectOptions = serde_json::from_value(Value::Object(m))
        .map_err(|e| Error::bad_request(format!("bad options: {e}")))?;
    o.check()?;
    Ok(o)
}

/// A person's best (smallest) distance to `d`: its nearest descriptor.
#[derive(Debug, Serialize)]
pub struct Candidate {
    pub person: String,
    pub distance: f32,
}

/// Run a gallery capability (`None`: not one of them).
pub fn invoke(
    engine: &Engine,
    store: &Store,
    capability: &str,
    content_type: &str,
    query: &str,
    body: &[u8],
) -> Option<Result<Value, Error>> {
    Some(match capability {
        "gallery.enrol" => enrol(engine, store, content_type, query, body),
        "gallery.list" => list(store, body),
        "gallery.person" => person(store, body),
        "gallery.delete" => delete(store, body),
        "face.recognize" => recognize(engine, store, content_type, query, body),
        _ => return None,
    })
}

/// `gallery.crop {gallery?, person, entry}`: the JPEG bytes.
pub fn crop(store: &Store, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut m = json_map(body)?;
    let gallery = gallery_of(&mut m)?;
    let person = need_str(&mut m, "person")?;
    let entry = need_str(&mut m, "entry")?;
    no_more(&m, "gallery.crop")?;
    store.crop(&gallery, &person, &entry)
}

fn enrol(
    engine: &Engine,
    store: &Store,
    content_type: &str,
    query: &str,
    body: &[u8],
) -> Result<Value, Error> {
    let is_json = content_type.trim().to_ascii_lowercase().starts_with("application/json")
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut entry = Entry {
        id: new_id(),
        person: String::new(),
        created_ms: now_ms(),
        bbox: None,
        descriptor: Vec::new(),
    };
    let gallery;
    let mut crop = None;
    let mut faces_found = None;
    let descriptor_body = if is_json { json_map(body).ok() } else { None };
    if let Some(mut m) = descriptor_body.filter(|m| m.contains_key("descriptor")) {
        gallery = gallery_of(&mut m)?;
        entry.person = need_str(&mut m, "person")?;
        if m.contains_key("image") {
            return Err(Error::bad_request("send either 'image' or 'descriptor', not both"));
        }
        entry.descriptor = descriptor_of(&m.remove("descriptor").unwrap_or(Value::Null))?;
        no_more(&m, "gallery.enrol")?;
        check_name("gallery", &gallery, false)?;
        check_name("person", &entry.person, true)?;
    } else {
        let req: ImageRequest<Map<String, Value>> = ImageRequest::parse(content_type, query, body)?;
        let mut m = req.options;
        gallery = gallery_of(&mut m)?;
        entry.person = need_str(&mut m, "person")?;
        check_name("gallery", &gallery, false)?;
        check_name("person", &entry.person, true)?;
        let face_index = match m.remove("face_index") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::bad_request(format!("'face_index' must be an integer >= 0, got {v}"))
            })? as usize),
        };
        let opts = detect_options(m)?;
        let img = image_io::decode(
            &req.bytes,
            req.content_type.as_deref(),
            engine.settings().max_pixels,
        )?;
        let mut faces = engine.embed_faces(&img, &opts)?;
        let n = faces.len();
        let face = match (n, face_index) {
            (0, _) => {
                return Err(Error::bad_request(format!(
                    "no face found in the {}x{} image (detector {}, min_confidence {})",
                    img.width,
                    img.height,
                    opts.detector.model().as_str(),
                    opts.min_confidence
                )))
            }
            (_, Some(i)) if i >= n => {
                return Err(Error::bad_request(format!(
                    "face_index {i} is out of range: the image has {n} face(s) (0..={})",
                    n - 1
                )))
            }
            (_, Some(i)) => faces.swap_remove(i),
            (1, None) => faces.swap_remove(0),
            (_, None) => {
                return Err(Error::bad_request(format!(
                    "the image has {n} faces: say which with face_index (0..={}, in the order \
                     face.embed returns them)",
                    n - 1
                )))
            }
        };
        crop = Some(crop_jpeg(&img, &face.bbox)?);
        entry.bbox = Some(face.bbox);
        entry.descriptor = face.descriptor;
        faces_found = Some(n);
    }
    store.add(&gallery, &entry, crop.as_deref())?;
    Ok(json!({
        "gallery": gallery,
        "person": entry.person,
        "id": entry.id,
        "created_ms": entry.created_ms,
        "box": entry.bbox,
        "crop": crop.is_some(),
        "faces_in_image": faces_found,
    }))
}

fn list(store: &Store, body: &[u8]) -> Result<Value, Error> {
    let mut m = json_map(body)?;
    let gallery = gallery_of(&mut m)?;
    no_more(&m, "gallery.list")?;
    let dir = store.existing_gallery(&gallery)?;
    let mut persons = Vec::new();
    for p in store.persons(&gallery)? {
        let n = Store::entries_in(&dir.join(&p))?.len();
        if n > 0 {
            persons.push(json!({ "person": p, "entries": n }));
        }
    }
    Ok(json!({ "gallery": gallery, "persons": persons, "galleries": store.galleries()? }))
}

fn person(store: &Store, body: &[u8]) -> Result<Value, Error> {
    let mut m = json_map(body)?;
    let gallery = gallery_of(&mut m)?;
    let person = need_str(&mut m, "person")?;
    no_more(&m, "gallery.person")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries: Vec<Value> = store
        .entries(&gallery, &person)?
        .into_iter()
        .map(|e| {
            let crop = store.crop(&gallery, &person, &e.id).ok().map(|b| b64.encode(b));
            json!({
                "id": e.id,
                "created_ms": e.created_ms,
                "box": e.bbox,
                "crop": crop,
                "crop_via": "gallery.crop {gallery, person, entry: id} -> image/jpeg",
            })
        })
        .collect();
    Ok(json!({ "gallery": gallery, "person": person, "entries": entries }))
}

fn delete(store: &Store, body: &[u8]) -> Result<Value, Error> {
    let mut m = json_map(body)?;
    let gallery = gallery_of(&mut m)?;
    let person = need_str(&mut m, "person")?;
    no_more(&m, "gallery.delete")?;
    let (entries, files) = store.delete(&gallery, &person)?;
    Ok(json!({
        "gallery": gallery,
        "person": person,
        "deleted_entries": entries,
        "deleted_files": files,
    }))
}

fn recognize(
    engine: &Engine,
    store: &Store,
    content_type: &str,
    query: &str,
    body: &[u8],
) -> Result<Value, Error> {
    let started = Instant::now();
    let req: ImageRequest<Map<String, Value>> = ImageRequest::parse(content_type, query, body)?;
    let mut m = req.options;
    let gallery = gallery_of(&mut m)?;
    let threshold = match m.remove("threshold") {
        None | Some(Value::Null) => DEFAULT_THRESHOLD,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| Error::bad_request(format!("'threshold' must be a number, got {v}")))?,
    };
    if !(threshold > 0.0 && threshold <= 2.0) {
        return Err(Error::bad_request(format!(
            "threshold must be within (0, 2] (descriptors are unit vectors), got {threshold}"
        )));
    }
    let opts = detect_options(m)?;
    let dir = store.existing_gallery(&gallery)?;
    let known: Vec<(String, Vec<Entry>)> = store
        .persons(&gallery)?
        .into_iter()
        .map(|p| Ok((p.clone(), Store::entries_in(&dir.join(&p))?)))
        .collect::<Result<_, Error>>()?;
    let img =
        image_io::decode(&req.bytes, req.content_type.as_deref(), engine.settings().max_pixels)?;
    let faces = engine.embed_faces(&img, &opts)?;
    let out: Vec<Value> = faces
        .iter()
        .map(|f| {
            let mut ranked: Vec<Candidate> = known
                .iter()
                .filter_map(|(p, entries)| {
                    entries
                        .iter()
                        .map(|e| distance(&f.descriptor, &e.descriptor))
                        .min_by(f32::total_cmp)
                        .map(|d| Candidate { person: p.clone(), distance: d })
                })
                .collect();
            ranked.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            let best = ranked.first();
            let matched = best.filter(|c| (c.distance as f64) < threshold);
            let skip = usize::from(matched.is_some());
            json!({
                "box": f.bbox,
                "score": f.score,
                "person": matched.map(|c| c.person.clone()),
                "distance": best.map(|c| c.distance),
                "candidates": ranked.iter().skip(skip).take(3).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "width": img.width,
        "height": img.height,
        "gallery": gallery,
        "threshold": threshold,
        "persons_known": known.iter().filter(|(_, e)| !e.is_empty()).count(),
        "faces": out,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(person: &str, d: f32) -> Entry {
        Entry {
            id: new_id(),
            person: person.into(),
            created_ms: now_ms(),
            bbox: None,
            descriptor: vec![d; 128],
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn two_generations_on_one_data_dir_see_each_others_writes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Store::new(dir.path()), Store::new(dir.path()));
        old.add("default", &entry("ann", 0.1), Some(b"jpeg")).unwrap();
        new.add("default", &entry("ann", 0.2), None).unwrap();
        assert_eq!(new.entries("default", "ann").unwrap().len(), 2);
        assert_eq!(old.entries("default", "ann").unwrap().len(), 2);
        let (entries, files) = new.delete("default", "ann").unwrap();
        assert_eq!((entries, files), (2, 3));
        assert_eq!(old.entries("default", "ann").unwrap_err().kind.0, 404);
        assert_eq!(old.persons("default").unwrap(), Vec::<String>::new());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("galleries/default"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn names_are_checked_so_no_path_leaves_the_gallery_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        for bad in ["", "..", "a/b", "A", &"x".repeat(65)] {
            assert_eq!(s.persons(bad).unwrap_err().kind.0, 400, "{bad:?}");
        }
        for bad in ["..", "a/b", ".hidden", "a b"] {
            assert_eq!(s.add("default", &entry(bad, 0.0), None).unwrap_err().kind.0, 400);
        }
        assert_eq!(s.crop("default", "ann", "../x").unwrap_err().kind.0, 404);
        s.add("default", &entry("Ann", 0.0), None).unwrap();
        assert_eq!(s.crop("default", "Ann", "../../x").unwrap_err().kind.0, 400);
        assert_eq!(s.persons("nope").unwrap_err().kind.0, 404);
        assert!(s.persons(DEFAULT_GALLERY).is_ok());
    }

    #[test]
    fn descriptors_must_be_128_finite_numbers() {
        assert!(descriptor_of(&json!(vec![0.5; 128])).is_ok());
        assert!(descriptor_of(&json!(vec![0.5; 127])).unwrap_err().message.contains("got 127"));
        assert!(descriptor_of(&json!("x")).is_err());
        let mut v = vec![json!(0.5); 128];
        v[3] = json!(1e300);
        assert!(descriptor_of(&Value::Array(v)).unwrap_err().message.contains("[3]"));
    }
}

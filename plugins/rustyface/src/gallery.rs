//! Galleries of known faces and `face.recognize`.
//!
//! A gallery is a folder under the plugin's data dir, `galleries/<gallery>/<person>/`, holding
//! per enrolled face `<entry>.json` (descriptor, box, time) and, when enrolled from a photo,
//! `<entry>.jpg` (the face's crop). The disk is authoritative: during a hot swap the old and
//! the new generation (which overlap) see each other's writes, and a restart finds everything.
//! Writes are crash-safe (temp file, fsync, rename; the crop is written before the `.json` that
//! makes the entry visible, and removed again if the `.json` cannot be written); a person is
//! deleted by renaming its folder away (atomic) and then removing it.
//!
//! Enrolments and deletes hold an OS file lock on `galleries/.lock` (shared by every generation
//! and process on the data dir), so an enrol racing a delete of the same person lands wholly
//! before it (and is deleted) or wholly after it (and stays): never a `.json` without its crop,
//! a crop without its `.json`, or an enrol failing because the folder vanished under it. Each
//! of them then writes a new token to `galleries/<gallery>/.generation`.
//!
//! Reads (`face.recognize`, `gallery.list`) keep each gallery's entries in memory, keyed by that
//! token and the gallery folder's mtime: a request reads one small file, not every entry, and
//! reloads the gallery when any generation changed it (a gallery without a token, written by an
//! older build, is read from disk every time).
//!
//! | capability | request | answer |
//! |---|---|---|
//! | `gallery.enrol` | `{gallery?, person, image \| descriptor, face_index?}` | the entry |
//! | `gallery.list` | `{gallery?}` | `{gallery, persons: [{person, entries}], galleries}` |
//! | `gallery.person` | `{gallery?, person}` | `{gallery, person, entries: [{id, created_ms, box, crop}]}` |
//! | `gallery.crop` | `{gallery?, person, entry}` | the crop, `image/jpeg` |
//! | `gallery.delete` | `{gallery?, person}` | `{deleted_entries, deleted_files}` |
//! | `face.recognize` | `{image, gallery?, threshold?: 0.6}` + detect options | `{faces: [{box, person, distance, candidates}]}` |

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bkg_abi::serde_json::{self, Value};
use bkg_abi::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{
    detect_options, BoxPx, Candidate, CropRequest, DeleteAnswer, EnrolAnswer, EnrolRequest,
    ListAnswer, ListRequest, PersonAnswer, PersonCount, PersonEntry, PersonRequest, PhotoFace,
    RecognizeAnswer, RecognizeOptions, RecognizedFace,
};
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

/// A gallery's persons with their entries, as loaded from disk.
pub type Known = Arc<Vec<(String, Vec<Entry>)>>;

/// What a cached gallery was loaded at: its `.generation` token and its folder's mtime.
type Stamp = (String, Option<SystemTime>);

/// The galleries under a plugin's data dir.
pub struct Store {
    root: PathBuf,
    /// Loaded galleries by name, with the stamp they were loaded at.
    cache: Mutex<HashMap<String, (Stamp, Known)>>,
    /// Galleries read from disk / answered from memory (the plugin's status shows them).
    loads: AtomicU64,
    hits: AtomicU64,
}

/// The file whose token changes with every enrolment or delete in a gallery.
const GENERATION: &str = ".generation";

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
        Store {
            root: data_dir.join("galleries"),
            cache: Mutex::new(HashMap::new()),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// `(loads, hits)`: galleries read from disk, and answered from memory.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.loads.load(Ordering::Relaxed), self.hits.load(Ordering::Relaxed))
    }

    /// Run `f` holding the galleries' write lock (an OS lock on `galleries/.lock`, so the other
    /// generation of a hot swap, or another process, waits too), then give `gallery` a new
    /// generation token so every reader reloads it.
    fn writing<T>(&self, gallery: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        std::fs::create_dir_all(&self.root).map_err(|e| io("create", &self.root, e))?;
        let path = self.root.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        fs2::FileExt::lock_exclusive(&lock).map_err(|e| io("lock", &path, e))?;
        let out = f();
        let dir = self.root.join(gallery);
        let token = dir.join(GENERATION);
        let bumped = if dir.is_dir() {
            write_atomic(&token, new_id().as_bytes()).map_err(|e| io("write", &token, e))
        } else {
            Ok(())
        };
        drop(lock); // closing the file releases the lock
        let out = out?;
        bumped?;
        Ok(out)
    }

    /// The stamp `gallery`'s folder is at now (None: no token, never cache it).
    fn stamp(dir: &Path) -> Result<Option<Stamp>, Error> {
        let path = dir.join(GENERATION);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        Ok(Some((token, mtime)))
    }

    /// Every person of `gallery` with their entries: from memory when the gallery has not
    /// changed on disk since it was loaded, else loaded again. 404 for an unknown gallery.
    pub fn known(&self, gallery: &str) -> Result<Known, Error> {
        let dir = self.existing_gallery(gallery)?;
        let stamp = Self::stamp(&dir)?;
        if let Some(stamp) = &stamp {
            let cache =
                self.cache.lock().map_err(|_| Error::internal("gallery cache: poisoned"))?;
            if let Some((at, known)) = cache.get(gallery) {
                if at == stamp {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Arc::clone(known));
                }
            }
        }
        // Read after the stamp: a write landing meanwhile changes the token again, so the next
        // request reloads; what is cached is never older than its stamp.
        self.loads.fetch_add(1, Ordering::Relaxed);
        let known: Known = Arc::new(
            live_dirs(&dir)?
                .into_iter()
                .map(|p| Ok((p.clone(), Self::entries_in(&dir.join(&p))?)))
                .collect::<Result<_, Error>>()?,
        );
        let mut cache =
            self.cache.lock().map_err(|_| Error::internal("gallery cache: poisoned"))?;
        match stamp {
            Some(stamp) => cache.insert(gallery.to_string(), (stamp, Arc::clone(&known))),
            None => cache.remove(gallery),
        };
        Ok(known)
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

    /// Store an entry (and its crop, written first), under the write lock: wholly or not at all.
    pub fn add(&self, gallery: &str, entry: &Entry, crop: Option<&[u8]>) -> Result<(), Error> {
        check_name("person", &entry.person, true)?;
        let dir = self.gallery_dir(gallery)?.join(&entry.person);
        let text = serde_json::to_vec(entry).map_err(|e| Error::internal(e.to_string()))?;
        self.writing(gallery, || {
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
            let jpg = dir.join(format!("{}.jpg", entry.id));
            if let Some(jpeg) = crop {
                write_atomic(&jpg, jpeg).map_err(|e| io("write", &jpg, e))?;
            }
            let path = dir.join(format!("{}.json", entry.id));
            write_atomic(&path, &text).map_err(|e| {
                // No crop without its entry.
                let _ = std::fs::remove_file(&jpg);
                let _ = std::fs::remove_file(&path);
                io("write", &path, e)
            })
        })
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

    /// Remove a person, under the write lock: its folder is renamed away (atomic), then removed
    /// with every file. 404 when the person is not (or no longer) there.
    pub fn delete(&self, gallery: &str, person: &str) -> Result<(usize, usize), Error> {
        self.existing_person(gallery, person)?;
        self.writing(gallery, || {
            // Again under the lock: another delete may have won.
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
        })
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

/// A JSON body (an empty one is `{}`) as `T`; 400 naming the capability and the problem.
fn json_request<T: DeserializeOwned>(capability: &str, body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("{capability}: bad request body: {e}")))
}

fn required(value: Option<String>, key: &str) -> Result<String, Error> {
    value.ok_or_else(|| Error::bad_request(format!("'{key}' is required")))
}

fn gallery_or_default(gallery: Option<String>) -> String {
    gallery.unwrap_or_else(|| DEFAULT_GALLERY.to_string())
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
        "gallery.enrol" => enrol(engine, store, content_type, query, body).map(to_value),
        "gallery.list" => list(store, body).map(to_value),
        "gallery.person" => person(store, body).map(to_value),
        "gallery.delete" => delete(store, body).map(to_value),
        "face.recognize" => recognize(engine, store, content_type, query, body).map(to_value),
        _ => return None,
    })
}

fn to_value<T: Serialize>(answer: T) -> Value {
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// `gallery.crop {gallery?, person, entry}`: the JPEG bytes.
pub fn crop(store: &Store, body: &[u8]) -> Result<Vec<u8>, Error> {
    let r: CropRequest = json_request("gallery.crop", body)?;
    let gallery = gallery_or_default(r.gallery);
    store.crop(&gallery, &required(r.person, "person")?, &required(r.entry, "entry")?)
}

fn enrol(
    engine: &Engine,
    store: &Store,
    content_type: &str,
    query: &str,
    body: &[u8],
) -> Result<EnrolAnswer, Error> {
    let is_json = content_type.trim().to_ascii_lowercase().starts_with("application/json")
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    // Parsed as a whole only when it may hold a descriptor (base64 never holds a `"`), not
    // once more for every photo.
    let with_descriptor = is_json
        && body.windows(12).any(|w| w == b"\"descriptor\"")
        && matches!(serde_json::from_slice(body), Ok(Value::Object(m)) if m.contains_key("descriptor"));
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
    if with_descriptor {
        if matches!(serde_json::from_slice(body), Ok(Value::Object(m)) if m.contains_key("image")) {
            return Err(Error::bad_request("send either 'image' or 'descriptor', not both"));
        }
        let r: EnrolRequest = json_request("gallery.enrol", body)?;
        gallery = gallery_or_default(r.gallery);
        entry.person = required(r.person, "person")?;
        entry.descriptor = descriptor_of(r.descriptor.as_ref().unwrap_or(&Value::Null))?;
        check_name("gallery", &gallery, false)?;
        check_name("person", &entry.person, true)?;
    } else {
        let req: ImageRequest<EnrolRequest> = ImageRequest::parse(content_type, query, body)?;
        let r = req.options;
        gallery = gallery_or_default(r.gallery);
        entry.person = required(r.person, "person")?;
        check_name("gallery", &gallery, false)?;
        check_name("person", &entry.person, true)?;
        let opts = detect_options(r.detector, r.min_confidence, r.min_size, r.max_faces)?;
        let img = image_io::decode(
            &req.bytes,
            req.content_type.as_deref(),
            engine.settings().max_pixels,
        )?;
        let mut faces = engine.embed_faces(&img, &opts)?;
        let n = faces.len();
        let face = match (n, r.face_index) {
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
    Ok(EnrolAnswer {
        gallery,
        person: entry.person,
        id: entry.id,
        created_ms: entry.created_ms,
        bbox: entry.bbox,
        crop: crop.is_some(),
        faces_in_image: faces_found,
    })
}

fn list(store: &Store, body: &[u8]) -> Result<ListAnswer, Error> {
    let r: ListRequest = json_request("gallery.list", body)?;
    let gallery = gallery_or_default(r.gallery);
    let persons = store
        .known(&gallery)?
        .iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(p, entries)| PersonCount { person: p.clone(), entries: entries.len() })
        .collect();
    Ok(ListAnswer { gallery, persons, galleries: store.galleries()? })
}

fn person(store: &Store, body: &[u8]) -> Result<PersonAnswer, Error> {
    let r: PersonRequest = json_request("gallery.person", body)?;
    let gallery = gallery_or_default(r.gallery);
    let person = required(r.person, "person")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries = store
        .entries(&gallery, &person)?
        .into_iter()
        .map(|e| PersonEntry {
            crop: store.crop(&gallery, &person, &e.id).ok().map(|b| b64.encode(b)),
            id: e.id,
            created_ms: e.created_ms,
            bbox: e.bbox,
            crop_via: "gallery.crop {gallery, person, entry: id} -> image/jpeg",
        })
        .collect();
    Ok(PersonAnswer { gallery, person, entries })
}

fn delete(store: &Store, body: &[u8]) -> Result<DeleteAnswer, Error> {
    let r: PersonRequest = json_request("gallery.delete", body)?;
    let gallery = gallery_or_default(r.gallery);
    let person = required(r.person, "person")?;
    let (deleted_entries, deleted_files) = store.delete(&gallery, &person)?;
    Ok(DeleteAnswer { gallery, person, deleted_entries, deleted_files })
}

/// Every face of `faces` matched against `known`: the nearest person under `threshold`.
pub fn match_faces(known: &Known, faces: &[PhotoFace], threshold: f64) -> Vec<RecognizedFace> {
    faces
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
            RecognizedFace {
                bbox: f.bbox,
                score: f.score,
                person: matched.map(|c| c.person.clone()),
                distance: best.map(|c| c.distance),
                candidates: ranked.iter().skip(skip).take(3).cloned().collect(),
            }
        })
        .collect()
}

fn recognize(
    engine: &Engine,
    store: &Store,
    content_type: &str,
    query: &str,
    body: &[u8],
) -> Result<RecognizeAnswer, Error> {
    let started = Instant::now();
    let req: ImageRequest<RecognizeOptions> = ImageRequest::parse(content_type, query, body)?;
    let r = req.options;
    let gallery = gallery_or_default(r.gallery);
    let threshold = r.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(threshold > 0.0 && threshold <= 2.0) {
        return Err(Error::bad_request(format!(
            "threshold must be within (0, 2] (descriptors are unit vectors), got {threshold}"
        )));
    }
    let opts = detect_options(r.detector, r.min_confidence, r.min_size, r.max_faces)?;
    // 404 for an unknown gallery before the photo is decoded and searched.
    store.existing_gallery(&gallery)?;
    let img =
        image_io::decode(&req.bytes, req.content_type.as_deref(), engine.settings().max_pixels)?;
    let faces = engine.embed_faces(&img, &opts)?;
    let known = store.known(&gallery)?;
    Ok(RecognizeAnswer {
        width: img.width,
        height: img.height,
        threshold,
        persons_known: known.iter().filter(|(_, e)| !e.is_empty()).count(),
        faces: match_faces(&known, &faces, threshold),
        gallery,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bkg_abi::serde_json::json;

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
        let left = tree(&dir.path().join("galleries/default"));
        assert_eq!(left, [GENERATION], "only the generation token is left");
    }

    /// Every file of a gallery folder, relative, sorted (dot-files and folders included).
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_dir() {
                out.push(format!("{name}/"));
                out.extend(tree(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn concurrent_enrol_and_delete_of_one_person_leave_whole_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        // Two stores on one data dir: the two generations of a hot swap.
        let stores = [Store::new(dir.path()), Store::new(dir.path())];
        let errors = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..4 {
                let (store, errors) = (&stores[t % 2], &errors);
                s.spawn(move || {
                    for i in 0..150 {
                        let r = if t < 2 {
                            store.add("default", &entry("ann", i as f32 / 1000.0), Some(b"jpeg"))
                        } else {
                            store.delete("default", "ann").map(|_| ())
                        };
                        match r {
                            Err(e) if e.kind.0 != 404 => errors.lock().unwrap().push(e.message),
                            _ => {}
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap();
        assert!(errors.is_empty(), "enrol/delete failed: {errors:?}");
        let files = tree(&dir.path().join("galleries/default"));
        let (mut json, mut jpg) = (Vec::new(), Vec::new());
        for f in &files {
            if let Some(id) = f.strip_prefix("ann/").and_then(|f| f.strip_suffix(".json")) {
                json.push(id.to_string());
            } else if let Some(id) = f.strip_prefix("ann/").and_then(|f| f.strip_suffix(".jpg")) {
                jpg.push(id.to_string());
            } else {
                assert!(f == "ann/" || f == ".generation", "a leftover: {f} in {files:?}");
            }
        }
        assert_eq!(json, jpg, "every entry has its crop and every crop its entry: {files:?}");
        let listed = stores[0].entries("default", "ann").map(|e| e.len()).unwrap_or(0);
        assert_eq!(listed, json.len());
    }

    #[test]
    fn recognize_reads_a_gallery_from_memory_until_any_generation_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Store::new(dir.path()), Store::new(dir.path()));
        old.add("default", &entry("ann", 0.1), None).unwrap();
        old.add("default", &entry("bob", 0.2), None).unwrap();
        let first = old.known("default").unwrap();
        assert_eq!(first.len(), 2);
        for _ in 0..5 {
            assert!(Arc::ptr_eq(&first, &old.known("default").unwrap()), "served from memory");
        }
        assert_eq!(old.cache_stats(), (1, 5));
        // The other generation enrols: the next read sees it, once from disk.
        new.add("default", &entry("ann", 0.3), None).unwrap();
        let known = old.known("default").unwrap();
        assert_eq!(known.iter().map(|(_, e)| e.len()).sum::<usize>(), 3);
        assert_eq!(old.cache_stats(), (2, 5));
        // Its delete too.
        new.delete("default", "bob").unwrap();
        let known = old.known("default").unwrap();
        assert_eq!(known.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["ann"]);
        // This store's own writes.
        old.delete("default", "ann").unwrap();
        assert!(old.known("default").unwrap().is_empty());
        assert_eq!(old.cache_stats(), (4, 5));
        // A gallery written by an older build has no token: read from disk every time.
        std::fs::remove_file(dir.path().join("galleries/default").join(GENERATION)).unwrap();
        old.known("default").unwrap();
        old.known("default").unwrap();
        assert_eq!(old.cache_stats(), (6, 5));
        assert_eq!(old.known("nope").unwrap_err().kind.0, 404);
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

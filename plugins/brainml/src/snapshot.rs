//! Snapshots of collections, checked by hash: `<data_dir>/snapshots/<id>/` holds a copy of
//! the collection's files and `manifest.json` (each file's path, size and SHA-256, the
//! collection's meta and counts).
//!
//! - create: under the collection's lock, the log's length and a handle on each file are
//!   taken (the log only grows, and a compaction writes a new file: the handle keeps the old
//!   one); the copy is made after the lock is released. Not copied: temp files, and the
//!   `vectors.f32` of an int8 index (derived from the log, rewritten at open). Written into `.tmp-<id>`, fsynced,
//!   renamed into place.
//! - verify and restore check every file against the manifest (size, SHA-256, no file
//!   missing or extra, no path outside the snapshot) and refuse a damaged snapshot naming
//!   the file (409) before anything else happens.
//! - restore without `as` builds the collection in `collections/.restore-<name>`, then under
//!   the store's lock renames the live folder to `.replaced-<name>` and the new one into its
//!   place; the live collection answers until then. A crash between the two renames is
//!   rolled back at the next start (the store renames `.replaced-<name>` back when
//!   `<name>` is missing): always the old collection or the new one, never neither.
//! - export is one tar archive (`manifest.json`, then the files), verified first; import
//!   checks every entry (regular files at plain relative paths only) and every hash before
//!   it keeps the snapshot under a fresh id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bkg_abi::{Error, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{
    valid_name, Deleted, Snapshot, SnapshotCreate, SnapshotFile, SnapshotId, SnapshotList,
    SnapshotListRequest, SnapshotRestore, SnapshotVerified,
};
use crate::store::collection::{Collection, Meta};
use crate::BrainMl;

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;
/// The largest archive `snapshot.import` takes.
pub const MAX_IMPORT_BYTES: u64 = 1 << 30;

/// One snapshot operation that writes at a time (they share the temp folders' names).
static WRITING: Mutex<()> = Mutex::new(());

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    id: String,
    collection: String,
    created_ms: u64,
    documents: usize,
    chunks: usize,
    bytes: u64,
    meta: Meta,
    files: Vec<SnapshotFile>,
}

impl Manifest {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            collection: self.collection.clone(),
            created_ms: self.created_ms,
            documents: self.documents,
            chunks: self.chunks,
            bytes: self.bytes,
            files: self.files.clone(),
        }
    }
}

fn parse<T: DeserializeOwned>(req: &Request<'_>) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { req.body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid request: {e}")))
}

/// The `snapshot.*` capabilities.
pub fn invoke(ml: &BrainMl, capability: &str, req: &Request<'_>) -> Result<Response, Error> {
    let snaps = ml.host.data_dir().join("snapshots");
    match capability {
        "snapshot.create" => {
            let r: SnapshotCreate = parse(req)?;
            let _w = writing();
            let s = create(ml, &snaps, &r.collection)?;
            ml.host.info(&format!("snapshot {} of collection {} created", s.id, s.collection));
            Ok(Response::json(&s)?.with_status(201))
        }
        "snapshot.list" => {
            let r: SnapshotListRequest = parse(req)?;
            Response::json(&SnapshotList { snapshots: list(ml, &snaps, r.collection.as_deref()) })
        }
        "snapshot.verify" => {
            let r: SnapshotId = parse(req)?;
            let m = verify(&snaps, &r.id)?;
            Response::json(&SnapshotVerified {
                id: m.id,
                ok: true,
                files: m.files.len(),
                bytes: m.bytes,
            })
        }
        "snapshot.restore" => {
            let r: SnapshotRestore = parse(req)?;
            let _w = writing();
            restore(ml, &snaps, &r.id, r.as_name.as_deref())
        }
        "snapshot.delete" => {
            let r: SnapshotId = parse(req)?;
            let _w = writing();
            let dir = existing(&snaps, &r.id)?;
            let gone = snaps.join(format!(".deleted-{}", r.id));
            std::fs::rename(&dir, &gone).map_err(|e| io("removing the snapshot", e))?;
            std::fs::remove_dir_all(&gone).map_err(|e| io("removing the snapshot", e))?;
            ml.host.info(&format!("snapshot {} deleted", r.id));
            Ok(Response::json(&Deleted { deleted: true })?)
        }
        "snapshot.export" => {
            let r: SnapshotId = parse(req)?;
            Ok(Response::bytes("application/x-tar", export(&snaps, &r.id)?))
        }
        "snapshot.import" => {
            let _w = writing();
            let s = import(&snaps, req.body)?;
            ml.host.info(&format!("snapshot {} of collection {} imported", s.id, s.collection));
            Ok(Response::json(&s)?.with_status(201))
        }
        other => Err(Error::not_found(format!("no capability {other}"))),
    }
}

fn writing() -> std::sync::MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `<collection>-<created_ms>-<8 random hex digits>`.
fn new_id(collection: &str, created_ms: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(nanos.map_or(0, |d| d.as_nanos()));
    format!("{collection}-{created_ms}-{:08x}", h.finish() as u32)
}

/// A snapshot id is what [`new_id`] makes: `[a-z0-9_-]`, 1 to 128 characters.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "snapshot id {id:?}: an id is 1 to 128 of a-z, 0-9, _ and - (as snapshot.create gave it)"
        )))
    }
}

/// The folder of an existing snapshot.
fn existing(snaps: &Path, id: &str) -> Result<PathBuf, Error> {
    check_id(id)?;
    let dir = snaps.join(id);
    if !dir.is_dir() {
        return Err(Error::not_found(format!("no snapshot {id}")));
    }
    Ok(dir)
}

/// A path a snapshot may hold: relative, plain names only (no `..`, `.`, root or prefix),
/// not the manifest itself.
fn plain_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && p != MANIFEST
        && !p.contains(['\\', '\0'])
        && !p.starts_with('/')
        && !p.ends_with('/')
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
        && p.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copy at most `limit` bytes of `from` into a new file `to` (fsynced); its size and SHA-256.
fn copy_hashed(from: &mut dyn Read, limit: u64, to: &Path) -> std::io::Result<(u64, String)> {
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut from = from.take(limit);
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    out.sync_all()?;
    Ok((size, hex(&hash.finalize())))
}

/// A file's size and SHA-256.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hash = Sha256::new();
    let size = std::io::copy(&mut f, &mut hash)?;
    Ok((size, hex(&hash.finalize())))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The regular files under `dir`, as `/`-separated paths relative to it (sorted); anything
/// else (a link, a device) is reported as `Err(path)`.
fn files_under(dir: &Path) -> std::io::Result<Vec<Result<String, String>>> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push((e.path(), rel));
            } else if t.is_file() {
                out.push(Ok(rel));
            } else {
                out.push(Err(rel));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Remove what interrupted operations left in the snapshots folder (under [`WRITING`]).
fn clean_leftovers(snaps: &Path) {
    if let Ok(rd) = std::fs::read_dir(snaps) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn create(ml: &BrainMl, snaps: &Path, name: &str) -> Result<Snapshot, Error> {
    let c = ml.get(name)?;
    // Under the lock: the state's counts, the log's length and a handle on every file.
    let (meta, documents, chunks, sources) = {
        let c = c.read().map_err(|_| crate::poisoned())?;
        if c.dropped {
            return Err(Error::not_found(format!("no collection named {name:?}")));
        }
        let (log, log_len) = c.log_reader().map_err(|e| io("reading the write-ahead log", e))?;
        let mut sources: Vec<(String, File, u64)> = vec![("wal.log".into(), log, log_len)];
        let listed = files_under(&c.dir).map_err(|e| io("listing the collection's files", e))?;
        for rel in listed.into_iter().flatten() {
            // The log is above; temp files are half written by definition; the vectors file
            // of an int8 index is derived from the log (rewritten at open) and written in
            // place, so a copy could be torn.
            if rel == "wal.log"
                || rel == crate::ann::vectors::FILE
                || rel.ends_with(".tmp")
                || rel.ends_with(".compact")
            {
                continue;
            }
            if !plain_path(&rel) {
                continue;
            }
            let f = File::open(c.dir.join(&rel)).map_err(|e| io(&format!("reading {rel}"), e))?;
            sources.push((rel, f, u64::MAX));
        }
        (c.meta.clone(), c.documents(), c.chunks(), sources)
    };
    std::fs::create_dir_all(snaps).map_err(|e| io("creating the snapshots folder", e))?;
    clean_leftovers(snaps);
    let created_ms = now_ms();
    let id = new_id(&meta.name, created_ms);
    let tmp = snaps.join(format!(".tmp-{id}"));
    let written = (|| -> std::io::Result<Manifest> {
        std::fs::create_dir_all(&tmp)?;
        let mut files = Vec::new();
        for (rel, mut f, limit) in sources {
            let to = tmp.join(&rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let (size, sha256) = copy_hashed(&mut f, limit, &to)?;
            if limit != u64::MAX && size != limit {
                return Err(std::io::Error::other(format!(
                    "the write-ahead log ended at byte {size}, before {limit}"
                )));
            }
            files.push(SnapshotFile { path: rel, size, sha256 });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes = files.iter().map(|f| f.size).sum();
        let m = Manifest {
            format: FORMAT,
            id: id.clone(),
            collection: meta.name.clone(),
            created_ms,
            documents,
            chunks,
            bytes,
            meta,
            files,
        };
        let json = serde_json::to_vec_pretty(&m).map_err(std::io::Error::other)?;
        let mut f = File::create(tmp.join(MANIFEST))?;
        f.write_all(&json)?;
        f.sync_all()?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, snaps.join(&id))?;
        sync_dir(snaps)?;
        Ok(m)
    })();
    match written {
        Ok(m) => Ok(m.snapshot()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(io("writing the snapshot", e))
        }
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let bytes = std::fs::read(dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{MANIFEST}: {e}"))
}

fn list(ml: &BrainMl, snaps: &Path, collection: Option<&str>) -> Vec<Snapshot> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(snaps) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        match read_manifest(&e.path()) {
            Ok(m) if collection.is_none_or(|c| c == m.collection) => out.push(m.snapshot()),
            Ok(_) => {}
            Err(err) => ml.host.warn(&format!("snapshot {name} is not listed: {err}")),
        }
    }
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    out
}

/// Check a manifest's own fields: its paths, names and sizes (no file is read).
fn check_manifest(m: &Manifest) -> Result<(), String> {
    if m.format != FORMAT {
        return Err(format!("{MANIFEST}: format {} (this brainml reads {FORMAT})", m.format));
    }
    if !valid_name(&m.collection) || m.meta.name != m.collection {
        return Err(format!("{MANIFEST}: collection {:?} is not a collection name", m.collection));
    }
    if !(1..=65536).contains(&m.meta.dim) {
        return Err(format!("{MANIFEST}: dimension {}", m.meta.dim));
    }
    let mut seen = BTreeSet::new();
    for f in &m.files {
        if !plain_path(&f.path) {
            return Err(format!("{}: a path outside the snapshot", f.path));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(format!("{}: listed twice", f.path));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{}: sha256 {:?} is not a SHA-256", f.path, f.sha256));
        }
    }
    if !seen.contains("wal.log") {
        return Err("wal.log: missing from the manifest".into());
    }
    if m.files.iter().map(|f| f.size).sum::<u64>() != m.bytes {
        return Err(format!("{MANIFEST}: bytes {} is not the sum of the files' sizes", m.bytes));
    }
    Ok(())
}

/// Check every file of snapshot `id` against its manifest; 409 naming the first that does
/// not match.
fn verify(snaps: &Path, id: &str) -> Result<Manifest, Error> {
    let dir = existing(snaps, id)?;
    let damaged = |what: String| Error::conflict(format!("snapshot {id} is damaged: {what}"));
    let m = read_manifest(&dir).map_err(damaged)?;
    if m.id != id {
        return Err(damaged(format!("{MANIFEST}: it names snapshot {:?}", m.id)));
    }
    check_manifest(&m).map_err(damaged)?;
    for f in &m.files {
        let path = dir.join(&f.path);
        match std::fs::symlink_metadata(&path) {
            Err(_) => return Err(damaged(format!("{}: missing", f.path))),
            Ok(md) if !md.is_file() => {
                return Err(damaged(format!("{}: not a plain file", f.path)))
            }
            Ok(md) if md.len() != f.size => {
                return Err(damaged(format!(
                    "{}: size {} != manifest {}",
                    f.path,
                    md.len(),
                    f.size
                )))
            }
            Ok(_) => {}
        }
        let (_, sha) = hash_file(&path).map_err(|e| damaged(format!("{}: {e}", f.path)))?;
        if sha != f.sha256 {
            return Err(damaged(format!("{}: sha256 {sha} != manifest {}", f.path, f.sha256)));
        }
    }
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for found in files_under(&dir).map_err(|e| damaged(format!("listing its files: {e}")))? {
        match found {
            Ok(p) if p == MANIFEST || listed.contains(p.as_str()) => {}
            Ok(p) => return Err(damaged(format!("{p}: an extra file the manifest does not list"))),
            Err(p) => return Err(damaged(format!("{p}: not a plain file"))),
        }
    }
    Ok(m)
}

fn restore(ml: &BrainMl, snaps: &Path, id: &str, as_name: Option<&str>) -> Result<Response, Error> {
    let m = verify(snaps, id)?;
    let name = as_name.unwrap_or(&m.collection).to_string();
    if !valid_name(&name) {
        return Err(Error::bad_request(format!("as {name:?}: use 1 to 64 of a-z, 0-9, _ and -")));
    }
    let exists = |store: &RwLock<crate::store::Store>| -> Result<bool, Error> {
        Ok(store.read().map_err(|_| crate::poisoned())?.collections.contains_key(&name))
    };
    if as_name.is_some() && exists(&ml.store)? {
        return Err(Error::conflict(format!("a collection named {name} exists")));
    }
    let root = ml.root();
    let staging = root.join(format!(".restore-{name}"));
    let meta = Meta { name: name.clone(), ..m.meta.clone() };
    // Build the new folder whole, beside the live one (which keeps answering).
    let staged = (|| -> Result<(), Error> {
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io("clearing an old restore", e))?;
        }
        let from = snaps.join(id);
        for f in &m.files {
            let to = staging.join(&f.path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating the restore", e))?;
            }
            let mut src = File::open(from.join(&f.path)).map_err(|e| io(&f.path, e))?;
            let (size, sha) =
                copy_hashed(&mut src, u64::MAX, &to).map_err(|e| io("copying the snapshot", e))?;
            if size != f.size || sha != f.sha256 {
                return Err(Error::conflict(format!(
                    "snapshot {id} is damaged: {}: sha256 {sha} != manifest {}",
                    f.path, f.sha256
                )));
            }
        }
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::internal(e.to_string()))?;
        let tmp = staging.join("meta.json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, staging.join("meta.json")))
            .and_then(|_| sync_dir(&staging))
            .map_err(|e| io("writing meta.json", e))
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // The swap, under the store's lock: the live folder aside, the new one in its place.
    let mut store = ml.store.write().map_err(|_| crate::poisoned())?;
    if as_name.is_some() && store.collections.contains_key(&name) {
        drop(store);
        let _ = std::fs::remove_dir_all(&staging);
        return Err(Error::conflict(format!("a collection named {name} exists")));
    }
    let live = store.collections.get(&name).cloned();
    let mut live_guard = match &live {
        Some(c) => Some(c.write().map_err(|_| crate::poisoned())?),
        None => None,
    };
    let target = root.join(&name);
    let aside = root.join(format!(".replaced-{name}"));
    let swapped = (|| -> std::io::Result<Collection> {
        if aside.exists() {
            std::fs::remove_dir_all(&aside)?;
        }
        let had_old = target.exists();
        if had_old {
            std::fs::rename(&target, &aside)?;
        }
        let moved = std::fs::rename(&staging, &target).and_then(|_| sync_dir(&root));
        let opened =
            moved.and_then(|_| Collection::open(&target, meta.clone(), &|w| ml.host.warn(w)));
        match opened {
            Ok(c) => Ok(c),
            Err(e) => {
                // Put the old folder back: the live collection stays as it was.
                if target.exists() {
                    let _ = std::fs::remove_dir_all(&target);
                }
                if had_old {
                    let _ = std::fs::rename(&aside, &target);
                    let _ = sync_dir(&root);
                }
                Err(e)
            }
        }
    })();
    let c = match swapped {
        Ok(c) => c,
        Err(e) => {
            drop(live_guard);
            drop(store);
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io("switching to the restored collection", e));
        }
    };
    if let Some(g) = live_guard.as_mut() {
        g.dropped = true; // writers holding the old one get "no collection"
    }
    drop(live_guard);
    let info = c.info();
    store.collections.insert(name.clone(), Arc::new(RwLock::new(c)));
    drop(store);
    let _ = std::fs::remove_dir_all(&aside);
    if let Ok(mut s) = ml.stats.lock() {
        s.remove(&name);
    }
    ml.host.info(&format!("collection {name} restored from snapshot {id}"));
    Response::json(&info)
}

fn export(snaps: &Path, id: &str) -> Result<Vec<u8>, Error> {
    let m = verify(snaps, id)?;
    let dir = snaps.join(id);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: u64, from: &mut dyn Read| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(bytes);
        h.set_mode(0o644);
        h.set_mtime(m.created_ms / 1000);
        b.append_data(&mut h, path, from)
    };
    let built = (|| -> std::io::Result<()> {
        let manifest = std::fs::read(dir.join(MANIFEST))?;
        add(MANIFEST, manifest.len() as u64, &mut manifest.as_slice())?;
        for f in &m.files {
            let mut src = File::open(dir.join(&f.path))?.take(f.size);
            add(&f.path, f.size, &mut src)?;
        }
        Ok(())
    })();
    built.map_err(|e| io("writing the archive", e))?;
    b.into_inner().map_err(|e| io("writing the archive", e))
}

/// An archive entry's path as a plain relative path (`./` in front is dropped), or why not.
fn entry_path(raw: &[u8]) -> Result<String, String> {
    let shown = String::from_utf8_lossy(raw).to_string();
    let s = std::str::from_utf8(raw).map_err(|_| format!("{shown:?}: a path that is not UTF-8"))?;
    let mut s = s;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    let s = s.trim_end_matches('/');
    if s == MANIFEST || plain_path(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{shown}: a path outside the snapshot (absolute, with .., or not a plain name)"
        ))
    }
}

fn import(snaps: &Path, body: &[u8]) -> Result<Snapshot, Error> {
    if body.is_empty() {
        return Err(Error::bad_request(
            "send a snapshot archive (application/x-tar, as snapshot.export gives it) as the body",
        ));
    }
    std::fs::create_dir_all(snaps).map_err(|e| io("creating the snapshots folder", e))?;
    clean_leftovers(snaps);
    let tmp = snaps.join(format!(".tmp-import-{}", new_id("x", now_ms())));
    std::fs::create_dir_all(&tmp).map_err(|e| io("creating the snapshot", e))?;
    let unpacked = unpack(body, &tmp).and_then(|found| finish_import(snaps, &tmp, found));
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    unpacked
}

/// Write the archive's regular files into `tmp` (after checking each path and kind); their
/// sizes and hashes by path.
fn unpack(body: &[u8], tmp: &Path) -> Result<BTreeMap<String, (u64, String)>, Error> {
    let bad = |m: String| Error::bad_request(format!("snapshot archive: {m}"));
    let mut archive = tar::Archive::new(body);
    let entries = archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let mut found = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
        let raw = entry.path_bytes().to_vec();
        let path = entry_path(&raw).map_err(bad)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue; // folders are made for the files in them
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            let what = match kind {
                k if k.is_symlink() => "a symbolic link",
                k if k.is_hard_link() => "a hard link",
                k if k.is_character_special() || k.is_block_special() => "a device file",
                k if k.is_fifo() => "a named pipe",
                _ => "not a regular file",
            };
            return Err(bad(format!("{path}: {what}; a snapshot holds regular files only")));
        }
        if found.contains_key(&path) {
            return Err(bad(format!("{path}: in the archive twice")));
        }
        let to = tmp.join(&path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("unpacking the archive", e))?;
        }
        let (size, sha) = copy_hashed(&mut entry, u64::MAX, &to)
            .map_err(|e| bad(format!("{path}: could not be read: {e}")))?;
        found.insert(path, (size, sha));
    }
    Ok(found)
}

fn finish_import(
    snaps: &Path,
    tmp: &Path,
    found: BTreeMap<String, (u64, String)>,
) -> Result<Snapshot, Error> {
    let bad = |m: String| Error::bad_request(format!("snapshot archive: {m}"));
    if !found.contains_key(MANIFEST) {
        return Err(bad(format!("no {MANIFEST} in the archive")));
    }
    let mut m = read_manifest(tmp).map_err(bad)?;
    check_manifest(&m).map_err(bad)?;
    for f in &m.files {
        match found.get(&f.path) {
            None => {
                return Err(bad(format!("{}: listed in the manifest, not in the archive", f.path)))
            }
            Some((size, _)) if *size != f.size => {
                return Err(bad(format!("{}: size {size} != manifest {}", f.path, f.size)))
            }
            Some((_, sha)) if *sha != f.sha256 => {
                return Err(bad(format!("{}: sha256 {sha} != manifest {}", f.path, f.sha256)))
            }
            Some(_) => {}
        }
    }
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    if let Some(extra) = found.keys().find(|p| *p != MANIFEST && !listed.contains(p.as_str())) {
        return Err(bad(format!("{extra}: in the archive, not in the manifest")));
    }
    m.id = new_id(&m.collection, now_ms());
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::internal(e.to_string()))?;
    let stored = (|| -> std::io::Result<()> {
        let manifest = tmp.join(MANIFEST);
        std::fs::remove_file(&manifest)?;
        let mut f = File::create(&manifest)?;
        f.write_all(&json)?;
        f.sync_all()?;
        sync_dir(tmp)?;
        std::fs::rename(tmp, snaps.join(&m.id))?;
        sync_dir(snaps)
    })();
    stored.map_err(|e| io("storing the imported snapshot", e))?;
    Ok(m.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_snapshot_paths() {
        for ok in ["wal.log", "meta.json", "ann.bin", "ann/graph.bin"] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "./wal.log",
            "a//b",
            "a/",
            "manifest.json",
            "..",
            ".",
            "a\\..\\b",
            "x\0y",
        ] {
            assert!(!plain_path(bad), "{bad:?}");
        }
        assert_eq!(entry_path(b"./wal.log").unwrap(), "wal.log");
        assert_eq!(entry_path(b"manifest.json").unwrap(), "manifest.json");
        assert!(entry_path(b"../evil").unwrap_err().starts_with("../evil: a path outside"));
        assert!(entry_path(b"/abs").is_err() && entry_path(b"a/../../b").is_err());
    }

    #[test]
    fn ids_are_fresh_and_checked() {
        let a = new_id("docs", 17);
        let b = new_id("docs", 17);
        assert!(a.starts_with("docs-17-") && a != b, "{a} {b}");
        assert!(check_id(&a).is_ok());
        for bad in ["", "../x", "a/b", "A", "x.y", &"a".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}

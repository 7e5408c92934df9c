//! The collections on disk (`<data_dir>/collections/<name>/{meta.json, wal.log}`) and in
//! memory.

pub mod collection;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bkg_abi::Error;

use collection::{Collection, Meta};

pub type Shared = Arc<RwLock<Collection>>;

#[derive(Default)]
pub struct Store {
    pub collections: BTreeMap<String, Shared>,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// Write a file so that it is either whole or absent: temp file, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A snapshot restore renames the live folder `<name>` to `.replaced-<name>`, then the
/// restored one into `<name>`. A crash between the two leaves no `<name>`: put the old one
/// back (the restore was never answered). Runs before the leftovers (dot folders) are removed.
fn recover_restores(root: &Path, warn: &dyn Fn(&str)) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().to_string();
        let Some(name) = file_name.strip_prefix(".replaced-") else { continue };
        let live = root.join(name);
        if live.exists() {
            continue; // the restore finished: the old folder is a leftover
        }
        match std::fs::rename(e.path(), &live) {
            Ok(()) => warn(&format!(
                "collection {name}: a snapshot restore was interrupted; the collection is kept \
                 as it was before it"
            )),
            Err(err) => {
                warn(&format!("collection {name}: could not undo an interrupted restore: {err}"))
            }
        }
    }
}

impl Store {
    /// Open every collection under `root`; one that cannot be read is skipped with a warning.
    pub fn open(root: &Path, warn: &dyn Fn(&str)) -> Store {
        let mut store = Store::default();
        recover_restores(root, warn);
        let Ok(entries) = std::fs::read_dir(root) else { return store };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let dir = e.path();
            if name.starts_with('.') {
                // A collection whose deletion was interrupted.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let meta = std::fs::read(dir.join("meta.json"))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(|e| e.to_string()));
            let meta = match meta {
                Ok(m) if m.name == name => m,
                Ok(m) => {
                    warn(&format!("skipping {}: its meta.json names {}", dir.display(), m.name));
                    continue;
                }
                Err(e) => {
                    warn(&format!("skipping {}: meta.json: {e}", dir.display()));
                    continue;
                }
            };
            match Collection::open(&dir, meta, warn) {
                Ok(c) => {
                    store.collections.insert(name, Arc::new(RwLock::new(c)));
                }
                Err(e) => warn(&format!("skipping {}: {e}", dir.display())),
            }
        }
        store
    }

    /// Create a collection's folder and open it.
    pub fn create(&mut self, root: &Path, meta: Meta) -> Result<Shared, Error> {
        if self.collections.contains_key(&meta.name) {
            return Err(Error::conflict(format!("a collection named {} exists", meta.name)));
        }
        let dir: PathBuf = root.join(&meta.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io("clearing an old folder", e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the collection's folder", e))?;
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&dir.join("meta.json"), &bytes).map_err(|e| io("writing meta.json", e))?;
        let c = Collection::open(&dir, meta.clone(), &|_| {})
            .map_err(|e| io("opening the write-ahead log", e))?;
        let shared = Arc::new(RwLock::new(c));
        self.collections.insert(meta.name, shared.clone());
        Ok(shared)
    }

    /// Forget a collection and remove its folder.
    pub fn delete(&mut self, root: &Path, name: &str) -> Result<(), Error> {
        let c = self
            .collections
            .remove(name)
            .ok_or_else(|| Error::not_found(format!("no collection named {name}")))?;
        if let Ok(mut c) = c.write() {
            c.dropped = true;
        }
        let dir = root.join(name);
        let gone = root.join(format!(".deleted-{name}"));
        std::fs::rename(&dir, &gone).map_err(|e| io("removing the collection's folder", e))?;
        std::fs::remove_dir_all(&gone).map_err(|e| io("removing the collection's folder", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod durability_tests;

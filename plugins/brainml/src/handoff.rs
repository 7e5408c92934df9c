//! Handing brainml's data over from one generation to the next. During a hot-swap the host
//! starts the new generation beside the old one, switches the routing, and only then drains
//! and stops the old one (docs/ARCHITECTURE.md, "hot-swap order"). Two generations must never
//! have the write-ahead logs open at once: a write the old one finishes after the new one
//! replayed the logs would be missing from the new one's memory, and both would append to the
//! same file. So the data dir has a lock file, held (an OS file lock, which the death of the
//! process releases too) from the moment a generation opens the store until its `stop`. A
//! generation that finds it taken opens the store on its first call, once the old one has let
//! go (or answers 503 if the call is cancelled first).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bkg_abi::Error;

/// The lock file, beside `collections/` in the plugin's data dir.
pub const FILE: &str = ".generation.lock";

#[derive(Default)]
pub struct Handoff {
    held: Mutex<Option<File>>,
}

impl Handoff {
    /// Take the lock if nobody holds it; `Ok(false)` if another generation does.
    pub fn try_take(&self, dir: &Path) -> Result<bool, Error> {
        let mut held = self.held.lock().map_err(|_| crate::poisoned())?;
        if held.is_some() {
            return Ok(true);
        }
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::internal(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => {
                Err(Error::internal(format!("locking {}: {e}", path.display())))
            }
        }
    }

    /// Wait for the lock until `cancelled` says stop (the call's deadline or its client).
    pub fn take(&self, dir: &Path, cancelled: &dyn Fn() -> bool) -> Result<(), Error> {
        loop {
            if self.try_take(dir)? {
                return Ok(());
            }
            if cancelled() {
                return Err(Error::unavailable(
                    "brainml's data is still held by its previous generation (a swap is in \
                     progress and its last calls are draining): try again",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            // Dropping the file unlocks it.
            held.take();
        }
    }
}

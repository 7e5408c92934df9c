//! The plugin's own compute threads: a rayon pool (config `threads`, default 2) whose threads
//! the plugin spawns itself and joins in `stop`.
//!
//! Every index build, every file the watcher re-reads and every call into tokei runs on it
//! (tokei uses rayon, and rayon's global pool is never joined: a library whose code ran there
//! could never be unloaded). Background jobs (`spawn`) check the plugin's stop flag, so
//! `shutdown` (which waits for them) returns promptly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::thread::JoinHandle;

use bkg_abi::Error;

struct Running {
    pool: rayon::ThreadPool,
    handles: Vec<JoinHandle<()>>,
}

/// A rayon pool that can be started, replaced and joined.
#[derive(Default)]
pub struct Pool {
    running: RwLock<Option<Running>>,
    lifecycle: Mutex<()>,
    spawned: AtomicUsize,
    joined: AtomicUsize,
}

fn poisoned() -> Error {
    Error::internal("pool: a lock was poisoned by an earlier panic")
}

fn stopped() -> Error {
    Error::unavailable("repoagent is stopped (no compute threads)")
}

impl Pool {
    /// Start `threads` threads, joining a previous pool first.
    pub fn start(&self, threads: usize) -> Result<(), Error> {
        let _guard = self.lifecycle.lock().map_err(|_| poisoned())?;
        self.shutdown_locked()?;
        let handles = Mutex::new(Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bkg-repoagent-{i}"))
            .spawn_handler(|thread| {
                let h = std::thread::Builder::new()
                    .name(thread.name().unwrap_or("bkg-repoagent").to_string())
                    .spawn(move || thread.run())?;
                if let Ok(mut hs) = handles.lock() {
                    hs.push(h);
                }
                Ok(())
            })
            .build()
            .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
        let handles = handles.into_inner().map_err(|_| poisoned())?;
        self.spawned.fetch_add(handles.len(), Ordering::SeqCst);
        *self.running.write().map_err(|_| poisoned())? = Some(Running { pool, handles });
        Ok(())
    }

    /// Drop the pool and join its threads (waits for running and queued jobs).
    pub fn shutdown(&self) -> Result<(), Error> {
        let _guard = self.lifecycle.lock().map_err(|_| poisoned())?;
        self.shutdown_locked()
    }

    fn shutdown_locked(&self) -> Result<(), Error> {
        let old = self.running.write().map_err(|_| poisoned())?.take();
        if let Some(Running { pool, handles }) = old {
            drop(pool);
            for h in handles {
                h.join().map_err(|_| Error::internal("a compute thread panicked"))?;
                self.joined.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Run `f` on the pool, blocking the caller until it is done.
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        let guard = self.running.read().map_err(|_| poisoned())?;
        match guard.as_ref() {
            Some(r) => Ok(r.pool.install(f)),
            None => Err(stopped()),
        }
    }

    /// Queue `f` on the pool without waiting for it (`shutdown` waits for it).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let guard = self.running.read().map_err(|_| poisoned())?;
        match guard.as_ref() {
            Some(r) => {
                r.pool.spawn(f);
                Ok(())
            }
            None => Err(stopped()),
        }
    }

    /// Threads alive in the pool now.
    pub fn threads(&self) -> usize {
        self.running.read().ok().and_then(|r| r.as_ref().map(|r| r.handles.len())).unwrap_or(0)
    }

    pub fn spawned_total(&self) -> usize {
        self.spawned.load(Ordering::SeqCst)
    }

    pub fn joined_total(&self) -> usize {
        self.joined.load(Ordering::SeqCst)
    }
}

//! The plugin's own compute threads.
//!
//! Everything that runs a network runs inside [`Pool::install`]: a rayon pool whose threads the
//! plugin spawns itself (`threads`, default 2) and joins in `stop`. rayon's global pool is never
//! touched (its threads are never joined and would pin the library), and the networks use the
//! plugin's own kernels rather than candle's element-wise ops on big tensors, which would start
//! candle 0.11's never-joined "barrier pool" (threads `candle-bp-N`). `status` counts those
//! threads so a test can see that none were started.

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

impl Pool {
    /// Start `threads` threads, joining a previous pool first.
    pub fn start(&self, threads: usize) -> Result<(), Error> {
        let _guard = self.lifecycle.lock().map_err(|_| Error::internal("pool: poisoned"))?;
        self.shutdown_locked()?;
        let handles = Mutex::new(Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bkg-rustyface-{i}"))
            .spawn_handler(|thread| {
                let h = std::thread::Builder::new()
                    .name(thread.name().unwrap_or("bkg-rustyface").to_string())
                    .spawn(move || thread.run())?;
                if let Ok(mut hs) = handles.lock() {
                    hs.push(h);
                }
                Ok(())
            })
            .build()
            .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
        let handles = handles.into_inner().map_err(|_| Error::internal("pool: poisoned"))?;
        self.spawned.fetch_add(handles.len(), Ordering::SeqCst);
        *self.running.write().map_err(|_| Error::internal("pool: poisoned"))? =
            Some(Running { pool, handles });
        Ok(())
    }

    /// Drop the pool and join its threads (waits for running work).
    pub fn shutdown(&self) -> Result<(), Error> {
        let _guard = self.lifecycle.lock().map_err(|_| Error::internal("pool: poisoned"))?;
        self.shutdown_locked()
    }

    fn shutdown_locked(&self) -> Result<(), Error> {
        let old = self.running.write().map_err(|_| Error::internal("pool: poisoned"))?.take();
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
        let guard = self.running.read().map_err(|_| Error::internal("pool: poisoned"))?;
        match guard.as_ref() {
            Some(r) => Ok(r.pool.install(f)),
            None => Err(Error::unavailable("rustyface is stopped (no compute threads)")),
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

/// Threads of candle's process-wide barrier pool alive in this process (named `candle-bp-N`).
pub fn barrier_threads_alive() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("candle-bp"))
        .count()
}

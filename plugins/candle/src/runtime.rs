//! The plugin's own compute threads.
//!
//! candle's CPU kernels (gemm, softmax, layer norm, ...) parallelise through rayon: on the
//! *current* rayon pool, i.e. rayon's process-wide global pool unless the caller runs inside
//! `ThreadPool::install`. The global pool's threads are never joined, so a plugin that touched
//! it could never leave memory. This runtime owns a pool (`threads`, default 2) whose threads it
//! spawns itself and joins in [`Runtime::shutdown`] (the plugin's `stop`); all model work runs
//! inside [`Runtime::install`].
//!
//! Not covered by this pool: candle 0.11 runs its quantized CPU matmul (`k_quants::matmul`,
//! GGUF models) *and* every element-wise unary/binary op on tensors of 64Ki elements or more
//! (`cpu_backend::utils::{unary,binary}_map_vec_par`: gelu, adds, ... on a batch) on a separate
//! process-wide "barrier pool" (`candle_core::utils::barrier_pool`, a `static OnceLock` with
//! `CANDLE_NUM_THREADS - 1` threads named `candle-bp-N`; default: physical cores - 1), created
//! on first use and never joined. With `CANDLE_NUM_THREADS=1` in the host's environment the
//! pool has no threads (that work runs on the calling thread) and the plugin is unloadable.
//! See [`barrier_pool_threads`] and [`barrier_threads_alive`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

struct Pool {
    pool: rayon::ThreadPool,
    handles: Vec<JoinHandle<()>>,
    threads: usize,
}

#[derive(Default)]
pub struct Runtime {
    pool: RwLock<Option<Pool>>,
    spawned: AtomicUsize,
    joined: AtomicUsize,
    /// Set once model code ran (it may have started candle's barrier pool).
    pub compute_used: AtomicBool,
    lifecycle: Mutex<()>,
}

impl Runtime {
    /// Start a pool of `threads` threads (replacing and joining a previous one).
    pub fn start(&self, threads: usize) -> Result<()> {
        let _guard = self.lifecycle.lock().map_err(|_| Error::internal("poisoned"))?;
        self.shutdown_locked()?;
        let handles = Mutex::new(Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bkg-candle-{i}"))
            .spawn_handler(|thread| {
                let h = std::thread::Builder::new()
                    .name(thread.name().unwrap_or("bkg-candle").to_string())
                    .spawn(move || thread.run())?;
                handles.lock().expect("handles lock").push(h);
                Ok(())
            })
            .build()
            .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
        let handles = handles.into_inner().map_err(|_| Error::internal("poisoned"))?;
        self.spawned.fetch_add(handles.len(), Ordering::SeqCst);
        *self.pool.write().map_err(|_| Error::internal("poisoned"))? =
            Some(Pool { pool, handles, threads: threads.max(1) });
        Ok(())
    }

    /// Drop the pool and join its threads.
    pub fn shutdown(&self) -> Result<()> {
        let _guard = self.lifecycle.lock().map_err(|_| Error::internal("poisoned"))?;
        self.shutdown_locked()
    }

    fn shutdown_locked(&self) -> Result<()> {
        // Taking the write lock waits for running work (it holds the read lock).
        let old = self.pool.write().map_err(|_| Error::internal("poisoned"))?.take();
        if let Some(Pool { pool, handles, .. }) = old {
            drop(pool); // tells the threads to exit once idle
            for h in handles {
                h.join().map_err(|_| Error::internal("a compute thread panicked"))?;
                self.joined.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Run `f` on the pool (blocking the caller until it is done).
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.compute_used.store(true, Ordering::SeqCst);
        let guard = self.pool.read().map_err(|_| Error::internal("poisoned"))?;
        match guard.as_ref() {
            Some(p) => Ok(p.pool.install(f)),
            None => Err(Error::unavailable("the candle plugin is stopped (no compute threads)")),
        }
    }

    /// Run `work` on the pool while the calling thread waits for its messages: `on_msg` gets
    /// each message `work` sends, and `None` every 50 ms of silence (to poll for cancellation).
    /// The calling thread stays a host thread, so it may use the host's call context.
    pub fn run_with<T: Send, M: Send>(
        &self,
        work: impl FnOnce(&mpsc::Sender<M>) -> T + Send,
        mut on_msg: impl FnMut(Option<M>),
    ) -> Result<T> {
        self.compute_used.store(true, Ordering::SeqCst);
        let guard = self.pool.read().map_err(|_| Error::internal("poisoned"))?;
        let Some(p) = guard.as_ref() else {
            return Err(Error::unavailable("the candle plugin is stopped (no compute threads)"));
        };
        let slot: Mutex<Option<T>> = Mutex::new(None);
        p.pool.in_place_scope(|scope| {
            let (tx, rx) = mpsc::channel();
            let slot = &slot;
            scope.spawn(move |_| {
                let out = work(&tx);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(out);
                }
            });
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => on_msg(Some(m)),
                    Err(mpsc::RecvTimeoutError::Timeout) => on_msg(None),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        let out = slot.into_inner().map_err(|_| Error::internal("poisoned"))?;
        out.ok_or_else(|| Error::internal("the compute task ended without a result"))
    }

    pub fn threads(&self) -> usize {
        self.pool.read().ok().and_then(|p| p.as_ref().map(|p| p.threads)).unwrap_or(0)
    }

    pub fn live_threads(&self) -> usize {
        self.pool.read().ok().and_then(|p| p.as_ref().map(|p| p.handles.len())).unwrap_or(0)
    }

    pub fn spawned_total(&self) -> usize {
        self.spawned.load(Ordering::SeqCst)
    }

    pub fn joined_total(&self) -> usize {
        self.joined.load(Ordering::SeqCst)
    }
}

/// How many threads candle's process-wide quantized-matmul barrier pool has (or will have on
/// first use): `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the physical core count)
/// minus one. 0 means quantized matmuls run on the calling thread only and start nothing.
pub fn barrier_pool_threads() -> usize {
    let env =
        |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0);
    env("CANDLE_NUM_THREADS").unwrap_or_else(candle_core::utils::get_num_threads).saturating_sub(1)
}

/// Threads of candle's barrier pool alive in this process (named `candle-bp-N`; any library
/// in the process built with candle 0.11 may have started some).
pub fn barrier_threads_alive() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("candle-bp"))
        .count()
}

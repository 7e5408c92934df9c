//! Per-plugin heap accounting.
//!
//! Every plugin library is its own Rust "program" with its own global allocator, so the host
//! cannot tell from the outside how much of the process's heap a plugin holds. The
//! [`crate::export_plugin!`] macro therefore installs [`CountingAlloc`] as the library's
//! global allocator: it forwards to the real allocator (the system's, or the one the author
//! names) and keeps the number of bytes currently allocated through it in [`LIVE_BYTES`],
//! which the library exports to the host (`HEAP_EXPORT_SYMBOL`; the host reads it, no plugin code
//! runs). The host reads that counter once a second
//! (telemetry, `bkg_plugin_heap_bytes`) and once more after the plugin object was dropped, to
//! report what a retired generation left allocated.
//!
//! What it counts: every allocation made through Rust's global allocator by code compiled
//! into the library (the plugin, its dependencies, its copy of `std`), including buffers it
//! hands to the host inside `RVec`/`RString` until they are dropped. What it does not count:
//! memory that C code linked into the library gets from `malloc` directly, memory maps, and
//! thread stacks.
//!
//! The price is one relaxed atomic add per allocation and one per deallocation, on a counter
//! shard chosen per thread (docs/benchmarks.md has the figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Shards of [`HeapCounter`]. Threads add to different shards (picked from their stack
/// address, no thread-local state), so allocating threads do not fight over one cache line.
pub const SHARDS: usize = 16;

/// One shard, alone on its cache lines.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Shard {
    bytes: AtomicU64,
}

/// Bytes allocated minus bytes freed, spread over [`SHARDS`] counters. An allocation and its
/// free may land on different shards; only the sum means anything.
#[repr(C)]
#[derive(Debug)]
pub struct HeapCounter {
    shards: [Shard; SHARDS],
}

impl HeapCounter {
    #[allow(clippy::new_without_default)] // const, for the static below
    pub const fn new() -> Self {
        Self { shards: [const { Shard { bytes: AtomicU64::new(0) } }; SHARDS] }
    }

    /// The calling thread's shard: its stack lies in its own mapping, so the address of a
    /// local, hashed at 2 MiB granularity, tells threads apart without thread-local storage
    /// (which the allocator must not use: it runs while thread-locals are set up and torn down).
    #[inline]
    fn shard(&self) -> &AtomicU64 {
        let marker = 0u8;
        let page = (std::ptr::addr_of!(marker) as usize) >> 21;
        let index = (page as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.ilog2());
        &self.shards[index as usize].bytes
    }

    #[inline]
    pub fn add(&self, bytes: usize) {
        self.shard().fetch_add(bytes as u64, Relaxed);
    }

    #[inline]
    pub fn sub(&self, bytes: usize) {
        self.shard().fetch_sub(bytes as u64, Relaxed);
    }

    /// The live bytes: the wrapping sum of the shards. Read while other threads allocate, it
    /// is a near snapshot; a free counted before its allocation was read can make it briefly
    /// negative, which reads as 0.
    pub fn live_bytes(&self) -> u64 {
        let sum = self.shards.iter().fold(0u64, |acc, s| acc.wrapping_add(s.bytes.load(Relaxed)));
        (sum as i64).max(0) as u64
    }
}

/// Bytes currently allocated through this library's [`CountingAlloc`]. One per library: each
/// plugin links its own copy of this crate. Stays 0 in a program that does not install the
/// allocator (the host).
pub static LIVE_BYTES: HeapCounter = HeapCounter::new();

/// The symbol under which [`crate::export_plugin!`] exports a [`HeapExport`].
pub const HEAP_EXPORT_SYMBOL: &str = "bkg_heap_export_v1";
/// First field of a [`HeapExport`]: the host trusts the symbol only when it finds this.
pub const HEAP_EXPORT_MAGIC: [u8; 8] = *b"bkgheap1";

/// What a plugin library exports under [`HEAP_EXPORT_SYMBOL`]: a pointer to its counter, with
/// what the host checks before it reads it (a magic value, this struct's version and the
/// counter's shard count). A library without the symbol (built before bkg-abi 0.1.1, or with
/// `heap = untracked`) simply does not report its heap. Not part of the root module, so
/// adding it did not change the root module's checked layout: 0.1.0 plugins keep loading.
#[repr(C)]
#[derive(Debug)]
pub struct HeapExport {
    pub magic: [u8; 8],
    pub version: u32,
    pub shards: u32,
    pub counter: &'static HeapCounter,
}

impl HeapExport {
    pub const VERSION: u32 = 1;

    pub const fn new(counter: &'static HeapCounter) -> Self {
        Self { magic: HEAP_EXPORT_MAGIC, version: Self::VERSION, shards: SHARDS as u32, counter }
    }

    /// Whether this export is one the current code can read.
    pub fn is_valid(&self) -> bool {
        self.magic == HEAP_EXPORT_MAGIC
            && self.version == Self::VERSION
            && self.shards == SHARDS as u32
    }
}

/// A global allocator that forwards to `A` and counts the bytes it holds in [`LIVE_BYTES`].
///
/// [`crate::export_plugin!`] installs `CountingAlloc<System>`; a plugin that wants another
/// allocator names it there (`export_plugin!(MyPlugin, allocator = mimalloc::MiMalloc)`) and it
/// is wrapped the same way.
pub struct CountingAlloc<A = System>(pub A);

impl CountingAlloc<System> {
    pub const fn system() -> Self {
        Self(System)
    }
}

// SAFETY: every method forwards to `A` with the caller's arguments unchanged, so `A`'s
// guarantees hold; the counter is only bookkeeping beside it.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.add(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.add(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE_BYTES.sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let old = layout.size();
            if new_size >= old {
                LIVE_BYTES.add(new_size - old);
            } else {
                LIVE_BYTES.sub(old - new_size);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary does not install the allocator; call it directly.
    #[test]
    fn counts_allocations_reallocations_and_frees() {
        let alloc = CountingAlloc::system();
        let before = LIVE_BYTES.live_bytes();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero-sized layout; the pointer is freed below with the layout it has.
        unsafe {
            let p = alloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.live_bytes() - before, 1000);
            let p = alloc.realloc(p, layout, 4000);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.live_bytes() - before, 4000);
            let bigger = Layout::from_size_align(4000, 8).unwrap();
            let p = alloc.realloc(p, bigger, 10);
            assert_eq!(LIVE_BYTES.live_bytes() - before, 10);
            alloc.dealloc(p, Layout::from_size_align(10, 8).unwrap());
            let z = alloc.alloc_zeroed(layout);
            assert_eq!(*z.add(999), 0);
            assert_eq!(LIVE_BYTES.live_bytes() - before, 1000);
            alloc.dealloc(z, layout);
        }
        assert_eq!(LIVE_BYTES.live_bytes(), before);
    }

    /// Allocated on one thread and freed on another (so on other shards): the sum is exact
    /// once both are done, and a reader in between never sees a wrapped-around figure.
    #[test]
    fn frees_on_other_threads_balance_and_reads_never_wrap() {
        let counter = HeapCounter::new();
        let (tx, rx) = std::sync::mpsc::sync_channel::<usize>(64);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    counter.add(1 + i % 100);
                    tx.send(1 + i % 100).unwrap();
                }
                drop(tx);
            });
            s.spawn(|| {
                for size in rx {
                    counter.sub(size);
                    assert!(counter.live_bytes() < 1 << 40, "a read wrapped around");
                }
            });
        });
        assert_eq!(counter.live_bytes(), 0);
        counter.add(5);
        assert_eq!(counter.live_bytes(), 5);
    }
}

//! Per-plugin heap accounting.
//!
//! Every plugin library is its own Rust "program" with its own global allocator, so the host
//! cannot tell from the outside how much of the process's heap a plugin holds. The
//! [`crate::export_plugin!`] macro therefore installs [`CountingAlloc`] as the library's
//! global allocator: it forwards to the real allocator (the system's, or the one the author
//! names) and keeps the number of bytes currently allocated through it in [`LIVE_BYTES`],
//! which the root module exposes to the host. The host reads that counter once a second
//! (telemetry, `bkg_plugin_heap_bytes`) and once more after the plugin object was dropped, to
//! report what a retired generation left allocated.
//!
//! What it counts: every allocation made through Rust's global allocator by code compiled
//! into the library (the plugin, its dependencies, its copy of `std`), including buffers it
//! hands to the host inside `RVec`/`RString` until they are dropped. What it does not count:
//! memory that C code linked into the library gets from `malloc` directly, memory maps, and
//! thread stacks.
//!
//! The price is one relaxed atomic add per allocation and one per deallocation
//! (docs/benchmarks.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes currently allocated through this library's [`CountingAlloc`]. One per library: each
/// plugin links its own copy of this crate. Stays 0 in a program that does not install the
/// allocator (the host).
pub static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

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
            LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let old = layout.size() as u64;
            let new_size = new_size as u64;
            if new_size >= old {
                LIVE_BYTES.fetch_add(new_size - old, Relaxed);
            } else {
                LIVE_BYTES.fetch_sub(old - new_size, Relaxed);
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
        let before = LIVE_BYTES.load(Relaxed);
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero-sized layout; the pointer is freed below with the layout it has.
        unsafe {
            let p = alloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.load(Relaxed) - before, 1000);
            let p = alloc.realloc(p, layout, 4000);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.load(Relaxed) - before, 4000);
            let bigger = Layout::from_size_align(4000, 8).unwrap();
            let p = alloc.realloc(p, bigger, 10);
            assert_eq!(LIVE_BYTES.load(Relaxed) - before, 10);
            alloc.dealloc(p, Layout::from_size_align(10, 8).unwrap());
            let z = alloc.alloc_zeroed(layout);
            assert_eq!(*z.add(999), 0);
            assert_eq!(LIVE_BYTES.load(Relaxed) - before, 1000);
            alloc.dealloc(z, layout);
        }
        assert_eq!(LIVE_BYTES.load(Relaxed), before);
    }
}

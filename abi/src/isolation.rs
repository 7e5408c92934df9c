//! A plugin library's suggested isolation mode (`export_plugin!(MyPlugin, isolation = process)`).
//!
//! The suggestion is a small plain-data static exported under [`ISOLATION_HINT_SYMBOL`]. The
//! host reads it from the library file itself (the ELF dynamic symbol table and the bytes at
//! the symbol's address) without loading the library or running any of its code: the point of
//! the `process` mode is not trusting that code. The operator's choice (`POST
//! /api/core/plugins/{id}/isolation`) always wins; the suggestion only picks the mode of a
//! plugin id the operator never set.
//!
//! Not part of the root module, like the heap export: the root module's checked layout is
//! unchanged, so no version bump of bkg-abi was needed and libraries built without the symbol
//! (all built before it existed) load as before, in the host.

/// The symbol under which [`crate::export_plugin!`] exports an [`IsolationHint`].
pub const ISOLATION_HINT_SYMBOL: &str = "bkg_isolation_hint_v1";
/// First field of an [`IsolationHint`]: the host trusts the symbol only when it finds this.
pub const ISOLATION_HINT_MAGIC: [u8; 8] = *b"bkgisol1";

/// What a plugin library exports under [`ISOLATION_HINT_SYMBOL`]: 16 bytes, no pointers (so
/// the bytes in the file are the value; nothing is relocated at load).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationHint {
    pub magic: [u8; 8],
    /// [`IsolationHint::VERSION`].
    pub version: u32,
    /// [`IsolationHint::IN_PROCESS`] or [`IsolationHint::PROCESS`] (in the target's byte order).
    pub mode: u32,
}

impl IsolationHint {
    pub const VERSION: u32 = 1;
    /// Suggests running in the host process.
    pub const IN_PROCESS: u32 = 1;
    /// Suggests running in a supervised child process.
    pub const PROCESS: u32 = 2;
    /// The size of the exported static, which the host checks.
    pub const SIZE: usize = 16;

    pub const fn new(mode: u32) -> Self {
        Self { magic: ISOLATION_HINT_MAGIC, version: Self::VERSION, mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_sixteen_plain_bytes() {
        assert_eq!(std::mem::size_of::<IsolationHint>(), IsolationHint::SIZE);
        assert_eq!(std::mem::align_of::<IsolationHint>(), 4);
    }
}

//! `bkg-abi`: the one crate a bkg plugin depends on.
//!
//! A plugin is a `cdylib` that implements [`Plugin`] and calls [`export_plugin!`] once:
//!
//! ```
//! use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", "Hello", env!("CARGO_PKG_VERSION")).capability("greet", "says hello")
//!     }
//!     fn new(_host: Host) -> Result<Self, Error> {
//!         Ok(Hello)
//!     }
//!     fn invoke(&self, _cap: &str, req: Request<'_>, _ctx: &Context<'_>) -> Result<Response, Error> {
//!         Ok(Response::text(format!("hello, {}", req.text()?)))
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! The [`ffi`] module holds the checked contract the host loads: an `abi_stable` root module
//! ([`ffi::PluginMod`]) whose layout and semver (this crate's version) are verified on load.

pub mod ffi;
pub mod heap;
pub mod isolation;
pub mod panic_hook;
mod sdk;
pub mod sse;

pub use abi_stable;
pub use ffi::{ErrorKind, LogLevel};
pub use sdk::{
    Capability, Context, Error, Host, Manifest, Plugin, Request, Response, Stream, MAX_BODY_KEYWORD,
};
/// Re-exported so plugins can build JSON values without their own dependency.
pub use serde_json;

/// The version of the plugin interface: this crate's version. The host refuses a library
/// built against an incompatible one (for 0.x: a different minor version).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub mod __private {
    pub use crate::panic_hook::install as install_panic_hook;
    pub use crate::sdk::{create_entry, manifest_entry, root_module};
    /// The exported symbol name abi_stable's loader looks up (checked by a unit test).
    pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";
}

/// Export a [`Plugin`] type as this library's root module. Call it once per plugin crate.
///
/// It also installs the library's global allocator: [`heap::CountingAlloc`] over the system
/// allocator, so the host can show how much heap the plugin holds. A plugin that wants its
/// own allocator names it (a unit struct, used as type and value), and it is counted the same
/// way:
/// `export_plugin!(MyPlugin, allocator = mimalloc::MiMalloc);`. One that must not have it
/// (say, its allocator needs a constructor) says `export_plugin!(MyPlugin, heap = untracked);`
/// and the host shows its heap as not reported. (A crate that also builds as an `rlib`
/// carries the allocator into whatever links it.)
///
/// ```
/// use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};
///
/// struct Quiet;
/// impl Plugin for Quiet {
///     fn manifest() -> Manifest {
///         Manifest::new("quiet", "Quiet", "1.0.0")
///     }
///     fn new(_host: Host) -> Result<Self, Error> {
///         Ok(Quiet)
///     }
///     fn invoke(&self, _: &str, _: Request<'_>, _: &Context<'_>) -> Result<Response, Error> {
///         Ok(Response::empty())
///     }
/// }
///
/// // Any `GlobalAlloc` unit struct; the heap it hands out is counted.
/// export_plugin!(Quiet, allocator = std::alloc::System);
///
/// let before = bkg_abi::heap::LIVE_BYTES.live_bytes();
/// let kept = vec![0u8; 1 << 20];
/// assert!(bkg_abi::heap::LIVE_BYTES.live_bytes() >= before + (1 << 20));
/// drop(kept);
/// ```
///
/// A plugin may suggest where it runs by default: `export_plugin!(MyPlugin, isolation =
/// process)` (or `isolation = in_process`), alone or after the other options
/// (`export_plugin!(MyPlugin, heap = untracked, isolation = process)`, `export_plugin!(MyPlugin,
/// allocator = mimalloc::MiMalloc, isolation = process)`). It exports a small versioned static
/// ([`isolation::IsolationHint`] under `bkg_isolation_hint_v1`) that the host reads from the
/// file without running the library's code; the operator's choice always wins. See
/// [`isolation`].
///
/// ```
/// use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};
///
/// struct Fenced;
/// impl Plugin for Fenced {
///     fn manifest() -> Manifest {
///         Manifest::new("fenced", "Fenced", "1.0.0")
///     }
///     fn new(_host: Host) -> Result<Self, Error> {
///         Ok(Fenced)
///     }
///     fn invoke(&self, _: &str, _: Request<'_>, _: &Context<'_>) -> Result<Response, Error> {
///         Ok(Response::empty())
///     }
/// }
///
/// export_plugin!(Fenced, heap = untracked, isolation = process);
/// ```
#[macro_export]
macro_rules! export_plugin {
    (@hint process) => {
        $crate::export_plugin!(@hint_static $crate::isolation::IsolationHint::PROCESS);
    };
    (@hint in_process) => {
        $crate::export_plugin!(@hint_static $crate::isolation::IsolationHint::IN_PROCESS);
    };
    (@hint $other:tt) => {
        ::core::compile_error!(::core::concat!(
            "export_plugin!: `isolation = ",
            ::core::stringify!($other),
            "` is not a mode: use `isolation = process` or `isolation = in_process`"
        ));
    };
    (@hint_static $mode:expr) => {
        /// The isolation mode this library suggests, read by the host from the file (a
        /// versioned symbol beside the root module, like the heap export).
        #[doc(hidden)]
        #[unsafe(export_name = "bkg_isolation_hint_v1")]
        pub static __BKG_ISOLATION_HINT: $crate::isolation::IsolationHint =
            $crate::isolation::IsolationHint::new($mode);
    };
    (@module $plugin:ty) => {
        /// The root module, a static in the library (nothing is allocated per load).
        #[doc(hidden)]
        const __BKG_MODULE: &$crate::abi_stable::prefix_type::WithMetadata<$crate::ffi::PluginMod> =
            &$crate::abi_stable::prefix_type::WithMetadata::new($crate::ffi::PluginMod {
                manifest: $crate::__private::manifest_entry::<$plugin>,
                create: $crate::__private::create_entry::<$plugin>,
            });

        #[doc(hidden)]
        fn __bkg_root_module() -> $crate::ffi::PluginModRef {
            // The library is being loaded: its panics get the SDK's hook (no symbolized
            // backtrace, which would keep the library mapped; see `bkg_abi::panic_hook`).
            $crate::__private::install_panic_hook();
            $crate::ffi::PluginModRef(__BKG_MODULE.static_as_prefix())
        }

        /// The abi_stable library header the bkg host looks up.
        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static __BKG_LIB_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn __bkg_erased_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__bkg_root_module)
            }
            // SAFETY: this is the expansion of abi_stable's `#[export_root_module]`, written
            // out so that plugin crates need no direct abi_stable dependency. The constructor
            // returns a `PluginModRef` erased by `__call_root_module_loader`, which is what
            // `from_constructor::<PluginModRef>` requires; the layout check stays on.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::ffi::PluginModRef>(
                    __bkg_erased_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
    ($plugin:ty, heap = untracked) => {
        $crate::export_plugin!(@module $plugin);
    };
    ($plugin:ty, allocator = $alloc:path) => {
        /// Counts the library's heap bytes for the host (see `bkg_abi::heap`).
        #[doc(hidden)]
        #[global_allocator]
        static __BKG_ALLOCATOR: $crate::heap::CountingAlloc<$alloc> =
            $crate::heap::CountingAlloc($alloc);

        /// Where the host finds the counter (a versioned symbol beside the root module, so
        /// that the root module's checked layout stays that of bkg-abi 0.1.0).
        #[doc(hidden)]
        #[unsafe(export_name = "bkg_heap_export_v1")]
        pub static __BKG_HEAP_EXPORT: $crate::heap::HeapExport =
            $crate::heap::HeapExport::new(&$crate::heap::LIVE_BYTES);

        $crate::export_plugin!(@module $plugin);
    };
    ($plugin:ty, isolation = $mode:tt) => {
        $crate::export_plugin!(@hint $mode);
        $crate::export_plugin!($plugin);
    };
    ($plugin:ty, isolation = $mode:tt, $($rest:tt)+) => {
        $crate::export_plugin!(@hint $mode);
        $crate::export_plugin!($plugin, $($rest)+);
    };
    ($plugin:ty, heap = untracked, isolation = $mode:tt) => {
        $crate::export_plugin!(@hint $mode);
        $crate::export_plugin!($plugin, heap = untracked);
    };
    ($plugin:ty, allocator = $alloc:path, isolation = $mode:tt) => {
        $crate::export_plugin!(@hint $mode);
        $crate::export_plugin!($plugin, allocator = $alloc);
    };
    ($plugin:ty) => {
        $crate::export_plugin!($plugin, allocator = ::std::alloc::System);
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(
            crate::__private::ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn error_kind_codes_are_distinct() {
        use crate::ErrorKind;
        let kinds = [
            ErrorKind::BAD_REQUEST,
            ErrorKind::NOT_FOUND,
            ErrorKind::CONFLICT,
            ErrorKind::PAYLOAD_TOO_LARGE,
            ErrorKind::UNPROCESSABLE,
            ErrorKind::CANCELLED,
            ErrorKind::UNSUPPORTED,
            ErrorKind::UNAVAILABLE,
            ErrorKind::TIMEOUT,
            ErrorKind::PANICKED,
        ];
        let codes: std::collections::HashSet<_> = kinds.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert_eq!(ErrorKind(418).code(), "plugin_error");
        assert_eq!(ErrorKind::PAYLOAD_TOO_LARGE.code(), "payload_too_large");
        assert_eq!(crate::Error::payload_too_large("x").kind.0, 413);
    }
}

#[cfg(test)]
mod doc_tests {
    /// The guide shows the example plugin verbatim; keep them the same.
    #[test]
    fn plugin_author_guide_shows_the_built_example() {
        let guide = include_str!("../../docs/plugin-author.md");
        let example = include_str!("../examples/hello.rs");
        assert!(
            guide.contains(example),
            "docs/plugin-author.md must contain abi/examples/hello.rs verbatim"
        );
    }
}

//! Crash isolation: a plugin runs either in the host (`in_process`, the default) or in a
//! supervised child process (`process`), chosen per plugin id by the operator and persisted.
//! The same library file serves both ways.
//!
//! Parts: `wire` (the framed protocol over the socketpair handed to the child at spawn),
//! `runner` (the child side: the hidden `bkg plugin-runner` subcommand opens the library with
//! the loader's checks and serves the plugin), `child` (the host side: spawn, handshake, the
//! remote plugin object the instance's workers call, death detection), `supervise` (restart
//! backoff and the crash loop rule, pure logic).

pub mod child;
pub mod runner;
pub mod supervise;
pub mod wire;

use serde::{Deserialize, Serialize};

/// Where a plugin's code runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// Loaded into the host process (fastest; a crash of native code ends the host).
    #[default]
    InProcess,
    /// Loaded into a child process of the host, supervised and restarted when it dies.
    Process,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::InProcess => "in_process",
            IsolationMode::Process => "process",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "in_process" => Some(IsolationMode::InProcess),
            "process" => Some(IsolationMode::Process),
            _ => None,
        }
    }
}

/// How a plugin's child process ended when nobody asked it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CrashInfo {
    /// Unix ms of the death.
    pub at_ms: u64,
    /// The signal that ended it (`"SIGSEGV"`, `"SIGABRT"`, `"SIGKILL"`, ...), if one did.
    pub signal: Option<String>,
    /// Its exit status, if it exited.
    pub exit_code: Option<i32>,
    /// One line for people: "killed by SIGSEGV (segmentation fault)", "exited with status 0
    /// during a call", "killed: the call to 'spin' passed its hard deadline of 2000 ms".
    pub message: String,
    /// The last lines the child wrote to its stderr (at most 20).
    pub stderr_tail: Vec<String>,
}

/// What the plugin view shows of a plugin in process mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProcessInfo {
    /// The serving child's pid (none while no child runs: crashed, backing off, stopped).
    pub pid: Option<u32>,
    /// Restarts after crashes since the host started (or since an operator's start).
    pub restarts: u32,
    /// True once the plugin crashed 5 times within 60 s: it is not restarted until an
    /// operator starts it.
    pub crashlooping: bool,
    /// The last crash, if any.
    pub last_crash: Option<CrashInfo>,
}

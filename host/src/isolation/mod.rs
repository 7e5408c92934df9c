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
pub mod hint;
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

/// Where a plugin's effective isolation mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IsolationSource {
    /// The operator chose it (`POST /api/core/plugins/{id}/isolation`): it always wins.
    Operator,
    /// The plugin's library suggests it (`export_plugin!(.., isolation = process)`) and the
    /// operator never chose.
    Plugin,
    /// Neither: the host's default, `in_process`.
    Default,
}

/// Limits of a plugin's child process (process mode), as the operator sets them; `None` (or
/// `null` in JSON): the host's default (`--process-max-*`, `--call-timeout-ms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessLimits {
    /// Address space of the child in MiB (`RLIMIT_AS`): an allocation past it fails in the
    /// child only.
    pub memory_mb: Option<u64>,
    /// Open files of the child (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes and threads of the child's user (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
    /// A call running longer is answered 504 and cancelled; one still running the cancel
    /// grace after that gets its child killed and restarted.
    pub call_deadline_ms: Option<u64>,
}

/// What the operator stored about where a plugin id runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsolationSetting {
    /// The operator's mode; `None` when the operator never chose (the library's suggestion
    /// applies, else `in_process`).
    pub mode: Option<IsolationMode>,
    /// The operator's limits for process mode.
    pub limits: ProcessLimits,
}

impl IsolationSetting {
    /// The mode a load runs in: the operator's, else the file's suggestion, else the default.
    pub fn effective(&self, suggested: Option<IsolationMode>) -> (IsolationMode, IsolationSource) {
        match (self.mode, suggested) {
            (Some(mode), _) => (mode, IsolationSource::Operator),
            (None, Some(mode)) => (mode, IsolationSource::Plugin),
            (None, None) => (IsolationMode::default(), IsolationSource::Default),
        }
    }
}

/// Where an effective limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// Set for this plugin (`POST /api/core/plugins/{id}/isolation` with `limits`).
    Operator,
    /// The host's default (`--process-max-*`, `--call-timeout-ms`).
    Host,
}

/// One effective limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LimitValue {
    /// The limit (`null`: none).
    pub value: Option<u64>,
    pub source: LimitSource,
}

/// The limits a plugin's child process runs under (process mode), each with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EffectiveLimits {
    pub memory_mb: LimitValue,
    pub open_files: LimitValue,
    pub processes: LimitValue,
    pub call_deadline_ms: LimitValue,
}

impl EffectiveLimits {
    /// The operator's limits over the host's defaults.
    pub fn merge(operator: &ProcessLimits, host: &ProcessLimits) -> EffectiveLimits {
        let pick = |o: Option<u64>, h: Option<u64>| match o {
            Some(v) => LimitValue { value: Some(v), source: LimitSource::Operator },
            None => LimitValue { value: h, source: LimitSource::Host },
        };
        EffectiveLimits {
            memory_mb: pick(operator.memory_mb, host.memory_mb),
            open_files: pick(operator.open_files, host.open_files),
            processes: pick(operator.processes, host.processes),
            call_deadline_ms: pick(operator.call_deadline_ms, host.call_deadline_ms),
        }
    }

    /// The child's resource limits.
    pub fn rlimits(&self) -> child::RLimits {
        child::RLimits {
            address_space: self.memory_mb.value.map(|mb| mb.saturating_mul(1 << 20)),
            open_files: self.open_files.value,
            processes: self.processes.value,
        }
    }
}

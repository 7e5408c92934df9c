// Shapes of the bkg admin API (see GET /api/openapi.json).

export type PluginState = 'loading' | 'running' | 'stopping' | 'stopped' | 'failed' | 'unloaded';
export type LifecycleAction = 'start' | 'stop' | 'restart';

export interface CapabilityInfo {
  name: string;
  description: string;
  streaming: boolean;
  scope: string;
  input_schema?: unknown;
  output_schema?: unknown;
}

export interface HistoryEntry {
  generation: number;
  version: string;
  file: string;
  sha256: string;
  loaded_at_ms: number;
  abandoned_calls: number;
  /** Of the abandoned calls, those that stopped once their cancel flag was raised at the deadline. */
  cancelled_calls?: number | null;
  /** Of the abandoned calls, those that ignored the cancel flag (their threads run on: the generation stays `pinned`). */
  ignored_cancel_calls?: number | null;
  reason?: string | null;
  residency?: 'unloaded' | 'pinned' | 'unknown' | null;
  retired_at_ms?: number | null;
  /** Heap the library still held after its plugin was dropped (leaked); null while loaded or not counted. */
  heap_left_bytes?: number | null;
}

/** A file in the plugins folder that provides a plugin id: the newest serves, the others stand by. */
export interface PluginFile {
  file: string;
  sha256: string;
  /** Modification time, ms since the epoch (null: unknown). */
  modified_ms?: number | null;
  /** True for the file the loaded generation came from. */
  serving: boolean;
}

/** Where a plugin's code runs: in the host (the default, fastest) or in a supervised child process. */
export type IsolationMode = 'in_process' | 'process';

/** Where a plugin's isolation mode comes from: the operator's choice, the plugin library's suggestion, or neither. */
export type IsolationSource = 'operator' | 'plugin' | 'default';

/** Limits of a plugin's child process in process mode, as the operator sets them (null: the host's default). */
export interface ProcessLimits {
  memory_mb?: number | null;
  open_files?: number | null;
  processes?: number | null;
  call_deadline_ms?: number | null;
}

/** One effective limit (value null: none) and whether the operator or the host's flags set it. */
export interface LimitValue {
  value: number | null;
  source: 'operator' | 'host';
}

/** The limits a plugin's child runs under in process mode (host/src/isolation EffectiveLimits). */
export interface EffectiveLimits {
  memory_mb: LimitValue;
  open_files: LimitValue;
  processes: LimitValue;
  call_deadline_ms: LimitValue;
}

/** How a plugin's child process ended when nobody asked it to (host/src/isolation CrashInfo). */
export interface CrashInfo {
  at_ms: number;
  /** The signal that ended it (`SIGSEGV`, `SIGABRT`, ...), if one did. */
  signal?: string | null;
  /** Its exit status, if it exited. */
  exit_code?: number | null;
  /** One line for people, e.g. "killed by SIGSEGV (segmentation fault)". */
  message: string;
  /** The last lines the child wrote to its stderr (at most 20). */
  stderr_tail: string[];
}

/** The child process of a plugin in process mode (host/src/isolation ProcessInfo). */
export interface ProcessInfo {
  /** The serving child's pid (null while none runs: crashed, backing off, stopped). */
  pid?: number | null;
  /** Restarts after crashes since the host started or an operator's start. */
  restarts: number;
  /** Crashed 5 times within 60 s: not restarted until an operator starts it. */
  crashlooping: boolean;
  last_crash?: CrashInfo | null;
}

export interface PluginDetail {
  id: string;
  name: string;
  version: string;
  description: string;
  state: PluginState;
  generation: number;
  capabilities: CapabilityInfo[];
  routes: { method: string; path: string }[];
  history: HistoryEntry[];
  config_schema?: unknown;
  file?: string | null;
  last_error?: { message: string; at_ms: number; file?: string | null } | null;
  loaded_at_ms?: number | null;
  /** When the plugin last entered `running` (start, restart or load); newer hosts only. */
  started_at_ms?: number | null;
  route_prefix?: string | null;
  sha256?: string | null;
  size_bytes?: number | null;
  /** Every file in the plugins folder that provides this id, newest first (`file` is the serving one). */
  files?: PluginFile[] | null;
  calls?: { total: number; errors: number; rejected: number; in_flight: number } | null;
  /** Whether this plugin is the host's auth provider (absent: the UI assumes the id `apikeys`). */
  auth_provider?: boolean | null;
  /** Where its code runs (absent on hosts without crash isolation: in the host). */
  isolation?: IsolationMode | null;
  /** Where `isolation` comes from (newer hosts only). */
  isolation_source?: IsolationSource | null;
  /** The mode the plugin's library suggests, if any (newer hosts only). */
  isolation_suggested?: IsolationMode | null;
  /** The limits of its child in process mode, each with its source (newer hosts only). */
  isolation_limits?: EffectiveLimits | null;
  /** Its child process in process mode; null in the host. */
  process?: ProcessInfo | null;
}

export interface TelemetrySample {
  at_ms: number;
  calls_per_s: number;
  calls_total: number;
  cpu_percent: number;
  error_rate: number;
  errors_per_s: number;
  errors_total: number;
  generation: number;
  in_flight: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  /** Heap bytes the plugin's library holds through its global allocator (null: not counted). */
  heap_bytes?: number | null;
}

export interface HostSample {
  at_ms: number;
  cpu_percent: number;
  rss_bytes: number;
  plugins_running: number;
}

export interface TelemetryTick {
  host: HostSample;
  plugins: Record<string, TelemetrySample>;
}

export interface LogLine {
  seq: number;
  at_ms: number;
  level: 'error' | 'warn' | 'info' | 'debug' | 'trace';
  source: string;
  target: string;
  message: string;
}

export interface BkgEvent {
  seq: number;
  at_ms: number;
  kind: string;
  actor: string;
  plugin?: string | null;
  details: unknown;
}

export interface ConfigDoc {
  id: string;
  schema: unknown;
  config: unknown;
  source: string;
  version: number;
  history: { version: number; config: unknown; at_ms?: number; actor?: string }[];
}

export interface ApiErrorBody {
  error: { code: string; message: string; details?: { errors?: { path: string; message: string }[] } | null };
}

// Model downloads (host/src/models: JobView, ModelView).
export type JobState = 'downloading' | 'installing' | 'installed' | 'failed' | 'cancelled';
export interface FileProgress {
  name: string;
  state: 'pending' | 'downloading' | 'verified' | 'failed';
  bytes_done: number;
  bytes_total: number | null;
  sha256: string | null;
}
export interface DownloadJob {
  id: string;
  plugin: string;
  repo: string;
  revision: string;
  state: JobState;
  files: FileProgress[];
  error: string | null;
  path: string | null;
  actor: string;
  started_at_ms: number;
  finished_at_ms: number | null;
}
export interface InstalledModel {
  repo: string;
  revision: string;
  commit?: string | null;
  path: string;
  source: string;
  files: { name: string; size: number; sha256: string }[];
  total_bytes: number;
  plugin?: string | null;
  installed_at_ms: number;
  present?: boolean;
}

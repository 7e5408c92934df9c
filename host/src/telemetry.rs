//! Telemetry: per-plugin call counters and latency histograms (written on the plugin's worker
//! threads), and a sampler that once a second turns them into rates and percentiles, keeps a
//! few minutes of history and broadcasts each tick to live subscribers. Also the host
//! process's own CPU and memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::dispatch::Routing;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
pub const BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
const BUCKETS: usize = BUCKETS_US.len() + 1;
/// Samples kept per plugin (one a second).
pub const HISTORY: usize = 300;

/// Counters of one plugin id, kept across swaps of its generations.
#[derive(Debug, Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub rejected: AtomicU64,
    pub timeouts: AtomicU64,
    /// CPU time the plugin's calls used on its worker threads.
    pub cpu_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    latency_sum_nanos: AtomicU64,
}

impl CallStats {
    /// Record one finished call.
    pub fn record(&self, wall: Duration, cpu: Duration, failed: bool) {
        self.calls.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        self.cpu_nanos.fetch_add(cpu.as_nanos() as u64, Relaxed);
        let us = wall.as_micros() as u64;
        let bucket = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_nanos.fetch_add(wall.as_nanos() as u64, Relaxed);
    }

    /// Per-bucket counts (not cumulative) and the sum of latencies in seconds.
    pub fn latency(&self) -> ([u64; BUCKETS], f64) {
        let mut counts = [0u64; BUCKETS];
        for (c, a) in counts.iter_mut().zip(&self.latency) {
            *c = a.load(Relaxed);
        }
        (counts, self.latency_sum_nanos.load(Relaxed) as f64 / 1e9)
    }
}

/// The latency (ms) below which a fraction `q` of the calls in `counts` finished, as the upper
/// bound of the bucket holding that quantile. None without calls.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let us = BUCKETS_US.get(i).copied().unwrap_or(u64::MAX);
            return Some(if us == u64::MAX { f64::INFINITY } else { us as f64 / 1000.0 });
        }
    }
    None
}

/// One plugin's figures over the last second.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginSample {
    pub at_ms: u64,
    pub generation: u64,
    pub calls_per_s: f64,
    pub errors_per_s: f64,
    /// Errors / calls over the last second (0 without calls).
    pub error_rate: f64,
    pub in_flight: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// CPU time of the plugin's calls per second of wall time, in percent of one core.
    pub cpu_percent: f64,
    /// Heap bytes the plugin's library holds through its global allocator (`bkg_abi::heap`);
    /// absent when the library does not count them.
    pub heap_bytes: Option<u64>,
    pub calls_total: u64,
    pub errors_total: u64,
}

/// The host process.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct HostSample {
    pub at_ms: u64,
    /// Percent of one core (can exceed 100 on several cores).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub plugins_running: usize,
}

/// One tick: the host and every loaded plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub host: HostSample,
    pub plugins: BTreeMap<String, PluginSample>,
}

struct Previous {
    at: Instant,
    calls: u64,
    errors: u64,
    cpu_nanos: u64,
    latency: [u64; BUCKETS],
}

/// The sampler's state and output. One owner: the sampler task writes, readers copy.
pub struct Telemetry {
    history: Mutex<HashMap<String, VecDeque<PluginSample>>>,
    host: Mutex<HostSample>,
    live: broadcast::Sender<Arc<Tick>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let (live, _) = broadcast::channel(16);
        Self { history: Mutex::default(), host: Mutex::default(), live }
    }
}

impl Telemetry {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tick>> {
        self.live.subscribe()
    }

    pub fn host(&self) -> HostSample {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last `n` samples of a plugin, oldest first.
    pub fn history(&self, id: &str, n: usize) -> Vec<PluginSample> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .get(id)
            .map_or_else(Vec::new, |h| h.iter().skip(h.len().saturating_sub(n)).cloned().collect())
    }

    pub fn latest(&self) -> BTreeMap<String, PluginSample> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().filter_map(|(id, h)| h.back().map(|s| (id.clone(), s.clone()))).collect()
    }

    /// Sample every second until the process ends. Runs on the actix runtime.
    pub async fn run(self: Arc<Self>, routing: Arc<Routing>) {
        let mut previous: HashMap<String, Previous> = HashMap::new();
        // Without process information (an unsupported platform) the host figures stay 0.
        let mut system = sysinfo::System::new().ok();
        let pid = sysinfo::Pid::from_u32(std::process::id());
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let tick = self.sample(&routing, &mut previous, system.as_mut(), pid);
            let _ = self.live.send(Arc::new(tick));
        }
    }

    fn sample(
        &self,
        routing: &Routing,
        previous: &mut HashMap<String, Previous>,
        system: Option<&mut sysinfo::System>,
        pid: sysinfo::Pid,
    ) -> Tick {
        let now = Instant::now();
        let at_ms = crate::clock::now_ms();
        let mut plugins = BTreeMap::new();
        let instances = routing.all();
        for instance in &instances {
            let id = instance.id().to_string();
            let stats = instance.stats();
            let (latency, _) = stats.latency();
            let current = Previous {
                at: now,
                calls: stats.calls.load(Relaxed),
                errors: stats.errors.load(Relaxed),
                cpu_nanos: stats.cpu_nanos.load(Relaxed),
                latency,
            };
            let sample = match previous.get(&id) {
                Some(prev) => {
                    let secs = now.duration_since(prev.at).as_secs_f64().max(1e-3);
                    let calls = current.calls.saturating_sub(prev.calls);
                    let errors = current.errors.saturating_sub(prev.errors);
                    let window: Vec<u64> = current
                        .latency
                        .iter()
                        .zip(&prev.latency)
                        .map(|(c, p)| c.saturating_sub(*p))
                        .collect();
                    PluginSample {
                        at_ms,
                        generation: instance.generation,
                        calls_per_s: calls as f64 / secs,
                        errors_per_s: errors as f64 / secs,
                        error_rate: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
                        in_flight: instance.in_flight(),
                        p50_ms: quantile_ms(&window, 0.50),
                        p95_ms: quantile_ms(&window, 0.95),
                        p99_ms: quantile_ms(&window, 0.99),
                        cpu_percent: current.cpu_nanos.saturating_sub(prev.cpu_nanos) as f64
                            / 1e9
                            / secs
                            * 100.0,
                        heap_bytes: instance.heap_bytes(),
                        calls_total: current.calls,
                        errors_total: current.errors,
                    }
                }
                None => PluginSample {
                    at_ms,
                    generation: instance.generation,
                    calls_per_s: 0.0,
                    errors_per_s: 0.0,
                    error_rate: 0.0,
                    in_flight: instance.in_flight(),
                    p50_ms: None,
                    p95_ms: None,
                    p99_ms: None,
                    cpu_percent: 0.0,
                    heap_bytes: instance.heap_bytes(),
                    calls_total: current.calls,
                    errors_total: current.errors,
                },
            };
            previous.insert(id.clone(), current);
            plugins.insert(id, sample);
        }
        previous.retain(|id, _| plugins.contains_key(id));
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.retain(|id, _| plugins.contains_key(id));
            for (id, sample) in &plugins {
                let h = history.entry(id.clone()).or_default();
                if h.len() == HISTORY {
                    h.pop_front();
                }
                h.push_back(sample.clone());
            }
        }
        let (cpu_percent, rss_bytes) = match system {
            Some(system) => {
                system.refresh_processes_specifics(
                    sysinfo::ProcessesToUpdate::Some(&[pid]),
                    true,
                    sysinfo::ProcessRefreshKind::nothing().with_cpu().with_memory(),
                );
                system.process(pid).map_or((0.0, 0), |p| (p.cpu_usage() as f64, p.memory()))
            }
            None => (0.0, 0),
        };
        let host = HostSample {
            at_ms,
            cpu_percent,
            rss_bytes,
            plugins_running: instances.iter().filter(|i| i.is_running()).count(),
        };
        *self.host.lock().unwrap_or_else(|p| p.into_inner()) = host.clone();
        Tick { host, plugins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let stats = CallStats::default();
        for _ in 0..90 {
            stats.record(Duration::from_micros(80), Duration::ZERO, false);
        }
        for _ in 0..10 {
            stats.record(Duration::from_millis(40), Duration::ZERO, true);
        }
        let (counts, sum) = stats.latency();
        assert_eq!(quantile_ms(&counts, 0.5), Some(0.1));
        assert_eq!(quantile_ms(&counts, 0.9), Some(0.1));
        assert_eq!(quantile_ms(&counts, 0.95), Some(50.0));
        assert_eq!(quantile_ms(&counts, 0.99), Some(50.0));
        assert!((sum - (90.0 * 80e-6 + 10.0 * 0.04)).abs() < 1e-9);
        assert_eq!(stats.errors.load(Relaxed), 10);
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn very_slow_calls_land_in_the_last_bucket() {
        let stats = CallStats::default();
        stats.record(Duration::from_secs(60), Duration::ZERO, false);
        let (counts, _) = stats.latency();
        assert_eq!(counts[BUCKETS - 1], 1);
        assert_eq!(quantile_ms(&counts, 0.5), Some(f64::INFINITY));
    }
}

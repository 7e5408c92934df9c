//! `GET /metrics`: the Prometheus text format. On each scrape the live counters are read into
//! metric families and encoded by the `prometheus` crate's `TextEncoder` (nothing is copied
//! into a second set of metrics between scrapes).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::Encoder;

use crate::dispatch::Routing;
use crate::logs::LogHub;
use crate::registry::{PluginState, RegistryHandle};
use crate::telemetry::{CallStats, Telemetry, BUCKETS_US};

/// Where the metrics come from.
pub struct Sources {
    pub routing: Arc<Routing>,
    pub registry: RegistryHandle,
    pub logs: Arc<LogHub>,
    pub telemetry: Arc<Telemetry>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn histogram(pairs: &[(&str, &str)], stats: &CallStats) -> Metric {
    let (counts, sum) = stats.latency();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(BUCKETS_US.len());
    for (us, c) in BUCKETS_US.iter().zip(counts.iter()) {
        cumulative += c;
        let mut b = Bucket::default();
        b.set_upper_bound(*us as f64 / 1e6);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let mut h = Histogram::default();
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_histogram(h);
    m
}

/// Read every metric now.
pub fn gather(sources: &Sources) -> Vec<MetricFamily> {
    let mut instances = sources.routing.all();
    instances.sort_by(|a, b| a.id().cmp(b.id()));
    let mut out = Vec::new();

    type Read = fn(&CallStats) -> f64;
    let per_plugin_counters: [(&str, &str, Read); 5] = [
        ("bkg_plugin_calls_total", "Calls finished by the plugin.", |s| {
            s.calls.load(Relaxed) as f64
        }),
        ("bkg_plugin_errors_total", "Calls that ended in an error or a panic.", |s| {
            s.errors.load(Relaxed) as f64
        }),
        ("bkg_plugin_rejected_total", "Calls refused because the plugin's queue was full.", |s| {
            s.rejected.load(Relaxed) as f64
        }),
        ("bkg_plugin_timeouts_total", "Calls answered 504 because the plugin was too slow.", |s| {
            s.timeouts.load(Relaxed) as f64
        }),
        ("bkg_plugin_cpu_seconds_total", "CPU time spent in the plugin's calls.", |s| {
            s.cpu_nanos.load(Relaxed) as f64 / 1e9
        }),
    ];
    for (name, help, read) in per_plugin_counters {
        let metrics =
            instances.iter().map(|i| counter(&[("plugin", i.id())], read(i.stats()))).collect();
        out.push(family(name, help, MetricType::COUNTER, metrics));
    }
    type ReadInstance = fn(&crate::exec::Instance) -> f64;
    let per_plugin_gauges: [(&str, &str, ReadInstance); 3] = [
        ("bkg_plugin_in_flight", "Calls queued or running.", |i| i.in_flight() as f64),
        (
            "bkg_plugin_generation",
            "Generation of the loaded plugin (grows with every hot swap).",
            |i| i.generation as f64,
        ),
        ("bkg_plugin_up", "1 if the plugin is running, 0 if it is loaded but stopped.", |i| {
            i.is_running() as u8 as f64
        }),
    ];
    for (name, help, read) in per_plugin_gauges {
        let metrics = instances.iter().map(|i| gauge(&[("plugin", i.id())], read(i))).collect();
        out.push(family(name, help, MetricType::GAUGE, metrics));
    }
    // Only plugins whose library counts its heap (bkg-abi >= 0.1.1) have a series.
    let heap = instances
        .iter()
        .filter_map(|i| Some(gauge(&[("plugin", i.id())], i.heap_bytes()? as f64)))
        .collect();
    out.push(family(
        "bkg_plugin_heap_bytes",
        "Heap bytes the plugin's library holds through its global allocator.",
        MetricType::GAUGE,
        heap,
    ));
    out.push(family(
        "bkg_plugin_call_duration_seconds",
        "Wall time of plugin calls on the plugin's threads.",
        MetricType::HISTOGRAM,
        instances.iter().map(|i| histogram(&[("plugin", i.id())], i.stats())).collect(),
    ));

    let views = sources.registry.views();
    let states = [
        (PluginState::Loading, "loading"),
        (PluginState::Running, "running"),
        (PluginState::Stopping, "stopping"),
        (PluginState::Stopped, "stopped"),
        (PluginState::Failed, "failed"),
        (PluginState::Unloaded, "unloaded"),
    ];
    out.push(family(
        "bkg_plugins",
        "Known plugin ids by state.",
        MetricType::GAUGE,
        states
            .iter()
            .map(|(state, name)| {
                gauge(&[("state", name)], views.iter().filter(|v| v.state == *state).count() as f64)
            })
            .collect(),
    ));
    let counts = sources.registry.counters();
    out.push(family(
        "bkg_library_unloads_total",
        "Retired plugin generations, by whether the library really left memory.",
        MetricType::COUNTER,
        vec![
            counter(&[("residency", "unloaded")], counts.unloaded.load(Relaxed) as f64),
            counter(&[("residency", "pinned")], counts.pinned.load(Relaxed) as f64),
        ],
    ));
    for (name, help, value) in [
        (
            "bkg_plugin_loads_total",
            "Plugin generations loaded (first loads and swaps).",
            counts.loads.load(Relaxed),
        ),
        (
            "bkg_plugin_load_failures_total",
            "Files that failed to load or start.",
            counts.load_failures.load(Relaxed),
        ),
        (
            "bkg_log_lines_dropped_total",
            "Log lines live subscribers lost because they were too slow.",
            sources.logs.dropped.load(Relaxed),
        ),
    ] {
        out.push(family(name, help, MetricType::COUNTER, vec![counter(&[], value as f64)]));
    }
    let host = sources.telemetry.host();
    out.push(family(
        "bkg_process_resident_memory_bytes",
        "Resident memory of the host process.",
        MetricType::GAUGE,
        vec![gauge(&[], host.rss_bytes as f64)],
    ));
    out.push(family(
        "bkg_process_cpu_ratio",
        "CPU use of the host process over the last second, in cores.",
        MetricType::GAUGE,
        vec![gauge(&[], host.cpu_percent / 100.0)],
    ));
    // The encoder refuses a family without samples (no plugin loaded, or none that counts
    // its heap): leave those out.
    out.retain(|f| !f.get_metric().is_empty());
    out
}

/// Encode every metric in the Prometheus text format.
pub fn render(sources: &Sources) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&gather(sources), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

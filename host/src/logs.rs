//! Per-plugin logs: a bounded ring buffer of recent lines per plugin id, and a broadcast
//! channel for live subscribers (WebSocket clients). A subscriber that falls behind loses
//! lines (counted), it never slows the plugin or grows memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// Lines kept per plugin.
pub const RING_LINES: usize = 2000;
/// Lines a live subscriber may fall behind before it starts losing them.
const LIVE_BACKLOG: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }

    pub fn from_abi(level: bkg_abi::LogLevel) -> Level {
        match level.0 {
            0 | 1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// One log line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Increasing per plugin; a gap tells a reader lines were dropped.
    pub seq: u64,
    pub at_ms: u64,
    pub level: Level,
    /// `plugin` for lines the plugin wrote, `host` for the host's lifecycle lines.
    pub source: &'static str,
    pub target: String,
    pub message: String,
}

struct PluginLog {
    next_seq: u64,
    lines: VecDeque<Arc<LogLine>>,
    live: broadcast::Sender<Arc<LogLine>>,
}

impl PluginLog {
    fn new() -> Self {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        Self { next_seq: 1, lines: VecDeque::with_capacity(64), live }
    }
}

/// Every plugin's log. One owner: this hub; writers are the host handle and the registry.
#[derive(Default)]
pub struct LogHub {
    plugins: Mutex<HashMap<String, PluginLog>>,
    /// Lines live subscribers lost because they were too slow.
    pub dropped: AtomicU64,
}

impl LogHub {
    pub fn push(
        &self,
        plugin: &str,
        level: Level,
        source: &'static str,
        target: &str,
        message: &str,
    ) {
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let log = plugins.entry(plugin.to_string()).or_insert_with(PluginLog::new);
        let line = Arc::new(LogLine {
            seq: log.next_seq,
            at_ms: crate::clock::now_ms(),
            level,
            source,
            target: target.to_string(),
            message: message.to_string(),
        });
        log.next_seq += 1;
        if log.lines.len() == RING_LINES {
            log.lines.pop_front();
        }
        log.lines.push_back(line.clone());
        // No subscriber is fine.
        let _ = log.live.send(line);
    }

    /// The last `tail` lines at `level` or more severe, oldest first.
    pub fn tail(&self, plugin: &str, tail: usize, level: Level) -> Vec<Arc<LogLine>> {
        let plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let Some(log) = plugins.get(plugin) else { return Vec::new() };
        let mut lines: Vec<Arc<LogLine>> =
            log.lines.iter().rev().filter(|l| l.level <= level).take(tail).cloned().collect();
        lines.reverse();
        lines
    }

    /// The tail and a live receiver, taken together so no line falls between them.
    pub fn subscribe(
        &self,
        plugin: &str,
        tail: usize,
        level: Level,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let log = plugins.entry(plugin.to_string()).or_insert_with(PluginLog::new);
        let mut lines: Vec<Arc<LogLine>> =
            log.lines.iter().rev().filter(|l| l.level <= level).take(tail).cloned().collect();
        lines.reverse();
        (lines, log.live.subscribe())
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines() {
        let hub = LogHub::default();
        for i in 0..(RING_LINES + 10) {
            hub.push("p", Level::Info, "plugin", "", &format!("line {i}"));
        }
        let tail = hub.tail("p", usize::MAX, Level::Trace);
        assert_eq!(tail.len(), RING_LINES);
        assert_eq!(tail[0].message, "line 10");
        assert_eq!(tail.last().unwrap().seq, (RING_LINES + 10) as u64);
        assert!(hub.tail("other", 10, Level::Trace).is_empty());
    }

    #[test]
    fn level_filter_and_tail_size() {
        let hub = LogHub::default();
        hub.push("p", Level::Debug, "plugin", "", "d");
        hub.push("p", Level::Error, "host", "", "e");
        hub.push("p", Level::Info, "plugin", "", "i");
        let msgs = |v: Vec<Arc<LogLine>>| v.iter().map(|l| l.message.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(hub.tail("p", 10, Level::Info)), ["e", "i"]);
        assert_eq!(msgs(hub.tail("p", 1, Level::Trace)), ["i"]);
        assert_eq!(msgs(hub.tail("p", 10, Level::Error)), ["e"]);
    }

    #[test]
    fn a_slow_subscriber_loses_lines_instead_of_growing() {
        let hub = LogHub::default();
        let (_, mut rx) = hub.subscribe("p", 0, Level::Trace);
        for i in 0..(LIVE_BACKLOG * 3) {
            hub.push("p", Level::Info, "plugin", "", &format!("{i}"));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                assert_eq!(n as usize, LIVE_BACKLOG * 2)
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        // After the lag the receiver continues with the oldest line still buffered.
        assert_eq!(rx.try_recv().unwrap().message, format!("{}", LIVE_BACKLOG * 2));
    }
}

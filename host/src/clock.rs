//! The wall clock, in the one unit the host stores and shows: milliseconds since the Unix
//! epoch. Its own module so that the store, the log hub and telemetry need nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

//! Restart backoff and the crash loop rule for a plugin in process mode: pure logic, no clock
//! of its own (every method takes `now`), no threads, no I/O, so the registry decides with it
//! on its own thread and the tests inject instants instead of sleeping.
//!
//! The rules: after a crash the child is started again after a delay that begins at 100 ms and
//! doubles with each crash up to 30 s; once a child has served 60 s without a crash the delay
//! starts at 100 ms again. The 5th crash within 60 s makes the plugin `crashlooping`: it is not
//! restarted until an operator starts it (`reset`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The delay before the first restart.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between a crash and the restart.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// This many crashes within `CRASHLOOP_WINDOW` make a crash loop.
pub const CRASHLOOP_CRASHES: usize = 5;
pub const CRASHLOOP_WINDOW: Duration = Duration::from_secs(60);
/// A child that served this long without a crash starts the delay over at `FIRST_DELAY`.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new child after this delay.
    RestartAfter(Duration),
    /// Do not restart: the plugin crashed `CRASHLOOP_CRASHES` times within `CRASHLOOP_WINDOW`
    /// (or is already crashlooping). It stays stopped until an operator starts it.
    Crashloop,
}

/// The supervision state of one plugin id (kept across its generations and children).
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// Crashes within the last `CRASHLOOP_WINDOW`, oldest first.
    recent: VecDeque<Instant>,
    /// The delay the next restart gets.
    next_delay: Duration,
    /// When the current child began serving: set by `on_started`, else taken to be the last
    /// crash plus the delay it was given.
    serving_since: Option<Instant>,
    restarts: u32,
    crashlooping: bool,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor {
            recent: VecDeque::new(),
            next_delay: FIRST_DELAY,
            serving_since: None,
            restarts: 0,
            crashlooping: false,
        }
    }

    /// A child of this plugin began serving (handshake done) at `now`. Optional: without it
    /// the child is taken to have started when its restart delay ran out.
    pub fn on_started(&mut self, now: Instant) {
        self.serving_since = Some(now);
    }

    /// The serving child died at `now` without being asked to: restart it after a delay, or
    /// not at all (crash loop).
    pub fn on_crash(&mut self, now: Instant) -> Decision {
        if self.crashlooping {
            return Decision::Crashloop;
        }
        if let Some(since) = self.serving_since {
            if now.saturating_duration_since(since) >= STABLE_AFTER {
                self.next_delay = FIRST_DELAY;
            }
        }
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= CRASHLOOP_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        if self.recent.len() >= CRASHLOOP_CRASHES {
            self.crashlooping = true;
            self.serving_since = None;
            return Decision::Crashloop;
        }
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(MAX_DELAY);
        self.serving_since = Some(now + delay);
        self.restarts += 1;
        Decision::RestartAfter(delay)
    }

    /// An operator started the plugin: forget its crashes, restarts and crash loop.
    pub fn reset(&mut self) {
        *self = Supervisor::new();
    }

    /// Restarts decided after crashes since the host started or the last `reset`.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// True once the plugin crashed `CRASHLOOP_CRASHES` times within `CRASHLOOP_WINDOW`,
    /// until `reset`.
    pub fn crashlooping(&self) -> bool {
        self.crashlooping
    }

    /// The delay the next crash's restart would get (if it is no crash loop).
    pub fn next_delay(&self) -> Duration {
        self.next_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_starts_at_100ms_and_doubles_up_to_30s() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        let mut delays = Vec::new();
        // A crash every 20 s: at most 3 within any 60 s, so never a crash loop; each child
        // crashes 1 ms after it began serving, so the delay never starts over.
        for i in 0..12u64 {
            let now = t0 + Duration::from_secs(20 * i);
            if i > 0 {
                s.on_started(now - ms(1));
            }
            match s.on_crash(now) {
                Decision::RestartAfter(d) => delays.push(d.as_millis() as u64),
                Decision::Crashloop => panic!("crash {i} was taken for a crash loop"),
            }
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        assert_eq!(s.restarts(), 12);
        assert!(!s.crashlooping());
        assert_eq!(s.next_delay(), MAX_DELAY);
    }

    #[test]
    fn fifth_crash_within_60s_is_a_crash_loop() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        for i in 0..4 {
            assert!(matches!(s.on_crash(t0 + ms(i * 1000)), Decision::RestartAfter(_)));
            assert!(!s.crashlooping());
        }
        assert_eq!(s.on_crash(t0 + ms(59_999)), Decision::Crashloop);
        assert!(s.crashlooping());
        assert_eq!(s.restarts(), 4);
        // It stays a crash loop whatever happens later, until an operator starts it.
        assert_eq!(s.on_crash(t0 + ms(600_000)), Decision::Crashloop);
        assert_eq!(s.restarts(), 4);
    }

    #[test]
    fn crashes_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        for i in 0..4 {
            assert!(matches!(s.on_crash(t0 + ms(i)), Decision::RestartAfter(_)));
        }
        // The first crash is exactly 60 s before this one: out of the window.
        assert!(matches!(s.on_crash(t0 + ms(60_000)), Decision::RestartAfter(_)));
        assert!(!s.crashlooping());
        // The second one (t0 + 1 ms) is still in it: 5 crashes within 60 s.
        assert_eq!(s.on_crash(t0 + ms(60_000)), Decision::Crashloop);
    }

    #[test]
    fn delay_resets_after_a_child_served_60s() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        assert_eq!(s.on_crash(t0), Decision::RestartAfter(ms(100)));
        s.on_started(t0 + ms(100));
        assert_eq!(s.on_crash(t0 + ms(200)), Decision::RestartAfter(ms(200)));
        s.on_started(t0 + ms(400));
        // Served 59.999 s: not long enough, the delay keeps doubling.
        assert_eq!(s.on_crash(t0 + ms(60_399)), Decision::RestartAfter(ms(400)));
        s.on_started(t0 + ms(60_800));
        // Served exactly 60 s: the delay starts over.
        assert_eq!(s.on_crash(t0 + ms(120_800)), Decision::RestartAfter(ms(100)));
        assert_eq!(s.next_delay(), ms(200));
        assert_eq!(s.restarts(), 4);
    }

    #[test]
    fn without_on_started_the_child_serves_from_the_end_of_its_delay() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        assert_eq!(s.on_crash(t0), Decision::RestartAfter(ms(100)));
        assert_eq!(s.on_crash(t0 + ms(1000)), Decision::RestartAfter(ms(200)));
        // Restarted at t0 + 1.2 s; 60 s later minus 1 ms is not yet stable...
        assert_eq!(s.on_crash(t0 + ms(61_199)), Decision::RestartAfter(ms(400)));
        // ...restarted at t0 + 61.599 s, and this crash comes 60 s after that.
        assert_eq!(s.on_crash(t0 + ms(121_599)), Decision::RestartAfter(ms(100)));
    }

    #[test]
    fn reset_forgets_crashes_restarts_and_the_crash_loop() {
        let t0 = Instant::now();
        let mut s = Supervisor::new();
        for i in 0..5 {
            s.on_crash(t0 + ms(i));
        }
        assert!(s.crashlooping());
        assert_eq!(s.restarts(), 4);
        s.reset();
        assert!(!s.crashlooping());
        assert_eq!(s.restarts(), 0);
        assert_eq!(s.next_delay(), FIRST_DELAY);
        // A fresh count: four more crashes at once are no crash loop yet.
        for i in 0..4 {
            assert!(matches!(s.on_crash(t0 + ms(10 + i)), Decision::RestartAfter(_)));
        }
        assert_eq!(s.on_crash(t0 + ms(20)), Decision::Crashloop);
    }

    #[test]
    fn an_instant_before_the_last_crash_does_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut s = Supervisor::new();
        assert_eq!(s.on_crash(t0), Decision::RestartAfter(ms(100)));
        s.on_started(t0 + ms(100));
        assert_eq!(s.on_crash(t0 - ms(5)), Decision::RestartAfter(ms(200)));
    }
}

//! A fair gate: at most `limit` holders at once, admitted strictly in arrival order; a waiter
//! whose client goes away leaves the queue. Generations are long (seconds), so fairness matters
//! more than anything a plain mutex would give (it lets a late arrival overtake).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Why a waiter was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_waiting` are already queued.
    Full,
    /// The caller's `cancelled` turned true while it waited.
    Cancelled,
}

struct State {
    next_ticket: u64,
    waiting: VecDeque<u64>,
    active: usize,
    limit: usize,
    max_waiting: usize,
}

pub struct FairGate {
    state: Mutex<State>,
    changed: Condvar,
}

/// Holding one place; dropping it lets the next waiter in.
pub struct Permit<'a> {
    gate: &'a FairGate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.lock().active -= 1;
        self.gate.changed.notify_all();
    }
}

impl FairGate {
    pub fn new(limit: usize, max_waiting: usize) -> Self {
        Self {
            state: Mutex::new(State {
                next_ticket: 0,
                waiting: VecDeque::new(),
                active: 0,
                limit: limit.max(1),
                max_waiting,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the limits (a new config); waiters are re-checked at once.
    pub fn set_limits(&self, limit: usize, max_waiting: usize) {
        let mut s = self.lock();
        s.limit = limit.max(1);
        s.max_waiting = max_waiting;
        drop(s);
        self.changed.notify_all();
    }

    /// How many wait; how many hold a place.
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.waiting.len(), s.active)
    }

    /// Wait for a place, in arrival order. `cancelled` is polled every 50 ms (and before each
    /// admission: a caller that is already cancelled never takes a place).
    pub fn acquire(&self, cancelled: &dyn Fn() -> bool) -> Result<Permit<'_>, Refused> {
        let mut s = self.lock();
        if s.waiting.len() >= s.max_waiting && !(s.waiting.is_empty() && s.active < s.limit) {
            return Err(Refused::Full);
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.waiting.push_back(ticket);
        loop {
            if cancelled() {
                s.waiting.retain(|t| *t != ticket);
                drop(s);
                self.changed.notify_all();
                return Err(Refused::Cancelled);
            }
            if s.waiting.front() == Some(&ticket) && s.active < s.limit {
                s.waiting.pop_front();
                s.active += 1;
                drop(s);
                // The next in line may fit too.
                self.changed.notify_all();
                return Ok(Permit { gate: self });
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn wait_until(cond: impl Fn() -> bool) {
        for _ in 0..2000 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("condition never held");
    }

    #[test]
    fn waiters_are_admitted_in_arrival_order() {
        let gate = Arc::new(FairGate::new(1, 16));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.acquire(&|| false).unwrap();
        let mut handles = Vec::new();
        for i in 0..5 {
            let (g, o) = (gate.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let _p = g.acquire(&|| false).unwrap();
                o.lock().unwrap().push(i);
            }));
            // Each waiter is queued before the next one starts.
            wait_until(|| gate.load().0 == i + 1);
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(gate.load(), (0, 0));
    }

    #[test]
    fn a_cancelled_waiter_leaves_and_a_full_queue_refuses() {
        let gate = Arc::new(FairGate::new(1, 1));
        let held = gate.acquire(&|| false).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (gate.clone(), stop.clone());
        let waiter = std::thread::spawn(move || {
            g.acquire(&|| s.load(Ordering::SeqCst)).map(|_| ()).unwrap_err()
        });
        wait_until(|| gate.load().0 == 1);
        assert_eq!(gate.acquire(&|| false).map(|_| ()).unwrap_err(), Refused::Full);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(waiter.join().unwrap(), Refused::Cancelled);
        assert_eq!(gate.load(), (0, 1));
        drop(held);
        assert!(gate.acquire(&|| false).is_ok());
    }

    #[test]
    fn a_caller_already_cancelled_never_takes_a_place() {
        let gate = FairGate::new(1, 4);
        assert_eq!(gate.acquire(&|| true).map(|_| ()).unwrap_err(), Refused::Cancelled);
        assert_eq!(gate.load(), (0, 0));
        // The place is still free for the next caller.
        let _p = gate.acquire(&|| false).unwrap();
        assert_eq!(gate.load(), (0, 1));
    }

    #[test]
    fn a_wider_limit_admits_several() {
        let gate = FairGate::new(2, 4);
        let a = gate.acquire(&|| false).unwrap();
        let b = gate.acquire(&|| false).unwrap();
        assert_eq!(gate.load(), (0, 2));
        drop((a, b));
        gate.set_limits(1, 4);
        let _c = gate.acquire(&|| false).unwrap();
        assert_eq!(gate.load(), (0, 1));
    }
}

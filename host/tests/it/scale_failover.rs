//! Issue 16: `kill -9` of one of three hosts on one PostgreSQL under load costs a retrying
//! client nothing, and the killed host, started again on the same database and folders,
//! catches up on what changed while it was down.
//!
//! The client is what a load balancer with retries does: each request (an idempotent plugin
//! call, `echo`) goes to the next host in turn; on a connection error, or a 502/503 from a
//! host that is going away, the same request goes to the next host. Without the retries
//! (`RETRY_ROUNDS` 0) the requests sent to the killed host fail and the test fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde_json::json;

use crate::support::{host_on_database, postgres_database, StopOnDrop, ADMIN_KEY};

/// How many times a request goes round every host before the client gives up on it.
const RETRY_ROUNDS: usize = 3;

/// The retrying client's view: the hosts' base URLs (a restarted host gets a new port, as a
/// load balancer's target list would) and what happened to the requests.
struct Client {
    bases: RwLock<Vec<String>>,
    next: AtomicUsize,
    /// Requests answered 200 with the body they sent.
    ok: AtomicUsize,
    /// Requests the client gave up on, or answered wrongly: what the client cared about.
    failed: Mutex<Vec<String>>,
    /// Attempts that failed over to the next host.
    retries: AtomicUsize,
    /// Requests answered, per base URL.
    answered_by: Mutex<HashMap<String, usize>>,
    agent: ureq::Agent,
}

impl Client {
    fn new(bases: Vec<String>) -> Client {
        Client {
            bases: RwLock::new(bases),
            next: AtomicUsize::new(0),
            ok: AtomicUsize::new(0),
            failed: Mutex::new(Vec::new()),
            retries: AtomicUsize::new(0),
            answered_by: Mutex::new(HashMap::new()),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// Send one request: `echo` of a body of its own, from the next host in turn, failing
    /// over to the host after on a connection error or a 502/503.
    fn send(&self) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = format!("request {n}");
        let bases = self.bases.read().unwrap().clone();
        let mut last = String::new();
        for attempt in 0..bases.len() * (RETRY_ROUNDS + 1) {
            let base = &bases[(n + attempt) % bases.len()];
            let resp = self
                .agent
                .post(&format!("{base}/api/plugins/echo/echo"))
                .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
                .send_string(&body);
            let (status, text) = match resp {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            };
            if status == 200 {
                if text == body {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                    *self.answered_by.lock().unwrap().entry(base.clone()).or_default() += 1;
                } else {
                    self.failed.lock().unwrap().push(format!("{body:?} answered {text:?}"));
                }
                return;
            }
            last = format!("{base}: {status} {text}");
            if !matches!(status, 0 | 502 | 503) || attempt + 1 >= bases.len() * (RETRY_ROUNDS + 1) {
                break;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            if (attempt + 1) % bases.len() == 0 {
                // Every host refused once: give a restarting one a moment, as a balancer would.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.failed.lock().unwrap().push(format!("{body:?} failed, last: {last}"));
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    fn answered_by(&self, base: &str) -> usize {
        self.answered_by.lock().unwrap().get(base).copied().unwrap_or(0)
    }
}

#[test]
fn a_host_killed_under_load_costs_a_retrying_client_nothing_and_catches_up_when_restarted() {
    let url = postgres_database();
    let extra = ["--database-url", url.as_str()];
    let [a, b, c] = std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| host_on_database(&url))).collect();
        let mut hosts = started.into_iter().map(|h| h.join().expect("start a host"));
        [hosts.next().unwrap(), hosts.next().unwrap(), hosts.next().unwrap()]
    });
    let killed_base = c.base.clone();
    let client = Client::new(vec![a.base.clone(), b.base.clone(), c.base.clone()]);
    let stop = AtomicBool::new(false);

    let c = std::thread::scope(|s| {
        // Stops the load however this scope ends (a failed wait panics).
        let _stop = StopOnDrop(&stop);
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    client.send();
                }
            });
        }
        // Load spread over the three hosts, then C dies in the middle of it.
        a.wait_for("C to answer part of the load", || client.answered_by(&killed_base) >= 50);
        let c = c.kill_edit_and_restart(&extra, |_| {
            // While C is down the load goes on: its share fails over to A and B.
            let (ok, retries) = (client.ok(), client.retries.load(Ordering::Relaxed));
            a.wait_for("load to go on while C is down", || {
                client.ok() >= ok + 200 && client.retries.load(Ordering::Relaxed) > retries
            });
            // And an operator changes things on A meanwhile.
            let body = json!({ "greeting": "while c was down", "repeat": 1 }).to_string();
            let (status, v) = a.post_json("/api/core/plugins/echo/config", &body);
            assert_eq!(status, 200, "{v}");
            assert_eq!(a.post_json("/api/core/plugins/apikeys/stop", "").0, 200);
            b.wait_state("apikeys", "stopped");
        });
        // C serves again: back in the client's list, it takes its share of the load.
        client.bases.write().unwrap()[2] = c.base.clone();
        c.wait_for("the restarted C to answer part of the load", || {
            client.answered_by(&c.base) >= 50
        });
        stop.store(true, Ordering::Relaxed);
        c
    });

    let failed = client.failed.lock().unwrap();
    let first: Vec<_> = failed.iter().take(5).collect();
    assert!(
        failed.is_empty(),
        "{} of the client's requests failed, first: {first:?}",
        failed.len()
    );
    assert!(client.retries.load(Ordering::Relaxed) > 0, "no request met the killed host");
    assert_eq!(client.ok(), client.next.load(Ordering::Relaxed));
    // What changed while C was down is applied there: the config by the plugin itself, the
    // stopped plugin stays stopped.
    c.wait_for("C to greet with the config set while it was down", || {
        c.post("/api/plugins/echo/greet", "").1 == "while c was down"
    });
    assert_eq!(c.state("apikeys"), "stopped");
    assert_eq!(c.state("echo"), "running");
    // And it applies what changes after its start, as the others do what it changes.
    assert_eq!(c.post_json("/api/core/plugins/apikeys/start", "").0, 200);
    for host in [&a, &b, &c] {
        host.wait_state("apikeys", "running");
    }
}

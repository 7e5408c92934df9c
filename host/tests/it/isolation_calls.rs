//! Process mode's call path (issue 15): the host hands calls to the child without holding a
//! thread per call, bounded by the plugin's queue (`--queue-depth` plus its workers), so more
//! calls can be out to a child than it has threads; the child keeps one thread reading and
//! queues the calls no thread is free for.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{fixture, lib_name, Host, StopOnDrop, ADMIN_KEY};

fn in_flight(host: &Host, id: &str) -> u64 {
    counter(host, id, "in_flight")
}

fn counter(host: &Host, id: &str, name: &str) -> u64 {
    host.plugin(id)["calls"][name].as_u64().unwrap_or(0)
}

/// Every call out to the child makes a bus call back into the host and waits for its answer
/// while more calls than the child has threads are out: the answers must still be read (a
/// child whose every thread waits on the host with a `CbReply` unread would hang them all
/// until their 504).
#[test]
fn more_calls_than_child_threads_each_making_a_bus_call_all_finish() {
    // One worker: the child runs one call at a time, and one more thread reads.
    let host = Host::start_with(&["--plugin-workers", "1", "--call-timeout-ms", "60000"]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("echo", "running");
    host.wait_state("slow", "running");
    host.in_mode("process", &["echo"]);
    let pid = host.plugin("echo")["process"]["pid"].as_u64().expect("echo runs in a child");
    let (calls, errors) = (counter(&host, "echo", "total"), counter(&host, "echo", "errors"));

    const CLIENTS: usize = 8;
    const ROUNDS: usize = 3;
    let stop = AtomicBool::new(false);
    let most_out = AtomicU64::new(0);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (host, stop, most_out) = (&host, &stop, &most_out);
        s.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                most_out.fetch_max(in_flight(host, "echo"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    for r in 0..ROUNDS {
                        // A bus call into another plugin (slow, one call at a time: the calls
                        // pile up in echo's child meanwhile) ...
                        assert_eq!(
                            host.post("/api/plugins/echo/relay", "slow sleep 30"),
                            (200, "slept 30".to_string()),
                            "client {c}, round {r}"
                        );
                        // ... and one into the host's key-value store.
                        let (status, body) =
                            host.post("/api/plugins/echo/kv-put", &format!("k{c}-{r} v{c}-{r}"));
                        assert_eq!(status, 200, "client {c}, round {r}: {body}");
                        assert_eq!(
                            host.post("/api/plugins/echo/kv-get", &format!("k{c}-{r}")),
                            (200, format!("v{c}-{r}"))
                        );
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
    });
    // More calls were out to the child at once than it has threads for calls (one).
    assert!(most_out.load(Ordering::SeqCst) >= 3, "at most {most_out:?} calls were out at once");
    let echo = host.plugin("echo");
    assert_eq!(echo["process"]["pid"], pid, "the child is the same (no crash, no kill): {echo}");
    assert_eq!(echo["calls"]["errors"], errors, "{echo}");
    assert_eq!(echo["calls"]["total"], calls + (CLIENTS * ROUNDS * 3) as u64, "{echo}");
}

/// A call waiting in the child for a thread (behind a running one) whose client leaves is
/// answered `cancelled` without reaching the plugin.
#[test]
fn a_call_queued_in_the_child_is_cancelled_when_its_client_leaves() {
    let host = Host::start_with(&["--call-timeout-ms", "60000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    host.in_mode("process", &["slow"]);
    let (calls, errors) = (counter(&host, "slow", "total"), counter(&host, "slow", "errors"));
    // slow takes one call at a time (max_concurrency 1): its child has one thread for calls.
    std::thread::scope(|s| {
        let running = s.spawn(|| host.post("/api/plugins/slow/sleep", "3000"));
        host.wait_for("the first call to run", || in_flight(&host, "slow") == 1);
        let addr = host.base.trim_start_matches("http://").to_string();
        let mut queued = TcpStream::connect(&addr).expect("connect");
        let request = format!(
            "POST /api/plugins/slow/sleep HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
             {ADMIN_KEY}\r\nContent-Length: 5\r\n\r\n60000"
        );
        queued.write_all(request.as_bytes()).expect("send the second call");
        host.wait_for("the second call to wait in the child", || in_flight(&host, "slow") == 2);
        // Its client leaves.
        drop(queued);
        assert_eq!(running.join().unwrap(), (200, "slept 3000".to_string()));
    });
    host.wait_for("the second call to end", || in_flight(&host, "slow") == 0);
    let slow = host.plugin("slow");
    assert_eq!(slow["calls"]["total"], calls + 2, "{slow}");
    assert_eq!(slow["calls"]["errors"], errors + 1, "the second call ended cancelled: {slow}");
    // The plugin never saw it: it says "sleep cancelled" for a call cancelled while it sleeps.
    assert!(!host.log().contains("sleep cancelled"), "the plugin ran the cancelled call");
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

/// In process mode the calls out to a child are bounded by the plugin's queue: its depth plus
/// its workers (as in the host), then 503 `busy`.
#[test]
fn a_full_queue_answers_503_in_process_mode() {
    let host = Host::start_with(&["--queue-depth", "1", "--call-timeout-ms", "5000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    host.in_mode("process", &["slow"]);
    std::thread::scope(|s| {
        // One call runs (the slow fixture takes one at a time), one waits in the child.
        let running = s.spawn(|| host.post("/api/plugins/slow/sleep", "1500"));
        host.wait_for("the first call to run", || in_flight(&host, "slow") == 1);
        let queued = s.spawn(|| host.post("/api/plugins/slow/sleep", "1"));
        host.wait_for("the second call to queue", || in_flight(&host, "slow") == 2);
        let (status, v) = host.post_json("/api/plugins/slow/sleep", "1");
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "busy");
        assert_eq!(running.join().unwrap(), (200, "slept 1500".to_string()));
        assert_eq!(queued.join().unwrap(), (200, "slept 1".to_string()));
    });
    assert_eq!(counter(&host, "slow", "rejected"), 1);
}

/// A streamed bus answer into a child is flow-controlled like a call's stream the other way:
/// the host sends at most `STREAM_WINDOW` (16) chunks ahead of the child's credit. A long
/// answer must still arrive whole and in order (the credit flows back as the plugin takes
/// the chunks), and a plugin that stops taking them ends the callee's stream.
#[test]
fn a_long_streamed_bus_answer_into_a_child_flows_with_credit_and_stops_when_the_plugin_does() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode("process", &["echo"]);
    // Echo in its child asks the host for echo's own `count` (served by the same child) and
    // collects every chunk of it.
    let numbers: Vec<String> = (1..=500).map(|i| i.to_string()).collect();
    assert_eq!(
        host.post("/api/plugins/echo/relay-stream", "echo count 500 1000"),
        (200, format!("chunks {}; tail done", numbers.join(",")))
    );
    // It stops after 40 chunks: the callee sees its sink refuse and ends early.
    let (status, text) = host.post("/api/plugins/echo/relay-stream", "echo count 100000 40");
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with(&format!("stopped after 40: {}", numbers[..40].join(","))), "{text}");
    host.wait_for("the callee's stream to end", || in_flight(&host, "echo") == 0);
    assert_eq!(host.post("/api/plugins/echo/echo", "still here"), (200, "still here".into()));
}

/// A request body over `exec::DIRECT_BODY_MAX` (64 KiB) is written to the child from one of
/// the plugin's workers, not from the HTTP worker that took it; it arrives whole either way,
/// also while small calls go out directly beside it.
#[test]
fn large_and_small_bodies_reach_a_child_whole_side_by_side() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode("process", &["echo"]);
    assert_eq!(bkg_host::exec::DIRECT_BODY_MAX, 64 * 1024);
    let sizes = [0usize, 1, 64 * 1024, 64 * 1024 + 1, 3 << 20];
    std::thread::scope(|s| {
        for (i, size) in sizes.into_iter().enumerate() {
            let host = &host;
            s.spawn(move || {
                let body: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
                for _ in 0..5 {
                    let (status, answer) =
                        host.post_bytes("/api/plugins/echo/echo", "application/x-test", &body);
                    assert_eq!(status, 200, "{size} bytes");
                    assert!(
                        answer == body,
                        "{size} bytes came back as {} other bytes",
                        answer.len()
                    );
                }
            });
        }
    });
    host.wait_for("every call to be counted out", || in_flight(&host, "echo") == 0);
}

/// A call runs on the child's thread that read it, with no thread reading meanwhile, until it
/// waits on the host: then another thread must take over reading, or the answer to its bus
/// call (here served by the same child, one and two levels deep) would never be read.
#[test]
fn a_bus_call_back_into_the_same_child_while_it_runs_one_call_is_answered() {
    let host = Host::start_with(&["--call-timeout-ms", "60000"]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode("process", &["echo"]);
    let pid = host.plugin("echo")["process"]["pid"].as_u64().expect("echo runs in a child");
    for i in 0..20 {
        assert_eq!(
            host.post("/api/plugins/echo/relay", &format!("echo echo hi {i}")),
            (200, format!("hi {i}")),
            "call {i}"
        );
        assert_eq!(
            host.post("/api/plugins/echo/relay", &format!("echo relay echo echo deep {i}")),
            (200, format!("deep {i}")),
            "call {i}"
        );
        assert_eq!(host.post("/api/plugins/echo/kv-put", &format!("k{i} v{i}")).0, 200);
        assert_eq!(host.post("/api/plugins/echo/kv-get", &format!("k{i}")), (200, format!("v{i}")));
    }
    assert_eq!(host.plugin("echo")["process"]["pid"], pid, "the child is the same");
    host.wait_for("every call to be counted out", || in_flight(&host, "echo") == 0);
}

/// A call running in the child with no thread reading (it ran on the thread that read it) is
/// still told of its cancellation: another thread takes over reading while it runs, so the
/// plugin sees it and ends the call, and the host does not kill the child for ignoring it.
#[test]
fn a_long_call_running_on_the_thread_that_read_it_still_sees_its_cancellation() {
    let host = Host::start_with(&["--call-timeout-ms", "60000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    host.in_mode("process", &["slow"]);
    let pid = host.plugin("slow")["process"]["pid"].as_u64().expect("slow runs in a child");
    // Calls first, so the child's threads are in their steady state (a reader that just
    // answered a call).
    for _ in 0..20 {
        assert_eq!(host.post("/api/plugins/slow/sleep", "0"), (200, "slept 0".to_string()));
    }
    let addr = host.base.trim_start_matches("http://").to_string();
    let mut client = TcpStream::connect(&addr).expect("connect");
    let request = format!(
        "POST /api/plugins/slow/sleep HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
         {ADMIN_KEY}\r\nContent-Length: 5\r\n\r\n60000"
    );
    client.write_all(request.as_bytes()).expect("send the call");
    host.wait_for("the call to run", || in_flight(&host, "slow") == 1);
    drop(client);
    host.wait_for("the plugin to see the cancellation", || host.log().contains("sleep cancelled"));
    host.wait_for("the call to end", || in_flight(&host, "slow") == 0);
    assert_eq!(host.plugin("slow")["process"]["pid"], pid, "the child was not killed");
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

/// CPU time (user + system, clock ticks) a process used so far, from /proc/<pid>/stat.
fn cpu_ticks(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The fields after the command name (in parentheses, which may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The readers spin for an answer only while one is due (calls out, a call just answered):
/// after a burst of calls, an idle host and an idle child use next to no CPU. A reader left
/// spinning would use a whole CPU (100 ticks a second); the bound is a fifth of that.
#[test]
fn an_idle_host_and_child_use_no_cpu_after_a_burst_of_calls() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode("process", &["echo"]);
    let child = host.plugin("echo")["process"]["pid"].as_u64().expect("echo runs in a child");
    for i in 0..500 {
        assert_eq!(host.post("/api/plugins/echo/noop", "").0, 200, "call {i}");
    }
    std::thread::scope(|s| {
        for c in 0..4 {
            let host = &host;
            s.spawn(move || {
                for i in 0..100 {
                    assert_eq!(host.post("/api/plugins/echo/noop", "").0, 200, "{c}/{i}");
                }
            });
        }
    });
    host.wait_for("every call to be counted out", || in_flight(&host, "echo") == 0);
    let hz = 100; // USER_HZ on Linux
    let idle = Duration::from_secs(3);
    let (host_before, child_before) = (cpu_ticks(host.pid() as u64), cpu_ticks(child));
    std::thread::sleep(idle);
    let (host_used, child_used) =
        (cpu_ticks(host.pid() as u64) - host_before, cpu_ticks(child) - child_before);
    let bound = hz * idle.as_secs() / 5;
    assert!(host_used < bound, "the idle host used {host_used} ticks in {idle:?}");
    assert!(child_used < bound, "the idle child used {child_used} ticks in {idle:?}");
}

//! Process isolation's core with the `echo` fixture in a child process: calls, streaming,
//! key-value data, bus calls back into the same child, the data dir, a real unload; a child
//! killed with SIGKILL: 503 `plugin_crashed` naming the signal, the crash event, restarts,
//! the crash loop and an operator's start. (The crash fixtures' tests are in isolation.rs.)

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{fixture, lib_name, Host};

/// Move `id` into a child process and wait until it serves from there.
fn isolate(host: &Host, id: &str) {
    let (status, v) =
        host.post_json(&format!("/api/core/plugins/{id}/isolation"), r#"{"mode":"process"}"#);
    assert_eq!(status, 200, "{v}");
    host.wait_for(&format!("{id} to run in a child"), || {
        let p = host.plugin(id);
        p["state"] == "running" && p["process"]["pid"].is_u64()
    });
}

/// The plugin's events of `kind`, newest first.
fn events(host: &Host, id: &str, kind: &str) -> Vec<Value> {
    let (status, v) = host.get_json(&format!("/api/core/events?plugin={id}&limit=1000"));
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

fn echo_in_a_child() -> (Host, u32) {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    isolate(&host, "echo");
    let pid = child_pid(&host).expect("a child pid");
    (host, pid)
}

fn pid_of(host: &Host, id: &str) -> Option<u32> {
    host.plugin(id)["process"]["pid"].as_u64().map(|p| p as u32)
}

fn child_pid(host: &Host) -> Option<u32> {
    pid_of(host, "echo")
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive: the host reaps its children.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    assert!(status.expect("run kill").success(), "kill -9 {pid}");
}

/// Kill the serving child and wait until a new one serves; returns its pid.
fn kill_and_wait_for_a_new_child(host: &Host, pid: u32) -> u32 {
    kill9(pid);
    host.wait_for("a new child to serve", || {
        child_pid(host).is_some_and(|p| p != pid)
            && host.state("echo") == "running"
            && host.post("/api/plugins/echo/echo", "again").0 == 200
    });
    child_pid(host).unwrap()
}

#[test]
fn echo_in_its_own_process_serves_calls_streams_kv_and_bus_calls_back_into_itself_and_unloads() {
    let (host, pid) = echo_in_a_child();
    assert_ne!(pid, host.pid(), "the plugin runs in a process of its own");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("plugin-runner"), "{cmdline}");
    let parent = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 =
        parent.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, host.pid(), "its parent is the host");
    // The host's bootstrap key is not handed down to the plugin's process.
    let environ = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let has_key = |env: &[u8]| env.split(|b| *b == 0).any(|v| v.starts_with(b"BKG_ADMIN_KEY="));
    assert!(has_key(&environ(host.pid())), "the test host gets its key from the environment");
    assert!(!has_key(&environ(pid)), "the child's environment holds the admin key");

    // A body with every byte value comes back unchanged, with its content type.
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let (status, answer) = host.post_bytes("/api/plugins/echo/echo", "application/x-bytes", &body);
    assert_eq!(status, 200);
    assert_eq!(answer, body);

    // A streamed answer, chunk by chunk.
    let mut lines = Vec::new();
    let status = host.post_lines("/api/plugins/echo/count", "5", |l| {
        lines.push(l.to_string());
        true
    });
    assert_eq!(status, 200);
    assert_eq!(lines, ["1", "2", "3", "4", "5", "done"]);
    // A stream far longer than the child's window of chunks sent ahead (flow control: the
    // host grants more as its client takes them): every chunk, in order.
    let mut n = 0u32;
    let status = host.post_lines("/api/plugins/echo/count", "5000", |l| {
        if l != "done" {
            n += 1;
            assert_eq!(l, n.to_string());
        }
        true
    });
    assert_eq!((status, n), (200, 5000));

    // Key-value data through the host's store.
    assert_eq!(host.post("/api/plugins/echo/kv-put", "colour blue").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-get", "colour"), (200, "blue".to_string()));
    assert_eq!(host.post("/api/plugins/echo/kv-keys", "col"), (200, "colour".to_string()));

    // A bus call from the child back into the same child (the host serves it off the
    // reader thread, so the child's reply comes while its caller waits).
    assert_eq!(
        host.post("/api/plugins/echo/relay", "echo echo round-trip"),
        (200, "round-trip".into())
    );
    // A streamed bus call back into itself.
    let (status, text) = host.post("/api/plugins/echo/relay-stream", "echo count 3 10");
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "chunks 1,2,3; tail done");

    // The data dir the child sees is the plugin's own.
    let (status, dir) = host.post("/api/plugins/echo/datadir", "");
    assert_eq!(status, 200);
    assert!(Path::new(&dir).ends_with("echo"), "{dir}");

    // A log line the plugin writes in the child lands in its log.
    assert_eq!(host.post("/api/plugins/echo/log", "written from the child").0, 200);
    host.wait_for("the child's log line", || {
        host.get("/api/core/plugins/echo/logs").1.contains("written from the child")
    });

    // Deleting the file retires the generation: the child ends, a real unload.
    host.remove(&lib_name("echo"));
    host.wait_state("echo", "unloaded");
    assert_eq!(host.plugin("echo")["residency"], "unloaded");
    host.wait_for("the child to be gone", || !alive(pid));
}

#[test]
fn a_killed_child_is_a_crash_event_then_a_restart_and_the_fifth_crash_within_a_minute_a_crash_loop_until_an_operator_starts_it(
) {
    let (host, mut pid) = echo_in_a_child();
    let first = pid;
    // Four crashes: each restarted (100, 200, 400, 800 ms).
    for _ in 0..4 {
        pid = kill_and_wait_for_a_new_child(&host, pid);
    }
    assert!(!alive(first), "the first child is gone");
    let view = host.plugin("echo");
    assert_eq!(view["process"]["restarts"], 4, "{view}");
    assert_eq!(view["process"]["last_crash"]["signal"], "SIGKILL", "{view}");
    let crashed = events(&host, "echo", "crashed");
    assert_eq!(crashed.len(), 4, "{crashed:?}");
    assert_eq!(crashed[0]["details"]["signal"], "SIGKILL");
    assert!(
        crashed[0]["details"]["message"].as_str().unwrap().contains("killed by SIGKILL"),
        "{crashed:?}"
    );

    // The fifth: no restart, and calls get 503 plugin_crashed naming the signal.
    kill9(pid);
    host.wait_for("the crash loop", || host.plugin("echo")["process"]["crashlooping"] == true);
    let view = host.plugin("echo");
    assert_eq!(view["state"], "failed", "{view}");
    assert!(view["process"]["pid"].is_null(), "no child runs: {view}");
    assert!(view["last_error"]["message"].as_str().unwrap().contains("crashlooping"), "{view}");
    let (status, v) = host.post_json("/api/plugins/echo/echo", "anyone?");
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "plugin_crashed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("SIGKILL"), "{v}");
    assert_eq!(events(&host, "echo", "crashlooping").len(), 1);
    // Still no restart a while later (the next delay would have been 1.6 s).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(child_pid(&host).is_none(), "a crashlooping plugin is not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // An operator's start: a new child, the crash loop forgotten.
    let (status, v) = host.post_json("/api/core/plugins/echo/start", "");
    assert_eq!(status, 200, "{v}");
    host.wait_state("echo", "running");
    let view = host.plugin("echo");
    assert_eq!(view["process"]["crashlooping"], false, "{view}");
    assert!(child_pid(&host).is_some_and(|p| p != pid), "{view}");
    assert_eq!(host.post("/api/plugins/echo/echo", "back"), (200, "back".to_string()));
    // Every retired child's shadow copy is gone: only the serving one's is left.
    let shadows = || {
        std::fs::read_dir(host.data_dir().join("shadow"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("echo"))
            .count()
    };
    host.wait_for("one shadow copy left", || shadows() == 1);
}

#[test]
fn a_call_that_ignores_its_cancellation_gets_its_child_killed_and_the_plugin_restarted() {
    // The cancel grace is the control timeout (at most 5 s): 1 s here.
    let host = Host::start_with(&["--control-timeout-ms", "1000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    isolate(&host, "slow");
    let pid = pid_of(&host, "slow").unwrap();
    // Streams for ten minutes and never looks at its cancel flag; the client leaves after
    // the first line. One call at a time: a stuck call would block every later one.
    let status = host.post_lines("/api/plugins/slow/stream-ignore", "600000", |_| false);
    assert_eq!(status, 200);
    host.wait_for("the stuck child to be killed and a new one to serve", || {
        pid_of(&host, "slow").is_some_and(|p| p != pid)
            && host.post("/api/plugins/slow/sleep", "1") == (200, "slept 1".to_string())
    });
    assert!(!alive(pid), "the stuck child is gone");
    let crashed = events(&host, "slow", "crashed");
    assert_eq!(crashed.len(), 1, "{crashed:?}");
    assert_eq!(crashed[0]["details"]["signal"], "SIGKILL", "{crashed:?}");
    let message = crashed[0]["details"]["message"].as_str().unwrap();
    assert!(
        message.contains("killed by the host")
            && message.contains("'stream-ignore' went on 1000 ms after it was cancelled"),
        "{message}"
    );
}

#[test]
fn a_child_sets_the_resource_limits_of_the_host_flags_and_an_allocation_past_its_memory_limit_ends_only_the_child(
) {
    let host =
        Host::start_with(&["--process-max-memory-mb", "2048", "--process-max-open-files", "200"]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    isolate(&host, "echo");
    let pid = child_pid(&host).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| -> Vec<String> {
        let line =
            limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{limits}"));
        line[name.len()..].split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(row("Max address space")[..2], ["2147483648", "2147483648"], "{limits}");
    assert_eq!(row("Max open files")[..2], ["200", "200"], "{limits}");
    // The host's own limits are not the child's.
    let own = std::fs::read_to_string(format!("/proc/{}/limits", host.pid())).unwrap();
    assert!(!own.lines().any(|l| l.starts_with("Max address space") && l.contains("2147483648")));

    // 1 GiB at a time until the child's address space is full: its allocation fails, the
    // child aborts, the caller gets 503 plugin_crashed, the host serves on.
    let mut answer = None;
    for _ in 0..4 {
        let (status, v) = host.post_json("/api/plugins/echo/hold", "1073741824");
        if status != 200 {
            answer = Some((status, v));
            break;
        }
    }
    let (status, v) = answer.expect("an allocation past 2 GiB failed");
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "plugin_crashed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("SIGABRT"), "{v}");
    // The caller's 503 comes first; the crash record follows (with the stderr tail).
    host.wait_for("the crash event", || events(&host, "echo", "crashed").len() == 1);
    let crashed = events(&host, "echo", "crashed");
    // The crash record keeps the child's last lines (a backtrace's frames left out) ...
    let tail = crashed[0]["details"]["stderr_tail"].to_string();
    assert!(tail.contains("memory allocation of 1073741824 bytes failed"), "{tail}");
    // ... and its whole stderr is in the plugin's log.
    host.wait_for("the child's stderr in the plugin's log", || {
        host.get("/api/core/plugins/echo/logs")
            .1
            .contains("memory allocation of 1073741824 bytes failed")
    });
    host.wait_for("a new child to serve", || {
        child_pid(&host).is_some_and(|p| p != pid)
            && host.post("/api/plugins/echo/echo", "still here") == (200, "still here".into())
    });
}

#[test]
fn the_heap_figure_of_a_plugin_in_a_child_follows_what_it_allocates_and_frees() {
    const MIB: u64 = 1 << 20;
    let (host, _) = echo_in_a_child();
    let heap = || -> Option<u64> {
        host.get_json("/api/core/plugins/echo/telemetry").1["current"]["heap_bytes"].as_u64()
    };
    host.wait_for("a heap figure from the child", || heap().is_some());
    let base = heap().unwrap();
    assert!(base > 0 && base < 8 * MIB, "the echo fixture holds little: {base}");
    assert_eq!(host.post("/api/plugins/echo/hold", &(16 * MIB).to_string()).0, 200);
    host.wait_for("the figure to show the 16 MiB held", || {
        heap().is_some_and(|h| h >= base + 16 * MIB)
    });
    assert_eq!(host.post("/api/plugins/echo/release", "").0, 200);
    host.wait_for("the figure to show it freed", || heap().is_some_and(|h| h < base + MIB));
}

#[test]
fn a_runner_that_dies_before_its_hello_fails_the_load_naming_its_exit_status_and_last_words() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    isolate(&host, "echo");
    // A stand-in for `bkg plugin-runner` that says something and exits before any hello.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-runner");
    std::fs::write(&script, "#!/bin/sh\necho 'fake runner: no plugin here' >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = host.restart_with_env(&[], &[("BKG_RUNNER_EXE", script.to_str().unwrap())]);
    host.wait_state("echo", "failed");
    let view = host.plugin("echo");
    let error = view["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("the plugin's process exited with status 7 before its hello: fake runner: no plugin here"),
        "{view}"
    );
    assert_eq!(host.post_json("/api/plugins/echo/echo", "x").0, 404, "nothing serves");
}

/// The host's child processes (zombies too: a child the host failed to reap counts).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().unwrap_or("").split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            found.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// `echo` in a child and `slow` in the host; then the host restarted with the runner's
/// handshake failpoint `step`: echo's load fails with `expected` in its error, no runner is
/// left behind, slow serves on; a host without the failpoint serves echo from a child again.
fn a_runner_at_the_hello_failpoint(step: &str, expected: &str) {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("echo", "running");
    host.wait_state("slow", "running");
    isolate(&host, "echo");
    let failpoint = format!("runner:{step}");
    let host = host.restart_with_env(&[], &[("BKG_FAILPOINT", &failpoint)]);
    host.wait_state("echo", "failed");
    let view = host.plugin("echo");
    let error = view["last_error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains(expected), "{view}");
    assert!(view["process"]["pid"].is_null(), "no child serves: {view}");
    assert_eq!(view["isolation"], "process", "the mode is kept: {view}");
    // The refused runner is killed and reaped: no child process of the host is left.
    host.wait_for("no plugin-runner child of the host", || children_of(host.pid()).is_empty());
    // The runner's stderr names the failpoint in echo's log.
    host.wait_for("the runner's failpoint line in echo's log", || {
        host.get("/api/core/plugins/echo/logs").1.contains("BKG_FAILPOINT")
    });
    let (status, v) = host.post_json("/api/plugins/echo/echo", "x");
    assert_eq!(status, 404, "nothing serves echo: {v}");
    // The plugin in the host serves on.
    assert_eq!(host.state("slow"), "running");
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));

    // Without the failpoint, echo runs in a child again.
    let host = host.restart(&[]);
    host.wait_for("echo to serve from a child", || {
        host.state("echo") == "running" && pid_of(&host, "echo").is_some()
    });
    assert_eq!(host.post("/api/plugins/echo/echo", "back"), (200, "back".to_string()));
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

#[test]
fn a_runner_answering_the_hello_with_another_protocol_version_is_refused_naming_both_versions() {
    let ours = bkg_host::isolation::wire::PROTOCOL_VERSION;
    let expected = format!(
        "cannot start the plugin's process: the plugin runner speaks protocol version {}, this host {ours}",
        ours + 1
    );
    a_runner_at_the_hello_failpoint("hello_version", &expected);
}

#[test]
fn a_runner_answering_the_hello_with_the_wrong_cookie_is_refused() {
    a_runner_at_the_hello_failpoint(
        "hello_cookie",
        "cannot start the plugin's process: the plugin runner answered with the wrong cookie",
    );
}

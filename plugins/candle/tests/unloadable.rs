//! With CANDLE_NUM_THREADS=1 (set before any candle code runs; this test binary has a single
//! test) candle starts no threads of its own: after stop nothing the plugin started is alive.
mod common;

use bkg_abi::serde_json::json;
use common::*;

#[test]
fn with_candle_num_threads_1_nothing_is_left_running() {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let before = std::fs::read_dir("/proc/self/task").unwrap().count();
    let e = engine();
    load(&e, "minilm", MINILM);
    load(&e, "smol", SMOLLM);
    let texts: Vec<String> =
        (0..64).map(|i| format!("sentence number {i} about nothing much")).collect();
    embed(&e, "minilm", json!(texts));
    call(
        &e,
        "model.infer",
        json!({ "model": "smol", "prompt": "Hello", "max_tokens": 2, "temperature": 0 }),
    )
    .unwrap();
    let status = e.status();
    assert_eq!(status["unloadable"], true, "{status:#}");
    assert_eq!(status["threads"]["candle_barrier_threads_alive"], 0);
    e.stop().unwrap();
    // Joined threads leave /proc/self/task once the kernel has reaped them: wait for that
    // (bounded), never for a fixed time.
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while threads() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let after = threads();
    assert!(after <= before, "threads before {before}, after {after} (waited 20 s)");
    let status = e.status();
    assert_eq!(status["threads"]["live"], 0, "{status:#}");
    assert_eq!(status["threads"]["spawned_total"], status["threads"]["joined_total"], "{status:#}");
}

//! The plugin's compute threads are its own and are joined in stop; no rayon global pool.
mod common;

use bkg_abi::serde_json::json;
use common::*;

/// The tests here count the process's threads: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Threads whose name starts with `prefix`, once the count settles at `want` (names are set
/// by each new thread itself, so a just-built pool may not show them all yet).
fn threads_named(prefix: &str, want: usize) -> usize {
    let mut n = count(prefix);
    for _ in 0..100 {
        if n == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        n = count(prefix);
    }
    n
}

fn count(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn f32_embeddings_use_only_the_plugin_pool_which_stop_joins() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::fs::read_dir("/proc/self/task").unwrap().count();
    let e = engine();
    assert_eq!(threads_named("bkg-candle", 2), 2);
    load(&e, "minilm", MINILM);
    let texts: Vec<String> =
        (0..64).map(|i| format!("sentence number {i} about nothing")).collect();
    embed(&e, "minilm", json!(texts));
    let status = e.status();
    println!("{status:#}");
    // candle's barrier pool: CANDLE_NUM_THREADS - 1 threads (physical cores - 1 by default).
    // The F32 embedding path never starts it, so the plugin stays unloadable.
    let barrier = bkg_plugin_candle::runtime::barrier_pool_threads();
    assert_eq!(status["threads"]["candle_barrier_threads_started_here"], 0, "{status}");
    assert_eq!(status["unloadable"], true, "{status}");
    assert_eq!(status["threads"]["pool"], 2);
    e.stop().unwrap();
    assert_eq!(threads_named("bkg-candle", 0), 0);
    assert_eq!(e.status()["threads"]["joined_total"], 2);
    // No other thread was left behind (rayon's global pool would show up here) except
    // candle's never-joined barrier pool.
    let after =
        std::fs::read_dir("/proc/self/task").unwrap().count() - threads_named("candle-bp", barrier);
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(after <= before, "threads before {before}, after {after}: {names:?}");
    // Stopped: calls answer 503, start again serves.
    let err = call(&e, "model.infer", json!({ "model": "minilm", "input": "x" })).unwrap_err();
    assert_eq!(err.kind.0, 404); // stop dropped the models
    e.start().unwrap();
    load(&e, "minilm", MINILM);
    embed(&e, "minilm", json!("again"));
    e.stop().unwrap();
}

#[test]
fn configure_threads_rebuilds_the_pool() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = engine();
    e.configure(json!({ "threads": 3 })).unwrap();
    assert_eq!(e.status()["threads"]["pool"], 3);
    assert_eq!(e.configure(json!({ "threads": 0 })).unwrap_err().kind.0, 400);
    assert_eq!(e.configure(json!({ "bogus": 1 })).unwrap_err().kind.0, 400);
    e.stop().unwrap();
}

//! Unloading a model gives its memory back: this test binary links the plugin's crate, whose
//! `export_plugin!` makes `bkg_abi::heap::CountingAlloc` the global allocator, so
//! `LIVE_BYTES` is the heap the engine holds (one test in this binary: nothing else allocates
//! beside it).
mod common;

use bkg_abi::heap::LIVE_BYTES;
use bkg_abi::serde_json::json;
use common::*;

const MB: u64 = 1_000_000;

#[test]
fn loading_holds_the_weights_and_unloading_frees_them() {
    let e = engine();
    let idle = LIVE_BYTES.live_bytes();
    assert!(idle > 0, "the counting allocator is installed in this binary");

    load(&e, "minilm", MINILM);
    let texts: Vec<String> = (0..32).map(|i| format!("sentence {i} for the heap test")).collect();
    assert_eq!(embed(&e, "minilm", json!(texts)).len(), 32);
    let loaded = LIVE_BYTES.live_bytes() - idle;
    // model.safetensors is 90.9 MB of F32 weights; they are copied into the heap.
    assert!((85 * MB..130 * MB).contains(&loaded), "MiniLM holds {loaded} bytes");

    // A second name for the same file shares the weights.
    load(&e, "again", MINILM);
    let shared = LIVE_BYTES.live_bytes() - idle;
    assert!(shared < loaded + 5 * MB, "second name added {} bytes", shared - loaded);

    call(&e, "model.unload", json!({ "name": "again" })).unwrap();
    call(&e, "model.unload", json!({ "name": "minilm" })).unwrap();
    let after = LIVE_BYTES.live_bytes().saturating_sub(idle);
    eprintln!(
        "heap: idle {idle} B, MiniLM +{loaded} B, second name +{} B, after unload +{after} B",
        shared - loaded
    );
    assert!(after < 5 * MB, "{after} bytes still held after unloading");
    e.stop().unwrap();
}

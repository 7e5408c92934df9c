//! The chat model's heap: this test binary links the plugin's crate, whose `export_plugin!`
//! makes `bkg_abi::heap::CountingAlloc` the global allocator, so `LIVE_BYTES` is the heap the
//! engine holds (one test in this binary: nothing else allocates beside it).
mod common;

use bkg_abi::heap::LIVE_BYTES;
use bkg_abi::serde_json::json;
use common::*;

const MB: u64 = 1_000_000;

/// SmolLM2-135M Q4_1 (a 94 MB file) held 263.6 MB of heap through candle_transformers'
/// quantized_llama (Q4_1 requantized to Q8_0, the 49152 x 576 embedding kept as F32 beside its
/// Q8_0 copy). The own forward pass keeps the file's blocks as they are: about the file's size.
/// After a generation nothing of it (KV cache, scratch) stays; unloading frees the rest.
#[test]
fn the_chat_model_holds_about_its_file_size_and_unloading_frees_it() {
    let e = engine();
    let idle = LIVE_BYTES.live_bytes();
    assert!(idle > 0, "the counting allocator is installed in this binary");

    let info = load(&e, "smol", SMOLLM);
    assert_eq!(info["details"]["compute"], "q4_1", "{info:#}");
    let loaded = LIVE_BYTES.live_bytes() - idle;
    let a = call(
        &e,
        "model.infer",
        json!({ "model": "smol", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0 }),
    )
    .expect("generate");
    assert_eq!(a["usage"]["completion_tokens"], 16, "{a:#}");
    let after_generation = LIVE_BYTES.live_bytes() - idle;
    eprintln!(
        "heap: idle {idle} B, SmolLM2 Q4_1 loaded +{loaded} B, after a generation +{after_generation} B"
    );
    // The weights (66 MB of Q4_1 layers, 30 MB of Q8_0 embedding) and the tokenizer.
    assert!((90 * MB..130 * MB).contains(&loaded), "the chat model holds {loaded} bytes");
    assert!(
        after_generation < loaded + MB,
        "a finished generation left {} bytes behind",
        after_generation - loaded
    );

    call(&e, "model.unload", json!({ "name": "smol" })).unwrap();
    let after = LIVE_BYTES.live_bytes().saturating_sub(idle);
    eprintln!("heap after unload: +{after} B");
    assert!(after < 5 * MB, "{after} bytes still held after unloading");
    e.stop().unwrap();
}

//! Embeddings with the real all-MiniLM-L6-v2 weights.
mod common;

use bkg_abi::serde_json::json;
use bkg_plugin_candle::embed::cosine;
use common::*;

/// The reference figures: cos("A man is eating food.", "A man is eating a piece of bread.")
/// = 0.7553 and cos("A man is eating food.", "The stock market crashed today.") = 0.0088, from
/// /work/shared/design/models.md ("Observed behaviour"), measured with all-MiniLM-L6-v2 in
/// candle_transformers' `BertModel` with the attention mask, mean pooling of the real tokens
/// and L2 normalisation (not with PyTorch: no machine here reaches the hub or has torch; the
/// agreement with sentence-transformers/PyTorch, worst cosine 1.0000000 over 512 sentences,
/// is measured by `scripts/bench-ml.sh embed`, docs/benchmarks-ml.md). This test recomputes
/// them with that same `BertModel` below, so the source is checked, not only quoted.
const REFERENCE: [(&str, f32); 2] = [("food, bread", 0.7553), ("food, stock market", 0.0088)];

/// How far a cosine may be from a reference given to 4 decimals: half a unit in the last place
/// (the rounding, 0.00005) plus float noise between two f32 implementations (summation order:
/// the vectors agree to 1e-7, so a cross cosine moves by ~1e-6; 1e-5 covers it tenfold).
/// Measured: 0.7553372 and 0.0088324.
const REFERENCE_TOLERANCE: f32 = 0.00005 + 0.00001;

fn candle_bert_vectors(sentences: &[&str], tokenize: &dyn Fn(&str) -> Vec<u32>) -> Vec<Vec<f32>> {
    use candle_core::{DType, Device, Tensor};
    let dir = models_dir().join(MINILM);
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    sentences
        .iter()
        .map(|s| {
            let ids = tokenize(s);
            assert!(ids.len() > 3);
            let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let mask = ids.ones_like().unwrap();
            let hidden = reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
            let v = bkg_plugin_candle::bert::masked_mean_normalized(&hidden, &mask).unwrap();
            v.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

#[test]
fn reference_cosines() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market crashed today.",
    ];
    let v = embed(&e, "minilm", json!(sentences));
    assert_eq!(v[0].len(), 384);
    let ours = [cosine(&v[0], &v[1]), cosine(&v[0], &v[2])];
    let model = e.registry.get("minilm").unwrap();
    let bkg_plugin_candle::registry::Model::Embedding(m) = &*model else { panic!() };
    let r = candle_bert_vectors(&sentences, &|s| m.tokenize(s).unwrap());
    let theirs = [cosine(&r[0], &r[1]), cosine(&r[0], &r[2])];
    for (i, (what, reference)) in REFERENCE.iter().enumerate() {
        println!(
            "cos({what}) = {:.7} (candle_transformers BertModel {:.7}, reference {reference})",
            ours[i], theirs[i]
        );
        assert!(
            (ours[i] - reference).abs() <= REFERENCE_TOLERANCE,
            "cos({what}) = {} is not the reference {reference}",
            ours[i]
        );
        // The reference's own source agrees with it (it rounds to the documented figure).
        assert!((theirs[i] - reference).abs() <= REFERENCE_TOLERANCE, "BertModel: {}", theirs[i]);
        assert!((ours[i] - theirs[i]).abs() <= 1e-5, "{} vs {}", ours[i], theirs[i]);
    }
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
}

#[test]
fn batch_equals_one_by_one_and_matches_candle_bert() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let sentences = bkg_plugin_candle::quantize::AGREEMENT_SENTENCES;
    let batch = embed(&e, "minilm", json!(sentences));
    let mut worst = 1.0f32;
    for (i, s) in sentences.iter().enumerate() {
        let one = embed(&e, "minilm", json!(s));
        worst = worst.min(cosine(&one[0], &batch[i]));
    }
    println!("worst cos batch vs one-by-one: {worst:.7}");
    assert!(worst > 0.9999, "{worst}");

    // The reference: candle_transformers' BertModel with the same masked mean pooling.
    use bkg_plugin_candle::registry::Model;
    let model = e.registry.get("minilm").unwrap();
    let Model::Embedding(m) = &*model else { panic!() };
    let reference = candle_bert_vectors(&sentences, &|s| m.tokenize(s).unwrap());
    let worst = reference.iter().zip(&batch).map(|(r, b)| cosine(r, b)).fold(1.0f32, f32::min);
    println!("worst cos vs candle_transformers BertModel: {worst:.7}");
    assert!(worst > 0.9999, "{worst}");
}

#[test]
fn bad_inputs_get_clear_errors_and_the_engine_keeps_serving() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let err = |cap: &str, body| call(&e, cap, body).expect_err("should fail");
    assert_eq!(err("model.infer", json!({ "model": "nope", "input": "x" })).kind.0, 404);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": [] })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": "" })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm" })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "model": "minilm", "input": [1, 2] })).kind.0, 400);
    assert_eq!(err("model.infer", json!({ "input": "x" })).kind.0, 400);
    assert_eq!(err("model.infer", json!("just a string")).kind.0, 400);
    assert_eq!(err("model.unload", json!({ "name": "nope" })).kind.0, 404);
    assert_eq!(err("model.nope", json!({})).kind.0, 404);
    // Paths: absolute, escaping, missing.
    for path in ["/etc", "../models", "sentence-transformers/../../x", ""] {
        let e = err("model.load", json!({ "name": "x", "path": path }));
        assert_eq!(e.kind.0, 400, "{path}: {e}");
    }
    assert_eq!(err("model.load", json!({ "name": "x", "path": "no/such-model" })).kind.0, 404);
    assert_eq!(
        err("model.load", json!({ "name": "x", "path": MINILM, "kind": "chat" })).kind.0,
        400
    );

    // A 100k-token input is truncated to the model's 256 word pieces (its
    // sentence_bert_config.json), and says so, per input.
    let long = "word ".repeat(100_000);
    let v =
        call(&e, "model.infer", json!({ "model": "minilm", "input": [long, "short"] })).unwrap();
    assert_eq!(v["truncated"], json!([true, false]));
    assert_eq!(v["usage"]["prompt_tokens"], 256 + 3);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);

    // Still serving.
    assert_eq!(embed(&e, "minilm", json!("A man is eating food."))[0].len(), 384);
}

#[test]
fn corrupted_weights_are_refused() {
    let tmp = std::env::temp_dir().join(format!("bkg-candle-corrupt-{}", std::process::id()));
    let dst = tmp.join("org/broken");
    std::fs::create_dir_all(&dst).unwrap();
    let src = models_dir().join(MINILM);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(dst.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    std::fs::write(tmp.join("org/garbage.gguf"), b"GGUF but not really").unwrap();

    let e = bkg_plugin_candle::Engine::new(tmp.clone());
    e.start().unwrap();
    let err = call(&e, "model.load", json!({ "name": "b", "path": "org/broken" })).unwrap_err();
    println!("{err}");
    assert_eq!(err.kind.0, 400);
    let err =
        call(&e, "model.load", json!({ "name": "g", "path": "org/garbage.gguf" })).unwrap_err();
    println!("{err}");
    assert_eq!(err.kind.0, 400);
    assert!(call(&e, "model.list", json!({})).unwrap()["models"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_second_load_of_the_same_weights_shares_them() {
    let e = engine();
    load(&e, "a", MINILM);
    let b = load(&e, "b", MINILM);
    assert_eq!(b["shared_by"], 2);
    assert_eq!(e.registry.distinct_weights(), 1);
    let a = e.registry.get("a").unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &e.registry.get("b").unwrap()));
    // Same name, same path: a no-op. Same name, another path: a conflict.
    load(&e, "a", MINILM);
    let err = call(&e, "model.load", json!({ "name": "a", "path": SMOLLM })).unwrap_err();
    assert_eq!(err.kind.0, 409);
    call(&e, "model.unload", json!({ "name": "a" })).unwrap();
    assert_eq!(e.registry.distinct_weights(), 1);
    drop(a);
    call(&e, "model.unload", json!({ "name": "b" })).unwrap();
    assert_eq!(e.registry.distinct_weights(), 0);
}

/// An embedding request whose caller's cancel flag rises stops between batches (the flag is
/// polled every 50 ms; 1000 batches of one sentence take far longer): a cancelled error, and
/// the batches that ran plus the ones skipped add up to the request's.
#[test]
fn a_cancelled_embedding_request_stops_between_batches_and_is_counted() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let texts: Vec<String> =
        (0..1000).map(|i| format!("sentence number {i} about a man eating food")).collect();
    let body = json!({ "model": "minilm", "input": texts, "batch_size": 1 });
    let err = e
        .invoke_json("model.infer", body, &mut |_| Ok(()), &|| true)
        .expect_err("a cancelled request answers an error");
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
    let status = e.status();
    let c = &status["counters"];
    let get = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {status:#}"));
    assert_eq!(get("embed_requests"), 1, "{status:#}");
    assert_eq!(get("embed_requests_cancelled"), 1, "{status:#}");
    assert!(get("embed_batches_cancelled") > 0, "{status:#}");
    assert_eq!(get("embed_batches") + get("embed_batches_cancelled"), 1000, "{status:#}");
    // Still serving, and a request that runs to the end counts its batches.
    let v = call(
        &e,
        "model.infer",
        json!({ "model": "minilm", "input": ["a", "b", "c"], "batch_size": 2 }),
    )
    .unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 3);
    let after = e.status()["counters"].clone();
    assert_eq!(after["embed_batches"].as_u64(), Some(get("embed_batches") + 2), "{after:#}");
}

/// Only a prefix of a very long text is tokenized (a 50 MB input costs no more than a short
/// one); its ids are exactly those of the whole text, truncated the same way.
#[test]
fn a_long_text_gets_the_ids_of_the_whole_text() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let model = e.registry.get("minilm").unwrap();
    let bkg_plugin_candle::registry::Model::Embedding(m) = &*model else { panic!() };
    let piece = "Naïve café-owners, in 2024, said: \"it's fine\"\u{7}!  \t ÉTÉ \u{0301}x 東京 \n";
    let long = piece.repeat(5000);
    let (ids, truncated) = m.encode(&long).unwrap();
    assert!(truncated);
    assert_eq!((m.max_tokens, m.max_tokens_from), (256, "sentence_bert_config.json"));
    assert_eq!(ids.len(), 256);
    assert_eq!(ids, m.tokenize(&long).unwrap(), "the prefix changed the tokens");
    let prefix = bkg_plugin_candle::embed::prefix_with_words(&long, 520);
    assert!(prefix.len() < long.len() / 50, "{} of {}", prefix.len(), long.len());
    // One token a word: the prefix must still reach past the truncation point.
    let words = "word ".repeat(10_000);
    assert_eq!(m.encode(&words).unwrap(), (m.tokenize(&words).unwrap(), true));
    // Short texts are tokenized whole.
    let (ids, truncated) = m.encode(piece).unwrap();
    assert!(!truncated);
    assert_eq!(ids, m.tokenize(piece).unwrap());
    // A text of fewer words than the limit is left as it is.
    assert_eq!(bkg_plugin_candle::embed::prefix_with_words("a b, c", 3), "a b, c");
    assert_eq!(bkg_plugin_candle::embed::prefix_with_words("a ... b c d", 2), "a ... b");
}

/// The truncation length comes from the model's `sentence_bert_config.json` when there is
/// one (within 3..=max_position_embeddings, else the load is refused naming the file), else
/// from `max_position_embeddings`.
#[test]
fn the_truncation_length_is_the_models_max_seq_length_else_its_positions() {
    use bkg_plugin_candle::embed::max_seq_length;
    let config: bkg_plugin_candle::bert::Config = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join(MINILM).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        max_seq_length(&models_dir().join(MINILM), &config).unwrap(),
        (256, "sentence_bert_config.json")
    );
    let dir = tempfile_dir("max-seq-length");
    assert_eq!(max_seq_length(&dir, &config).unwrap(), (512, "max_position_embeddings"));
    for (content, needle) in [
        (r#"{"max_seq_length": 1000}"#, "not within 3..=512"),
        (r#"{"max_seq_length": 0}"#, "not within"),
        (r#"{"do_lower_case": false}"#, "no max_seq_length"),
        ("not json", "sentence_bert_config.json"),
    ] {
        std::fs::write(dir.join("sentence_bert_config.json"), content).unwrap();
        let e = max_seq_length(&dir, &config).unwrap_err();
        assert_eq!(e.kind.0, 400, "{content}: {e}");
        assert!(e.message.contains(needle), "{content}: {e}");
    }
    std::fs::write(dir.join("sentence_bert_config.json"), r#"{"max_seq_length": 128}"#).unwrap();
    assert_eq!(max_seq_length(&dir, &config).unwrap(), (128, "sentence_bert_config.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `model.tokenize`: the word pieces of whole texts (past the truncation point too) as byte
/// offsets, special tokens left out; they agree with the ids `model.infer` embeds.
#[test]
fn tokenize_gives_the_byte_offsets_of_every_word_piece() {
    let e = engine();
    load(&e, "minilm", MINILM);
    let text = "Naïve café-owners said: \"it's fine\" in 東京.";
    let long = "word ".repeat(1000);
    let v = call(&e, "model.tokenize", json!({ "model": "minilm", "input": [text, long, ""] }))
        .unwrap();
    assert_eq!(v["max_tokens"], 256);
    let pieces: Vec<&str> = v["tokens"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &text[p["start"].as_u64().unwrap() as usize..p["end"].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(
        pieces,
        [
            "Naïve", "café", "-", "owners", "said", ":", "\"", "it", "'", "s", "fine", "\"", "in",
            "東", "京", "."
        ]
    );
    let model = e.registry.get("minilm").unwrap();
    let bkg_plugin_candle::registry::Model::Embedding(m) = &*model else { panic!() };
    assert_eq!(m.tokenize(text).unwrap().len(), pieces.len() + 2, "[CLS] + pieces + [SEP]");
    assert_eq!(v["tokens"][1].as_array().unwrap().len(), 1000, "not truncated");
    assert_eq!(v["tokens"][2], json!([]));
    // A chat model has no such tokenizer here; a cancelled call stops.
    load(&e, "smol", SMOLLM);
    let err = call(&e, "model.tokenize", json!({ "model": "smol", "input": ["x"] })).unwrap_err();
    assert_eq!(err.kind.0, 400, "{err}");
    let err = e
        .invoke_json(
            "model.tokenize",
            json!({ "model": "minilm", "input": [long] }),
            &mut |_| Ok(()),
            &|| true,
        )
        .unwrap_err();
    assert_eq!(err.kind, bkg_abi::ErrorKind::CANCELLED, "{err}");
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bkg-candle-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

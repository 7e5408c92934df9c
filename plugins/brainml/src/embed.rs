//! Embedding text through the host's bus: `candle`'s `model.infer`, in batches; a model
//! `candle` has not loaded (after its start or a swap) is loaded on first use.

use bkg_abi::serde_json::json;
use bkg_abi::{Error, ErrorKind, Host};
use serde_json::Value;

pub const BACKEND: &str = "candle";

/// The folder under the models folder a model name stands for.
pub fn model_path(name: &str) -> String {
    match name {
        "all-MiniLM-L6-v2" => "sentence-transformers/all-MiniLM-L6-v2".into(),
        other => other.into(),
    }
}

fn is_not_loaded(e: &Error) -> bool {
    e.kind == ErrorKind::NOT_FOUND && e.message.contains("is loaded")
}

fn infer(host: &Host, model: &str, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>, Error> {
    let body = json!({ "model": model, "input": texts, "batch_size": batch });
    let v: Value = host.call_json(BACKEND, "model.infer", &body)?.parse_json()?;
    if v["kind"] != "embedding" {
        return Err(Error::bad_request(format!("the model {model} is not an embedding model")));
    }
    let vectors: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone())
        .map_err(|e| Error::internal(format!("{BACKEND}'s answer: {e}")))?;
    if vectors.len() != texts.len() {
        return Err(Error::internal(format!(
            "{BACKEND} gave {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}

/// Run `call` (a bus call to `candle` about `model`); when `candle` has not loaded `model`,
/// load it and run `call` again.
pub fn with_model<T>(
    host: &Host,
    model: &str,
    call: impl Fn() -> Result<T, Error>,
) -> Result<T, Error> {
    match call() {
        Err(e) if is_not_loaded(&e) => {
            let load = json!({ "name": model, "path": model_path(model), "kind": "embedding" });
            host.call_json(BACKEND, "model.load", &load).map_err(|e| {
                Error::new(
                    e.kind,
                    format!("loading the model {model} into {BACKEND}: {}", e.message),
                )
            })?;
            host.info(&format!("loaded {model} into {BACKEND}"));
            call()
        }
        other => other,
    }
}

/// Embed `texts` with `model`, `batch` texts per bus call.
pub fn embed(
    host: &Host,
    model: &str,
    texts: &[String],
    batch: usize,
) -> Result<Vec<Vec<f32>>, Error> {
    embed_reporting(host, model, texts, batch, &mut |_| Ok(()))
}

/// [`embed`] that calls `done(n)` after each bus call with the number of texts embedded so
/// far; an error from `done` stops it.
pub fn embed_reporting(
    host: &Host,
    model: &str,
    texts: &[String],
    batch: usize,
    done: &mut dyn FnMut(usize) -> Result<(), Error>,
) -> Result<Vec<Vec<f32>>, Error> {
    let mut out = Vec::with_capacity(texts.len());
    for group in texts.chunks(batch.max(1)) {
        out.extend(with_model(host, model, || infer(host, model, group, batch))?);
        done(out.len())?;
    }
    Ok(out)
}

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

/// The vectors of `texts`, and per text whether `candle` truncated it (all false from a
/// `candle` that does not say).
fn infer(host: &Host, model: &str, texts: &[String], batch: usize) -> Result<Embedded, Error> {
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
    let truncated = match serde_json::from_value::<Vec<bool>>(v["truncated"].clone()) {
        Ok(t) if t.len() == texts.len() => t,
        _ => vec![false; texts.len()],
    };
    Ok((vectors, truncated))
}

/// Vectors, and per text whether the model truncated it.
pub type Embedded = (Vec<Vec<f32>>, Vec<bool>);

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
    Ok(embed_reporting(host, model, texts, batch, &mut |_| Ok(()))?.0)
}

/// [`embed`] that also says which texts the model truncated, and calls `done(n)` after each
/// bus call with the number of texts embedded so far; an error from `done` stops it.
pub fn embed_reporting(
    host: &Host,
    model: &str,
    texts: &[String],
    batch: usize,
    done: &mut dyn FnMut(usize) -> Result<(), Error>,
) -> Result<Embedded, Error> {
    let (mut out, mut truncated) = (Vec::with_capacity(texts.len()), Vec::new());
    for group in texts.chunks(batch.max(1)) {
        let (vectors, cut) = with_model(host, model, || infer(host, model, group, batch))?;
        out.extend(vectors);
        truncated.extend(cut);
        done(out.len())?;
    }
    Ok((out, truncated))
}

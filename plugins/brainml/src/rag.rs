//! `rag.ask`: retrieval-augmented answers. The question is searched in a collection through
//! brainml's own `query` (the same code, modes and filters), the chunks found are numbered
//! [1]..[k] in a prompt that asks the model to answer from them and cite them, and the chat
//! model answers through `llmserver`'s `chat.completions` over the bus, streamed, so that with
//! `stream: true` each token reaches the client as it is made (server-sent events: the
//! citations first, then `{"delta"}` per token, then `done`).

use std::time::Instant;

use bkg_abi::sse::{event, ChatDeltas};
use bkg_abi::{Context, Error, ErrorKind, Plugin, Request, Response, Stream};
use serde_json::{json, Value};

use crate::api::{AskAnswer, AskCitations, AskDone, AskRequest, Citation};
use crate::BrainMl;

/// The plugin that serves the chat models.
pub const LLM: &str = "llmserver";
const DEFAULT_K: usize = 5;
/// More chunks than this would not fit a small model's context.
const MAX_K: usize = 20;
const DEFAULT_MAX_TOKENS: usize = 256;
const MAX_TOKENS: usize = 4096;

/// Run one of brainml's own capabilities on this call's thread (reusing its code whole).
pub(crate) fn local(
    plugin: &BrainMl,
    capability: &str,
    body: &Value,
    ctx: &Context<'_>,
) -> Result<Response, Error> {
    let body = body.to_string();
    let req = Request {
        target: capability,
        method: "POST",
        query: "",
        content_type: "application/json",
        body: body.as_bytes(),
    };
    plugin.invoke(capability, req, ctx)
}

/// An error of the bus about `llmserver` itself (not loaded, stopped, busy): 503 naming it.
fn llm_error(e: Error) -> Error {
    let about_llm = e.message.starts_with(&format!("plugin '{LLM}'"));
    match e.kind {
        ErrorKind::CANCELLED => e,
        ErrorKind::NOT_FOUND | ErrorKind::CONFLICT | ErrorKind::UNAVAILABLE if about_llm => {
            Error::unavailable(format!(
                "rag.ask needs the {LLM} plugin for the answer: {}; start or install {LLM}",
                e.message
            ))
        }
        _ => Error::new(e.kind, format!("{LLM}: {}", e.message)),
    }
}

/// `llmserver` answers its own errors in OpenAI's shape (with an HTTP status): as an SDK error.
fn openai_error(status: u16, body: &[u8]) -> Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| {
        format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
    });
    let message = format!("{LLM}: {message}");
    match status {
        400 | 422 => Error::bad_request(message),
        404 => Error::not_found(message),
        409 => Error::conflict(message),
        429 | 503 => Error::unavailable(message),
        504 => Error::new(ErrorKind::TIMEOUT, message),
        _ => Error::internal(message),
    }
}

/// The prompt: the numbered chunks, the question, and how to answer. Short on purpose: a
/// small model follows a short instruction better than a long one.
pub fn prompt(question: &str, citations: &[Citation]) -> Vec<Value> {
    let mut sources = String::new();
    for c in citations {
        sources.push_str(&format!("[{}] {}\n\n", c.n, c.text.trim()));
    }
    vec![
        json!({ "role": "system", "content":
            "Answer the question using only the numbered sources. Cite the sources you use \
             like [1]. If the sources do not answer it, say so." }),
        json!({ "role": "user", "content":
            format!("Sources:\n\n{sources}Question: {}", question.trim()) }),
    ]
}

impl BrainMl {
    /// The chat model to use: the one asked for, or `llmserver`'s first chat model.
    fn chat_model(&self, asked: Option<String>) -> Result<String, Error> {
        if let Some(m) = asked {
            if m.trim().is_empty() {
                return Err(Error::bad_request("model must not be empty"));
            }
            return Ok(m);
        }
        let r = self.host.call_json(LLM, "models", &json!({})).map_err(llm_error)?;
        if r.status >= 400 {
            return Err(openai_error(r.status, &r.body));
        }
        let v: Value = r.parse_json()?;
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["kind"] == "chat")
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "{LLM} has no chat model to answer with: add one to its config \
                     (models: {{\"<name>\": {{\"path\": \"<folder>\", \"kind\": \"chat\"}}}}) \
                     or name one with model"
                ))
            })
    }

    pub(crate) fn ask(&self, r: AskRequest, ctx: &Context<'_>) -> Result<Response, Error> {
        let started = Instant::now();
        if r.question.trim().is_empty() {
            return Err(Error::bad_request("question is empty"));
        }
        let k = r.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::bad_request(format!("k {k}: use 1 to {MAX_K}")));
        }
        let max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if !(1..=MAX_TOKENS).contains(&max_tokens) {
            return Err(Error::bad_request(format!(
                "max_tokens {max_tokens}: use 1 to {MAX_TOKENS}"
            )));
        }
        self.get(&r.collection)?;
        let model = self.chat_model(r.model)?;

        // Retrieval: brainml's own query.
        let mut q = json!({ "collection": r.collection, "text": r.question, "k": k,
            "with_text": true });
        if let Some(mode) = r.mode {
            q["mode"] = json!(mode);
        }
        if let Some(filter) = r.filter {
            q["filter"] = filter;
        }
        let found: Value = local(self, "query", &q, ctx)?.parse_json()?;
        let citations: Vec<Citation> = found["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some((
                    h["id"].as_str()?.to_string(),
                    h["chunk"].as_u64()? as usize,
                    h["score"].as_f64().unwrap_or(0.0),
                    h["text"].as_str().filter(|t| !t.trim().is_empty())?.to_string(),
                ))
            })
            .enumerate()
            .map(|(i, (id, chunk, score, text))| Citation { n: i + 1, id, chunk, score, text })
            .collect();

        if citations.is_empty() {
            let answer = format!(
                "No passage in the collection {} matches the question, so there is nothing to \
                 answer from.",
                r.collection
            );
            return self.finish(r.stream, ctx, citations, model, answer, started);
        }

        let body = json!({ "model": model, "messages": prompt(&r.question, &citations),
            "max_tokens": max_tokens, "temperature": 0, "stream": true });
        let body = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let mut reader = ChatDeltas::default();
        let mut answer = String::new();
        // The client's stream begins with llmserver's: an error before it is a plain answer.
        let mut out: Option<Stream<'_, '_>> = None;
        let mut client_gone = false;
        let result =
            self.host.call_stream(LLM, "chat.completions", "application/json", &body, |b| {
                if r.stream && out.is_none() {
                    let first = AskCitations { citations: citations.clone(), model: model.clone() };
                    match ctx.stream("text/event-stream") {
                        Ok(s) if s.send(&event(Some("citations"), &json!(first))).is_ok() => {
                            out = Some(s)
                        }
                        _ => {
                            client_gone = true;
                            return false;
                        }
                    }
                }
                for delta in reader.feed(b) {
                    if let Some(s) = &out {
                        if s.send(&event(None, &json!({ "delta": delta }))).is_err() {
                            client_gone = true;
                            return false;
                        }
                    }
                    answer.push_str(&delta);
                }
                true
            });
        let tail = match result {
            Err(_) if client_gone || ctx.is_cancelled() => return Err(Error::cancelled()),
            Err(e) => return Err(llm_error(e)),
            Ok(tail) if tail.status >= 400 => return Err(openai_error(tail.status, &tail.body)),
            Ok(tail) => tail,
        };
        // The stream's last part (the finish chunk, or an error raised midway).
        for delta in reader.feed(&tail.body) {
            if let Some(s) = &out {
                s.send(&event(None, &json!({ "delta": delta })))?;
            }
            answer.push_str(&delta);
        }
        if let Some(message) = reader.error.take() {
            let message = format!("{LLM} failed while answering: {message}");
            self.host.warn(&message);
            if out.is_some() {
                return Ok(Response::bytes(
                    "text/event-stream",
                    event(Some("error"), &json!({ "error": message })),
                ));
            }
            return Err(Error::internal(message));
        }
        match out {
            Some(_) => {
                let done = AskDone { answer, took_ms: crate::ms(started) };
                Ok(Response::bytes("text/event-stream", event(Some("done"), &json!(done))))
            }
            None => self.finish(r.stream, ctx, citations, model, answer, started),
        }
    }

    /// The whole answer: JSON, or (for `stream: true`) the three events at once.
    fn finish(
        &self,
        stream: bool,
        ctx: &Context<'_>,
        citations: Vec<Citation>,
        model: String,
        answer: String,
        started: Instant,
    ) -> Result<Response, Error> {
        if !stream {
            return Response::json(&AskAnswer {
                answer,
                citations,
                model,
                took_ms: crate::ms(started),
            });
        }
        let s = ctx.stream("text/event-stream")?;
        s.send(&event(Some("citations"), &json!(AskCitations { citations, model })))?;
        if !answer.is_empty() {
            s.send(&event(None, &json!({ "delta": answer })))?;
        }
        let done = AskDone { answer, took_ms: crate::ms(started) };
        Ok(Response::bytes("text/event-stream", event(Some("done"), &json!(done))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_numbers_every_chunk_and_asks_for_citations() {
        let c = |n: usize, text: &str| Citation {
            n,
            id: format!("d{n}"),
            chunk: 0,
            score: 0.5,
            text: text.into(),
        };
        let m = prompt("Who?", &[c(1, "Alpha text."), c(2, " Beta text. ")]);
        let system = m[0]["content"].as_str().unwrap();
        assert!(system.contains("[1]") && system.contains("only the numbered sources"));
        let user = m[1]["content"].as_str().unwrap();
        assert!(user.contains("[1] Alpha text.\n") && user.contains("[2] Beta text.\n"), "{user}");
        assert!(user.ends_with("Question: Who?"), "{user}");
    }

    #[test]
    fn llmserver_missing_or_stopped_is_503_naming_it() {
        for e in [
            Error::not_found("plugin 'llmserver' is not loaded"),
            Error::conflict("plugin 'llmserver' is stopped"),
        ] {
            let e = llm_error(e);
            assert_eq!(e.kind, ErrorKind::UNAVAILABLE);
            assert!(e.message.contains("needs the llmserver plugin"), "{}", e.message);
        }
        let e = openai_error(404, br#"{"error":{"message":"The model `x` does not exist"}}"#);
        assert_eq!(e.kind, ErrorKind::NOT_FOUND);
        assert!(e.message.contains("`x` does not exist"));
    }
}

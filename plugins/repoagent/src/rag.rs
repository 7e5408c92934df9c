//! Code RAG: `code.index`, `code.semantic_search` and `code.ask`, through the host's bus.
//!
//! - `code.index` cuts the repository's code into chunks (`chunk.rs`: one per definition) and
//!   upserts them into a `brainml` collection (default `repo-<name>`, brainml's default
//!   embedding model), which embeds them with `candle`. The ids last indexed are kept in the
//!   plugin's data dir (`rag/<repo>.json`): a chunk's id holds a hash of its code and lines, so
//!   only new or changed chunks are embedded again and vanished ones are deleted from the
//!   collection. Every new chunk is checked with the model's own tokenizer (`candle`'s
//!   `model.tokenize`) and cut harder when it holds more than [`chunk::MAX_PIECES`] word
//!   pieces. Documents go in batches; a client that leaves (or `stop`) stops it between two
//!   batches, and what was written so far is recorded, so the next call goes on from there.
//! - The watcher does not re-embed by itself: embedding costs seconds per hundred chunks and
//!   an edit session saves often. `code.index` again embeds only what changed since.
//! - `code.semantic_search` is brainml's `query` (hybrid, dense or bm25) on that collection.
//! - `code.ask` gives the chunks found to `llmserver`'s `chat.completions` (streamed over the
//!   bus) in a prompt that asks for `path:line` citations; with `stream: true` the client gets
//!   server-sent events like brainml's `rag.ask`.
//!
//! `brainml`, `candle` or `llmserver` not loaded (or stopped): 503 naming the plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use bkg_abi::serde_json::{json, Value};
use bkg_abi::sse::{event, ChatDeltas};
use bkg_abi::{Context, Error, ErrorKind, Host, Response, Stream};
use serde::{Deserialize, Serialize};

use crate::api::*;
use crate::chunk::{self, Chunk};
use crate::index::RepoIndex;
use crate::{ndjson, poisoned, Core, NDJSON};

pub const BRAINML: &str = "brainml";
pub const CANDLE: &str = "candle";
pub const LLM: &str = "llmserver";
/// Documents per brainml `index` call (a client leaving is seen between two).
const BATCH: usize = 64;
/// Ids per brainml `delete` call.
const DELETE_BATCH: usize = 1000;
pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 100;
pub const ASK_K: usize = 5;
pub const ASK_MAX_K: usize = 20;
const DEFAULT_MAX_TOKENS: usize = 256;
const MAX_TOKENS: usize = 4096;

/// The repositories a `code.index` runs for now (one at a time per repository).
#[derive(Default)]
pub struct Rag {
    busy: Mutex<BTreeSet<String>>,
}

/// A repository's place in [`Rag::busy`], given back when dropped (a panic included).
struct Busy<'a> {
    rag: &'a Rag,
    repo: String,
}

impl<'a> Busy<'a> {
    fn take(rag: &'a Rag, repo: &str) -> Result<Busy<'a>, Error> {
        if !rag.busy.lock().map_err(|_| poisoned())?.insert(repo.to_string()) {
            return Err(Error::conflict(format!(
                "code.index is already running for repository {repo}"
            )));
        }
        Ok(Busy { rag, repo: repo.to_string() })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.rag.busy.lock() {
            busy.remove(&self.repo);
        }
    }
}

/// What was last indexed for a repository (`rag/<repo>.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    collection: String,
    docs: bool,
    indexed_at: u64,
    ids: BTreeSet<String>,
}

fn state_path(dir: &Path, repo: &str, collection: &str) -> PathBuf {
    dir.join("rag").join(repo).join(format!("{collection}.json"))
}

fn load_state(dir: &Path, repo: &str, collection: &str) -> Option<State> {
    let bytes = std::fs::read(state_path(dir, repo, collection)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn save_state(dir: &Path, repo: &str, state: &State) -> Result<(), Error> {
    let path = state_path(dir, repo, &state.collection);
    let fail = |e: std::io::Error| Error::internal(format!("writing {}: {e}", path.display()));
    std::fs::create_dir_all(dir.join("rag").join(repo)).map_err(fail)?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(state).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)
}

/// `repo.remove`'s share: the brainml collections `code.index` filled for `repo` (those it
/// recorded under `rag/<repo>/`) are deleted through the bus, unless `keep`; a collection
/// brainml no longer has counts as deleted. A record is dropped once its collection is gone,
/// so one brainml could not delete (not running, say) is still known if the repository is
/// added again. Answers (deleted, left with the reason).
pub fn forget_repo(host: &Host, repo: &str, keep: bool) -> (Vec<String>, Vec<CollectionLeft>) {
    let folder = host.data_dir().join("rag").join(repo);
    let mut states: Vec<(PathBuf, State)> = std::fs::read_dir(&folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let state = serde_json::from_slice::<State>(&std::fs::read(&p).ok()?).ok()?;
            Some((p, state))
        })
        .collect();
    states.sort_by(|a, b| a.1.collection.cmp(&b.1.collection));
    let (mut deleted, mut left) = (Vec::new(), Vec::new());
    for (path, state) in states {
        let collection = state.collection;
        if keep {
            left.push(CollectionLeft { collection, reason: "keep_index".into() });
            continue;
        }
        match call(host, BRAINML, "collection.delete", &json!({ "name": collection })) {
            Err(e) if e.kind != ErrorKind::NOT_FOUND || e.message.contains("plugin '") => {
                left.push(CollectionLeft {
                    collection,
                    reason: bus_error("repo.remove", e).message,
                });
            }
            _ => {
                let _ = std::fs::remove_file(&path);
                deleted.push(collection);
            }
        }
    }
    if !keep && left.is_empty() {
        let _ = std::fs::remove_dir_all(&folder);
    }
    (deleted, left)
}

/// The default collection of a repository: `repo-<name>` in brainml's alphabet.
pub fn default_collection(repo: &str) -> String {
    let name: String = repo
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    format!("repo-{name}").chars().take(64).collect()
}

fn valid_collection(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An error of the bus or of a plugin behind it, for the capability `what`: a plugin that is
/// not loaded or is stopped is 503 naming it.
fn bus_error(what: &str, e: Error) -> Error {
    if e.kind == ErrorKind::CANCELLED {
        return e;
    }
    for p in [BRAINML, CANDLE, LLM] {
        let about = e.message.contains(&format!("plugin '{p}'"));
        if about
            && matches!(e.kind, ErrorKind::NOT_FOUND | ErrorKind::CONFLICT | ErrorKind::UNAVAILABLE)
        {
            return Error::unavailable(format!(
                "{what} needs the {p} plugin: {}; start or install {p}",
                e.message
            ));
        }
    }
    e
}

/// A JSON call over the bus; an error answer (a status >= 400) as an error.
fn call(host: &Host, plugin: &str, capability: &str, body: &Value) -> Result<Value, Error> {
    let r = host.call_json(plugin, capability, body)?;
    if r.status >= 400 {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .or(v["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(300).collect());
        let message = format!("{plugin} {capability}: {message}");
        return Err(match r.status {
            400 | 422 => Error::bad_request(message),
            404 => Error::not_found(message),
            409 => Error::conflict(message),
            429 | 503 => Error::unavailable(message),
            _ => Error::internal(message),
        });
    }
    if r.body.is_empty() {
        return Ok(Value::Null);
    }
    r.parse_json()
}

/// The folder of a model under the models folder (as brainml's `embed.rs` maps it).
fn model_path(name: &str) -> String {
    match name {
        "all-MiniLM-L6-v2" => "sentence-transformers/all-MiniLM-L6-v2".into(),
        other => other.into(),
    }
}

/// The word pieces of each text by `model` (loaded into candle when it is not).
fn count_pieces(host: &Host, model: &str, texts: &[&str]) -> Result<Vec<usize>, Error> {
    let mut out = Vec::with_capacity(texts.len());
    for group in texts.chunks(256) {
        let body = json!({ "model": model, "input": group });
        let v = match call(host, CANDLE, "model.tokenize", &body) {
            Err(e) if e.kind == ErrorKind::NOT_FOUND && e.message.contains("is loaded") => {
                let load = json!({ "name": model, "path": model_path(model), "kind": "embedding" });
                call(host, CANDLE, "model.load", &load)?;
                call(host, CANDLE, "model.tokenize", &body)?
            }
            other => other?,
        };
        let lists = v["tokens"].as_array().ok_or_else(|| {
            Error::internal(format!("{CANDLE}'s model.tokenize answered without tokens"))
        })?;
        if lists.len() != group.len() {
            return Err(Error::internal(format!(
                "{CANDLE}'s model.tokenize gave {} lists for {} texts",
                lists.len(),
                group.len()
            )));
        }
        out.extend(lists.iter().map(|l| l.as_array().map_or(0, Vec::len)));
    }
    Ok(out)
}

/// The chunks of every file of the index with a language of ours.
fn repo_chunks(index: &RepoIndex, opts: &chunk::Options) -> (Vec<Chunk>, usize) {
    let mut out = Vec::new();
    let mut files = 0;
    for (rel, entry) in &index.files {
        let Some(lang) = entry.lang else { continue };
        let Ok(bytes) = std::fs::read(index.abs(rel)) else { continue };
        let source = String::from_utf8_lossy(&bytes);
        files += 1;
        out.extend(chunk::file_chunks(rel, Some(lang), &source, &entry.symbols, opts));
    }
    (out, files)
}

/// Cut the chunks the model's tokenizer finds too long again, with smaller budgets, until
/// they fit (a chunk's id does not depend on its budget).
fn fit(
    host: &Host,
    model: &str,
    index: &RepoIndex,
    chunks: &mut [Chunk],
    docs: bool,
) -> Result<(), Error> {
    let mut budgets: BTreeMap<usize, usize> = BTreeMap::new();
    let mut todo: Vec<usize> = (0..chunks.len()).collect();
    for _round in 0..6 {
        if todo.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = todo.iter().map(|&i| chunks[i].text.as_str()).collect();
        let counts = count_pieces(host, model, &texts)?;
        let over: Vec<(usize, usize)> = todo
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > chunk::MAX_PIECES)
            .map(|(&i, n)| (i, n))
            .collect();
        todo.clear();
        for (i, n) in over {
            let b = budgets.entry(i).or_insert(chunk::DEFAULT_BUDGET);
            *b = (*b * chunk::MAX_PIECES * 9 / 10 / n).max(16);
            let c = &chunks[i];
            let entry = index.files.get(&c.path);
            let source = std::fs::read(index.abs(&c.path)).ok();
            if let (Some(entry), Some(source)) = (entry, source) {
                let opts = chunk::Options { docs, budget: *b };
                let source = String::from_utf8_lossy(&source);
                let again = chunk::file_chunks(&c.path, entry.lang, &source, &entry.symbols, &opts);
                if let Some(a) = again.into_iter().find(|a| a.id == c.id) {
                    chunks[i].text = a.text;
                    todo.push(i);
                }
            }
        }
    }
    Ok(())
}

/// The prompt: each chunk under its `path:line`, the question, how to cite.
pub fn prompt(question: &str, citations: &[(CodeCitation, String)]) -> Vec<Value> {
    let mut sources = String::new();
    for (c, text) in citations {
        sources.push_str(&format!("{} ({} {}):\n{}\n\n", c.cite, c.kind, c.name, text.trim()));
    }
    vec![
        json!({ "role": "system", "content":
            "Answer the question about the code using only the code below. Cite the code you \
             use by its path:line, like src/lib.rs:42. If the code does not answer it, say so." }),
        json!({ "role": "user", "content":
            format!("Code:\n\n{sources}Question: {}", question.trim()) }),
    ]
}

impl Core {
    /// `code.index`.
    pub(crate) fn code_index(&self, r: CodeIndex, ctx: &Context<'_>) -> Result<Response, Error> {
        let entry = self.repos.get(&r.repo)?;
        let collection = r.collection.clone().unwrap_or_else(|| default_collection(&entry.name));
        if !valid_collection(&collection) {
            return Err(Error::bad_request(format!(
                "collection {collection:?}: use 1 to 64 of a-z, 0-9, _ and -"
            )));
        }
        self.repos.with_index(&r.repo, |_| Ok(()))?;
        let index = entry.snapshot().ok_or_else(|| Error::internal("the index vanished"))?;
        let _busy = Busy::take(&self.rag, &entry.name)?;
        let stream = r.stream.then(|| ctx.stream(NDJSON)).transpose()?;
        let result = self.index_into(&r, &collection, &index, ctx, stream.as_ref());
        if let Ok(a) = &result {
            self.host.info(&format!(
                "code.index {}: {} chunks in {} ({} embedded, {} deleted, {} ms)",
                a.repo, a.chunks, a.collection, a.embedded, a.deleted, a.took_ms
            ));
        }
        match (result, stream) {
            (Ok(a), None) => Response::json(&a),
            (Ok(a), Some(_)) => Ok(Response::bytes(NDJSON, ndjson(&a)?)),
            (Err(e), Some(_)) if e.kind != ErrorKind::CANCELLED => {
                self.host.warn(&format!("code.index {} failed midway: {e}", r.repo));
                let line = json!({ "error": {
                    "code": e.kind.code(), "status": e.kind.0, "message": e.message } });
                Ok(Response::bytes(NDJSON, format!("{line}\n").into_bytes()))
            }
            (Err(e), _) => Err(e),
        }
    }

    fn index_into(
        &self,
        r: &CodeIndex,
        collection: &str,
        index: &RepoIndex,
        ctx: &Context<'_>,
        stream: Option<&Stream<'_, '_>>,
    ) -> Result<CodeIndexed, Error> {
        const WHAT: &str = "code.index";
        let started = Instant::now();
        let host = &self.host;
        let dir = host.data_dir();
        let cancelled = || ctx.is_cancelled() || self.is_stopping();
        let progress = |phase: &'static str, done: usize, total: usize| -> Result<(), Error> {
            if cancelled() {
                return Err(Error::cancelled());
            }
            match stream {
                Some(s) => s
                    .send(&ndjson(&CodeIndexProgress { phase, done, total })?)
                    .map_err(|_| Error::cancelled()),
                None => Ok(()),
            }
        };

        // The collection: made when missing; one made by someone else is not ours to fill.
        let recorded = load_state(&dir, &index.name, collection);
        let fresh =
            || State { collection: collection.to_string(), docs: r.docs, ..State::default() };
        let (info, mut state) =
            match call(host, BRAINML, "collection.get", &json!({ "name": collection })) {
                Ok(info) => (info, None),
                Err(e) if e.kind == ErrorKind::NOT_FOUND && !e.message.contains("plugin '") => {
                    let info =
                        call(host, BRAINML, "collection.create", &json!({ "name": collection }))
                            .map_err(|e| bus_error(WHAT, e))?;
                    (info, Some(fresh()))
                }
                Err(e) => return Err(bus_error(WHAT, e)),
            };
        let Some(model) = info["model"].as_str().map(str::to_string) else {
            return Err(Error::conflict(format!(
                "collection {collection} holds vectors sent by its users, not text embedded by a \
                 model: give code.index another collection"
            )));
        };
        if state.is_none() {
            let documents = info["documents"].as_u64().unwrap_or(0) as usize;
            state = Some(match recorded {
                None if documents > 0 => {
                    return Err(Error::conflict(format!(
                        "collection {collection} holds {documents} documents code.index did not \
                         put there for repository {}: give another collection, or delete it",
                        index.name
                    )))
                }
                Some(s) if s.docs == r.docs && s.ids.len() == documents => s,
                Some(s) if s.ids.len() != documents || s.docs != r.docs => {
                    // Ours, but not as recorded (changed behind our back) or cut otherwise:
                    // made again.
                    host.warn(&format!(
                        "collection {collection}: {documents} documents, {} recorded: indexing \
                         it again from scratch",
                        s.ids.len()
                    ));
                    call(host, BRAINML, "collection.delete", &json!({ "name": collection }))
                        .map_err(|e| bus_error(WHAT, e))?;
                    call(host, BRAINML, "collection.create", &json!({ "name": collection }))
                        .map_err(|e| bus_error(WHAT, e))?;
                    fresh()
                }
                _ => fresh(),
            });
        }
        let mut state = state.unwrap_or_else(fresh);
        state.collection = collection.to_string();
        state.docs = r.docs;

        // The chunks; the new ones checked with the model's tokenizer.
        progress("chunking", 0, index.files.len())?;
        let opts = chunk::Options { docs: r.docs, ..chunk::Options::default() };
        let (chunks, files) = repo_chunks(index, &opts);
        let now: BTreeSet<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
        let mut new: Vec<Chunk> =
            chunks.iter().filter(|c| !state.ids.contains(&c.id)).cloned().collect();
        let vanished: Vec<String> =
            state.ids.iter().filter(|id| !now.contains(id.as_str())).cloned().collect();
        let unchanged = chunks.len() - new.len();
        fit(host, &model, index, &mut new, r.docs).map_err(|e| bus_error(WHAT, e))?;
        progress("chunking", index.files.len(), index.files.len())?;

        // Embed and store the new ones, batch by batch, recording each.
        let total = new.len();
        let mut done = 0;
        for batch in new.chunks(BATCH) {
            progress("embedding", done, total)?;
            let documents: Vec<Value> = batch
                .iter()
                .map(|c| {
                    let mut metadata = json!({ "path": c.path, "line": c.line,
                        "end_line": c.end_line, "kind": c.kind, "name": c.name,
                        "language": c.language });
                    if let Some(p) = &c.parent {
                        metadata["parent"] = json!(p);
                    }
                    json!({ "id": c.id, "text": c.text, "metadata": metadata })
                })
                .collect();
            call(
                host,
                BRAINML,
                "index",
                &json!({ "collection": collection, "documents": documents }),
            )
            .map_err(|e| bus_error(WHAT, e))?;
            state.ids.extend(batch.iter().map(|c| c.id.clone()));
            save_state(&dir, &index.name, &state)?;
            done += batch.len();
        }
        progress("embedding", done, total)?;

        // The vanished ones go.
        let mut deleted = 0;
        for batch in vanished.chunks(DELETE_BATCH) {
            progress("deleting", deleted, vanished.len())?;
            call(host, BRAINML, "delete", &json!({ "collection": collection, "ids": batch }))
                .map_err(|e| bus_error(WHAT, e))?;
            for id in batch {
                state.ids.remove(id);
            }
            save_state(&dir, &index.name, &state)?;
            deleted += batch.len();
        }
        state.indexed_at = crate::index::now_ms();
        save_state(&dir, &index.name, &state)?;
        Ok(CodeIndexed {
            repo: index.name.clone(),
            collection: collection.to_string(),
            chunks: state.ids.len(),
            embedded: total,
            unchanged,
            deleted,
            files,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The indexed state of a repository: 409 when `code.index` never ran for it.
    fn rag_state(&self, repo: &str, collection: Option<&str>) -> Result<State, Error> {
        let entry = self.repos.get(repo)?;
        let collection = collection.map_or_else(|| default_collection(&entry.name), str::to_string);
        load_state(&self.host.data_dir(), &entry.name, &collection)
            .filter(|s| s.indexed_at > 0)
            .ok_or_else(|| {
                Error::conflict(format!(
                    "repository {repo} has no semantic index in collection {collection} yet: run \
                     code.index {{\"repo\": \"{repo}\"}} first"
                ))
            })
    }

    fn retrieve(
        &self,
        what: &str,
        state: &State,
        query: &str,
        k: usize,
        mode: RetrieveMode,
        with_text: bool,
    ) -> Result<Vec<SemanticHit>, Error> {
        let q = json!({ "collection": state.collection, "text": query, "k": k,
            "mode": mode, "with_text": with_text });
        let found = call(&self.host, BRAINML, "query", &q).map_err(|e| bus_error(what, e))?;
        let hits = found["hits"].as_array().cloned().unwrap_or_default();
        Ok(hits
            .iter()
            .map(|h| {
                let m = &h["metadata"];
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                SemanticHit {
                    path: s("path"),
                    line: m["line"].as_u64().unwrap_or(0),
                    end_line: m["end_line"].as_u64().unwrap_or(0),
                    kind: s("kind"),
                    name: s("name"),
                    parent: m["parent"].as_str().map(str::to_string),
                    score: h["score"].as_f64().unwrap_or(0.0),
                    id: h["id"].as_str().unwrap_or_default().to_string(),
                    text: h["text"].as_str().map(str::to_string),
                }
            })
            .collect())
    }

    /// `code.semantic_search`.
    pub(crate) fn semantic_search(&self, r: SemanticSearch) -> Result<Response, Error> {
        if r.query.trim().is_empty() {
            return Err(Error::bad_request("query is empty"));
        }
        let k = r.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::bad_request(format!("k {k}: use 1 to {MAX_K}")));
        }
        let state = self.rag_state(&r.repo, r.collection.as_deref())?;
        let hits =
            self.retrieve("code.semantic_search", &state, &r.query, k, r.mode, r.with_text)?;
        Response::json(&SemanticAnswer {
            hits,
            mode: r.mode,
            collection: state.collection,
            indexed_at: state.indexed_at,
        })
    }

    /// The chat model: the one asked for, or llmserver's first chat model.
    fn chat_model(&self, asked: Option<String>) -> Result<String, Error> {
        if let Some(m) = asked {
            if m.trim().is_empty() {
                return Err(Error::bad_request("model must not be empty"));
            }
            return Ok(m);
        }
        let v =
            call(&self.host, LLM, "models", &json!({})).map_err(|e| bus_error("code.ask", e))?;
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["kind"] == "chat")
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "{LLM} has no chat model to answer with: add one to its config or name one \
                     with model"
                ))
            })
    }

    /// `code.ask`.
    pub(crate) fn code_ask(&self, r: CodeAsk, ctx: &Context<'_>) -> Result<Response, Error> {
        const WHAT: &str = "code.ask";
        let started = Instant::now();
        if r.question.trim().is_empty() {
            return Err(Error::bad_request("question is empty"));
        }
        let k = r.k.unwrap_or(ASK_K);
        if !(1..=ASK_MAX_K).contains(&k) {
            return Err(Error::bad_request(format!("k {k}: use 1 to {ASK_MAX_K}")));
        }
        let max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if !(1..=MAX_TOKENS).contains(&max_tokens) {
            return Err(Error::bad_request(format!(
                "max_tokens {max_tokens}: use 1 to {MAX_TOKENS}"
            )));
        }
        let state = self.rag_state(&r.repo, r.collection.as_deref())?;
        let model = self.chat_model(r.model.clone())?;
        let hits = self.retrieve(WHAT, &state, &r.question, k, r.mode, true)?;
        let sources: Vec<(CodeCitation, String)> = hits
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let c = CodeCitation {
                    n: i + 1,
                    cite: format!("{}:{}", h.path, h.line),
                    path: h.path,
                    line: h.line,
                    end_line: h.end_line,
                    kind: h.kind,
                    name: h.name,
                    score: h.score,
                };
                (c, h.text.unwrap_or_default())
            })
            .collect();
        let citations: Vec<CodeCitation> = sources.iter().map(|(c, _)| c.clone()).collect();
        let took = |s: Instant| s.elapsed().as_millis() as u64;
        if sources.is_empty() {
            let answer = "The semantic index holds no code that matches the question.".to_string();
            return self.ask_whole(r.stream, ctx, citations, model, answer, took(started));
        }
        let body = json!({ "model": model, "messages": prompt(&r.question, &sources),
            "max_tokens": max_tokens, "temperature": 0, "stream": true });
        let body = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let mut reader = ChatDeltas::default();
        let mut answer = String::new();
        let mut out: Option<Stream<'_, '_>> = None;
        let mut client_gone = false;
        let result =
            self.host.call_stream(LLM, "chat.completions", "application/json", &body, |b| {
                if self.is_stopping() {
                    client_gone = true;
                    return false;
                }
                if r.stream && out.is_none() {
                    let first = json!({ "citations": citations, "model": model });
                    match ctx.stream("text/event-stream") {
                        Ok(s) if s.send(&event(Some("citations"), &first)).is_ok() => out = Some(s),
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
            Err(e) => return Err(bus_error(WHAT, e)),
            Ok(tail) if tail.status >= 400 => {
                let v: Value = serde_json::from_slice(&tail.body).unwrap_or(Value::Null);
                let m = v["error"]["message"].as_str().unwrap_or("an error").to_string();
                return Err(Error::new(
                    ErrorKind(tail.status),
                    format!("{LLM} chat.completions: {m}"),
                ));
            }
            Ok(tail) => tail,
        };
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
                let done = json!({ "answer": answer, "took_ms": took(started) });
                Ok(Response::bytes("text/event-stream", event(Some("done"), &done)))
            }
            None => self.ask_whole(r.stream, ctx, citations, model, answer, took(started)),
        }
    }

    fn ask_whole(
        &self,
        stream: bool,
        ctx: &Context<'_>,
        citations: Vec<CodeCitation>,
        model: String,
        answer: String,
        took_ms: u64,
    ) -> Result<Response, Error> {
        if !stream {
            return Response::json(&CodeAskAnswer { answer, citations, model, took_ms });
        }
        let s = ctx.stream("text/event-stream")?;
        s.send(&event(Some("citations"), &json!({ "citations": citations, "model": model })))?;
        if !answer.is_empty() {
            s.send(&event(None, &json!({ "delta": answer })))?;
        }
        let done = json!({ "answer": answer, "took_ms": took_ms });
        Ok(Response::bytes("text/event-stream", event(Some("done"), &done)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_code_index_per_repository_and_its_place_is_given_back() {
        let rag = Rag::default();
        let a = Busy::take(&rag, "a").unwrap();
        let e = Busy::take(&rag, "a").err().unwrap();
        assert_eq!(e.kind, ErrorKind::CONFLICT);
        assert!(e.message.contains("already running for repository a"), "{}", e.message);
        let _b = Busy::take(&rag, "b").unwrap();
        drop(a);
        Busy::take(&rag, "a").unwrap();
    }

    #[test]
    fn default_collections_use_brainmls_alphabet() {
        assert_eq!(default_collection("serde_json"), "repo-serde_json");
        assert_eq!(default_collection("My.Repo"), "repo-my-repo");
        assert!(valid_collection(&default_collection(&"x".repeat(64))));
        assert!(!valid_collection("Bad Name"));
    }

    #[test]
    fn a_missing_or_stopped_plugin_is_503_naming_it() {
        for (e, p) in [
            (Error::not_found("plugin 'brainml' is not loaded"), BRAINML),
            (Error::conflict("plugin 'llmserver' is stopped"), LLM),
            (
                Error::not_found("loading the model m into candle: plugin 'candle' is not loaded"),
                CANDLE,
            ),
        ] {
            let e = bus_error("code.index", e);
            assert_eq!(e.kind, ErrorKind::UNAVAILABLE);
            assert!(e.message.contains(&format!("needs the {p} plugin")), "{}", e.message);
        }
        let e = bus_error("code.index", Error::not_found("no collection named \"x\""));
        assert_eq!(e.kind, ErrorKind::NOT_FOUND);
    }

    #[test]
    fn the_prompt_names_each_chunk_by_path_and_line() {
        let c = CodeCitation {
            n: 1,
            cite: "src/a.rs:7".into(),
            path: "src/a.rs".into(),
            line: 7,
            end_line: 9,
            kind: "function".into(),
            name: "walk".into(),
            score: 0.5,
        };
        let m = prompt("How?", &[(c, "fn walk() {}".into())]);
        assert!(m[0]["content"].as_str().unwrap().contains("path:line"));
        let user = m[1]["content"].as_str().unwrap();
        assert!(user.contains("src/a.rs:7 (function walk):\nfn walk() {}\n"), "{user}");
        assert!(user.ends_with("Question: How?"));
    }
}

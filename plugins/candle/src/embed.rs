//! Sentence embeddings with a BERT encoder: tokenize, batch by length, run the encoder,
//! mean-pool the real tokens (attention mask) and L2-normalise.
//!
//! Batching: the inputs are sorted by token count and cut into batches of `batch_size`; a
//! batch's sentences are packed one after the other (no padding at all, not even to the
//! batch's longest; the fixed 128 of the shipped tokenizer.json is switched off here) and
//! attention runs per sentence. The vectors come back in input order.
//!
//! Long inputs are truncated where the model's own sentence-transformers setting says:
//! `max_seq_length` of the `sentence_bert_config.json` beside the weights (256 word pieces for
//! all-MiniLM-L6-v2, counting `[CLS]` and `[SEP]`: what sentence-transformers, the reference,
//! does), else the model's `max_position_embeddings` (512 for MiniLM); the answer says which
//! inputs were truncated. [`EmbeddingModel::token_offsets`] gives the word pieces of a whole
//! text (byte offsets), so a caller can cut it into pieces that are never truncated.

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, Config, WeightSource};
use crate::error::{candle_msg, Error, Result};

/// GGUF metadata key under which `model.quantize` stores the BERT `config.json`.
pub const GGUF_CONFIG_KEY: &str = "bert.config_json";

pub struct EmbeddingModel {
    pub bert: Bert,
    /// Truncates at `max_tokens` (with `[CLS]`/`[SEP]`).
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for [`EmbeddingModel::token_offsets`] (boxed: a
    /// `Tokenizer` is large, and `registry::Model`'s variants should stay alike in size).
    whole: Box<Tokenizer>,
    /// The truncation length, in word pieces counting `[CLS]` and `[SEP]`.
    pub max_tokens: usize,
    /// Where `max_tokens` comes from: `"sentence_bert_config.json"` or
    /// `"max_position_embeddings"`.
    pub max_tokens_from: &'static str,
    /// "f32", or the GGUF type of the quantized layers ("q8_0", "q4_0").
    pub weights_dtype: String,
}

/// The vectors of one `embed` call, in input order.
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
    /// Per input: was it longer than `max_tokens` (and so cut)?
    pub truncated: Vec<bool>,
    /// Encoder batches run.
    pub batches: usize,
}

/// How [`EmbeddingModel::embed_until`] ended.
pub enum EmbedOutcome {
    Done(Embeddings),
    /// `cancelled` turned true: `batches_run` batches went through the encoder, `batches_left`
    /// never started (all of them when it turned true during tokenization).
    Cancelled {
        batches_run: usize,
        batches_left: usize,
    },
}

impl EmbeddingModel {
    /// Load `model.safetensors` + `config.json` + `tokenizer.json` from a folder.
    pub fn load_safetensors(dir: &Path) -> Result<Self> {
        let config = read_config(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        let src = WeightSource::safetensors(&weights).map_err(|e| {
            Error::bad_request(format!("{}: {}", weights.display(), candle_msg(&e)))
        })?;
        let bert = Bert::load(&src, &config).map_err(|e| {
            Error::bad_request(format!("{}: {}", weights.display(), candle_msg(&e)))
        })?;
        Self::with_tokenizer(bert, dir, "f32".into())
    }

    /// Load a GGUF written by `model.quantize` (the config is in its metadata, the tokenizer
    /// is the `tokenizer.json` beside it).
    pub fn load_gguf(
        path: &Path,
        content: &gguf_file::Content,
        file: &mut std::fs::File,
    ) -> Result<Self> {
        let config_json =
            content.metadata.get(GGUF_CONFIG_KEY).and_then(|v| v.to_string().ok()).ok_or_else(
                || {
                    Error::bad_request(format!(
                        "{}: no {GGUF_CONFIG_KEY} in the metadata",
                        path.display()
                    ))
                },
            )?;
        let config: Config = serde_json::from_str(config_json).map_err(|e| {
            Error::bad_request(format!("{}: bad {GGUF_CONFIG_KEY}: {e}", path.display()))
        })?;
        let src = WeightSource::gguf(content, file)
            .map_err(|e| Error::bad_request(format!("{}: {}", path.display(), candle_msg(&e))))?;
        let dtype = content
            .tensor_infos
            .values()
            .map(|t| format!("{:?}", t.ggml_dtype).to_lowercase())
            .find(|d| d != "f32")
            .unwrap_or_else(|| "f32".into());
        let bert = Bert::load(&src, &config)
            .map_err(|e| Error::bad_request(format!("{}: {}", path.display(), candle_msg(&e))))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::with_tokenizer(bert, dir, dtype)
    }

    /// Finish loading from the model folder `dir`: its `tokenizer.json`, and the truncation
    /// length ([`max_seq_length`]).
    fn with_tokenizer(bert: Bert, dir: &Path, weights_dtype: String) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let mut whole = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::bad_request(format!("{}: {e}", tokenizer_path.display())))?;
        let (max_tokens, max_tokens_from) = max_seq_length(dir, &bert.config)?;
        whole.with_padding(None);
        whole
            .with_truncation(None)
            .map_err(|e| Error::internal(format!("tokenizer truncation: {e}")))?;
        let mut tokenizer = whole.clone();
        let whole = Box::new(whole);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| Error::internal(format!("tokenizer truncation: {e}")))?;
        Ok(Self { bert, tokenizer, whole, max_tokens, max_tokens_from, weights_dtype })
    }

    pub fn dim(&self) -> usize {
        self.bert.config.hidden_size
    }

    /// Embed `texts` in batches of at most `batch_size`. Call it inside the plugin's pool.
    pub fn embed(&self, texts: &[String], batch_size: usize) -> Result<Embeddings> {
        match self.embed_until(texts, batch_size, &|| false)? {
            EmbedOutcome::Done(e) => Ok(e),
            EmbedOutcome::Cancelled { .. } => Err(Error::cancelled()),
        }
    }

    /// [`EmbeddingModel::embed`] that polls `cancelled` before each text it tokenizes and
    /// before each batch, and stops there once it says true.
    pub fn embed_until(
        &self,
        texts: &[String],
        batch_size: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<EmbedOutcome> {
        if texts.is_empty() {
            return Err(Error::bad_request("input is empty: send a string or a non-empty array"));
        }
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::bad_request(format!("input[{i}] is empty")));
        }
        let batch_size = batch_size.max(1);
        let total = texts.len().div_ceil(batch_size);
        let mut encodings = Vec::with_capacity(texts.len());
        let mut truncated = Vec::with_capacity(texts.len());
        for text in texts {
            if cancelled() {
                return Ok(EmbedOutcome::Cancelled { batches_run: 0, batches_left: total });
            }
            let (ids, cut) = self.encode(text)?;
            truncated.push(cut);
            encodings.push(ids);
        }
        let tokens = encodings.iter().map(Vec::len).sum();

        // Length-sorted batches, each padded to its longest member.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for (run, batch) in order.chunks(batch_size).enumerate() {
            if cancelled() {
                return Ok(EmbedOutcome::Cancelled { batches_run: run, batches_left: total - run });
            }
            let rows: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].as_slice()).collect();
            let out = self
                .embed_ids(&rows)
                .map_err(|e| Error::internal(format!("encoder: {}", candle_msg(&e))))?;
            for (&i, v) in batch.iter().zip(out) {
                vectors[i] = v;
            }
        }
        Ok(EmbedOutcome::Done(Embeddings { vectors, tokens, truncated, batches: total }))
    }

    /// The token ids of one text (with `[CLS]`/`[SEP]`, truncated to `max_tokens`) and
    /// whether it was truncated. Only a prefix of a long text goes through the tokenizer
    /// (see [`prefix_with_words`]): what follows it lies past the truncation point, so the
    /// ids are the same, and a 50 MB string costs microseconds instead of a minute.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let head = prefix_with_words(text, self.max_tokens + 8);
        let enc = self
            .tokenizer
            .encode(head, true)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    /// One batch through the encoder: the rows are packed (no padding), each sentence attends
    /// to its own tokens, then mean-pooled and L2-normalised.
    pub fn embed_ids(&self, rows: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(rows.iter().map(|r| r.len()).sum());
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        for r in rows {
            ids.extend_from_slice(r);
            offsets.push(ids.len());
        }
        let hidden = self.bert.forward_packed(&ids, &offsets)?;
        crate::fused::mean_pool_normalized(&hidden, &offsets)
    }

    /// The word pieces of the whole `text` (never truncated, special tokens left out) as byte
    /// ranges `(start, end)` of `text`, in order. `cancelled` is polled every 64 KiB of text;
    /// `None` when it said true.
    pub fn token_offsets(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<(usize, usize)>>> {
        // Long texts go through the tokenizer in pieces cut at whitespace (which the BERT
        // pre-tokenizer splits on, so the pieces' word pieces are the whole text's), so a
        // cancel is seen between them.
        const PIECE: usize = 64 * 1024;
        let mut out = Vec::new();
        let mut from = 0;
        while from < text.len() {
            if cancelled() {
                return Ok(None);
            }
            let to = piece_end(text, from, PIECE);
            let enc = self
                .whole
                .encode(&text[from..to], false)
                .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?;
            out.extend(enc.get_offsets().iter().map(|&(s, e)| (from + s, from + e)));
            from = to;
        }
        Ok(Some(out))
    }

    /// Token ids of one text (with `[CLS]`/`[SEP]`, truncated), for benchmarks and tests.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }
}

/// The start of `text` up to the end of its `words`-th whitespace-separated word that holds
/// an ASCII letter or digit (all of `text` if it has fewer). The cut is at whitespace, which
/// the BERT pre-tokenizer splits on, so the tokens of the prefix are the first tokens of the
/// whole text; and each such word makes at least one token (the normalizer removes control
/// characters and accents, never an ASCII letter or digit), so a prefix that ends early
/// already holds more than `words` tokens.
pub fn prefix_with_words(text: &str, words: usize) -> &str {
    let mut counted = 0;
    let mut in_word = false;
    let mut has_alnum = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word && has_alnum {
                counted += 1;
                if counted >= words {
                    return &text[..i];
                }
            }
            in_word = false;
            has_alnum = false;
        } else {
            in_word = true;
            has_alnum |= c.is_ascii_alphanumeric();
        }
    }
    text
}

/// The end of the piece of `text` starting at `from`: the first whitespace at or after
/// `from + size` (the end of `text` if none).
fn piece_end(text: &str, from: usize, size: usize) -> usize {
    let mut at = (from + size).min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    text[at..].find(char::is_whitespace).map_or(text.len(), |i| at + i)
}

/// The truncation length of the model in `dir`, in word pieces counting `[CLS]` and `[SEP]`,
/// and where it comes from: `max_seq_length` of its `sentence_bert_config.json` (what
/// sentence-transformers truncates at; at most `max_position_embeddings`) when the file is
/// there, else `max_position_embeddings`.
pub fn max_seq_length(dir: &Path, config: &Config) -> Result<(usize, &'static str)> {
    let path = dir.join("sentence_bert_config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((config.max_position_embeddings, "max_position_embeddings"))
        }
        Err(e) => return Err(Error::bad_request(format!("{}: {e}", path.display()))),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_request(format!("{}: {e}", path.display())))?;
    match v["max_seq_length"].as_u64() {
        Some(n) if (3..=config.max_position_embeddings as u64).contains(&n) => {
            Ok((n as usize, "sentence_bert_config.json"))
        }
        Some(n) => Err(Error::bad_request(format!(
            "{}: max_seq_length {n} is not within 3..={} (max_position_embeddings)",
            path.display(),
            config.max_position_embeddings
        ))),
        None => Err(Error::bad_request(format!(
            "{}: no max_seq_length (a positive integer)",
            path.display()
        ))),
    }
}

fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::bad_request(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_request(format!("{}: {e}", path.display())))
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

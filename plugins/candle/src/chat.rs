//! Text generation with a llama-family GGUF (SmolLM2-135M-Instruct) through the plugin's own
//! forward pass (`gen::model`: the Q4_1 / Q8_0 weights run as they are in the file, a KV cache
//! written in place, the prompt processed as one batch). A GGUF that forward pass does not run
//! (another architecture, other weight types) goes through
//! `candle_transformers::models::quantized_llama` as before.
//!
//! The tokenizer is built from the GGUF metadata (`tokenizer.ggml.tokens`, `merges`,
//! `token_type`: GPT-2 byte-level BPE) with candle's `TokenizerFromGguf`; for `pre = "smollm"`
//! the pre-tokenizer is set to what SmolLM2's tokenizer.json uses (digits split one by one,
//! byte-level without a prefix space). Prompts use the ChatML template
//! (`<|im_start|>role\ncontent<|im_end|>\n` ... `<|im_start|>assistant\n`). No default system
//! message is added: the one in SmolLM2's `tokenizer.chat_template` ("You are a helpful AI
//! assistant named SmolLM...") derails the Q4_1 135M model (it answers the capital question with
//! French word salad); without it the answer is "The capital of France is Paris.".
//!
//! On the candle_transformers path, Q4_1 weights are requantized to Q8_0 in memory at load:
//! candle 0.11 has only a scalar Q4_1 dot product on x86 while Q8_0 has an AVX2 one.
//!
//! The loaded weights are shared: each generation has its own KV cache (a `gen::model::Sequence`,
//! or a clone of candle's reference-counted model), so generations can run concurrently. On the
//! plugin's own forward pass the generations of a model decode together
//! ([`ChatModel::generate_batched`], `gen::batch`: one step for all of them, each with its own
//! sampler, stop strings and `max_tokens`, joining and leaving between steps).

use std::path::Path;

use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde::Deserialize;
use tokenizers::pre_tokenizers::{
    byte_level::ByteLevel, digits::Digits, sequence::Sequence as PreSequence,
};
use tokenizers::Tokenizer;

use crate::error::{candle_msg, Error, Result};
use crate::gen::batch::{Batcher, Job, Vocab};
use crate::gen::model::{Model, Scratch, Sequence};
use crate::runtime::Runtime;

/// The forward pass a model runs through.
enum Forward {
    /// The plugin's own (`gen::model`).
    Own(Model),
    /// candle_transformers' quantized llama (the fallback).
    Candle(ModelWeights),
}

pub struct ChatModel {
    forward: Forward,
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    pub context_length: usize,
    pub architecture: String,
    pub file_type: String,
    /// The type the quantized matmuls run in (on the candle_transformers path Q4_1 is
    /// requantized to Q8_0 at load).
    pub compute_type: String,
    /// Why the plugin's own forward pass does not run this file (`None`: it does).
    pub fallback_reason: Option<String>,
    /// The generations decoding together (the plugin's own forward pass only; boxed: it is
    /// large and the registry's model enum holds a chat model inline).
    pub batch: Box<Batcher>,
}

/// A request checked and tokenized.
struct Plan {
    prompt_ids: Vec<u32>,
    max_tokens: usize,
    stops: Vec<String>,
    sampling: Sampling,
    seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A generation request (the `model.infer` body for a chat model, less `model`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// A raw prompt, sent to the model as is (no template).
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
}

pub const DEFAULT_MAX_TOKENS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
}

impl Finish {
    pub fn as_str(&self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Seconds from the start to the first generated token, and in total.
    pub first_token_s: f64,
    pub total_s: f64,
}

impl ChatModel {
    pub fn load(
        path: &Path,
        content: gguf_file::Content,
        file: &mut std::fs::File,
    ) -> Result<Self> {
        let bad = |e: &candle_core::Error| {
            Error::bad_request(format!("{}: {}", path.display(), candle_msg(e)))
        };
        let md_str = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
        let architecture = md_str("general.architecture").unwrap_or_default();
        let mut tokenizer = Tokenizer::from_gguf(&content).map_err(|e| bad(&e))?;
        if md_str("tokenizer.ggml.pre").as_deref() == Some("smollm") {
            tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])));
        }
        let mut eos = Vec::new();
        if let Some(id) =
            content.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok())
        {
            eos.push(id);
        }
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = tokenizer.token_to_id(t) {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        let context_length = content
            .metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map(|n| n as usize)
            .unwrap_or(MAX_SEQ_LEN)
            .min(MAX_SEQ_LEN);
        let file_type = content
            .tensor_infos
            .get("blk.0.attn_q.weight")
            .map(|t| format!("{:?}", t.ggml_dtype).to_lowercase())
            .unwrap_or_default();
        let own = Model::load(&content, file);
        let (forward, compute_type, fallback_reason) = match own {
            Ok(m) => {
                let compute = m.compute_type().name().to_string();
                (Forward::Own(m), compute, None)
            }
            Err(reason) if file_type == "q4_1" => {
                // candle 0.11 has no SIMD kernel for Q4_1 (a scalar loop); Q8_0 has an AVX2 one.
                let (c, mut cursor) =
                    requantize(&content, file, GgmlDType::Q8_0).map_err(|e| bad(&e))?;
                let w =
                    ModelWeights::from_gguf(c, &mut cursor, &Device::Cpu).map_err(|e| bad(&e))?;
                (Forward::Candle(w), "q8_0".to_string(), Some(reason))
            }
            Err(reason) => {
                let w =
                    ModelWeights::from_gguf(content, file, &Device::Cpu).map_err(|e| bad(&e))?;
                (Forward::Candle(w), file_type.clone(), Some(reason))
            }
        };
        let context_length = match &forward {
            Forward::Own(m) => context_length.min(m.cfg.context),
            Forward::Candle(_) => context_length,
        };
        Ok(Self {
            forward,
            tokenizer,
            eos,
            context_length,
            architecture,
            file_type,
            compute_type,
            fallback_reason,
            batch: Box::default(),
        })
    }

    /// Which forward pass runs this model: "bkg" (the plugin's own) or "candle_transformers".
    pub fn forward_name(&self) -> &'static str {
        match self.forward {
            Forward::Own(_) => "bkg",
            Forward::Candle(_) => "candle_transformers",
        }
    }

    /// The prompt text for a request: ChatML for `messages`, or the raw `prompt`.
    pub fn prompt(&self, req: &ChatRequest) -> Result<String> {
        match (&req.messages, &req.prompt) {
            (Some(_), Some(_)) => {
                Err(Error::bad_request("send either messages or prompt, not both"))
            }
            (None, None) => Err(Error::bad_request("send messages:[{role,content}] or prompt")),
            (None, Some(p)) if p.is_empty() => Err(Error::bad_request("prompt is empty")),
            (None, Some(p)) => Ok(p.clone()),
            (Some(m), None) if m.is_empty() => Err(Error::bad_request("messages is empty")),
            (Some(messages), None) => {
                let mut out = String::new();
                for m in messages {
                    if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                        return Err(Error::bad_request(format!("unknown role {:?}", m.role)));
                    }
                    out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
                }
                out.push_str("<|im_start|>assistant\n");
                Ok(out)
            }
        }
    }

    /// The plugin's own forward pass, when it runs this model.
    pub fn own_model(&self) -> Option<&Model> {
        match &self.forward {
            Forward::Own(m) => Some(m),
            Forward::Candle(_) => None,
        }
    }

    /// A request's prompt as token ids (the template applied).
    pub fn prompt_tokens(&self, req: &ChatRequest) -> Result<Vec<u32>> {
        let prompt = self.prompt(req)?;
        let enc = self
            .tokenizer
            .encode(prompt.as_str(), false)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The perplexity of `text` taken as is (no template): exp of the mean negative
    /// log-likelihood of each token after the first, the tokens fed one at a time. Returns it
    /// and the number of tokens scored. A measure of the numerics, not of speed.
    pub fn perplexity(&self, text: &str) -> Result<(f64, usize)> {
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec();
        if ids.len() < 2 || ids.len() > self.context_length {
            return Err(Error::bad_request(format!(
                "perplexity needs 2 to {} tokens, the text has {}",
                self.context_length,
                ids.len()
            )));
        }
        let internal =
            |e: candle_core::Error| Error::internal(format!("model: {}", candle_msg(&e)));
        let nll = |logits: &[f32], t: u32| {
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = logits.iter().map(|l| (*l as f64 - max).exp()).sum();
            max + z.ln() - logits[t as usize] as f64
        };
        let mut total = 0f64;
        match &self.forward {
            Forward::Own(m) => {
                let mut seq = m.sequence(ids.len());
                let mut scratch = Scratch::default();
                for w in ids.windows(2) {
                    m.decode_step(&mut scratch, &mut [&mut seq], &w[..1])?;
                    total += nll(seq.logits(), w[1]);
                }
            }
            Forward::Candle(w) => {
                let mut model = w.clone();
                model.clear_kv_cache();
                for (pos, w) in ids.windows(2).enumerate() {
                    let x = Tensor::new(&w[..1], &Device::Cpu)
                        .and_then(|t| t.unsqueeze(0))
                        .map_err(internal)?;
                    let logits = model
                        .forward(&x, pos)
                        .and_then(|l| l.squeeze(0))
                        .and_then(|l| l.to_vec1::<f32>())
                        .map_err(internal)?;
                    total += nll(&logits, w[1]);
                }
            }
        }
        let n = ids.len() - 1;
        Ok(((total / n as f64).exp(), n))
    }

    /// Token ids as text (what a generation's `text` is made of).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::internal(format!("tokenizer: {e}")))
    }

    /// Teacher forcing, for checking answers against a reference: run the prompt of `req`
    /// followed by the `completion` tokens and return, for each completion token, how far its
    /// logit is below the largest logit at that step (0: greedy decoding picks it); with
    /// `stopped`, one more entry for the best end-of-text token after the completion.
    pub fn greedy_deficits(
        &self,
        req: &ChatRequest,
        completion: &[u32],
        stopped: bool,
    ) -> Result<Vec<f32>> {
        let Forward::Own(model) = &self.forward else {
            return Err(Error::bad_request("teacher forcing needs the plugin's own forward pass"));
        };
        let prompt = self
            .tokenizer
            .encode(self.prompt(req)?.as_str(), false)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec();
        if let Some(t) = completion.iter().find(|t| **t as usize >= model.cfg.vocab) {
            return Err(Error::bad_request(format!("token {t} is outside the vocabulary")));
        }
        let mut seq = model.sequence(prompt.len() + completion.len() + 1);
        let mut scratch = Scratch::default();
        model.prefill(&mut scratch, &mut seq, &prompt)?;
        let deficit = |logits: &[f32], t: u32| logits[argmax(logits) as usize] - logits[t as usize];
        let mut out = Vec::with_capacity(completion.len() + 1);
        for t in completion {
            out.push(deficit(seq.logits(), *t));
            model.decode_step(&mut scratch, &mut [&mut seq], &[*t])?;
        }
        if stopped {
            let best = self.eos.iter().map(|t| deficit(seq.logits(), *t)).fold(f32::MAX, f32::min);
            out.push(best);
        }
        Ok(out)
    }

    /// Generate. `on_text` gets each new piece of text as soon as it is certain (not part of
    /// a possible stop string, complete UTF-8); returning an error stops the generation with
    /// that error. `cancelled` is polled before each token.
    pub fn generate(
        &self,
        req: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        self.generate_counted(req, on_text, cancelled, &|| {})
    }

    /// [`ChatModel::generate`], calling `on_token` once for each token generated (the ones
    /// counted in `completion_tokens`), as it is made: the plugin's live token counter.
    pub fn generate_counted(
        &self,
        req: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
        cancelled: &dyn Fn() -> bool,
        on_token: &dyn Fn(),
    ) -> Result<Generation> {
        let started = std::time::Instant::now();
        let Plan { prompt_ids, max_tokens, stops, sampling, seed } = self.plan(req)?;
        let greedy = matches!(sampling, Sampling::ArgMax);
        let mut sampler = LogitsProcessor::from_sampling(seed, sampling);
        let internal =
            |e: candle_core::Error| Error::internal(format!("model: {}", candle_msg(&e)));
        let mut state = match &self.forward {
            Forward::Own(m) => State::Own {
                model: m,
                seq: m.sequence(prompt_ids.len() + max_tokens),
                scratch: Box::default(),
            },
            Forward::Candle(w) => {
                let mut model = w.clone();
                model.clear_kv_cache();
                State::Candle(model)
            }
        };
        let mut generated: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut emitted = 0usize;
        let mut first_token_s = 0.0;
        let mut finish = Finish::Length;
        let mut input = prompt_ids.clone();
        let mut pos = 0usize;
        while generated.len() < max_tokens {
            if cancelled() {
                finish = Finish::Cancelled;
                break;
            }
            let next = match &mut state {
                State::Own { model, seq, scratch } => {
                    if seq.is_empty() {
                        model.prefill(scratch, seq, &input)?;
                    } else {
                        model.decode_step(scratch, &mut [&mut *seq], &input)?;
                    }
                    if greedy {
                        argmax(seq.logits())
                    } else {
                        let logits = Tensor::new(seq.logits(), &Device::Cpu).map_err(internal)?;
                        sampler.sample(&logits).map_err(internal)?
                    }
                }
                State::Candle(model) => {
                    let x = Tensor::new(input.as_slice(), &Device::Cpu)
                        .and_then(|t| t.unsqueeze(0))
                        .map_err(internal)?;
                    let logits =
                        model.forward(&x, pos).and_then(|l| l.squeeze(0)).map_err(internal)?;
                    pos += input.len();
                    sampler.sample(&logits).map_err(internal)?
                }
            };
            if generated.is_empty() {
                first_token_s = started.elapsed().as_secs_f64();
            }
            if self.eos.contains(&next) {
                finish = Finish::Stop;
                break;
            }
            generated.push(next);
            on_token();
            input.clear();
            input.push(next);
            text = self
                .tokenizer
                .decode(&generated, true)
                .map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
            if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
                finish = Finish::Stop;
                break;
            }
            // Hold back an incomplete UTF-8 sequence and a possible start of a stop string.
            let mut safe = text.len();
            if text.ends_with('\u{FFFD}') {
                safe -= '\u{FFFD}'.len_utf8();
            }
            safe -= partial_stop_suffix(&text[..safe], &stops);
            if safe > emitted {
                on_text(&text[emitted..safe])?;
                emitted = safe;
            }
        }
        if finish == Finish::Length || finish == Finish::Stop {
            let end = text.len();
            if end > emitted {
                on_text(&text[emitted..end])?;
            }
        }
        Ok(Generation {
            text,
            finish,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: generated.len(),
            first_token_s,
            total_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Check and tokenize a generation request.
    fn plan(&self, req: &ChatRequest) -> Result<Plan> {
        let prompt = self.prompt(req)?;
        let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(Error::bad_request("max_tokens must be at least 1"));
        }
        let temperature = req.temperature.unwrap_or(0.7);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(Error::bad_request("temperature must be within 0..=2"));
        }
        if let Some(p) = req.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::bad_request("top_p must be within 0..=1 (0: greedy)"));
            }
        }
        let stops: Vec<String> = req.stop.clone().unwrap_or_default();
        if stops.len() > 4 || stops.iter().any(|s| s.is_empty()) {
            return Err(Error::bad_request("stop: at most 4 non-empty strings"));
        }
        let prompt_ids = self
            .tokenizer
            .encode(prompt.as_str(), false)
            .map_err(|e| Error::bad_request(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec();
        // Checked: a client may send any max_tokens up to u64::MAX.
        if prompt_ids.len().checked_add(max_tokens).is_none_or(|n| n > self.context_length) {
            return Err(Error::bad_request(format!(
                "the prompt has {} tokens; with max_tokens {max_tokens} that exceeds the context of {} tokens",
                prompt_ids.len(),
                self.context_length
            )));
        }
        // top_p 0 keeps only the likeliest token, as OpenAI reads it: greedy, like temperature 0.
        let sampling = if temperature < 1e-7 || req.top_p == Some(0.0) {
            Sampling::ArgMax
        } else {
            match req.top_p {
                Some(p) if p < 1.0 => Sampling::TopP { p, temperature },
                _ => Sampling::All { temperature },
            }
        };
        let seed = req.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(Plan { prompt_ids, max_tokens, stops, sampling, seed })
    }

    /// Whether generations of this model decode together ([`ChatModel::generate_batched`]):
    /// those through the plugin's own forward pass do.
    pub fn batched(&self) -> bool {
        matches!(self.forward, Forward::Own(_))
    }

    /// [`ChatModel::generate_counted`] through the model's shared batch (`gen::batch`): the
    /// request decodes together with the other generations of this model, each step run on
    /// `runtime`'s pool by one of the waiting callers. Runs on the caller's thread: `on_text`
    /// and `on_token` are called there, `cancelled` is polled there between steps (and every
    /// 50 ms while another caller runs one). The text is the one generated alone.
    pub fn generate_batched(
        &self,
        runtime: &Runtime,
        req: &ChatRequest,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
        cancelled: &dyn Fn() -> bool,
        on_token: &dyn Fn(),
    ) -> Result<Generation> {
        let started = std::time::Instant::now();
        let Forward::Own(model) = &self.forward else {
            return Err(Error::internal("batched generation needs the plugin's own forward pass"));
        };
        let Plan { prompt_ids, max_tokens, stops, sampling, seed } = self.plan(req)?;
        let job = Job {
            prompt: prompt_ids,
            max_tokens,
            stops,
            greedy: matches!(sampling, Sampling::ArgMax),
            sampler: LogitsProcessor::from_sampling(seed, sampling),
            started,
        };
        let vocab = Vocab { tokenizer: &self.tokenizer, eos: &self.eos };
        self.batch.run(runtime, model, &vocab, job, on_text, cancelled, on_token)
    }
}

/// A generation's model state: its own sequence and scratch, or a candle model clone.
enum State<'a> {
    Own { model: &'a Model, seq: Sequence, scratch: Box<Scratch> },
    Candle(ModelWeights),
}

/// The index of the largest logit, the first one on a tie (what candle's `argmax` and so
/// `LogitsProcessor`'s greedy sampling pick); the batch's greedy decoding uses it too.
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Rewrite a GGUF in memory with every Q4_1 tensor requantized to `dtype`.
fn requantize(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    dtype: GgmlDType,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = content.tensor(file, name, &Device::Cpu)?;
        let q = if q.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&q.dequantize(&Device::Cpu)?, dtype)?
        } else {
            q
        };
        tensors.push((name.as_str(), q));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> =
        content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut cursor = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut cursor, &metadata, &refs)?;
    cursor.set_position(0);
    let content = gguf_file::Content::read(&mut cursor)?;
    Ok((content, cursor))
}

/// The length of the longest suffix of `text` that is a proper prefix of one of `stops`.
pub(crate) fn partial_stop_suffix(text: &str, stops: &[String]) -> usize {
    let mut longest = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if text.ends_with(&stop[..i]) {
                longest = longest.max(i);
            }
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_suffixes() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(partial_stop_suffix("hello\n", &stops), 1);
        assert_eq!(partial_stop_suffix("hello EN", &stops), 2);
        assert_eq!(partial_stop_suffix("hello", &stops), 0);
    }
}

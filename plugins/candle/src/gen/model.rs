//! The plugin's own llama forward pass (issue 17): the quantized weights as they are in the
//! GGUF ([`QMatrix`], Q4_1 / Q8_0 blocks, no requantization, no F32 embedding table), a KV
//! cache per [`Sequence`] in flat `Vec<f32>`s written in place, attention as a tiled online
//! softmax over key blocks ([`super::attention`]: keys cached block-transposed), and
//! every step on the current rayon pool (the plugin's own: callers run inside
//! `Runtime::install`; nothing here starts a thread or touches candle's barrier pool).
//!
//! One code path serves the prompt and the generation: [`Model::prefill`] runs a whole prompt
//! as a batch (matrix-matrix products with n = prompt length, causal attention over the
//! prompt); [`Model::decode_step`] runs one token for each of several sequences at once (the
//! weights are read once for all of them; each sequence attends over its own cache at its own
//! position). Both return the logits of each sequence's last token only.
//!
//! Numerics follow candle_transformers' `quantized_llama` (the path this replaces): RMSNorm as
//! `x / sqrt(mean(x^2) + eps) * w`, interleaved ("normal", GGML) RoPE with `pos * theta` in
//! f32, attention scores scaled by 1/sqrt(head_dim) with an online (flash-attention style)
//! softmax over blocks of 64 positions, SiLU as
//! `x / (1 + exp(-x))`, the output projection tied to the token embedding unless the file has
//! `output.weight`.

use candle_core::quantized::gguf_file;

use super::attention::{self, Cache, Heads};
use super::quant::{QActs, QMatrix, QType};
use crate::error::{candle_msg, Error, Result};

/// The longest context served (the old path's `MAX_SEQ_LEN`).
pub const MAX_CONTEXT: usize = 4096;

/// Prompts are processed in chunks of at most this many tokens (bounds the scratch memory).
pub const PREFILL_CHUNK: usize = 256;

/// KV-cache positions are reserved in steps of at least this many.
const KV_GROW: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub n_layer: usize,
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub context: usize,
}

impl Config {
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Read a llama GGUF's hyperparameters; anything else (another architecture, a mixture of
    /// experts, partial RoPE) is refused with the reason.
    pub fn from_gguf(content: &gguf_file::Content) -> std::result::Result<Self, String> {
        let md = |k: &str| content.metadata.get(k);
        let arch = md("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        if arch.as_deref() != Some("llama") {
            return Err(format!("architecture {arch:?} (this forward pass runs \"llama\")"));
        }
        let u = |k: &str| -> std::result::Result<usize, String> {
            md(k)
                .and_then(|v| v.to_u32().ok())
                .map(|n| n as usize)
                .ok_or_else(|| format!("metadata {k} is missing"))
        };
        if md("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 1 {
            return Err("a mixture-of-experts llama".into());
        }
        let dim = u("llama.embedding_length")?;
        let n_head = u("llama.attention.head_count")?;
        let n_kv_head = u("llama.attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || dim % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(format!("heads {n_head} / kv heads {n_kv_head} for width {dim}"));
        }
        let head_dim = dim / n_head;
        if head_dim % 2 != 0 {
            return Err(format!("odd head dimension {head_dim}"));
        }
        let rope_dim = u("llama.rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(format!("RoPE over {rope_dim} of {head_dim} dimensions"));
        }
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or("token_embd.weight is missing")?;
        let context = u("llama.context_length").unwrap_or(MAX_CONTEXT).clamp(1, MAX_CONTEXT);
        Ok(Self {
            n_layer: u("llama.block_count")?,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn: u("llama.feed_forward_length")?,
            vocab,
            eps: md("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().ok())
                .ok_or("metadata llama.attention.layer_norm_rms_epsilon is missing")?,
            rope_base: md("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10000.0),
            context,
        })
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

pub struct Model {
    pub cfg: Config,
    embd: QMatrix,
    /// `None`: the output projection is the token embedding (tied).
    output: Option<QMatrix>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// cos / sin of `pos * theta_i` for every position and pair: `[context][head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// One sequence's state: its KV cache (per layer, written in place: the keys block-transposed,
/// see [`attention::k_index`], the values position-major `[pos][kv_head][head_dim]`) and the
/// logits of its last token.
pub struct Sequence {
    pos: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    logits: Vec<f32>,
}

impl Sequence {
    /// Tokens in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// The logits after the last step (vocabulary-sized).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Bytes held by the KV cache (reserved, not just used).
    pub fn cache_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|c| c.capacity() * 4).sum()
    }

    /// Make room for `more` positions; grows by at least [`KV_GROW`] positions at a time, so
    /// appending a token never copies the cache in the steady state.
    fn reserve(&mut self, more: usize, heads: &Heads) {
        let kv_dim = heads.n_kv_head * heads.head_dim;
        let need_k = attention::k_len(heads, self.pos + more);
        let need_v = (self.pos + more) * kv_dim;
        let caches = self.k.iter_mut().map(|c| (c, need_k));
        for (c, need) in caches.chain(self.v.iter_mut().map(|c| (c, need_v))) {
            if c.capacity() < need {
                let want = need.max(c.capacity() + KV_GROW * kv_dim);
                c.reserve_exact(want - c.len());
            }
        }
    }
}

/// Buffers a step works in, reused from step to step (grown when a step has more rows).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    last: Vec<f32>,
    logits: Vec<f32>,
    /// Per attention row: (sequence, its position).
    rows: Vec<(usize, usize)>,
    acts: QActs,
}

fn fit(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// A dot product in 8 independent lanes, so that the loop vectorises (a plain `sum()` is one
/// serial chain of float additions).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2 = dot(x, x);
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((o, s), a) in out.iter_mut().zip(x).zip(w) {
            *o = *s / m * *a;
        }
    }
}

fn matrix(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    name: &str,
) -> std::result::Result<QMatrix, String> {
    let t = content.tensor(file, name, &candle_core::Device::Cpu).map_err(|e| candle_msg(&e))?;
    QMatrix::from_gguf(&t).map_err(|e| format!("{name}: {e}"))
}

fn vector(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    name: &str,
    len: usize,
) -> std::result::Result<Vec<f32>, String> {
    let t = content.tensor(file, name, &candle_core::Device::Cpu).map_err(|e| candle_msg(&e))?;
    let v = t
        .dequantize(&candle_core::Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("{name}: {}", candle_msg(&e)))?;
    if v.len() != len {
        return Err(format!("{name} has {} values, expected {len}", v.len()));
    }
    Ok(v)
}

impl Model {
    /// Load a llama GGUF. The error says why a file is not one this forward pass runs.
    pub fn load(
        content: &gguf_file::Content,
        file: &mut std::fs::File,
    ) -> std::result::Result<Self, String> {
        let cfg = Config::from_gguf(content)?;
        let check = |m: &QMatrix, name: &str, rows: usize, cols: usize| {
            if m.rows != rows || m.cols != cols {
                return Err(format!("{name} is {}x{}, expected {rows}x{cols}", m.rows, m.cols));
            }
            Ok(())
        };
        let embd = matrix(content, file, "token_embd.weight")?;
        check(&embd, "token_embd.weight", cfg.vocab, cfg.dim)?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            let m = matrix(content, file, "output.weight")?;
            check(&m, "output.weight", cfg.vocab, cfg.dim)?;
            Some(m)
        } else {
            None
        };
        let out_norm = vector(content, file, "output_norm.weight", cfg.dim)?;
        let (dim, kv, ffn) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let m = |file: &mut std::fs::File, n: &str, rows: usize, cols: usize| {
                let name = format!("{p}.{n}.weight");
                let m = matrix(content, file, &name)?;
                check(&m, &name, rows, cols)?;
                Ok::<_, String>(m)
            };
            layers.push(Layer {
                attn_norm: vector(content, file, &format!("{p}.attn_norm.weight"), dim)?,
                wq: m(file, "attn_q", dim, dim)?,
                wk: m(file, "attn_k", kv, dim)?,
                wv: m(file, "attn_v", kv, dim)?,
                wo: m(file, "attn_output", dim, dim)?,
                ffn_norm: vector(content, file, &format!("{p}.ffn_norm.weight"), dim)?,
                gate: m(file, "ffn_gate", ffn, dim)?,
                up: m(file, "ffn_up", ffn, dim)?,
                down: m(file, "ffn_down", dim, ffn)?,
            });
        }
        let half = cfg.head_dim / 2;
        let theta: Vec<f32> = (0..cfg.head_dim)
            .step_by(2)
            .map(|i| 1f32 / cfg.rope_base.powf(i as f32 / cfg.head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(cfg.context * half);
        let mut sin = Vec::with_capacity(cfg.context * half);
        for pos in 0..cfg.context {
            for t in &theta {
                let a = pos as f32 * t;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self { cfg, embd, output, out_norm, layers, cos, sin })
    }

    /// The weight type of the layers' matrices (what the matmuls run in).
    pub fn compute_type(&self) -> QType {
        self.layers.first().map(|l| l.wq.qtype).unwrap_or(self.embd.qtype)
    }

    /// Bytes of weights held (quantized blocks, norms, RoPE tables).
    pub fn weight_bytes(&self) -> usize {
        let m = |m: &QMatrix| m.data().len();
        let v = |v: &Vec<f32>| v.len() * 4;
        m(&self.embd)
            + self.output.as_ref().map(m).unwrap_or(0)
            + v(&self.out_norm)
            + v(&self.cos)
            + v(&self.sin)
            + self
                .layers
                .iter()
                .map(|l| {
                    v(&l.attn_norm)
                        + v(&l.ffn_norm)
                        + [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                            .into_iter()
                            .map(m)
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// A new, empty sequence with room for `capacity` tokens (it grows past that if needed).
    pub fn sequence(&self, capacity: usize) -> Sequence {
        let kv = self.cfg.kv_dim();
        let cap = capacity.min(self.cfg.context) * kv;
        Sequence {
            pos: 0,
            k: (0..self.cfg.n_layer).map(|_| Vec::with_capacity(cap)).collect(),
            v: (0..self.cfg.n_layer).map(|_| Vec::with_capacity(cap)).collect(),
            logits: vec![0.0; self.cfg.vocab],
        }
    }

    /// Run a prompt (or any run of tokens) through `seq`, as batches of up to
    /// [`PREFILL_CHUNK`] tokens; `seq.logits()` then holds the last token's logits.
    pub fn prefill(&self, scratch: &mut Scratch, seq: &mut Sequence, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::bad_request("the prompt has no tokens"));
        }
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.forward(scratch, &mut [seq], chunk, chunk.len())?;
        }
        Ok(())
    }

    /// One piece of a prompt (the tokens after those already in `seq`) as one batch; the
    /// continuous batch calls this once per chunk, a chunk per step, so that a long prompt is
    /// processed over several steps. Chunks of [`PREFILL_CHUNK`] from the prompt's start are
    /// exactly what [`Model::prefill`] runs.
    pub fn prefill_chunk(
        &self,
        scratch: &mut Scratch,
        seq: &mut Sequence,
        tokens: &[u32],
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::bad_request("the prompt has no tokens"));
        }
        self.forward(scratch, &mut [seq], tokens, tokens.len())
    }

    /// One token for each of `seqs` at once (each at its own position, over its own cache);
    /// each sequence's `logits()` then holds its next-token logits.
    pub fn decode_step(
        &self,
        scratch: &mut Scratch,
        seqs: &mut [&mut Sequence],
        tokens: &[u32],
    ) -> Result<()> {
        if seqs.len() != tokens.len() {
            return Err(Error::internal(format!(
                "decode_step: {} sequences, {} tokens",
                seqs.len(),
                tokens.len()
            )));
        }
        self.forward(scratch, seqs, tokens, 1)
    }

    /// The forward pass over `tokens`, a run of `run` tokens for each of `seqs` in turn,
    /// appended to each sequence; rows are laid out run after run.
    fn forward(
        &self,
        s: &mut Scratch,
        seqs: &mut [&mut Sequence],
        tokens: &[u32],
        run: usize,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (dim, kv, ffn) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let n = tokens.len();
        if run == 0 || seqs.len() * run != n {
            return Err(Error::internal(format!(
                "forward: {} sequences, {n} tokens, runs of {run}",
                seqs.len()
            )));
        }
        for (seq, run) in seqs.iter_mut().zip(tokens.chunks_exact(run)) {
            if seq.pos + run.len() > cfg.context {
                return Err(Error::bad_request(format!(
                    "the sequence would hold {} tokens; the context is {}",
                    seq.pos + run.len(),
                    cfg.context
                )));
            }
            if let Some(t) = run.iter().find(|t| **t as usize >= cfg.vocab) {
                return Err(Error::bad_request(format!(
                    "token {t} is outside the vocabulary of {}",
                    cfg.vocab
                )));
            }
            seq.reserve(run.len(), &self.heads());
        }
        let x = fit(&mut s.x, n * dim);
        for (row, t) in x.chunks_exact_mut(dim).zip(tokens) {
            self.embd.dequantize_row(*t as usize, row)?;
        }
        for (li, layer) in self.layers.iter().enumerate() {
            // Attention: q, k and v from the same quantized input.
            let xn = fit(&mut s.xn, n * dim);
            rms_norm(&s.x[..n * dim], &layer.attn_norm, cfg.eps, xn);
            s.acts.quantize_into(xn, n, dim, layer.wq.qtype)?;
            layer.wq.matmul(&s.acts, fit(&mut s.q, n * dim))?;
            requant(&mut s.acts, xn, layer.wq.qtype, layer.wk.qtype)?;
            layer.wk.matmul(&s.acts, fit(&mut s.k, n * kv))?;
            requant(&mut s.acts, xn, layer.wk.qtype, layer.wv.qtype)?;
            layer.wv.matmul(&s.acts, fit(&mut s.v, n * kv))?;
            // RoPE on q and k, then k and v appended to each sequence's cache.
            for (si, seq) in seqs.iter_mut().enumerate() {
                let row = si * run;
                for i in 0..run {
                    let pos = seq.pos + i;
                    self.rope(&mut s.q[(row + i) * dim..(row + i + 1) * dim], pos);
                    self.rope(&mut s.k[(row + i) * kv..(row + i + 1) * kv], pos);
                }
                attention::store_keys(
                    &self.heads(),
                    &mut seq.k[li],
                    seq.pos,
                    &s.k[row * kv..(row + run) * kv],
                );
                seq.v[li].extend_from_slice(&s.v[row * kv..(row + run) * kv]);
            }
            let att = fit(&mut s.att, n * dim);
            self.attention(seqs, run, li, &s.q[..n * dim], att, &mut s.rows);
            s.acts.quantize_into(att, n, dim, layer.wo.qtype)?;
            let tmp = fit(&mut s.tmp, n * dim);
            layer.wo.matmul(&s.acts, tmp)?;
            for (x, t) in s.x[..n * dim].iter_mut().zip(tmp.iter()) {
                *x += *t;
            }
            // MLP: down(silu(gate(x)) * up(x)).
            let xn = fit(&mut s.xn, n * dim);
            rms_norm(&s.x[..n * dim], &layer.ffn_norm, cfg.eps, xn);
            s.acts.quantize_into(xn, n, dim, layer.gate.qtype)?;
            let gate = fit(&mut s.gate, n * ffn);
            layer.gate.matmul(&s.acts, gate)?;
            requant(&mut s.acts, xn, layer.gate.qtype, layer.up.qtype)?;
            let up = fit(&mut s.up, n * ffn);
            layer.up.matmul(&s.acts, up)?;
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * *u;
            }
            s.acts.quantize_into(gate, n, ffn, layer.down.qtype)?;
            let tmp = fit(&mut s.tmp, n * dim);
            layer.down.matmul(&s.acts, tmp)?;
            for (x, t) in s.x[..n * dim].iter_mut().zip(tmp.iter()) {
                *x += *t;
            }
        }
        // The last row of each run: final norm and the output projection.
        let m = seqs.len();
        let last = fit(&mut s.last, m * dim);
        for i in 0..m {
            let row = (i + 1) * run;
            rms_norm(
                &s.x[(row - 1) * dim..row * dim],
                &self.out_norm,
                cfg.eps,
                &mut last[i * dim..(i + 1) * dim],
            );
        }
        let out = self.output.as_ref().unwrap_or(&self.embd);
        s.acts.quantize_into(last, m, dim, out.qtype)?;
        let logits = fit(&mut s.logits, m * cfg.vocab);
        out.matmul(&s.acts, logits)?;
        for (seq, l) in seqs.iter_mut().zip(logits.chunks_exact(cfg.vocab)) {
            seq.logits.copy_from_slice(l);
            seq.pos += run;
        }
        Ok(())
    }

    /// Interleaved RoPE (pairs 2i, 2i+1) on every head of `x` at position `pos`.
    fn rope(&self, x: &mut [f32], pos: usize) {
        let half = self.cfg.head_dim / 2;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(self.cfg.head_dim) {
            for ((p, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (a, b) = (p[0], p[1]);
                p[0] = a * c - b * s;
                p[1] = a * s + b * c;
            }
        }
    }

    fn heads(&self) -> Heads {
        Heads {
            n_head: self.cfg.n_head,
            n_kv_head: self.cfg.n_kv_head,
            head_dim: self.cfg.head_dim,
        }
    }

    /// Causal attention of each run's rows over its sequence's cache (which already holds the
    /// run's keys and values and not yet its new position), on the current pool
    /// ([`attention::attend`]).
    fn attention(
        &self,
        seqs: &[&mut Sequence],
        run: usize,
        layer: usize,
        q: &[f32],
        out: &mut [f32],
        rows: &mut Vec<(usize, usize)>,
    ) {
        rows.clear();
        for (si, seq) in seqs.iter().enumerate() {
            rows.extend((0..run).map(|i| (si, seq.pos + i)));
        }
        let caches: Vec<Cache> =
            seqs.iter().map(|s| Cache { k: &s.k[layer], v: &s.v[layer] }).collect();
        attention::attend(&self.heads(), &caches, rows, q, out);
    }
}

/// Prepare `acts` (made from `x` for `had` weights) for `want` weights: the same 8-bit rows
/// serve every quantized type, the f32 rows every float type.
fn requant(acts: &mut QActs, x: &[f32], had: QType, want: QType) -> Result<()> {
    if had.is_quantized() == want.is_quantized() {
        return Ok(());
    }
    acts.quantize_into(x, acts.n, acts.cols, want)
}

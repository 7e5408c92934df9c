//! A BERT encoder (the all-MiniLM-L6-v2 family) written for inference on CPU.
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (the tests compare the two),
//! with these differences:
//! - weights come from a [`WeightSource`]: an F32 safetensors file, or a GGUF file written by
//!   `model.quantize` whose linear layers are quantized (run as quantized matmuls);
//! - the query, key and value projections are one fused matmul, the `1/sqrt(head_dim)` scale
//!   is folded into the query weights at load time;
//! - sequences are *packed* (no padding): the rows of all sentences of a batch go through the
//!   matmuls together and attention runs per sentence (see [`Bert::forward_packed`]);
//! - everything between two matmuls is one fused pass ([`crate::fused`]: bias + gelu,
//!   bias + residual + layer norm, attention straight from the fused QKV output, embeddings +
//!   layer norm), none of it on candle's process-wide barrier pool.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};

use crate::fused::{self, NormParams};
use serde::Deserialize;

/// The subset of a BERT `config.json` this encoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "gelu".into()
}

/// Where the tensors come from. Names are the Hugging Face ones without a `bert.` prefix
/// (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...).
pub enum WeightSource {
    Tensors(HashMap<String, Tensor>),
    Quantized(HashMap<String, Arc<QTensor>>),
}

impl WeightSource {
    /// Read an F32 safetensors file into memory (no mmap), stripping a `bert.` prefix.
    pub fn safetensors(path: &std::path::Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), v))
            .collect();
        Ok(Self::Tensors(tensors))
    }

    /// Read every tensor of a GGUF file.
    pub fn gguf(content: &gguf_file::Content, file: &mut std::fs::File) -> Result<Self> {
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            tensors.insert(name.clone(), Arc::new(content.tensor(file, name, &Device::Cpu)?));
        }
        Ok(Self::Quantized(tensors))
    }

    /// A tensor as F32 (dequantized if it is stored quantized).
    fn tensor(&self, name: &str) -> Result<Tensor> {
        match self {
            Self::Tensors(m) => m
                .get(name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}"))),
            Self::Quantized(m) => m
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?
                .dequantize(&Device::Cpu),
        }?
        .to_dtype(DType::F32)
    }

    fn is_quantized(&self, name: &str) -> bool {
        match self {
            Self::Tensors(_) => false,
            Self::Quantized(m) => m.get(name).is_some_and(|t| {
                !matches!(t.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
            }),
        }
    }

    fn qtensor(&self, name: &str) -> Option<Arc<QTensor>> {
        match self {
            Self::Tensors(_) => None,
            Self::Quantized(m) => m.get(name).cloned(),
        }
    }
}

/// The matrix of a dense layer: F32 (stored transposed, `(in, out)`), or a quantized matmul.
#[derive(Clone)]
pub enum Matmul {
    F32(Tensor),
    Quantized(QMatMul),
}

/// A dense layer `y = x W^T + b`. The encoder applies the bias inside the fused op that
/// follows the matmul ([`crate::fused`]); [`Linear::forward`] is the plain form.
#[derive(Clone)]
pub struct Linear {
    pub weight: Matmul,
    pub bias: Vec<f32>,
}

impl Linear {
    /// `x W^T` (no bias) for a 2-D `(rows, in)` input: a fresh contiguous tensor. F32 goes
    /// through the plugin's own kernel ([`fused::matmul`]), quantized through candle's.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Matmul::F32(weight_t) => fused::matmul::matmul(x, weight_t),
            Matmul::Quantized(weight) => weight.forward(x),
        }
    }

    /// `x W^T + b` for a 2-D `(rows, in)` input.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.matmul(x)?.broadcast_add(&Tensor::new(self.bias.as_slice(), x.device())?)
    }

    /// Load one layer; `prefixes` are concatenated along the output dimension (fused QKV),
    /// each scaled by its factor (the attention scale folded into the query).
    fn load(src: &WeightSource, prefixes: &[(&str, f64)]) -> Result<Self> {
        let quantized = prefixes.iter().all(|(p, _)| src.is_quantized(&format!("{p}.weight")));
        let mut biases = Vec::new();
        for (p, scale) in prefixes {
            biases.push((src.tensor(&format!("{p}.bias"))? * *scale)?);
        }
        let bias = Tensor::cat(&biases, 0)?.to_vec1::<f32>()?;
        if quantized && prefixes.len() == 1 && prefixes[0].1 == 1.0 {
            let q = src.qtensor(&format!("{}.weight", prefixes[0].0)).expect("checked above");
            return Ok(Self { weight: Matmul::Quantized(QMatMul::from_arc(q)?), bias });
        }
        let mut weights = Vec::new();
        for (p, scale) in prefixes {
            weights.push((src.tensor(&format!("{p}.weight"))? * *scale)?);
        }
        let weight = Tensor::cat(&weights, 0)?;
        if weight.dim(0)? != bias.len() {
            candle_core::bail!("{}: weight and bias sizes differ", prefixes[0].0);
        }
        if quantized {
            // Fused or scaled quantized weights are requantized to the stored type.
            let dtype = src.qtensor(&format!("{}.weight", prefixes[0].0)).expect("checked").dtype();
            let q = QTensor::quantize(&weight, dtype)?;
            return Ok(Self { weight: Matmul::Quantized(QMatMul::from_qtensor(q)?), bias });
        }
        Ok(Self { weight: Matmul::F32(weight.t()?.contiguous()?), bias })
    }
}

fn load_norm(src: &WeightSource, prefix: &str, eps: f64) -> Result<NormParams> {
    Ok(NormParams {
        gamma: src.tensor(&format!("{prefix}.weight"))?.to_vec1()?,
        beta: src.tensor(&format!("{prefix}.bias"))?.to_vec1()?,
        eps: eps as f32,
    })
}

#[derive(Clone)]
struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: NormParams,
    intermediate: Linear,
    output: Linear,
    out_norm: NormParams,
}

/// The encoder: embeddings, then `num_hidden_layers` transformer layers.
#[derive(Clone)]
pub struct Bert {
    pub config: Config,
    /// Row-major `(vocab, hidden)`, `(positions, hidden)`, `(types, hidden)`.
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    embed_norm: NormParams,
    layers: Vec<Layer>,
    gelu_approximate: bool,
}

impl Bert {
    pub fn load(src: &WeightSource, config: &Config) -> Result<Self> {
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            candle_core::bail!(
                "hidden_size {} is not divisible by {heads} heads",
                config.hidden_size
            );
        }
        let gelu_approximate = match config.hidden_act.as_str() {
            "gelu" => false,
            "gelu_approximate" | "gelu_new" | "gelu_pytorch_tanh" => true,
            other => candle_core::bail!("unsupported hidden_act {other}"),
        };
        let scale = 1.0 / ((config.hidden_size / heads) as f64).sqrt();
        let eps = config.layer_norm_eps;
        let hidden = config.hidden_size;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let layer = Layer {
                qkv: Linear::load(
                    src,
                    &[
                        (&format!("{p}.attention.self.query"), scale),
                        (&format!("{p}.attention.self.key"), 1.0),
                        (&format!("{p}.attention.self.value"), 1.0),
                    ],
                )?,
                attn_out: Linear::load(src, &[(&format!("{p}.attention.output.dense"), 1.0)])?,
                attn_norm: load_norm(src, &format!("{p}.attention.output.LayerNorm"), eps)?,
                intermediate: Linear::load(src, &[(&format!("{p}.intermediate.dense"), 1.0)])?,
                output: Linear::load(src, &[(&format!("{p}.output.dense"), 1.0)])?,
                out_norm: load_norm(src, &format!("{p}.output.LayerNorm"), eps)?,
            };
            let sizes = [
                layer.qkv.bias.len(),
                layer.attn_out.bias.len(),
                layer.attn_norm.gamma.len(),
                layer.intermediate.bias.len(),
                layer.output.bias.len(),
                layer.out_norm.gamma.len(),
            ];
            if sizes != [3 * hidden, hidden, hidden, config.intermediate_size, hidden, hidden] {
                candle_core::bail!("layer {i}: tensor sizes {sizes:?} do not match the config");
            }
            layers.push(layer);
        }
        let word = src.tensor("embeddings.word_embeddings.weight")?;
        let (v, h) = word.dims2()?;
        if v != config.vocab_size || h != hidden {
            candle_core::bail!(
                "word embeddings are {v}x{h}, config says {}x{}",
                config.vocab_size,
                config.hidden_size
            );
        }
        let position = src.tensor("embeddings.position_embeddings.weight")?;
        let token_type = src.tensor("embeddings.token_type_embeddings.weight")?;
        if position.dim(1)? != hidden || token_type.dim(1)? != hidden || token_type.dim(0)? == 0 {
            candle_core::bail!("position or token type embeddings do not match the hidden size");
        }
        let embed_norm = load_norm(src, "embeddings.LayerNorm", eps)?;
        if embed_norm.gamma.len() != hidden || embed_norm.beta.len() != hidden {
            candle_core::bail!("embeddings.LayerNorm does not match the hidden size");
        }
        Ok(Self {
            config: config.clone(),
            word_embeddings: word.flatten_all()?.to_vec1()?,
            position_embeddings: position.flatten_all()?.to_vec1()?,
            token_type_embeddings: token_type.flatten_all()?.to_vec1()?,
            embed_norm,
            layers,
            gelu_approximate,
        })
    }

    /// Hidden states `(rows, hidden)` for packed sequences: sequence `i` is the token ids
    /// `ids[offsets[i]..offsets[i + 1]]` (`offsets` starts at 0 and ends at `ids.len()`); no
    /// padding, each sequence attends to its own tokens only. Token types are all 0.
    pub fn forward_packed(&self, ids: &[u32], offsets: &[usize]) -> Result<Tensor> {
        if offsets.first() != Some(&0)
            || offsets.last() != Some(&ids.len())
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            candle_core::bail!("bad offsets for {} packed tokens", ids.len());
        }
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let mut x = fused::embed_layer_norm(
            ids,
            offsets,
            &self.word_embeddings,
            &self.position_embeddings,
            &self.token_type_embeddings[..hidden],
            &self.embed_norm,
        )?;
        for layer in &self.layers {
            let qkv = layer.qkv.matmul(&x)?;
            let bias = &layer.qkv.bias;
            let ctx = fused::attention(&qkv, offsets, heads, &bias[..hidden], &bias[2 * hidden..])?;
            drop(qkv);
            let x1 = layer.attn_out.matmul(&ctx)?;
            fused::bias_residual_layer_norm_(&x1, &x, &layer.attn_out.bias, &layer.attn_norm)?;
            let inter = layer.intermediate.matmul(&x1)?;
            fused::bias_gelu_(&inter, &layer.intermediate.bias, self.gelu_approximate)?;
            let out = layer.output.matmul(&inter)?;
            fused::bias_residual_layer_norm_(&out, &x1, &layer.output.bias, &layer.out_norm)?;
            x = out;
        }
        Ok(x)
    }

    /// Hidden states `(batch, seq, hidden)` for `input_ids` `(batch, seq)` (u32) and the
    /// `mask` `(batch, seq)` (1 = token, 0 = padding; each row's tokens first, then its
    /// padding). Token types are all 0. Padding positions come back as zeros.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let hidden = self.config.hidden_size;
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mask = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut packed = Vec::with_capacity(b * s);
        let mut offsets = vec![0];
        for (row, m) in ids.iter().zip(&mask) {
            let len = m.iter().take_while(|&&v| v != 0.0).count();
            if m[len..].iter().any(|&v| v != 0.0) {
                candle_core::bail!("the mask must be a row's tokens first, then its padding");
            }
            packed.extend_from_slice(&row[..len]);
            offsets.push(packed.len());
        }
        let h = self.forward_packed(&packed, &offsets)?.to_vec2::<f32>()?;
        let mut out = vec![0f32; b * s * hidden];
        for (i, w) in offsets.windows(2).enumerate() {
            for (j, r) in (w[0]..w[1]).enumerate() {
                out[(i * s + j) * hidden..][..hidden].copy_from_slice(&h[r]);
            }
        }
        Tensor::from_vec(out, (b, s, hidden), &Device::Cpu)
    }
}

/// Mean of the hidden states over the real tokens (mask 1), then L2-normalised: `(batch, hidden)`.
pub fn masked_mean_normalized(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, s, 1)
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (b, h)
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (b, 1)
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

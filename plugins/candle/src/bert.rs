//! A BERT encoder (the all-MiniLM-L6-v2 family) written for inference on CPU.
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (the tests compare the two),
//! with these differences:
//! - weights come from a [`WeightSource`]: an F32 safetensors file, or a GGUF file written by
//!   `model.quantize` whose linear layers are quantized (run as quantized matmuls);
//! - the query, key and value projections are one fused matmul, the `1/sqrt(head_dim)` scale
//!   is folded into the query weights at load time;
//! - softmax is candle-nn's fused last-dimension kernel (`softmax_last_dim`) and layer norm
//!   its fused kernel (`ops::layer_norm`);
//! - the attention mask is an additive `(batch, 1, 1, seq)` tensor built once per batch.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};
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

/// A dense layer `y = x W^T + b`: F32 weights, or a quantized matmul.
#[derive(Clone)]
pub enum Linear {
    F32 { weight_t: Tensor, bias: Tensor },
    Quantized { weight: QMatMul, bias: Tensor },
}

impl Linear {
    /// Apply to a 2-D `(rows, in)` input.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::F32 { weight_t, bias } => x.matmul(weight_t)?.broadcast_add(bias),
            Self::Quantized { weight, bias } => weight.forward(x)?.broadcast_add(bias),
        }
    }

    /// Load one layer; `prefixes` are concatenated along the output dimension (fused QKV),
    /// each scaled by its factor (the attention scale folded into the query).
    fn load(src: &WeightSource, prefixes: &[(&str, f64)]) -> Result<Self> {
        let quantized = prefixes.iter().all(|(p, _)| src.is_quantized(&format!("{p}.weight")));
        let mut biases = Vec::new();
        for (p, scale) in prefixes {
            biases.push((src.tensor(&format!("{p}.bias"))? * *scale)?);
        }
        let bias = Tensor::cat(&biases, 0)?;
        if quantized && prefixes.len() == 1 && prefixes[0].1 == 1.0 {
            let q = src.qtensor(&format!("{}.weight", prefixes[0].0)).expect("checked above");
            return Ok(Self::Quantized { weight: QMatMul::from_arc(q)?, bias });
        }
        let mut weights = Vec::new();
        for (p, scale) in prefixes {
            weights.push((src.tensor(&format!("{p}.weight"))? * *scale)?);
        }
        let weight = Tensor::cat(&weights, 0)?;
        if quantized {
            // Fused or scaled quantized weights are requantized to the stored type.
            let dtype = src.qtensor(&format!("{}.weight", prefixes[0].0)).expect("checked").dtype();
            let q = QTensor::quantize(&weight, dtype)?;
            return Ok(Self::Quantized { weight: QMatMul::from_qtensor(q)?, bias });
        }
        Ok(Self::F32 { weight_t: weight.t()?.contiguous()?, bias })
    }
}

#[derive(Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(src: &WeightSource, prefix: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: src.tensor(&format!("{prefix}.weight"))?,
            bias: src.tensor(&format!("{prefix}.bias"))?,
            eps: eps as f32,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

#[derive(Clone)]
struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The encoder: embeddings, then `num_hidden_layers` transformer layers.
#[derive(Clone)]
pub struct Bert {
    pub config: Config,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
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
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: Linear::load(
                    src,
                    &[
                        (&format!("{p}.attention.self.query"), scale),
                        (&format!("{p}.attention.self.key"), 1.0),
                        (&format!("{p}.attention.self.value"), 1.0),
                    ],
                )?,
                attn_out: Linear::load(src, &[(&format!("{p}.attention.output.dense"), 1.0)])?,
                attn_norm: LayerNorm::load(src, &format!("{p}.attention.output.LayerNorm"), eps)?,
                intermediate: Linear::load(src, &[(&format!("{p}.intermediate.dense"), 1.0)])?,
                output: Linear::load(src, &[(&format!("{p}.output.dense"), 1.0)])?,
                out_norm: LayerNorm::load(src, &format!("{p}.output.LayerNorm"), eps)?,
            });
        }
        let bert = Self {
            config: config.clone(),
            word_embeddings: src.tensor("embeddings.word_embeddings.weight")?,
            position_embeddings: src.tensor("embeddings.position_embeddings.weight")?,
            token_type_embeddings: src.tensor("embeddings.token_type_embeddings.weight")?,
            embed_norm: LayerNorm::load(src, "embeddings.LayerNorm", eps)?,
            layers,
            gelu_approximate,
        };
        let (v, h) = bert.word_embeddings.dims2()?;
        if v != config.vocab_size || h != config.hidden_size {
            candle_core::bail!(
                "word embeddings are {v}x{h}, config says {}x{}",
                config.vocab_size,
                config.hidden_size
            );
        }
        Ok(bert)
    }

    /// Hidden states `(batch, seq, hidden)` for `input_ids` `(batch, seq)` (u32) and the
    /// `mask` `(batch, seq)` (1 = token, 0 = padding). Token types are all 0.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = hidden / heads;

        let ids = input_ids.flatten_all()?;
        let x = self.word_embeddings.index_select(&ids, 0)?.reshape((b, s, hidden))?;
        let x = x.broadcast_add(&self.position_embeddings.narrow(0, 0, s)?)?;
        let x = x.broadcast_add(&self.token_type_embeddings.narrow(0, 0, 1)?)?;
        let mut x = self.embed_norm.forward(&x.reshape((b * s, hidden))?)?;

        // 0 where there is a token, a large negative number on padding.
        let additive_mask = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?.reshape((b, 1, 1, s))?;

        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?.reshape((b, s, 3, heads, head_dim))?;
            let q = qkv.narrow(2, 0, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?;
            let k = qkv.narrow(2, 1, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?;
            let v = qkv.narrow(2, 2, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&additive_mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * s, hidden))?;
            let attn = layer.attn_out.forward(&ctx)?;
            let x1 = layer.attn_norm.forward(&(attn + &x)?)?;
            let inter = layer.intermediate.forward(&x1)?;
            let inter = if self.gelu_approximate { inter.gelu()? } else { inter.gelu_erf()? };
            let out = layer.output.forward(&inter)?;
            x = layer.out_norm.forward(&(out + &x1)?)?;
        }
        x.reshape((b, s, hidden))
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

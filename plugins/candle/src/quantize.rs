//! F32 safetensors BERT -> GGUF with quantized linear layers (`model.quantize`).
//!
//! Every 2-D `*.weight` tensor whose rows are a whole number of 32-element blocks is
//! quantized (the six linear layers of each transformer layer, and the word/position/token
//! type embeddings, which are dequantized again at load time); layer norms and biases stay
//! F32. The BERT `config.json` is stored in the metadata under `bert.config_json`, and the
//! file is written next to the source as `model-<dtype>.gguf` (through a temporary file and
//! a rename). It loads again with `model.load` (as an embedding model: quantized matmuls for
//! the linear layers), using the folder's `tokenizer.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::embed::{cosine, EmbeddingModel, GGUF_CONFIG_KEY};
use crate::error::{candle_msg, Error, Result};

/// The GGUF types `model.quantize` offers.
pub fn parse_dtype(name: &str) -> Result<GgmlDType> {
    match name {
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        "q4_1" => Ok(GgmlDType::Q4_1),
        "q5_0" => Ok(GgmlDType::Q5_0),
        "f16" => Ok(GgmlDType::F16),
        other => Err(Error::bad_request(format!(
            "unsupported dtype {other:?}: use q8_0, q4_0, q4_1, q5_0 or f16"
        ))),
    }
}

/// What `model.quantize` takes, the start of each of its refusals of a model.
pub const QUANTIZABLE: &str = "model.quantize takes a BERT-style embedding model stored as F32 \
     safetensors (a folder with config.json and model.safetensors, e.g. \
     sentence-transformers/all-MiniLM-L6-v2)";

/// Why a chat model cannot be quantized: it is a llama-family GGUF, already quantized.
pub fn chat_model_refusal(name: &str, file: &str, weights: &str) -> Error {
    Error::bad_request(format!(
        "{QUANTIZABLE}; `{name}` is a chat model, read from the GGUF file {file} whose weights \
         are already quantized ({weights}), so there is nothing to quantize: load it as it is"
    ))
}

/// Check that `dir` (shown as `rel`) holds what [`quantize_dir`] reads, before reading it: a
/// clear refusal for a GGUF (already quantized) or a folder without an F32 BERT.
pub fn check_source(dir: &Path, rel: &str) -> Result<()> {
    if dir.is_file() {
        let why = if dir.extension().is_some_and(|x| x == "gguf") {
            "is a GGUF file, already quantized"
        } else {
            "is a file, not a model folder"
        };
        return Err(Error::bad_request(format!("{QUANTIZABLE}; {rel} {why}")));
    }
    let missing: Vec<&str> = ["config.json", "model.safetensors"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let has_gguf = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "gguf"))
    });
    let why = if has_gguf {
        " (it holds a GGUF model, which is already quantized: load it as it is)"
    } else {
        ""
    };
    Err(Error::bad_request(format!(
        "{QUANTIZABLE}; {rel} has no {}{why}",
        missing.join(" and no ")
    )))
}

pub struct Written {
    pub path: PathBuf,
    pub size_before: u64,
    pub size_after: u64,
    pub quantized_tensors: usize,
    pub f32_tensors: usize,
}

/// Quantize `<dir>/model.safetensors` (with `<dir>/config.json`) into `<dir>/model-<dtype>.gguf`.
pub fn quantize_dir(dir: &Path, dtype_name: &str) -> Result<Written> {
    quantize_dir_until(dir, dtype_name, &|| false)
}

/// [`quantize_dir`] that polls `cancelled` before each tensor and before writing, and stops
/// with a cancelled error (writing nothing) once it says true.
pub fn quantize_dir_until(
    dir: &Path,
    dtype_name: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Written> {
    let dtype = parse_dtype(dtype_name)?;
    check_source(dir, &dir.display().to_string())?;
    let src = dir.join("model.safetensors");
    let config_path = dir.join("config.json");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::bad_request(format!("{}: {e}", config_path.display())))?;
    let size_before = std::fs::metadata(&src)
        .map_err(|e| Error::bad_request(format!("{}: {e}", src.display())))?
        .len();
    let tensors = candle_core::safetensors::load(&src, &Device::Cpu)
        .map_err(|e| Error::bad_request(format!("{}: {}", src.display(), candle_msg(&e))))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();

    let mut qtensors = Vec::with_capacity(names.len());
    let (mut quantized, mut kept) = (0, 0);
    for name in names {
        if cancelled() {
            return Err(Error::cancelled());
        }
        let t = tensors[name].to_dtype(candle_core::DType::F32).map_err(internal)?;
        let quantize = name.ends_with(".weight")
            && !name.contains("LayerNorm")
            && t.rank() == 2
            && t.dim(1).map_err(internal)?.is_multiple_of(dtype.block_size());
        let q = if quantize {
            quantized += 1;
            QTensor::quantize(&t, dtype)
        } else {
            kept += 1;
            QTensor::quantize(&t, GgmlDType::F32)
        }
        .map_err(internal)?;
        let name = name.strip_prefix("bert.").unwrap_or(name).to_string();
        qtensors.push((name, q));
    }

    let arch = gguf_file::Value::String("bert".into());
    let config_value = gguf_file::Value::String(config);
    let source = gguf_file::Value::String("model.safetensors".into());
    let metadata = [
        ("general.architecture", &arch),
        (GGUF_CONFIG_KEY, &config_value),
        ("bkg.quantized_from", &source),
    ];
    if cancelled() {
        return Err(Error::cancelled());
    }
    let refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join(format!("model-{dtype_name}.gguf"));
    let tmp = dir.join(format!(".model-{dtype_name}.gguf.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        gguf_file::write(&mut file, &metadata, &refs).map_err(std::io::Error::other)?;
        file.flush()?;
        file.get_ref().sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::internal(format!("writing {}: {e}", path.display())));
    }
    let size_after = std::fs::metadata(&path).map_err(|e| Error::internal(e.to_string()))?.len();
    Ok(Written { path, size_before, size_after, quantized_tensors: quantized, f32_tensors: kept })
}

fn internal(e: candle_core::Error) -> Error {
    Error::internal(candle_msg(&e))
}

/// Twenty sentences of varied topics and lengths for the agreement check.
pub const AGREEMENT_SENTENCES: [&str; 20] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market crashed today.",
    "A woman is playing the violin.",
    "Two children are riding horses on the beach at sunset.",
    "The new phone has a better camera and a longer battery life.",
    "It will rain heavily in the north of the country tomorrow.",
    "Quantum computers use qubits instead of classical bits.",
    "She forgot her umbrella at the train station.",
    "The recipe calls for two cups of flour and three eggs.",
    "Our team won the championship after a dramatic penalty shootout.",
    "The museum opens at nine and closes at five on weekdays.",
    "A cat is sleeping on the warm windowsill.",
    "Interest rates were raised by a quarter of a percentage point.",
    "He is learning to program in Rust during the holidays.",
    "The volcano erupted, sending ash several kilometres into the sky.",
    "Please remember to water the plants while I am away.",
    "The committee postponed its decision until next month.",
    "A guitarist tunes his instrument before the concert begins.",
    "Fresh vegetables are sold at the market every Saturday morning.",
];

pub struct Agreement {
    pub min_cosine: f32,
    pub mean_cosine: f32,
    pub sentences: usize,
}

/// Cosine between the two models' embeddings of the same sentences.
pub fn agreement(a: &EmbeddingModel, b: &EmbeddingModel, sentences: &[&str]) -> Result<Agreement> {
    let texts: Vec<String> = sentences.iter().map(|s| s.to_string()).collect();
    let ea = a.embed(&texts, 32)?;
    let eb = b.embed(&texts, 32)?;
    let cos: Vec<f32> = ea.vectors.iter().zip(&eb.vectors).map(|(x, y)| cosine(x, y)).collect();
    Ok(Agreement {
        min_cosine: cos.iter().cloned().fold(f32::INFINITY, f32::min),
        mean_cosine: cos.iter().sum::<f32>() / cos.len().max(1) as f32,
        sentences: cos.len(),
    })
}

//! TensorFlow.js weights: a `*-weights_manifest.json` and its binary shards, as face-api ships
//! them. The manifest is a list of groups `{paths: [shard], weights: [{name, shape, dtype,
//! quantization?}]}`; a group's shards, concatenated, hold its tensors back to back in the
//! listed order. Stored dtypes: `float32` as is, `int32` converted, and quantized tensors
//! (`quantization: {dtype: uint8 | uint16, scale, min}`: `q * scale + min`; `{dtype: float16}`).
//!
//! Everything is read and dequantized once in [`Weights::open`]; the accessors hand out f32
//! data: [`Weights::raw`] borrowed as stored, [`Weights::tensor`] as a candle tensor,
//! [`Weights::conv`] / [`Weights::depthwise`] reordered for the kernels. Every error names the
//! file, and the tensor where there is one.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bkg_abi::Error;
use candle_core::{Device, Tensor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<Quantization>,
}

#[derive(Debug, Deserialize)]
struct Quantization {
    dtype: String,
    #[serde(default)]
    scale: Option<f32>,
    #[serde(default)]
    min: Option<f32>,
}

/// One tensor, dequantized.
#[derive(Debug, Clone)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model's weights, read from its manifest and shards.
#[derive(Debug)]
pub struct Weights {
    /// The manifest's path.
    pub manifest: PathBuf,
    names: Vec<String>,
    tensors: HashMap<String, Stored>,
    /// Bytes of the shards as stored.
    pub bytes: u64,
}

/// Reads one stored element.
type Decode = Box<dyn Fn(&[u8]) -> f32>;

fn elements(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

impl Weights {
    /// Read `<dir>/<stem>-weights_manifest.json` and its shards (paths relative to `dir`).
    pub fn open(dir: &Path, stem: &str) -> Result<Weights, Error> {
        let manifest = dir.join(format!("{stem}-weights_manifest.json"));
        let text = std::fs::read(&manifest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!(
                    "model weights {} not found (scripts/fetch-models.sh lays them out)",
                    manifest.display()
                ))
            } else {
                Error::internal(format!("read {}: {e}", manifest.display()))
            }
        })?;
        let groups: Vec<Group> = serde_json::from_slice(&text).map_err(|e| {
            Error::internal(format!("{}: not a weights manifest: {e}", manifest.display()))
        })?;
        let mut names = Vec::new();
        let mut tensors = HashMap::new();
        let mut bytes = 0u64;
        for group in groups {
            let mut buf = Vec::new();
            for p in &group.paths {
                let rel = Path::new(p);
                if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                    return Err(Error::internal(format!(
                        "{}: shard path '{p}' leaves the model's folder",
                        manifest.display()
                    )));
                }
                let shard = dir.join(rel);
                let data = std::fs::read(&shard).map_err(|e| {
                    Error::internal(format!(
                        "{}: shard {} cannot be read: {e}",
                        manifest.display(),
                        shard.display()
                    ))
                })?;
                buf.extend_from_slice(&data);
            }
            bytes += buf.len() as u64;
            let shards = group.paths.join(", ");
            let mut at = 0usize;
            for w in group.weights {
                let n = elements(&w.shape);
                let what = |m: String| {
                    Error::internal(format!(
                        "{} (shards {shards}), tensor '{}': {m}",
                        manifest.display(),
                        w.name
                    ))
                };
                let (width, decode): (usize, Decode) = match (&w.quantization, w.dtype.as_str()) {
                    (None, "float32") => {
                        (4, Box::new(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    }
                    (None, "int32") => {
                        (4, Box::new(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32))
                    }
                    (Some(q), dtype @ ("float32" | "int32")) => {
                        let (scale, min) = (q.scale.unwrap_or(1.0), q.min.unwrap_or(0.0));
                        // tfjs rounds a quantized int32 tensor (ssd_mobilenetv1 has a few).
                        let int = dtype == "int32";
                        let deq = move |v: f32| {
                            if int {
                                (v * scale + min).round()
                            } else {
                                v * scale + min
                            }
                        };
                        match q.dtype.as_str() {
                            "uint8" => (1, Box::new(move |b| deq(b[0] as f32))),
                            "uint16" => {
                                (2, Box::new(move |b| deq(u16::from_le_bytes([b[0], b[1]]) as f32)))
                            }
                            "float16" => {
                                (2, Box::new(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))))
                            }
                            other => {
                                return Err(what(format!("unknown quantization dtype '{other}'")))
                            }
                        }
                    }
                    (_, other) => return Err(what(format!("unknown dtype '{other}'"))),
                };
                let end = at + n * width;
                if end > buf.len() {
                    return Err(what(format!(
                        "the shards are too short: the tensor needs bytes {at}..{end}, they hold {}",
                        buf.len()
                    )));
                }
                let data: Vec<f32> = buf[at..end].chunks_exact(width).map(&decode).collect();
                at = end;
                if tensors.insert(w.name.clone(), Stored { shape: w.shape, data }).is_some() {
                    return Err(what("named twice".into()));
                }
                names.push(w.name);
            }
            if at != buf.len() {
                return Err(Error::internal(format!(
                    "{}: the shards {shards} hold {} bytes, the manifest describes {at}",
                    manifest.display(),
                    buf.len()
                )));
            }
        }
        Ok(Weights { manifest, names, tensors, bytes })
    }

    /// The tensors' names, in the manifest's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parameters: elements of all tensors.
    pub fn parameters(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    fn missing(&self, name: &str) -> Error {
        Error::internal(format!("{}: no tensor '{name}'", self.manifest.display()))
    }

    /// A tensor as stored (f32, the manifest's shape).
    pub fn raw(&self, name: &str) -> Result<&Stored, Error> {
        self.tensors.get(name).ok_or_else(|| self.missing(name))
    }

    /// A tensor as stored, checked against an expected shape.
    pub fn raw_shaped(&self, name: &str, shape: &[usize]) -> Result<&Stored, Error> {
        let t = self.raw(name)?;
        if t.shape != shape {
            return Err(Error::internal(format!(
                "{}: tensor '{name}' has shape {:?}, expected {shape:?}",
                self.manifest.display(),
                t.shape
            )));
        }
        Ok(t)
    }

    /// A tensor as stored, as a candle tensor on the CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor, Error> {
        let t = self.raw(name)?;
        self.to_candle(name, t.data.clone(), &t.shape)
    }

    fn to_candle(&self, name: &str, data: Vec<f32>, shape: &[usize]) -> Result<Tensor, Error> {
        Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| {
            Error::internal(format!("{}: tensor '{name}': {e}", self.manifest.display()))
        })
    }

    fn rank4(&self, name: &str) -> Result<(&Stored, [usize; 4]), Error> {
        let t = self.raw(name)?;
        match t.shape[..] {
            [a, b, c, d] => Ok((t, [a, b, c, d])),
            _ => Err(Error::internal(format!(
                "{}: tensor '{name}' has shape {:?}, expected a 4-d filter",
                self.manifest.display(),
                t.shape
            ))),
        }
    }

    /// A conv filter stored HWIO, as (OIHW data, [o, i, h, w]).
    pub fn conv_data(&self, name: &str) -> Result<(Vec<f32>, [usize; 4]), Error> {
        let (t, [h, w, i, o]) = self.rank4(name)?;
        let mut out = vec![0f32; t.data.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..i {
                    let src = ((y * w + x) * i + c) * o;
                    for k in 0..o {
                        out[((k * i + c) * h + y) * w + x] = t.data[src + k];
                    }
                }
            }
        }
        Ok((out, [o, i, h, w]))
    }

    /// A conv filter stored HWIO, as a candle tensor OIHW.
    pub fn conv(&self, name: &str) -> Result<Tensor, Error> {
        let (data, shape) = self.conv_data(name)?;
        self.to_candle(name, data, &shape)
    }

    /// A depthwise filter stored H-W-C-M (M = 1), as (C-M-H-W data, [c, m, h, w]).
    pub fn depthwise_data(&self, name: &str) -> Result<(Vec<f32>, [usize; 4]), Error> {
        let (t, [h, w, c, m]) = self.rank4(name)?;
        let mut out = vec![0f32; t.data.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    for k in 0..m {
                        out[((ch * m + k) * h + y) * w + x] =
                            t.data[((y * w + x) * c + ch) * m + k];
                    }
                }
            }
        }
        Ok((out, [c, m, h, w]))
    }

    /// A depthwise filter stored H-W-C-1, as a candle tensor C-1-H-W.
    pub fn depthwise(&self, name: &str) -> Result<Tensor, Error> {
        let (data, shape) = self.depthwise_data(name)?;
        self.to_candle(name, data, &shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn face_api_dir() -> Option<PathBuf> {
        let dir = crate::default_models_dir().join(crate::api::FACE_API_DIR);
        if dir.join("face_recognition_model.bin").is_file() {
            Some(dir)
        } else {
            eprintln!("skipped: no face-api weights (scripts/fetch-models.sh)");
            None
        }
    }

    /// A model folder with one manifest `m` whose group lists `paths`, and the given files.
    fn model(manifest: serde_json::Value, files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("m-weights_manifest.json"), manifest.to_string()).unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn face_recognition_model_has_its_117_tensors() {
        let Some(dir) = face_api_dir() else { return };
        let w = Weights::open(&dir, "face_recognition_model").unwrap();
        assert_eq!(w.names().len(), 117);
        assert_eq!(w.parameters(), 5_614_592);
        assert_eq!(w.bytes, 6_444_032);
        assert_eq!(w.raw("conv32_down/conv/filters").unwrap().shape, [7, 7, 3, 32]);
        assert_eq!(w.raw("fc").unwrap().shape, [256, 128]);
        // uint8 dequantization: `q * scale + min`, so every value lies in [min, min + 255 scale]
        // and the scale layer's weights (min 5.79) are all positive.
        let sw = &w.raw("conv32_down/scale/weights").unwrap().data;
        assert!(sw.iter().all(|v| (5.788..=5.789 + 255.0 * 0.0682).contains(v)), "{sw:?}");
        // The other three models read too.
        for stem in ["ssd_mobilenetv1_model", "tiny_face_detector_model", "face_landmark_68_model"]
        {
            let w = Weights::open(&dir, stem).unwrap();
            assert!(w.names().len() > 10, "{stem}: {} tensors", w.names().len());
        }
    }

    #[test]
    fn uint8_is_dequantized_and_float32_read_as_is() {
        let mut bin = vec![0u8, 1, 255];
        bin.extend_from_slice(&1.5f32.to_le_bytes());
        let dir = model(
            serde_json::json!([{"paths": ["m.bin"], "weights": [
                {"name": "q", "shape": [3], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
                {"name": "f", "shape": [1], "dtype": "float32"}
            ]}]),
            &[("m.bin", &bin)],
        );
        let w = Weights::open(dir.path(), "m").unwrap();
        assert_eq!(w.raw("q").unwrap().data, [-1.0, -0.5, 126.5]);
        assert_eq!(w.raw("f").unwrap().data, [1.5]);
        assert_eq!(w.names(), ["q", "f"]);
        let t = w.tensor("q").unwrap();
        assert_eq!(t.dims(), [3]);
    }

    /// Regression: ssd_mobilenetv1's manifest has int32 tensors quantized to uint8; they were
    /// refused ("unknown dtype 'int32'"), so the SSD detector could not load. tfjs rounds them.
    #[test]
    fn quantized_int32_is_dequantized_and_rounded() {
        let dir = model(
            serde_json::json!([{"paths": ["m.bin"], "weights": [
                {"name": "i", "shape": [3], "dtype": "int32",
                 "quantization": {"dtype": "uint8", "scale": 0.3, "min": 1.0}}
            ]}]),
            &[("m.bin", &[0u8, 2, 6])],
        );
        let w = Weights::open(dir.path(), "m").unwrap();
        // 1.0, 1.6, 2.8 rounded.
        assert_eq!(w.raw("i").unwrap().data, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn conv_filters_turn_from_hwio_to_oihw() {
        // h=1, w=2, i=2, o=3; each value encodes its position: 100 x + 10 c + k.
        let (h, wd, i, o) = (1usize, 2usize, 2usize, 3usize);
        let mut bin = Vec::new();
        for _y in 0..h {
            for x in 0..wd {
                for c in 0..i {
                    for k in 0..o {
                        bin.extend_from_slice(&((x * 100 + c * 10 + k) as f32).to_le_bytes());
                    }
                }
            }
        }
        let dir = model(
            serde_json::json!([{"paths": ["m.bin"], "weights": [
                {"name": "c", "shape": [h, wd, i, o], "dtype": "float32"}
            ]}]),
            &[("m.bin", &bin)],
        );
        let w = Weights::open(dir.path(), "m").unwrap();
        let (data, shape) = w.conv_data("c").unwrap();
        assert_eq!(shape, [3, 2, 1, 2]);
        // OIHW: index ((k * i + c) * h + y) * w + x.
        for k in 0..o {
            for c in 0..i {
                for x in 0..wd {
                    assert_eq!(data[(k * i + c) * wd + x], (x * 100 + c * 10 + k) as f32);
                }
            }
        }
        assert_eq!(w.conv("c").unwrap().dims(), [3, 2, 1, 2]);
        // Depthwise H-W-C-1 -> C-1-H-W.
        let (dw, dshape) = w.depthwise_data("c").unwrap();
        assert_eq!(dshape, [2, 3, 1, 2]);
        assert_eq!(dw[(3 + 2) * 2 + 1], 100.0 + 10.0 + 2.0); // c=1, m=2, x=1
    }

    fn err(dir: &tempfile::TempDir) -> String {
        Weights::open(dir.path(), "m").unwrap_err().message
    }

    #[test]
    fn errors_name_the_file_and_the_tensor() {
        let manifest = |paths: serde_json::Value| {
            serde_json::json!([{"paths": paths, "weights": [
                {"name": "a", "shape": [2], "dtype": "float32"},
                {"name": "b", "shape": [4], "dtype": "float32"}
            ]}])
        };
        // A short shard: the tensor that runs past its end is named.
        let dir = model(manifest(serde_json::json!(["m.bin"])), &[("m.bin", &[0u8; 12])]);
        let e = err(&dir);
        assert!(e.contains("'b'") && e.contains("m.bin") && e.contains("too short"), "{e}");
        // A missing shard.
        let dir = model(manifest(serde_json::json!(["m.bin", "m2.bin"])), &[("m.bin", &[0; 8])]);
        let e = err(&dir);
        assert!(e.contains("m2.bin") && e.contains("cannot be read"), "{e}");
        // A shard path leaving the folder.
        let dir = model(manifest(serde_json::json!(["../m.bin"])), &[]);
        let e = err(&dir);
        assert!(e.contains("../m.bin") && e.contains("leaves"), "{e}");
        // An unknown dtype.
        let dir = model(
            serde_json::json!([{"paths": ["m.bin"], "weights": [
                {"name": "s", "shape": [1], "dtype": "string"}]}]),
            &[("m.bin", &[0; 4])],
        );
        let e = err(&dir);
        assert!(e.contains("'s'") && e.contains("unknown dtype 'string'"), "{e}");
        // A long shard (bytes no tensor accounts for).
        let dir = model(manifest(serde_json::json!(["m.bin"])), &[("m.bin", &[0; 28])]);
        assert!(err(&dir).contains("hold 28 bytes"), "{}", err(&dir));
        // No manifest: 404 naming it.
        let e = Weights::open(dir.path(), "nope").unwrap_err();
        assert_eq!(e.kind, bkg_abi::ErrorKind::NOT_FOUND);
        assert!(e.message.contains("nope-weights_manifest.json"), "{}", e.message);
        // A shape mismatch is named by raw_shaped.
        let dir = model(manifest(serde_json::json!(["m.bin"])), &[("m.bin", &[0; 24])]);
        let w = Weights::open(dir.path(), "m").unwrap();
        let e = w.raw_shaped("b", &[2, 2]).unwrap_err().message;
        assert!(e.contains("'b'") && e.contains("[4]") && e.contains("[2, 2]"), "{e}");
        assert!(w.raw("zzz").unwrap_err().message.contains("'zzz'"));
    }
}

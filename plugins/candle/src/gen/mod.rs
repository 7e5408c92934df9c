//! The plugin's own generation path (issue 17): quantized kernels (`quant`) and the llama
//! forward pass (`model`), and the batch the generations of a model decode in (`batch`).

pub mod attention;
pub mod batch;
pub mod model;
pub mod quant;

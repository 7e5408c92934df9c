//! The plugin's own generation path (issue 17): quantized kernels (`quant`) and the llama
//! forward pass (`model`).

pub mod model;
pub mod quant;

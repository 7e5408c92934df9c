//! The plugin's own generation path (issue 17): quantized kernels (`quant`).

pub mod quant;

//! The networks (face-api's four models) and the kernels they share (`ops`).
//!
//! - [`recognition`]: the 128-d face descriptor (dlib's ResNet-34, face-api's port);
//! - [`landmarks`]: the 68-point landmark net;
//! - [`ops`]: the kernels on HWC `f32` buffers.

pub mod landmarks;
pub mod ops;
pub mod recognition;

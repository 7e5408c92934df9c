//! The networks (face-api's four models) and the kernels they share (`ops`).

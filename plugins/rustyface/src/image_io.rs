//! Decoding request images (filled in below).

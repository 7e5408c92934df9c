//! Errors are the SDK's: a kind (HTTP status) and a message.
pub use bkg_abi::Error;

pub type Result<T> = std::result::Result<T, Error>;

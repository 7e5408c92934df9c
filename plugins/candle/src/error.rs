//! Errors are the SDK's: a kind (HTTP status) and a message.
pub use bkg_abi::Error;

pub type Result<T> = std::result::Result<T, Error>;

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
pub fn candle_msg(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_msg(inner),
        other => other.to_string(),
    }
}

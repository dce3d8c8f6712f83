//! One error type for ckpt-candle, convertible to and from both libraries' errors.
//!
//! A candle program's functions return `candle_core::Result`, a ckpt program's
//! `ckpt::Result`; a training loop calls both. [`Error`] converts from either and into
//! either, so `?` works whichever of the three a function returns:
//!
//! ```
//! use candle_core::{Device, Tensor};
//!
//! // A candle function calling ckpt-candle:
//! fn to_file_tensor(t: &Tensor) -> candle_core::Result<ckpt::Tensor> {
//!     Ok(ckpt_candle::to_ckpt(t)?)
//! }
//! // A ckpt function calling ckpt-candle:
//! fn back(t: &ckpt::Tensor) -> ckpt::Result<Tensor> {
//!     Ok(ckpt_candle::to_candle(t, &Device::Cpu)?)
//! }
//! // A function returning ckpt-candle's result takes all three:
//! fn both() -> ckpt_candle::Result<Tensor> {
//!     let t = Tensor::new(&[1f32, 2.], &Device::Cpu)?;           // candle's error
//!     let c = ckpt::Tensor::from_slice(&[3f32], &[1])?;        // ckpt's error
//!     let _ = to_file_tensor(&t)?;
//!     Ok(back(&c)?)
//! }
//! assert_eq!(both()?.to_vec1::<f32>()?, [3.0]);
//! # Ok::<(), ckpt_candle::Error>(())
//! ```
//!
//! Within one function that returns `candle_core::Result`, a call to ckpt itself (not
//! ckpt-candle) needs `.map_err(ckpt_candle::Error::from)?`: Rust's orphan rule lets neither
//! crate convert the other's error. Returning [`Result`] avoids that.

/// Result alias of ckpt-candle's API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of ckpt (reading, writing or applying a checkpoint: it names the file and key)
/// or of candle (a tensor operation). Both are transparent: the message and the causes
/// ([`std::error::Error::source`]) are the wrapped error's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint error: what file, what key or offset, what was expected.
    #[error(transparent)]
    Ckpt(#[from] ckpt::Error),
    /// A candle error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<Error> for candle_core::Error {
    /// A candle error is returned as it was; a ckpt error is wrapped with its whole chain of
    /// causes as the message (candle's wrapper keeps a message, not a source).
    fn from(e: Error) -> candle_core::Error {
        match e {
            Error::Candle(e) => e,
            Error::Ckpt(e) => candle_core::Error::Wrapped(Box::new(Chain(e))),
        }
    }
}

impl From<Error> for ckpt::Error {
    /// A ckpt error is returned as it was; a candle error becomes
    /// [`ckpt::Error::External`], from which it can be taken back with `downcast_ref`.
    fn from(e: Error) -> ckpt::Error {
        match e {
            Error::Ckpt(e) => e,
            Error::Candle(e) => ckpt::Error::external(e),
        }
    }
}

/// A ckpt error shown with its causes ([`ckpt::Error::report`]).
struct Chain(ckpt::Error);

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.report())
    }
}

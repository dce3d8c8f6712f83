//! # ckpt-burn
//!
//! Checkpoint a [burn](https://docs.rs/burn) training run with ckpt:
//!
//! - [`BurnModel`]: a burn `Module` as a ckpt [`ckpt::Model`]: its parameters as a state dict
//!   under torch's names and layouts ([`TorchNames`], burn-store's conventions), loaded back
//!   non-strictly with missing/unexpected/shape reports, from any file ckpt reads (torch zip
//!   or legacy `.pth`, Detectron pickles, safetensors), and through
//!   `ckpt::DetectionCheckpointer` with name matching;
//! - [`AdamW`] and [`Sgd`]: optimizers that compute what `torch.optim.AdamW` /
//!   `torch.optim.SGD` compute and checkpoint in exactly their `state_dict()` layout, so a
//!   burn run resumes from a PyTorch run's optimizer state and the other way round;
//! - [`StepLr`]: torch's `StepLR` schedule with its `state_dict()`, the `scheduler` of a
//!   checkpoint;
//! - [`to_ckpt`] / [`to_burn`]: tensor conversions that copy the elements once.

#![deny(missing_docs)]

mod convert;
mod module;
mod names;
mod optim;
mod scheduler;

pub use convert::{
    data_to_ckpt, dtype_to_ckpt, float_dtype_to_burn, to_burn, to_burn_data, to_ckpt,
};
pub use module::BurnModel;
pub use names::TorchNames;
pub use optim::{AdamW, AdamWConfig, Sgd, SgdConfig};
pub use scheduler::StepLr;

// The README's examples are compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! # ckpt-candle
//!
//! Checkpoint a [candle](https://docs.rs/candle-core) training run with ckpt, and load
//! pretrained weights into candle:
//!
//! - [`load_var_builder`] / [`load_tensors`] / [`Pretrained`]: the weights of any file ckpt
//!   reads (torch zip or legacy, Detectron pickles, safetensors) as a `candle_nn::VarBuilder`
//!   or candle tensors, on a device and dtype, in one call;
//! - [`VarMapModel`]: a `candle_nn::VarMap` as a ckpt [`ckpt::Model`] (its variables as a
//!   state dict, loaded back non-strictly with missing/unexpected/shape reports), in an
//!   order given by name ([`VarMapModel::with_order`]) or taken from a checkpoint
//!   ([`ParamOrder`]);
//! - [`AdamW`] and [`Sgd`]: `candle_nn::Optimizer`s that compute what `torch.optim.AdamW` /
//!   `torch.optim.SGD` compute and checkpoint in exactly their `state_dict()` layout, so
//!   optimizer state moves between a candle run and a PyTorch run ([`AdamW`] replaces
//!   `candle_nn::AdamW`, whose state cannot be saved);
//! - [`to_ckpt`] / [`to_candle`]: tensor conversions that copy the elements once;
//! - [`Error`]: one error type, converting to and from candle's and ckpt's, so `?` works
//!   in code that uses all three.
//!
//! Pretrained weights:
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! let vb = ckpt_candle::load_var_builder("model_final.pkl", DType::F32, &Device::Cpu)?;
//! let fc = candle_nn::linear(2048, 1000, vb.pp("fc"))?;
//! # Ok::<(), ckpt_candle::Error>(())
//! ```
//!
//! A training run that resumes after preemption:
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use candle_nn::{linear, VarBuilder, VarMap};
//! use ckpt::{shared, Checkpointer, PeriodicCheckpointer};
//! use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};
//! use candle_nn::Optimizer;
//!
//! let varmap = VarMap::new();
//! let fc = linear(4, 1, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("fc"))?;
//! let model = VarMapModel::new(varmap).with_order(["fc.weight", "fc.bias"])?;
//! let optimizer = shared(AdamW::from_model(&model, AdamWConfig::default())?);
//! let mut checkpointer = Checkpointer::new(shared(model), "output");
//! checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
//! let extra = checkpointer.resume_or_load(None, true)?;
//! let start = extra.get("iteration").and_then(|v| v.as_int()).map_or(0, |i| i as u64 + 1);
//! let mut periodic = PeriodicCheckpointer::builder(checkpointer)
//!     .period(100)
//!     .max_iter(1000)
//!     .max_to_keep(3)
//!     .build()?;
//! for iteration in start..1000 {
//!     // ... loss = ...; optimizer.lock().unwrap().backward_step(&loss)?;
//!     periodic.step(iteration, ckpt::Dict::new())?;
//! }
//! # Ok::<(), ckpt_candle::Error>(())
//! ```

#![deny(missing_docs)]

mod convert;
mod error;
mod names;
mod optim;
mod param_order;
mod pretrained;
mod varmap;

pub use convert::{candle_error, cast, dtype_to_candle, dtype_to_ckpt, to_candle, to_ckpt};
pub use error::{Error, Result};
pub use optim::{AdamW, AdamWConfig, Sgd, SgdConfig};
pub use param_order::ParamOrder;
pub use pretrained::{load_tensors, load_var_builder, Pretrained, Skipped, MODEL_ENTRY};
pub use varmap::VarMapModel;

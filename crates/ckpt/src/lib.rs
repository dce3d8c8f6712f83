//! # ckpt
//!
//! Deep-learning checkpoints for Rust: read and write the files PyTorch and the Detectron
//! model zoos use, and save, resume and load models the way detectron2's `Checkpointer`,
//! `PeriodicCheckpointer` and `DetectionCheckpointer` do, with atomic saves, zero-copy loads
//! and safe handling of hostile files.
//!
//! ```no_run
//! use ckpt::format::{load, save_torch, SaveOptions};
//! let value = load("model_final.pkl")?;
//! save_torch("model_final.pth", &value, &SaveOptions::default())?;
//! # Ok::<(), ckpt::Error>(())
//! ```

pub mod cast;
pub mod checkpointer;
pub mod detach;
pub mod detection;
pub mod dist;
pub mod dtype;
pub mod error;
pub mod format;
mod fresh;
pub mod incompatible;
pub mod matching;
pub mod model;
pub mod nn_module;
mod parallel;
pub mod periodic;
pub mod pickle;
pub mod resolve;
pub mod serde_value;
pub mod store;
pub mod tensor;
pub mod value;
pub mod walk;

pub use dtype::DType;
pub use error::{Error, Result};
pub use serde_value::{from_value, to_value};
pub use tensor::{AnonMemory, Buffer, Element, FileMap, Storage, Tensor};
pub use value::{Dict, DictKind, Key, Object, ObjectBuild, StateDict, Value};

pub use checkpointer::{CheckpointHooks, Checkpointer, DefaultHooks, LAST_CHECKPOINT};
pub use detection::DetectionCheckpointer;
pub use incompatible::{IncompatibleKeys, LoadReport};
pub use model::{
    shared, Checkpointable, LoadedKeys, Model, Serde, Shared, StateDictModel, TensorInfo,
};
pub use periodic::PeriodicCheckpointer;
pub use store::{LocalDir, Store};

// The README's Rust examples are compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

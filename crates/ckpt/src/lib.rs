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
//!
//! # Where things are
//!
//! The root holds the types a training program uses every day: the checkpointers
//! ([`Checkpointer`], [`PeriodicCheckpointer`], [`BestCheckpointer`],
//! [`DetectionCheckpointer`]), what they save
//! ([`Model`], [`Checkpointable`], [`StateDictModel`], [`Serde`]), what they report
//! ([`LoadReport`], [`IncompatibleKeys`]) and the data of a checkpoint ([`Value`], [`Dict`],
//! [`StateDict`], [`Tensor`], [`DType`]). The modules group the rest by task:
//!
//! - [`format`](mod@format): read any checkpoint file, write torch and safetensors files;
//! - [`walk`] and [`nn_module`]: look inside a loaded value;
//! - [`optim_state`]: the layout of a `torch.optim` optimizer's state dict, for optimizers
//!   written in Rust;
//! - [`matching`]: rename checkpoint keys to a model's (detectron2's heuristics, Caffe2 names);
//! - [`detection`]: what `DetectionCheckpointer` does to a file, and dry runs of a load;
//! - [`resolve`]: turn URLs and `detectron2://` names into local files;
//! - [`retention`]: which checkpoints a save directory keeps (composable policies, their
//!   state file);
//! - [`store`]: where a checkpointer keeps its files, and atomic writes;
//! - [`dist`]: the collectives of a job with several processes;
//! - [`pickle`]: the Python pickle reader and writer underneath.
#![deny(missing_docs)]

mod background;
mod best;
mod cast;
mod checkpointer;
mod detach;
pub mod detection;
pub mod dist;
mod dtype;
mod error;
pub mod format;
mod fresh;
mod incompatible;
pub mod matching;
mod model;
pub mod nn_module;
pub mod optim_state;
mod parallel;
mod partial;
mod periodic;
pub mod pickle;
pub mod resolve;
mod resume;
pub mod retention;
mod serde_value;
mod storage_check;
pub mod store;
mod tensor;
mod value;
pub mod walk;

pub use background::{SaveHandle, SnapshotMode};
pub use best::{BestCheckpointer, BestCheckpointerBuilder, BestOutcome};
pub use cast::{can_cast, cast_bytes};
pub use checkpointer::{CheckpointHooks, Checkpointables, Checkpointer, LAST_CHECKPOINT};
pub use detection::checkpointer::DetectionCheckpointer;
pub use dtype::DType;
pub use error::{Error, Result, TagProblem};
pub use incompatible::{
    DTypeMismatch, IncompatibleKeys, LoadReport, ShapeMismatch, SkippedCheckpoint,
};
pub use model::{
    load_non_strict, shared, Checkpointable, LoadedKeys, Model, Serde, Shared, StateDictModel,
    TensorInfo,
};
pub use periodic::{PeriodicCheckpointer, PeriodicCheckpointerBuilder};
pub use serde_value::{from_value, to_value};
pub use tensor::{Element, Storage, Tensor};
pub use value::{
    Dict, DictIntoIter, DictKind, Key, Object, ObjectBuild, StateDict, StateDictIntoIter, Value,
};

// The README's Rust examples are compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

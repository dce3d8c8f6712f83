//! What [`DetectionCheckpointer`](crate::DetectionCheckpointer) does to a checkpoint
//! before loading it, as functions of their own: how a file becomes a checkpoint dict by its
//! extension ([`read_detection_file`], [`FileKind`]), and a dry run of a load into a model
//! known only by its names and shapes ([`plan_load`], [`LoadPlan`]).
//!
//! ```no_run
//! use ckpt::detection::{plan_load, read_detection_file};
//! let checkpoint = read_detection_file("R-50.pkl".as_ref(), false)?;
//! let model = vec![("backbone.bottom_up.stem.conv1.weight".to_string(), vec![64, 3, 7, 7])];
//! let plan = plan_load(&model, checkpoint)?;
//! for m in &plan.matched {
//!     println!("{} <- {}", m.model_key, m.checkpoint_key);
//! }
//! # Ok::<(), ckpt::Error>(())
//! ```

pub(crate) mod checkpointer;
mod file;
mod share;
mod state;

pub use file::{detection_checkpoint, read_detection_file, FileKind};
pub use state::{plan_load, LoadPlan};

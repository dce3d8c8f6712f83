//! # ckpt-mpi
//!
//! Training across processes and machines with ckpt: [`MpiCommunicator`] is ckpt's
//! [`Communicator`](ckpt::dist::Communicator) over MPI (Open MPI or MPICH, through the `mpi`
//! crate), so that `DetectionCheckpointer`, `Checkpointer` and `PeriodicCheckpointer` work
//! unchanged in a job started by `mpirun -np N`:
//!
//! - rank 0 alone writes checkpoints, the `last_checkpoint` tag and the retention;
//! - resuming, rank 0 decides which checkpoint; every rank that can read the file reads its
//!   own copy, and when some cannot (node-local disks), rank 0 sends them the file, streamed
//!   from a memory map of it into the broadcast, so that every rank ends with identical
//!   model, optimizer, checkpointables and `iteration`;
//! - a failure on any rank inside those steps is an error on every rank, naming the rank.
//!
//! ```no_run
//! use ckpt::{shared, DetectionCheckpointer, PeriodicCheckpointer, StateDict, StateDictModel};
//! use ckpt_mpi::MpiCommunicator;
//!
//! let comm = MpiCommunicator::world()?;
//! let model = shared(StateDictModel::new(StateDict::new()));
//! let checkpointer = DetectionCheckpointer::new(model, "output").with_communicator(comm);
//! let extra = checkpointer.resume_or_load(None, true)?;
//! let start = extra.get("iteration").and_then(|i| i.as_int()).map_or(0, |i| i + 1);
//! let mut periodic = PeriodicCheckpointer::builder(checkpointer.into_checkpointer())
//!     .period(1000)
//!     .max_iter(90_000)
//!     .max_to_keep(3)
//!     .build()?;
//! for iteration in start as u64..90_000 {
//!     // ... one step of data-parallel training ...
//!     periodic.step(iteration, ckpt::Dict::new())?; // writes on rank 0 only
//! }
//! # Ok::<(), ckpt::Error>(())
//! ```

mod communicator;
mod launcher;

pub use communicator::{MpiCommunicator, DEFAULT_CHUNK, DEFAULT_EXIT_GRACE};

/// The `mpi` crate this communicator is built on, for the application's own collectives
/// (gradients) and for [`MpiCommunicator::new`].
pub use mpi;

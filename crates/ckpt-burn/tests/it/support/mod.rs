//! What the burn adapter's tests share: the `train_mlp` example, and (from `tests/support/`
//! at the repository root, shared with the other crates) fixture paths and the Python runner.
#![allow(dead_code)] // each test module uses a different subset

#[path = "../../../../../tests/support/paths.rs"]
pub mod paths;
#[path = "../../../../../tests/support/python.rs"]
pub mod python;

#[path = "../../../examples/burn_train_mlp.rs"]
pub mod train_mlp;

pub use paths::interop_script;

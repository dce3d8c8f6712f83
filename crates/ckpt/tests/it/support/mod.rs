//! What the integration tests of ckpt share: models, hand-built archives, the training
//! example, and (from `tests/support/` at the repository root, shared with the other crates)
//! fixture paths, log capture, the Python runner, the HTTP server and the random numbers.
#![allow(dead_code)] // each test module uses a different subset

#[path = "../../../../../tests/support/http.rs"]
pub mod http;
#[path = "../../../../../tests/support/logs.rs"]
pub mod logs;
#[path = "../../../../../tests/support/numpy_pickle.rs"]
pub mod numpy_pickle;
#[path = "../../../../../tests/support/paths.rs"]
pub mod paths;
#[path = "../../../../../tests/support/python.rs"]
pub mod python;
#[path = "../../../../../tests/support/rng.rs"]
pub mod rng;

pub mod archive;
pub mod models;
pub mod train;

pub use logs::{at, capture_logs, captured};
pub use models::*;
pub use paths::{fixture, fixture_bytes, interop_script, repo_file};

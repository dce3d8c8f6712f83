//! What the candle adapter's tests share: the `train_mlp` example, and (from `tests/support/`
//! at the repository root, shared with the other crates) fixture paths, log capture and the
//! Python runner.
#![allow(dead_code)] // each test module uses a different subset

#[path = "../../../../../tests/support/logs.rs"]
pub mod logs;
#[path = "../../../../../tests/support/paths.rs"]
pub mod paths;
#[path = "../../../../../tests/support/python.rs"]
pub mod python;

#[path = "../../../examples/train_mlp.rs"]
pub mod train_mlp;

pub use paths::{fixture, interop_script, repo_file};

/// What `f` logged at WARN or above on this thread, one `LEVEL message` line each.
pub fn warnings_during(f: impl FnOnce()) -> String {
    let ((), lines) = logs::captured(f);
    lines
        .iter()
        .filter(|(level, _)| *level <= tracing::Level::WARN)
        .map(|(level, message)| format!("{level} {message}\n"))
        .collect()
}

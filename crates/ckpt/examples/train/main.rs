//! Trains a small network with periodic checkpoints, and resumes after an interruption.
//!
//! ```text
//! cargo run -p ckpt --example train -- OUTPUT_DIR [--max-iter 200] [--period 20]
//!                                      [--max-to-keep 3] [--stop-at N]
//! ```
//!
//! Run it, stop it with `--stop-at N` (a simulated preemption), run it again without
//! `--stop-at`: it resumes from the last checkpoint and ends with the same loss and weight
//! checksum as a run that was never interrupted.

mod driver;
mod mlp;
mod run;
mod sgd;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let defaults = driver::Config {
        save_dir: PathBuf::new(),
        max_iter: 200,
        period: 20,
        max_to_keep: Some(3),
        stop_at: None,
    };
    driver::main("train", defaults, run::run)
}

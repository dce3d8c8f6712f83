//! Whole-file comparison: `ckpt diff` of the big workload's torch file against its
//! safetensors conversion (every tensor compared element by element, float64), against
//! `torch.load` + safetensors `load_file` + `torch.allclose` per tensor on the same files.
//!
//! `ckpt diff` runs as its own process (the `ckpt` binary next to `ckpt-bench`), spawned by
//! a child of the benchmark so that its peak memory is its own (see [`crate::convert`]). The
//! comparison lives in the command, not the library, so without the binary there is no row.

use std::process::Command;

use crate::convert::{ckpt_binary, timed_child};
use crate::driver::{Case, Kind, Runner};
use crate::measure::Sample;
use crate::ops::Paths;

type BoxError = Box<dyn std::error::Error>;

/// The comparison rows of `workload`, `bytes` of tensor data in each file; none without the
/// `ckpt` binary.
pub fn cases(workload: &'static str, bytes: u64, paths: &Paths) -> Vec<Case> {
    if ckpt_binary().is_none() {
        return Vec::new();
    }
    let mut rows = vec![
        Case::new(
            workload,
            Kind::Diff,
            "ckpt",
            "`ckpt diff A.pth A.safetensors` (the command)",
            Runner::Rust("ckpt-diff"),
        ),
        Case::new(
            workload,
            Kind::Diff,
            "torch",
            "`torch.load(weights_only=True)` + safetensors `load_file` + `torch.allclose` per tensor",
            Runner::Python("torch-diff"),
        ),
    ];
    for case in &mut rows {
        case.bytes = bytes;
        case.warm = Some(paths.input(workload, "pth"));
    }
    rows
}

/// `ckpt diff` of the workload's torch file against its safetensors file: both hold the same
/// tensors, so the command must exit 0 (equal).
pub fn ckpt_diff(paths: &Paths, workload: &str) -> Result<Sample, BoxError> {
    let ckpt = ckpt_binary().ok_or("ckpt diff needs the ckpt binary beside ckpt-bench")?;
    timed_child(
        Command::new(ckpt)
            .arg("diff")
            .arg(paths.input(workload, "pth"))
            .arg(paths.input(workload, "safetensors"))
            .env_remove("RUST_LOG"),
    )
}

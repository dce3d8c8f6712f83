//! The integration tests of the `ckpt` command, in one test binary (one module per topic;
//! what they share is in `support`). They run the binary itself (`CARGO_BIN_EXE_ckpt`).
//!
//! The live PyTorch interop tests need `$CKPT_PYTHON` (see `scripts/setup-python.sh`).

mod support;

mod cli_convert;
mod cli_diff;
mod cli_errors;
mod cli_fuzz;
mod cli_inspect;
mod cli_inspect_views;
mod cli_ls;
mod cli_plan;
mod cli_sharded;
mod convert_memory;
mod interop_full_model;
mod interop_matrix;

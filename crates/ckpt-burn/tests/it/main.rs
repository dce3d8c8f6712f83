//! The integration tests of the burn adapter, in one test binary (one module per topic; what
//! they share is in `support`).
//!
//! The live PyTorch interop tests need `$CKPT_PYTHON` (see `scripts/setup-python.sh`).

mod support;

mod interop_torch;
mod model_state_dict;
mod optimizer_state;
mod train_resume;

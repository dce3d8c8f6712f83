//! The integration tests of the candle adapter, in one test binary (one module per topic;
//! what they share is in `support`).
//!
//! The live PyTorch interop tests need `$CKPT_PYTHON` (see `scripts/setup-python.sh`).

mod support;

mod candle_adamw;
mod error_conversions;
mod interop_torch;
mod interop_torch_sgd;
mod missing_gradients;
mod optimizer_param_order;
mod optimizer_state;
mod param_order;
mod pretrained;
mod train_resume;
mod varmap_round_trip;

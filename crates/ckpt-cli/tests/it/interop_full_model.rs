//! Live interop: models saved whole with `torch.save(model)` (a conv net with batch norm, a
//! transformer layer, an LSTM, a custom class with tied weights, one whose hook is a bound
//! method of itself, bfloat16) convert with `ckpt convert` to torch files that
//! `torch.load(weights_only=True)` opens and to safetensors, holding exactly
//! `model.state_dict()`; `ckpt inspect` names every tensor with its state-dict name. The
//! checks are in `tests/interop/full_model.py`.
//!
//! Python is `$CKPT_PYTHON`. Without it the test is skipped
//! loudly, except under `CI=true`, where it fails.

use crate::support::{interop_script, python};

#[test]
fn models_saved_whole_convert_to_the_state_dict_torch_computes() {
    let Some(python) = python::interop_python(
        "the whole-model conversion interop test",
        "torch, safetensors",
    ) else {
        return;
    };
    let script = interop_script("full_model.py");
    let workdir = tempfile::tempdir().unwrap();
    let last = python::run_script_last_line(
        &python,
        &script,
        &[
            "--ckpt",
            env!("CARGO_BIN_EXE_ckpt"),
            "--workdir",
            workdir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(last, "ok");
}

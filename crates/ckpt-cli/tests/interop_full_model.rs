//! Live interop: models saved whole with `torch.save(model)` (a conv net with batch norm, a
//! transformer layer, an LSTM, a custom class with tied weights, one whose hook is a bound
//! method of itself, bfloat16) convert with `ckpt convert` to torch files that
//! `torch.load(weights_only=True)` opens and to safetensors, holding exactly
//! `model.state_dict()`; `ckpt inspect` names every tensor with its state-dict name. The
//! checks are in `tests/interop/full_model.py`.
//!
//! Python is `$CKPT_PYTHON` (default: the project venv). Without it the test is skipped
//! loudly, except under `CI=true`, where it fails.

use std::path::Path;

#[path = "../../../tests/support/python.rs"]
mod python_support;

#[test]
fn models_saved_whole_convert_to_the_state_dict_torch_computes() {
    let Some(python) = python_support::interop_python(
        "the whole-model conversion interop test",
        "torch, safetensors",
    ) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/full_model.py");
    let workdir = tempfile::tempdir().unwrap();
    let last = python_support::run_script_last_line(
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

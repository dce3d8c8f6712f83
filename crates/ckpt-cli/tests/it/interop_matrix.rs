//! Live interop with PyTorch: runs `tests/interop/matrix.py` against the `ckpt` binary.
//!
//! The matrix saves every case with torch, converts it with `ckpt`, and checks that torch
//! (`weights_only=True`, warnings as errors, with and without mmap) and safetensors load exactly
//! what was saved. Python comes from `CKPT_PYTHON` (`scripts/setup-python.sh` makes
//! it). Without Python and torch the test is skipped with a loud message, except under
//! `CI=true`, where that is a failure.

use std::process::{Command, Stdio};

use crate::support::{interop_script, python};

#[test]
fn torch_files_survive_ckpt_convert_and_load_back_in_torch() {
    let Some(python) =
        python::interop_python("the PyTorch interop matrix", "torch, numpy, safetensors")
    else {
        return;
    };

    let script = interop_script("matrix.py");
    let workdir = tempfile::tempdir().expect("a temporary directory for the matrix");
    // The matrix prints one line per case; let it reach the terminal as it runs.
    let status = Command::new(&python)
        .arg(&script)
        .arg("--ckpt")
        .arg(env!("CARGO_BIN_EXE_ckpt"))
        .arg("--workdir")
        .arg(workdir.path())
        .stdin(Stdio::null())
        .status()
        .expect("the interop matrix script starts");
    assert!(
        status.success(),
        "the PyTorch interop matrix failed ({status}); its FAIL lines above say which cases and why"
    );
}

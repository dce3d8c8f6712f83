//! Live interop with PyTorch: runs `tests/interop/matrix.py` against the `ckpt` binary.
//!
//! The matrix saves every case with torch, converts it with `ckpt`, and checks that torch
//! (`weights_only=True`, warnings as errors, with and without mmap) and safetensors load exactly
//! what was saved. Python comes from `CKPT_PYTHON` (default: the venv `scripts/setup-python.sh`
//! makes). Without Python and torch the test is skipped with a loud message, except under
//! `CI=true`, where that is a failure.

use std::env;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn python() -> PathBuf {
    if let Some(path) = env::var_os("CKPT_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let cache = env::var_os("CKPT_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cache/ckpt")))
        .unwrap_or_else(|| PathBuf::from(".cache/ckpt"));
    cache.join("venv/bin/python")
}

fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Why the interop test cannot run here, if it cannot.
fn missing_python(python: &Path) -> Option<String> {
    let probe = Command::new(python)
        .args(["-c", "import torch, numpy, safetensors"])
        .output();
    match probe {
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
        Ok(out) if !out.status.success() => Some(format!(
            "{} cannot import torch, numpy and safetensors: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no error message")
        )),
        Ok(_) => None,
    }
}

#[test]
fn torch_files_survive_ckpt_convert_and_load_back_in_torch() {
    let python = python();
    if let Some(why) = missing_python(&python) {
        let hint = "run scripts/setup-python.sh and set CKPT_PYTHON to the python it prints";
        if in_ci() {
            panic!("interop tests must run in CI, but {why} ({hint})");
        }
        // Straight to stderr: libtest hides `eprintln!` output of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPING the PyTorch interop matrix: {why} ({hint})"
        );
        return;
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/matrix.py");
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

//! The Python interpreter with torch for the live interop tests, shared by the tests of every
//! crate (`#[path = "../../../tests/support/python.rs"] mod python;`).
//!
//! It is `$CKPT_PYTHON`, else the venv `scripts/setup-python.sh` makes under
//! `${CKPT_CACHE:-$HOME/.cache/ckpt}`. When it cannot import what a test needs, the test is
//! skipped with a loud message, except under `CI=true`, where that is a failure.
#![allow(dead_code)] // each test uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter if it imports every module of `modules` (a Python import list such as
/// `"torch, fvcore.common.checkpoint"`); otherwise panics under CI or returns `None` after
/// saying on stderr why `test` is skipped.
pub fn interop_python(test: &str, modules: &str) -> Option<PathBuf> {
    let python = configured_python();
    let why = match Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
    {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => format!(
            "{} cannot import {modules}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no error message")
        ),
        Err(e) => format!("cannot run {}: {e}", python.display()),
    };
    let hint = "run scripts/setup-python.sh and set CKPT_PYTHON to the python it prints";
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} must run in CI, but {why} ({hint})");
    }
    // Straight to stderr: libtest hides the output of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPING {test}: {why} ({hint})");
    None
}

fn configured_python() -> PathBuf {
    if let Some(path) = std::env::var_os("CKPT_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("CKPT_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/ckpt")))
        .unwrap_or_else(|| PathBuf::from(".cache/ckpt"));
    cache.join("venv/bin/python")
}

/// Runs `python script args...`, fails the test with Python's stderr if it fails, and returns
/// the last line it printed (the interop scripts print their result as one JSON line).
pub fn run_script_last_line(python: &Path, script: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "python {} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the script printed a result")
        .to_string()
}

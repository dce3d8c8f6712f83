//! The Python interpreter with torch for the live interop tests: `$CKPT_PYTHON`
//! (`scripts/setup-python.sh` makes a venv and prints its python).
//!
//! When it is not set, or cannot import what a test needs, the test is skipped with a loud
//! message, except under `CI=true`, where that is a failure.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The interpreter if it imports every module of `modules` (a Python import list such as
/// `"torch, fvcore.common.checkpoint"`); otherwise panics under CI or returns `None` after
/// saying on stderr why `test` is skipped.
pub fn interop_python(test: &str, modules: &str) -> Option<PathBuf> {
    let why = match importing(modules) {
        Ok(python) => return Some(python),
        Err(why) => why,
    };
    let hint = "run scripts/setup-python.sh and set CKPT_PYTHON to the python it prints";
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} must run in CI, but {why} ({hint})");
    }
    // Straight to stderr: libtest hides the output of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPING {test}: {why} ({hint})");
    None
}

/// `$CKPT_PYTHON` if it imports `modules`, else why not. Asked once per import list: a
/// Python that imports torch takes a second or two to start.
fn importing(modules: &str) -> Result<PathBuf, String> {
    static ASKED: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let asked = ASKED.get_or_init(Mutex::default);
    if let Some(answer) = asked.lock().unwrap().get(modules) {
        return answer.clone();
    }
    let answer = check_imports(modules);
    asked
        .lock()
        .unwrap()
        .insert(modules.to_string(), answer.clone());
    answer
}

fn check_imports(modules: &str) -> Result<PathBuf, String> {
    let Some(python) = std::env::var_os("CKPT_PYTHON").filter(|p| !p.is_empty()) else {
        return Err("CKPT_PYTHON is not set".to_string());
    };
    let python = PathBuf::from(python);
    match Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
    {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import {modules}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no error message")
        )),
        Err(e) => Err(format!("cannot run {}: {e}", python.display())),
    }
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

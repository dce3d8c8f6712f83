//! What the CLI tests share: running the `ckpt` binary, its fixtures and error contract, and
//! (from `tests/support/` at the repository root, shared with the other crates) repository
//! fixtures, the Python runner, the HTTP server and the random numbers.
#![allow(dead_code)] // each test module uses a different subset

#[path = "../../../../../tests/support/http.rs"]
pub mod http;
#[path = "../../../../../tests/support/numpy_pickle.rs"]
pub mod numpy_pickle;
#[path = "../../../../../tests/support/paths.rs"]
pub mod paths;
#[path = "../../../../../tests/support/python.rs"]
pub mod python;
#[path = "../../../../../tests/support/rng.rs"]
pub mod rng;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use paths::{fixture as repo_fixture, interop_script};

/// Runs `ckpt` with `args`, logging left at its default.
pub fn ckpt<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the ckpt binary runs")
}

/// This package's example `name`, which `cargo test` builds beside the test binary (in
/// `target/debug/examples`); `cargo test --test it` alone does not, and then the test fails
/// saying how to build it.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/it-HASH -> target/debug/examples/NAME
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/PROFILE/deps")
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo test -p ckpt-cli`, which builds the examples, or \
         `cargo build -p ckpt-cli --example {name}` first",
        path.display()
    );
    path
}

/// A committed fixture of the CLI tests, under `crates/ckpt-cli/tests/fixtures` (see
/// `make_fixtures.py` there).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ckpt failed: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts the user-error contract: exit code 1, nothing on stdout, exactly one line
/// `ckpt: ...` on stderr. Returns that line.
pub fn one_line_error(output: &Output) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(output.stdout.is_empty(), "stdout: {}", stdout(output));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("ckpt: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

/// `ckpt inspect --json FILE`, parsed.
pub fn inspect_json(file: &Path) -> serde_json::Value {
    let out = success(&ckpt(&[
        "inspect".as_ref(),
        "--json".as_ref(),
        file.as_os_str(),
    ]));
    serde_json::from_str(&out).expect("inspect --json prints JSON")
}

/// The entries of an inspect report without the file name, for comparing two files.
pub fn entries(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["entries"].as_array().cloned().unwrap_or_default()
}

/// The entry at `path` (a JSON array of keys and indices).
pub fn entry(report: &serde_json::Value, path: serde_json::Value) -> &serde_json::Value {
    report["entries"]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["path"] == path))
        .unwrap_or_else(|| panic!("no entry at {path} in {report:#}"))
}

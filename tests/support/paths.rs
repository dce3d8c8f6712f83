//! Files of the repository the tests read: committed fixtures and the Python interop scripts.

use std::path::{Path, PathBuf};

/// `relative` from the repository root (every crate lives at `crates/NAME`).
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// A committed fixture under `tests/fixtures/` (see `tests/fixtures/generate.py`).
pub fn fixture(name: &str) -> PathBuf {
    repo_file("tests/fixtures").join(name)
}

/// The bytes of [`fixture`] `name`.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A Python script under `tests/interop/`.
pub fn interop_script(name: &str) -> PathBuf {
    repo_file("tests/interop").join(name)
}

/// Every file under `dir`, in subdirectories too (an empty list when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

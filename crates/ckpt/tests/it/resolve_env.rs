//! The cache directory comes from `CKPT_CACHE_DIR` when set. Read in a child process, whose
//! environment the test sets without touching its own (other tests read it in parallel).

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::resolve::CACHE_DIR_ENV;

/// The default cache directory of a process whose `CKPT_CACHE_DIR` is `value`.
fn default_cache_dir_with(value: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
        .arg("cache-dir")
        .env(CACHE_DIR_ENV, value)
        .output()
        .expect("the test child runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end_matches('\n'),
    )
}

#[test]
fn cache_dir_env_variable_overrides_the_default() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(default_cache_dir_with(dir.path()), dir.path().to_path_buf());

    let fallback = default_cache_dir_with(Path::new(""));
    assert_ne!(fallback, PathBuf::new());
    assert!(fallback.ends_with("ckpt") || fallback.ends_with("ckpt-cache"));
}

//! The cache directory comes from `CKPT_CACHE_DIR` when set. One test in its own binary,
//! because it changes the process environment.

use std::path::PathBuf;

use ckpt::resolve::{default_cache_dir, CACHE_DIR_ENV};

#[test]
fn cache_dir_env_variable_overrides_the_default() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(CACHE_DIR_ENV, dir.path());
    assert_eq!(default_cache_dir(), dir.path().to_path_buf());

    std::env::set_var(CACHE_DIR_ENV, "");
    let fallback = default_cache_dir();
    assert_ne!(fallback, PathBuf::new());
    assert!(fallback.ends_with("ckpt") || fallback.ends_with("ckpt-cache"));
    std::env::remove_var(CACHE_DIR_ENV);
}

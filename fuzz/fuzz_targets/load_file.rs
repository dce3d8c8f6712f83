//! Any file, read from disk through the memory map (tensors are views of the map), and
//! eagerly into one buffer.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ckpt::format::{load_with, LoadOptions, SourcePages};
use ckpt_fuzz::budget::READ;
use ckpt_fuzz::exercise::use_value;
use libfuzzer_sys::fuzz_target;

/// The file of this process's inputs (in memory when /dev/shm exists), removed after each.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("ckpt-fuzz-load-file-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    for options in [
        LoadOptions::default(),
        LoadOptions::default().with_source_pages(SourcePages::Release),
        LoadOptions::default().with_mmap(false),
    ] {
        let (loaded, _) = READ.run(data.len(), || load_with(path, &options));
        if let Ok(loaded) = loaded {
            use_value(&loaded.value, data.len());
        }
    }
    let _ = std::fs::remove_file(path);
});

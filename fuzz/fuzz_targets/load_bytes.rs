//! Any file, read from memory: format detection and every reader.
#![no_main]

use ckpt::format::LoadOptions;
use ckpt_fuzz::exercise::load_and_use;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    load_and_use(data, &LoadOptions::default().with_mmap(false));
    load_and_use(
        data,
        &LoadOptions::default()
            .with_mmap(false)
            .with_verify_crc32(true),
    );
});

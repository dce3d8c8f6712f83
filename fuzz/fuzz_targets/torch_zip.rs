//! Torch zip archives built from mutated parts (see `ckpt_fuzz::zip_parts`): `data.pkl`,
//! the storage records, local headers, the central directory and record names.
#![no_main]

use ckpt::format::LoadOptions;
use ckpt_fuzz::exercise::load_and_use;
use ckpt_fuzz::zip_parts::TorchZip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|parts: TorchZip| {
    let bytes = parts.build();
    load_and_use(&bytes, &LoadOptions::default().with_mmap(false));
    load_and_use(
        &bytes,
        &LoadOptions::default()
            .with_mmap(false)
            .with_verify_crc32(true),
    );
});

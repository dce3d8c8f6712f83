//! The legacy (pre-1.6) torch stream and the torch <= 0.3 tar format: inputs that are
//! not detected as one of them are left to the other targets.
#![no_main]

use ckpt::format::{detect, Format, LoadOptions};
use ckpt_fuzz::exercise::load_and_use;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !matches!(detect(data), Ok(Format::TorchLegacy | Format::TorchTar)) {
        return;
    }
    load_and_use(data, &LoadOptions::default().with_mmap(false));
});

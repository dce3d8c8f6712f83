//! safetensors files: the input is the JSON header, the data follows it (zero bytes up to
//! the largest offset the header names, within a bound), so that mutations of the header
//! keep a file whose length fits it.
#![no_main]

use ckpt::format::LoadOptions;
use ckpt_fuzz::exercise::load_and_use;
use libfuzzer_sys::fuzz_target;

/// The most data bytes added after a header.
const MAX_DATA: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // An input that is a whole file (8-byte length first) is read as it is, too.
    if data.len() >= 9 && data[8] == b'{' {
        load_and_use(data, &LoadOptions::default().with_mmap(false));
    }
    let header = data;
    let data_len = largest_number(header).min(MAX_DATA);
    let mut file = Vec::with_capacity(8 + header.len() + data_len);
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header);
    file.resize(8 + header.len() + data_len, 0);
    load_and_use(&file, &LoadOptions::default().with_mmap(false));
});

/// The largest run of decimal digits in `header` (the end of the data, in a header that
/// names offsets), saturating.
fn largest_number(header: &[u8]) -> usize {
    let mut largest = 0usize;
    let mut current = 0usize;
    for &b in header {
        if b.is_ascii_digit() {
            current = current
                .saturating_mul(10)
                .saturating_add(usize::from(b - b'0'));
            largest = largest.max(current);
        } else {
            current = 0;
        }
    }
    largest
}

//! What a target does with the value a reader returned, as `ckpt inspect` and
//! `ckpt convert` would: walk it, format it, clone it and write it again, and read back
//! what was written (ckpt reads every torch file it writes).

use std::fmt::{self, Write as _};

use ckpt::format::{
    flatten_tensors, load_bytes, write_safetensors, write_torch, LoadOptions, SaveOptions,
};
use ckpt::Value;

use crate::budget::{Budget, READ, USE};

/// Reads `bytes` with `options` within the [`READ`] budget, then uses the value within
/// the [`USE`] budget. Panics (a finding) when ckpt cannot read back a torch file it wrote.
pub fn load_and_use(bytes: &[u8], options: &LoadOptions) {
    let len = bytes.len();
    let copy = bytes.to_vec();
    let (loaded, _) = READ.run(len, || load_bytes(copy, options));
    if let Ok(loaded) = loaded {
        use_value(&loaded.value, len);
    }
}

/// Uses `value`, read from `input_len` bytes, within the [`USE`] budget.
pub fn use_value(value: &Value, input_len: usize) {
    use_within(USE, value, input_len);
}

fn use_within(budget: Budget, value: &Value, input_len: usize) {
    budget.run(input_len, || {
        let _ = ckpt::walk::leaves(value).count();
        let _ = write!(Discard, "{value:?}");
        drop(value.clone());
        let mut written = Vec::new();
        let options = SaveOptions::default().with_archive_name("fuzz");
        if write_torch(&mut written, value, &options).is_ok() {
            let read_back = load_bytes(written, &LoadOptions::default().with_mmap(false));
            if let Err(e) = read_back {
                panic!("ckpt cannot read the torch file it wrote: {}", e.report());
            }
        }
        let (tensors, _) = flatten_tensors(value);
        // safetensors holds each tensor's elements: the output legitimately costs their
        // size, which a few bytes of stride-0 view can make huge. Write only what the
        // budget can hold.
        let elements: usize = tensors
            .iter()
            .map(|(_, t)| t.nbytes())
            .fold(0, usize::saturating_add);
        if elements <= input_len.saturating_mul(4) + (1 << 20) {
            let _ = write_safetensors(&mut std::io::sink(), &tensors, None);
        }
    });
}

/// A formatter target that keeps nothing.
struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}

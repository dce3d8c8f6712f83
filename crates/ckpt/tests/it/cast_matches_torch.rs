//! ckpt converts between every pair of dtypes exactly as torch's `dst.copy_(src)` does, on
//! values chosen to exercise rounding (twice, through float32, as torch does), truncation,
//! wrapping, overflow, NaN and infinities; and refuses exactly the pairs torch warns about.
//! torch's results come from tests/interop/cast_matrix.py, run with `$CKPT_PYTHON`.

use ckpt::DType;
use ckpt::{can_cast, cast_bytes};
use serde_json::Value as Json;

use crate::support::{interop_script, python};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// One element as a complex128 (every dtype converts to it), for comparing NaNs by value.
fn as_complex(bytes: &[u8], dtype: DType) -> (f64, f64) {
    let mut out = [0u8; 16];
    cast_bytes(bytes, dtype, &mut out, DType::Complex128).unwrap();
    let part = |b: &[u8]| f64::from_le_bytes(b.try_into().unwrap());
    (part(&out[..8]), part(&out[8..]))
}

fn same_element(ours: &[u8], torch: &[u8], dtype: DType) -> bool {
    if ours == torch {
        return true;
    }
    // NaNs may differ in sign and payload bits.
    let (a, b) = (as_complex(ours, dtype), as_complex(torch, dtype));
    let same = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
    same(a.0, b.0) && same(a.1, b.1)
}

#[test]
fn every_dtype_pair_converts_as_torch_copy_does() {
    let Some(python) = python::interop_python("the dtype conversion matrix", "torch") else {
        return;
    };
    let script = interop_script("cast_matrix.py");
    let line = python::run_script_last_line(&python, &script, &[]);
    let matrix: Json = serde_json::from_str(&line).unwrap();
    let matrix = matrix.as_object().unwrap();
    assert_eq!(matrix.len(), DType::ALL.len());

    let mut failures = Vec::new();
    let mut pairs = 0;
    for (from_name, entry) in matrix {
        let from = DType::from_name(from_name).unwrap();
        let src = hex(entry["bytes"].as_str().unwrap());
        for refused in entry["refused"].as_array().unwrap() {
            let to = DType::from_name(refused.as_str().unwrap()).unwrap();
            assert!(!can_cast(from, to), "torch warns about {from} -> {to}");
        }
        for (to_name, expected) in entry["dst"].as_object().unwrap() {
            let to = DType::from_name(to_name).unwrap();
            assert!(can_cast(from, to), "{from} -> {to} is refused");
            let torch = hex(expected["bytes"].as_str().unwrap());
            let undefined: Vec<usize> = expected["undefined"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize)
                .collect();
            let mut ours = vec![0u8; torch.len()];
            cast_bytes(&src, from, &mut ours, to).unwrap();
            pairs += 1;
            let size = to.size();
            for (i, (a, b)) in ours.chunks(size).zip(torch.chunks(size)).enumerate() {
                if undefined.contains(&i) || same_element(a, b, to) {
                    continue;
                }
                let input = &src[i * from.size()..(i + 1) * from.size()];
                failures.push(format!(
                    "{from} -> {to}, element {i} ({:?}): ckpt {a:02x?}, torch {b:02x?}",
                    as_complex(input, from)
                ));
            }
        }
    }
    // Three complex dtypes refused into sixteen real ones.
    assert_eq!(pairs + 3 * 16, DType::ALL.len() * DType::ALL.len());
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

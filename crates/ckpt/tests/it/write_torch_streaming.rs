//! `write_torch` streams its pickle (measured by a first pass, written by a second): the
//! `data.pkl` record is exactly `write_pickle`'s output, and values torch cannot hold still
//! fail before anything is written, however late in the value they appear.

use std::collections::HashMap;

use ckpt::format::{load_bytes, write_torch, LoadOptions, SaveOptions};
use ckpt::pickle::{write_pickle, StorageSink};
use ckpt::{DType, Dict, Key, Tensor, Value};

/// Keys in order of first appearance, as `write_torch` gives them.
struct Keys(HashMap<usize, String>);

impl StorageSink for Keys {
    fn storage_key(&mut self, tensor: &Tensor) -> ckpt::Result<String> {
        let n = self.0.len();
        Ok(self
            .0
            .entry(tensor.storage().id())
            .or_insert_with(|| n.to_string())
            .clone())
    }
}

/// Enough entries for several 64 KiB pieces and 4-byte memo indices, with tied and cast
/// storages, tuple keys, bytes and repeated strings.
fn varied_value() -> Value {
    let tied = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let cast = Tensor::new(DType::Int32, vec![2], vec![1], 0, tied.storage().clone()).unwrap();
    let mut d = Dict::ordered();
    for i in 0..5_000i64 {
        let t = Tensor::from_slice(&[i as f32; 3], &[3]).unwrap();
        d.insert(format!("blocks.{i}.weight"), Value::Tensor(t));
        let key = Key::Tuple(vec![Key::from("tied"), Key::Int(i)]);
        d.insert(key, Value::Tensor(tied.clone()));
    }
    d.insert("cast", Value::Tensor(cast));
    d.insert("bytes", Value::Bytes(b"blocks.1.weight".to_vec()));
    d.insert(
        "names",
        Value::List(vec![Value::Str("blocks.2.weight".into()); 3]),
    );
    Value::Dict(d)
}

fn u16_at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}

#[test]
fn the_streamed_pickle_record_is_write_pickles_output() {
    let value = varied_value();
    let expected = write_pickle(&value, &mut Keys(HashMap::new())).unwrap();
    assert!(expected.len() > 4 * 65_536, "{} bytes", expected.len());
    let mut archive = Vec::new();
    write_torch(&mut archive, &value, &SaveOptions::default()).unwrap();

    // data.pkl is the first record: local header, name, extra field, then the pickle.
    let name_len = u16_at(&archive, 26);
    assert_eq!(&archive[30..30 + name_len], b"archive/data.pkl");
    let start = 30 + name_len + u16_at(&archive, 28);
    assert!(archive[start..start + expected.len()] == expected[..]);
    // The data descriptor follows with the pickle's CRC and size.
    let descriptor = &archive[start + expected.len()..];
    assert_eq!(&descriptor[..4], b"PK\x07\x08");
    let crc = u32::from_le_bytes(descriptor[4..8].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&expected));
    assert_eq!(
        u32::from_le_bytes(descriptor[8..12].try_into().unwrap()) as usize,
        expected.len()
    );

    let back = load_bytes(archive, &LoadOptions::default()).unwrap().value;
    let t = back.get("blocks.4999.weight").unwrap().as_tensor().unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![4999.0; 3]);
}

#[test]
fn a_value_torch_cannot_hold_fails_before_writing_even_late_in_the_value() {
    let Value::Dict(mut d) = varied_value() else {
        unreachable!()
    };
    d.insert("last", Value::FrozenSet(vec![Value::Int(1)]));
    let mut out = Vec::new();
    let err = write_torch(&mut out, &Value::Dict(d), &SaveOptions::default()).unwrap_err();
    assert!(err.to_string().contains("frozenset"), "{err}");
    assert!(out.is_empty(), "{} bytes written", out.len());
}

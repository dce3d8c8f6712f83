//! The pickle writer's unit tests.

use super::*;
use std::collections::HashMap;

struct Keys(HashMap<usize, String>);

impl StorageSink for Keys {
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String> {
        let n = self.0.len();
        Ok(self
            .0
            .entry(tensor.storage().id())
            .or_insert_with(|| n.to_string())
            .clone())
    }
}

fn pickle(value: &Value) -> Vec<u8> {
    write_pickle(value, &mut Keys(HashMap::new())).unwrap()
}

#[test]
fn ints_use_the_smallest_opcode() {
    assert_eq!(pickle(&Value::Int(5)), b"\x80\x02K\x05.");
    assert_eq!(pickle(&Value::Int(300)), b"\x80\x02M\x2c\x01.");
    assert_eq!(pickle(&Value::Int(-1)), b"\x80\x02J\xff\xff\xff\xff.");
    assert_eq!(
        pickle(&Value::Int(1 << 31)),
        b"\x80\x02\x8a\x05\x00\x00\x00\x80\x00."
    );
    assert_eq!(
        pickle(&Value::Int(-(1 << 39))),
        b"\x80\x02\x8a\x05\x00\x00\x00\x00\x80."
    );
    assert_eq!(
        pickle(&Value::Int(i64::MIN)),
        b"\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."
    );
    let big: BigInt = BigInt::from(1) << 70;
    assert_eq!(
        pickle(&Value::BigInt(big)),
        b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40."
    );
}

#[test]
fn floats_are_big_endian() {
    assert_eq!(
        pickle(&Value::Float(1.5)),
        b"\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00."
    );
}

#[test]
fn repeated_strings_are_memo_references() {
    let v = Value::List(vec![Value::Str("a".into()), Value::Str("a".into())]);
    assert_eq!(pickle(&v), b"\x80\x02]q\x00(X\x01\x00\x00\x00aq\x01h\x01e.");
}

#[test]
fn single_item_dict_uses_setitem() {
    let mut d = Dict::new();
    d.insert(0i64, Value::None);
    assert_eq!(pickle(&Value::Dict(d)), b"\x80\x02}q\x00K\x00Ns.");
}

#[test]
fn large_lists_are_batched_by_a_thousand() {
    let v = Value::List(vec![Value::None; 1001]);
    let bytes = pickle(&v);
    assert_eq!(bytes.iter().filter(|&&b| b == opcode::APPENDS).count(), 1);
    assert_eq!(&bytes[bytes.len() - 3..], b"Na.");
}

#[test]
fn unsupported_values_are_named_in_the_error() {
    let mut keys = Keys(HashMap::new());
    let err = write_pickle(&Value::FrozenSet(vec![]), &mut keys).unwrap_err();
    assert!(err.to_string().contains("frozenset"), "{err}");
    let object = Value::Object(Box::new(crate::value::Object {
        module: "argparse".into(),
        name: "Namespace".into(),
        build: crate::value::ObjectBuild::Global,
        state: None,
    }));
    let err = write_pickle(&object, &mut keys).unwrap_err();
    assert!(err.to_string().contains("argparse.Namespace"), "{err}");
    let mut d = Dict::new();
    d.attributes.insert("_metadata".into(), Value::None);
    let err = write_pickle(&Value::Dict(d), &mut keys).unwrap_err();
    assert!(err.to_string().contains("_metadata"), "{err}");
}

#[test]
fn too_deep_values_are_an_error_not_a_stack_overflow() {
    let mut v = Value::None;
    for _ in 0..(MAX_DEPTH + 5) {
        v = Value::List(vec![v]);
    }
    let err = write_pickle(&v, &mut Keys(HashMap::new())).unwrap_err();
    assert!(err.to_string().contains("nested"), "{err}");
    // Dropping a deep value recurses too; unwind it iteratively.
    while let Value::List(mut items) = v {
        v = items.pop().unwrap_or(Value::None);
    }
}

#[test]
fn tensors_sharing_a_storage_with_another_dtype_get_their_own() {
    let t = Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let as_int = Tensor::new(DType::Int32, vec![2], vec![1], 0, t.storage().clone()).unwrap();
    let mut keys = Keys(HashMap::new());
    let v = Value::List(vec![Value::Tensor(t), Value::Tensor(as_int)]);
    write_pickle(&v, &mut keys).unwrap();
    assert_eq!(keys.0.len(), 2);
}

/// Strings repeated, borrowed and made (bytes), tuple keys, tied and cast storages,
/// attributes, and enough of it for 4-byte memo indices and several 64 KiB pieces.
fn varied_value() -> Value {
    let base = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let as_int = Tensor::new(DType::Int32, vec![2], vec![1], 0, base.storage().clone());
    let mut d = Dict::ordered();
    for i in 0..3_000i64 {
        let t = Tensor::from_slice(&[i as f32; 3], &[3]).unwrap();
        d.insert(format!("layer.{i}.weight"), Value::Tensor(t));
        d.insert(
            Key::Tuple(vec![Key::from("tied"), Key::Int(i)]),
            Value::Tensor(base.clone()),
        );
    }
    d.insert("cast", Value::Tensor(as_int.unwrap()));
    d.insert("abc", Value::Bytes(b"abc".to_vec()));
    d.insert(
        "again",
        Value::List(vec![
            Value::Str("abc".into()),
            Value::Bytes(b"abc".to_vec()),
        ]),
    );
    d.insert("array", Value::ByteArray(b"layer.7.weight".to_vec()));
    d.attributes
        .insert("_metadata".into(), Value::Str("layer.1.weight".into()));
    Value::Dict(d)
}

#[test]
fn a_measured_then_streamed_pickle_is_the_same_pickle() {
    let value = varied_value();
    let expected = pickle(&value);
    let measured = measure_pickle(&value, &mut Keys(HashMap::new())).unwrap();
    assert_eq!(measured.len, expected.len() as u64);
    let mut streamed = Vec::new();
    let mut pieces = 0;
    let mut dest = |bytes: &[u8]| {
        streamed.extend_from_slice(bytes);
        pieces += 1;
        Ok(())
    };
    measured
        .stream(&mut Keys(HashMap::new()), &mut dest)
        .unwrap();
    assert!(pieces > 1, "{pieces} pieces");
    assert!(streamed == expected, "the streamed pickle differs");
}

//! Every fixture of `tests/fixtures` (written by `generate.py` with torch and numpy) reads to
//! exactly what Python loads from it, as described by its `.expected.json`.

use std::collections::HashMap;

use ckpt::format::{load, load_with, Format, LoadOptions};
use ckpt::{DictKind, Storage, Tensor, Value};
use serde_json::Value as Json;

use crate::support::fixture;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f64_hex(f: f64) -> String {
    hex(&f.to_be_bytes())
}

/// Compares values with the JSON description; tensors with equal `storage` ids must share
/// one storage and tensors with different ids must not.
#[derive(Default)]
struct Checker {
    storages: HashMap<i64, Storage>,
}

impl Checker {
    fn tensor(&mut self, t: &Tensor, e: &Json, path: &str) {
        assert_eq!(
            t.dtype().name(),
            e["dtype"].as_str().unwrap(),
            "{path}: dtype"
        );
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape(), shape.as_slice(), "{path}: shape");
        assert_eq!(
            hex(&t.contiguous_bytes()),
            e["hex"].as_str().unwrap(),
            "{path}: element bytes"
        );
        if let Some(rg) = e.get("requires_grad").and_then(Json::as_bool) {
            assert_eq!(t.requires_grad(), rg, "{path}: requires_grad");
        }
        if let Some(id) = e.get("storage").and_then(Json::as_i64) {
            for (other, storage) in &self.storages {
                assert_eq!(
                    *other == id,
                    storage.same_as(t.storage()),
                    "{path}: storage sharing (ids {id} / {other})"
                );
            }
            self.storages
                .entry(id)
                .or_insert_with(|| t.storage().clone());
        }
    }

    fn check(&mut self, v: &Value, e: &Json, path: &str) {
        let ty = e["type"].as_str().unwrap();
        match (ty, v) {
            ("tensor", Value::Tensor(t))
            | ("parameter", Value::Parameter(t))
            | ("ndarray", Value::NdArray(t)) => self.tensor(t, e, path),
            ("none", Value::None) => {}
            ("bool", Value::Bool(b)) => assert_eq!(*b, e["value"].as_bool().unwrap(), "{path}"),
            ("int", Value::Int(i)) => {
                assert_eq!(i.to_string(), e["value"].as_str().unwrap(), "{path}")
            }
            ("int", Value::BigInt(i)) => {
                assert_eq!(i.to_string(), e["value"].as_str().unwrap(), "{path}");
                assert!(
                    i64::try_from(i).is_err(),
                    "{path}: BigInt used for a value that fits"
                );
            }
            ("float", Value::Float(f)) => {
                assert_eq!(f64_hex(*f), e["bits"].as_str().unwrap(), "{path}")
            }
            ("complex", Value::Complex(re, im)) => {
                assert_eq!(f64_hex(*re), e["re"].as_str().unwrap(), "{path}");
                assert_eq!(f64_hex(*im), e["im"].as_str().unwrap(), "{path}");
            }
            ("str", Value::Str(s)) => assert_eq!(s, e["value"].as_str().unwrap(), "{path}"),
            ("bytes", Value::Bytes(b)) | ("bytearray", Value::ByteArray(b)) => {
                assert_eq!(hex(b), e["hex"].as_str().unwrap(), "{path}")
            }
            ("size", Value::Size(dims)) => {
                let expected: Vec<i64> = e["dims"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap())
                    .collect();
                assert_eq!(dims, &expected, "{path}");
            }
            ("device", Value::Device { kind, index }) => {
                assert_eq!(kind, e["kind"].as_str().unwrap(), "{path}");
                assert_eq!(*index, e["index"].as_i64(), "{path}");
            }
            ("dtype", Value::DType(d)) => {
                assert_eq!(d.name(), e["name"].as_str().unwrap(), "{path}")
            }
            ("tuple", Value::Tuple(items))
            | ("list", Value::List(items))
            | ("set", Value::Set(items))
            | ("frozenset", Value::FrozenSet(items)) => {
                let expected = e["items"].as_array().unwrap();
                assert_eq!(items.len(), expected.len(), "{path}: length");
                for (i, (item, exp)) in items.iter().zip(expected).enumerate() {
                    self.check(item, exp, &format!("{path}[{i}]"));
                }
            }
            ("dict", Value::Dict(d)) => {
                let kind = match d.kind() {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "OrderedDict",
                    DictKind::Counter => "Counter",
                };
                assert_eq!(kind, e["kind"].as_str().unwrap(), "{path}: dict kind");
                let expected = e["items"].as_array().unwrap();
                assert_eq!(d.len(), expected.len(), "{path}: number of items");
                for ((key, value), pair) in d.iter().zip(expected) {
                    let sub = format!("{path}.{key}");
                    self.check(&key.to_value(), &pair[0], &format!("{sub} (key)"));
                    self.check(value, &pair[1], &sub);
                }
                let attrs = e.get("attributes").and_then(Json::as_object);
                assert_eq!(
                    d.attributes().len(),
                    attrs.map_or(0, |a| a.len()),
                    "{path}: attributes"
                );
                for (name, exp) in attrs.into_iter().flatten() {
                    let value = d
                        .attribute(name)
                        .unwrap_or_else(|| panic!("{path}: no attribute {name}"));
                    self.check(value, exp, &format!("{path}@{name}"));
                }
            }
            _ => panic!("{path}: expected a {ty}, found {}", v.short_repr(80)),
        }
    }
}

fn expected(name: &str) -> Json {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Loads a fixture (memory-mapped and from the heap) and checks it against its JSON.
fn assert_fixture(name: &str, format: Format) -> Value {
    let expected = expected(name);
    for mmap in [true, false] {
        let options = LoadOptions::default()
            .with_mmap(mmap)
            .with_verify_crc32(format == Format::TorchZip);
        let loaded = load_with(fixture(name), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.format, format, "{name}: detected format");
        Checker::default().check(&loaded.value, &expected, name);
    }
    load(fixture(name)).unwrap()
}

#[test]
fn module_state_dict_keeps_order_metadata_and_zero_copy_storages() {
    let value = assert_fixture("module_sd.pt", Format::TorchZip);
    let dict = value.as_dict().unwrap();
    assert_eq!(dict.kind(), DictKind::OrderedDict);
    assert!(dict.attribute("_metadata").is_some());
    let weight = dict.get("0.weight").unwrap().as_tensor().unwrap();
    assert!(
        weight.storage().is_mapped(),
        "tensors are views of the mapped file"
    );
}

#[test]
fn every_dtype_reads_scalar_empty_and_4d_tensors_bit_exactly() {
    assert_fixture("dtypes.pt", Format::TorchZip);
}

#[test]
fn views_transposes_and_tied_weights_share_one_storage() {
    let value = assert_fixture("views.pt", Format::TorchZip);
    let slice = value.get("slice").unwrap().as_tensor().unwrap();
    let base = value.get("base").unwrap().as_tensor().unwrap();
    assert!(slice.storage().same_as(base.storage()));
    assert_eq!(slice.storage_offset(), 2);
    assert!(matches!(value.get("param"), Some(Value::Parameter(_))));
}

#[test]
fn adam_and_sgd_state_dicts_keep_int_keys_and_value_types() {
    let value = assert_fixture("optim.pt", Format::TorchZip);
    let state = value
        .get("adam")
        .unwrap()
        .get("state")
        .unwrap()
        .as_dict()
        .unwrap();
    assert!(state.contains_key(&ckpt::Key::Int(0)));
}

#[test]
fn python_values_round_trip_big_ints_floats_strings_sets_and_torch_objects() {
    assert_fixture("misc.pt", Format::TorchZip);
}

#[test]
fn protocol_4_torch_archive_reads() {
    assert_fixture("proto4.pt", Format::TorchZip);
}

#[test]
fn legacy_stream_reads_with_views_and_shared_storages() {
    assert_fixture("legacy.pt", Format::TorchLegacy);
}

#[test]
fn legacy_stream_is_detected_by_value_for_protocol_1() {
    assert_fixture("legacy_p1.pt", Format::TorchLegacy);
}

#[test]
fn pycls_checkpoint_reads() {
    let value = assert_fixture("pycls_like.pyth", Format::TorchZip);
    assert_eq!(value.get("epoch").and_then(Value::as_int), Some(3));
}

#[test]
fn detectron2_model_zoo_pickle_reads_numpy_arrays() {
    let value = assert_fixture("d2_model_zoo.pkl", Format::Pickle);
    assert_eq!(
        value.get("__author__").and_then(Value::as_str),
        Some("torchvision")
    );
}

#[test]
fn protocol_2_numpy_pickle_with_codecs_bytes_reads() {
    assert_fixture("d2_model_zoo_p2.pkl", Format::Pickle);
}

#[test]
fn protocol_5_numpy_frombuffer_arrays_read() {
    assert_fixture("numpy_p5.pkl", Format::Pickle);
}

#[test]
fn python2_detectron_pickle_reads_latin1_strings_fortran_and_big_endian_arrays() {
    let value = assert_fixture("detectron1_py2.pkl", Format::Pickle);
    assert!(value
        .get("blobs")
        .unwrap()
        .get("conv1_w_momentum")
        .is_some());
    assert!(value
        .get("cfg")
        .and_then(Value::as_str)
        .unwrap()
        .starts_with("MODEL:"));
}

#[test]
fn protocol_0_text_opcodes_read() {
    assert_fixture("plain_p0.pkl", Format::Pickle);
}

#[test]
fn protocol_1_and_3_pickles_read() {
    assert_fixture("plain_p1.pkl", Format::Pickle);
    assert_fixture("plain_p3.pkl", Format::Pickle);
}

#[test]
fn conjugated_and_negated_views_read_as_torch_loads_them() {
    for (name, format) in [
        ("lazy_views.pt", Format::TorchZip),
        ("lazy_views_legacy.pt", Format::TorchLegacy),
    ] {
        let value = assert_fixture(name, format);
        let plain = value.get("plain").unwrap().as_tensor().unwrap();
        let conj = value.get("conj64").unwrap().as_tensor().unwrap();
        let row = value.get("conj_row").unwrap().as_tensor().unwrap();
        // The conjugated tensors own a resolved copy, shared by the views of one storage;
        // the tensor saved without the bit still views the file.
        assert!(!conj.storage().same_as(plain.storage()), "{name}");
        assert!(conj.storage().same_as(row.storage()), "{name}");
        assert_eq!(row.storage_offset(), 3, "{name}");
        assert!(!conj.storage().is_mapped(), "{name}");
        assert!(matches!(value.get("conj_param"), Some(Value::Parameter(_))));
    }
}

#[test]
fn a_module_saved_whole_gives_the_state_dict_torch_computes() {
    let value = load(fixture("whole_module.pt")).unwrap();
    // The walk reaches the parameters inside the module objects, at attribute paths.
    let tensors: Vec<String> = ckpt::walk::leaves(&value)
        .filter(|leaf| leaf.value.as_tensor().is_some())
        .map(|leaf| leaf.path_string())
        .collect();
    assert_eq!(tensors.len(), 11, "{tensors:?}");
    assert_eq!(tensors[0], "_modules.0._parameters.weight");
    assert!(tensors.contains(&"_modules.1._buffers.scratch".to_string()));
    assert!(tensors.contains(&"_modules.3._modules.0._parameters.weight".to_string()));
    // The state dict is named, ordered and valued as torch's `state_dict()`, tied weights
    // sharing one storage; the non-persistent buffer and the None parameter are left out.
    assert!(ckpt::nn_module::is_module(&value));
    let state_dict = ckpt::nn_module::module_state_dict_value(&value).unwrap();
    Checker::default().check(&state_dict, &expected("whole_module.pt"), "whole_module.pt");
    let sd = ckpt::nn_module::module_state_dict(&value).unwrap().unwrap();
    assert_eq!(sd.len(), 10);
    assert!(sd.get("1.scratch").is_none());
}

//! Our writers against files written by torch and safetensors (tests/fixtures/writer/,
//! made by make_reference.py): identical bytes.

use ckpt::format::{save_safetensors, save_torch, write_torch, SaveOptions};
use ckpt::{Dict, Key, StateDict, Tensor, Value};

use crate::support::fixture_bytes;

fn sd_plain() -> StateDict {
    let mut sd = StateDict::new();
    let w: Vec<f32> = (0..6).map(|x| x as f32).collect();
    sd.insert("w", Tensor::from_slice(&w, &[2, 3]).unwrap());
    sd.insert("b", Tensor::from_slice(&[1.5f32, -2.0], &[2]).unwrap());
    sd
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize
}

/// Zeroes what torch does not make reproducible: the serialization id payload and its CRC
/// (in the data descriptor and the central directory).
fn mask_serialization_id(mut bytes: Vec<u8>, archive: &str) -> Vec<u8> {
    let name = format!("{archive}/.data/serialization_id");
    let hits: Vec<usize> = bytes
        .windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 2, "local and central header of {name}");
    let local = hits[0] - 30;
    let data = hits[0] + name.len() + u16_at(&bytes, local + 28);
    bytes[data..data + 40].fill(0);
    bytes[data + 44..data + 48].fill(0);
    let central = hits[1] - 46;
    bytes[central + 16..central + 20].fill(0);
    bytes
}

#[test]
fn state_dict_archive_is_byte_identical_to_torch_save() {
    let reference = fixture_bytes("writer/sd_plain.pt");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd_plain.pt");
    save_torch(&path, &sd_plain().to_value(), &SaveOptions::default()).unwrap();
    let ours = std::fs::read(&path).unwrap();
    assert_eq!(ours.len(), reference.len());
    let ours = mask_serialization_id(ours, "sd_plain");
    let reference = mask_serialization_id(reference, "sd_plain");
    let first_difference = ours.iter().zip(&reference).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "files differ");
}

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).unwrap()
}

fn plain(items: Vec<(Key, Value)>) -> Value {
    let mut d = Dict::new();
    d.extend(items);
    Value::Dict(d)
}

/// `Sequential(Linear(3, 2), BatchNorm1d(2)).state_dict()` as make_reference.py sets it.
fn module_state_dict() -> Value {
    let mut sd = StateDict::new();
    let w: Vec<f32> = (0..6).map(|x| x as f32 / 8.0).collect();
    sd.insert("0.weight", f32s(&w, &[2, 3]));
    sd.insert("0.bias", f32s(&[0.5, -0.5], &[2]));
    sd.insert("1.weight", f32s(&[1.0, 1.0], &[2]));
    sd.insert("1.bias", f32s(&[0.0, 0.0], &[2]));
    sd.insert("1.running_mean", f32s(&[0.0, 0.0], &[2]));
    sd.insert("1.running_var", f32s(&[1.0, 1.0], &[2]));
    sd.insert(
        "1.num_batches_tracked",
        Tensor::from_slice(&[0i64], &[]).unwrap(),
    );
    let mut metadata = Dict::ordered();
    for (prefix, version) in [("", 1), ("0", 1), ("1", 2)] {
        let version = plain(vec![(Key::from("version"), Value::Int(version))]);
        metadata.insert(prefix, version);
    }
    sd.set_metadata(Some(Value::Dict(metadata)));
    sd.to_value()
}

#[test]
fn module_state_dict_with_metadata_is_byte_identical_to_torch_save() {
    let reference = fixture_bytes("writer/module_sd.pt");
    let mut ours = Vec::new();
    let options = SaveOptions::default().with_archive_name("module_sd");
    write_torch(&mut ours, &module_state_dict(), &options).unwrap();
    assert_same_archive(ours, reference, "module_sd");
}

#[test]
fn checkpoint_with_adam_state_is_byte_identical_to_torch_save() {
    let reference = fixture_bytes("writer/adam.pt");
    let state = |shape: &[usize]| {
        let zeros = vec![0.0f32; shape.iter().product()];
        plain(vec![
            (Key::from("step"), Value::Tensor(f32s(&[1.0], &[]))),
            (Key::from("exp_avg"), Value::Tensor(f32s(&zeros, shape))),
            (Key::from("exp_avg_sq"), Value::Tensor(f32s(&zeros, shape))),
        ])
    };
    let group = plain(
        [
            ("lr", Value::Float(0.001)),
            (
                "betas",
                Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)]),
            ),
            ("eps", Value::Float(1e-8)),
            ("weight_decay", Value::Int(0)),
            ("amsgrad", Value::Bool(false)),
            ("maximize", Value::Bool(false)),
            ("foreach", Value::None),
            ("capturable", Value::Bool(false)),
            ("differentiable", Value::Bool(false)),
            ("fused", Value::None),
            ("decoupled_weight_decay", Value::Bool(false)),
            ("params", Value::List(vec![Value::Int(0), Value::Int(1)])),
        ]
        .into_iter()
        .map(|(k, v)| (Key::from(k), v))
        .collect(),
    );
    let optimizer = plain(vec![
        (
            Key::from("state"),
            plain(vec![
                (Key::Int(0), state(&[2, 3])),
                (Key::Int(1), state(&[2])),
            ]),
        ),
        (Key::from("param_groups"), Value::List(vec![group])),
    ]);
    let checkpoint = Value::Dict(Dict::from_iter([
        (Key::from("model"), module_state_dict()),
        (Key::from("optimizer"), optimizer),
        (Key::from("iteration"), Value::Int(1)),
    ]));
    let mut ours = Vec::new();
    let options = SaveOptions::default().with_archive_name("adam");
    write_torch(&mut ours, &checkpoint, &options).unwrap();
    assert_same_archive(ours, reference, "adam");
}

fn assert_same_archive(ours: Vec<u8>, reference: Vec<u8>, archive: &str) {
    assert_eq!(ours.len(), reference.len(), "archive lengths");
    let ours = mask_serialization_id(ours, archive);
    let reference = mask_serialization_id(reference, archive);
    let first_difference = ours.iter().zip(&reference).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "files differ");
}

#[test]
fn writing_the_same_value_twice_gives_the_same_bytes() {
    let options = SaveOptions::default().with_archive_name("x");
    let mut a = Vec::new();
    let mut b = Vec::new();
    write_torch(&mut a, &sd_plain().to_value(), &options).unwrap();
    write_torch(&mut b, &sd_plain().to_value(), &options).unwrap();
    assert_eq!(a, b);
}

#[test]
fn safetensors_file_is_byte_identical_to_python_safetensors() {
    let reference = fixture_bytes("writer/sd_plain.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd_plain.safetensors");
    let meta = [("format".to_string(), "pt".to_string())];
    save_safetensors(&path, &sd_plain(), Some(&meta)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), reference);
}

#[test]
fn plain_dict_with_attributes_is_rejected_before_writing() {
    let mut d = Dict::new();
    d.set_attribute("_metadata", Value::None);
    let mut out = Vec::new();
    let err = write_torch(&mut out, &Value::Dict(d), &SaveOptions::default()).unwrap_err();
    assert!(err.to_string().contains("OrderedDict"), "{err}");
    assert!(out.is_empty());
}

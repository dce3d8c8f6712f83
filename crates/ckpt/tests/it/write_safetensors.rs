//! safetensors: what we write reads back in the `safetensors` crate and in Python
//! (`safetensors.torch` / `safetensors.numpy`); what Python writes reads here as zero-copy
//! views; malformed headers are errors, never panics.

use std::path::PathBuf;
use std::process::Command;

use ckpt::format::{
    flatten_tensors, load, load_bytes, save_safetensors, write_safetensors, LoadOptions,
};
use ckpt::{DType, Dict, StateDict, Tensor, Value};

use crate::support::{interop_script, python};

/// The Python interpreter for these tests, or `None` (after saying why) to skip.
fn python() -> Option<PathBuf> {
    python::interop_python("the Python safetensors test", "torch, safetensors, numpy")
}

/// The dtypes safetensors (and the crate) can hold.
const DTYPES: [DType; 15] = [
    DType::Bool,
    DType::UInt8,
    DType::Int8,
    DType::Float8E5M2,
    DType::Float8E4M3Fn,
    DType::Int16,
    DType::UInt16,
    DType::Float16,
    DType::BFloat16,
    DType::Int32,
    DType::UInt32,
    DType::Float32,
    DType::Float64,
    DType::Int64,
    DType::UInt64,
];

/// Same bytes as `pattern` in check_safetensors.py.
fn pattern(dtype: DType, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product::<usize>() * dtype.size();
    let bytes = (0..n)
        .map(|i| {
            if dtype == DType::Bool {
                (i % 2) as u8
            } else {
                ((i * 37 + 11) % 256) as u8
            }
        })
        .collect();
    Tensor::from_bytes(dtype, shape, bytes).unwrap()
}

fn sample() -> StateDict {
    let mut sd = StateDict::new();
    for dtype in DTYPES {
        sd.insert(dtype.name(), pattern(dtype, &[2, 3]));
    }
    let base = Tensor::from_slice(&(0..12).map(|x| x as f32).collect::<Vec<_>>(), &[3, 4]).unwrap();
    sd.insert("transposed", base.view(&[4, 3], &[1, 4], 0).unwrap());
    sd.insert("scalar", Tensor::from_slice(&[2.5f64], &[]).unwrap());
    sd.insert("empty", Tensor::zeros(DType::Float32, &[0, 5]).unwrap());
    sd
}

fn tensors_of(value: &Value) -> Vec<(String, Tensor)> {
    value
        .as_dict()
        .expect("a dict")
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_tensor().expect("a tensor").clone()))
        .collect()
}

#[test]
fn written_file_reads_back_in_the_safetensors_crate_and_here() {
    let sd = sample();
    let mut bytes = Vec::new();
    let meta = [("format".to_string(), "pt".to_string())];
    write_safetensors(&mut bytes, &sd, Some(&meta)).unwrap();

    let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(parsed.len(), sd.len());
    for (name, tensor) in sd.iter() {
        let view = parsed.tensor(name).unwrap();
        assert_eq!(
            view.dtype().to_string(),
            tensor.dtype().safetensors_name().unwrap()
        );
        assert_eq!(view.shape(), tensor.shape());
        assert_eq!(view.data(), &*tensor.contiguous_bytes(), "{name}");
    }

    let loaded = load_bytes(bytes, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, ckpt::format::Format::Safetensors);
    let read = tensors_of(&loaded.value);
    assert_eq!(read.len(), sd.len());
    for (name, tensor) in &read {
        assert!(tensor.data_eq(sd.get(name).unwrap()), "{name}");
    }
    let attrs = loaded.value.as_dict().unwrap();
    assert_eq!(
        attrs
            .attribute("__metadata__")
            .unwrap()
            .get("format")
            .and_then(Value::as_str),
        Some("pt")
    );
}

#[test]
fn dtypes_safetensors_lacks_are_an_error_naming_the_key() {
    let mut sd = StateDict::new();
    sd.insert("z", pattern(DType::Complex64, &[2]));
    let err = write_safetensors(&mut Vec::new(), &sd, None).unwrap_err();
    assert_eq!(err.entry_key(), Some("z"), "{err:?}");
    assert!(
        matches!(err.root(), ckpt::Error::Unsupported { message } if message.contains("complex64")),
        "{err:?}"
    );
}

#[test]
fn malformed_files_are_errors() {
    let mut good = Vec::new();
    write_safetensors(&mut good, &sample(), None).unwrap();
    let opts = LoadOptions::default();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;

    // Truncated data: offsets no longer cover the file.
    let err = load_bytes(good[..good.len() - 1].to_vec(), &opts).unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Format { .. }), "{err:?}");
    // Extra trailing byte.
    let mut longer = good.clone();
    longer.push(0);
    let err = load_bytes(longer, &opts).unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Format { .. }), "{err:?}");
    // Header that is not JSON.
    let mut bad_json = good.clone();
    bad_json[8 + header_len / 2] = b'#';
    let err = load_bytes(bad_json, &opts).unwrap_err();
    assert!(
        matches!(
            err.root(),
            ckpt::Error::Format {
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    // Unknown dtype code.
    let header = br#"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#;
    let mut unknown = (header.len() as u64).to_le_bytes().to_vec();
    unknown.extend_from_slice(header);
    unknown.extend_from_slice(&[0; 8]);
    let err = load_bytes(unknown, &opts).unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Format { .. }), "{err:?}");
    // Offsets that disagree with the shape.
    let header = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let mut wrong = (header.len() as u64).to_le_bytes().to_vec();
    wrong.extend_from_slice(header);
    wrong.extend_from_slice(&[0; 8]);
    let err = load_bytes(wrong, &opts).unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Format { .. }), "{err:?}");
}

#[test]
fn flatten_joins_nested_keys_and_reports_other_values() {
    let t = || Value::Tensor(Tensor::from_slice(&[1.0f32], &[1]).unwrap());
    let mut inner = Dict::new();
    inner.insert("w", t());
    inner.insert("lr", Value::Float(0.1));
    let mut root = Dict::new();
    root.insert("model", Value::Dict(inner));
    root.insert("list", Value::List(vec![t(), Value::Int(3)]));
    root.insert("iteration", Value::Int(7));
    root.insert(5i64, t());
    let (sd, others) = flatten_tensors(&Value::Dict(root));
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["model.w", "list.0", "5"]);
    let paths: Vec<&str> = others.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["model.lr", "list.1", "iteration"]);
}

#[test]
fn flatten_never_drops_a_tensor_whose_joined_name_is_taken() {
    let t = |x: f32| Value::Tensor(Tensor::from_slice(&[x], &[1]).unwrap());
    let mut inner = Dict::new();
    inner.insert("b", t(2.0));
    let mut root = Dict::new();
    root.insert("a.b", t(1.0));
    root.insert("a", Value::Dict(inner));
    let (sd, others) = flatten_tensors(&Value::Dict(root));
    assert_eq!(sd.get("a.b").unwrap().to_vec::<f32>().unwrap(), [1.0]);
    let [(path, Value::Tensor(second))] = others.as_slice() else {
        panic!("the second a.b is not reported: {others:?}");
    };
    assert_eq!(path, "a.b");
    assert_eq!(second.to_vec::<f32>().unwrap(), [2.0]);
}

#[test]
fn files_cross_between_python_safetensors_and_ckpt() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    let theirs = dir.path().join("theirs.safetensors");
    let meta = [("format".to_string(), "pt".to_string())];
    save_safetensors(&ours, &sample(), Some(&meta)).unwrap();

    let script = interop_script("writer/check_safetensors.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&ours)
        .arg(&theirs)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{stdout}\n{stderr}");

    // Same tensors and metadata: the same bytes as Python's writer.
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );

    // Python wrote every dtype with the same pattern, plus a transposed (made contiguous) one.
    let value = load(&theirs).unwrap();
    let read = tensors_of(&value);
    let expected = sample();
    assert_eq!(read.len(), expected.len());
    for (name, tensor) in &read {
        assert!(
            tensor.storage().is_mapped(),
            "{name} is a view of the mapped file"
        );
        assert!(tensor.data_eq(expected.get(name).unwrap()), "{name}");
    }
    // Data-offset order: decreasing alignment, then name (how safetensors lays files out).
    let names: Vec<&str> = read.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..4], ["uint64", "int64", "float64", "scalar"]);
}

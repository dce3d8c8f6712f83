//! Files written by `save_torch` load in real torch with `weights_only=True` (warnings as
//! errors), with `mmap=True`, and with `mmap=True` + `calculate_storage_offsets`, holding
//! exactly the values, types, order and storage sharing written. The Python side
//! (tests/interop/writer/check_torch_files.py) builds its own expectation of every case.
//!
//! Python is `$CKPT_PYTHON`. Without it the test is skipped
//! loudly, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::format::{save_torch, SaveOptions};
use ckpt::{DType, Dict, DictKind, Key, Tensor, Value};
use num_bigint::BigInt;

use crate::support::{python, repo_file};

/// The Python interpreter for these tests, or `None` (after saying why) to skip.
fn python() -> Option<PathBuf> {
    python::interop_python("the torch load test of written files", "torch")
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn dict(kind: DictKind, items: Vec<(Key, Value)>) -> Value {
    let mut d = Dict::with_kind(kind);
    for (k, v) in items {
        d.insert(k, v);
    }
    Value::Dict(d)
}

fn plain(items: Vec<(&str, Value)>) -> Value {
    dict(
        DictKind::Dict,
        items.into_iter().map(|(k, v)| (Key::from(k), v)).collect(),
    )
}

fn ordered(items: Vec<(&str, Value)>) -> Value {
    dict(
        DictKind::OrderedDict,
        items.into_iter().map(|(k, v)| (Key::from(k), v)).collect(),
    )
}

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).unwrap()
}

fn arange(n: usize, shape: &[usize]) -> Tensor {
    let data: Vec<f32> = (0..n).map(|x| x as f32).collect();
    f32s(&data, shape)
}

/// Deterministic bytes for a dtype (bools must be 0/1): the Python side makes the same.
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

fn t(tensor: Tensor) -> Value {
    Value::Tensor(tensor)
}

fn dtypes_case() -> Value {
    ordered(
        DType::ALL
            .iter()
            .map(|d| (d.name(), t(pattern(*d, &[2, 3]))))
            .collect(),
    )
}

fn shapes_case() -> Value {
    ordered(vec![
        ("scalar", t(f32s(&[3.5], &[]))),
        ("empty", t(Tensor::zeros(DType::Float32, &[0, 3]).unwrap())),
        (
            "empty_mid",
            t(Tensor::zeros(DType::Int64, &[2, 0, 4]).unwrap()),
        ),
        ("four_d", t(arange(120, &[2, 3, 4, 5]))),
        ("long_scalar", t(Tensor::from_slice(&[7i64], &[]).unwrap())),
    ])
}

fn views_case() -> Value {
    let base = arange(12, &[12]);
    let as_int = Tensor::new(DType::Int32, vec![4], vec![1], 0, base.storage().clone()).unwrap();
    ordered(vec![
        ("base", t(base.clone())),
        ("view", t(base.view(&[2, 3], &[3, 1], 2).unwrap())),
        ("transposed", t(base.view(&[4, 3], &[1, 4], 0).unwrap())),
        ("expanded", t(base.view(&[3, 4], &[0, 1], 0).unwrap())),
        ("tied", t(base.clone())),
        ("as_int", t(as_int)),
        ("other", t(arange(3, &[3]))),
    ])
}

fn metadata(entries: &[(&str, i64)]) -> Value {
    ordered(
        entries
            .iter()
            .map(|(prefix, version)| (*prefix, plain(vec![("version", Value::Int(*version))])))
            .collect(),
    )
}

fn module_case() -> Value {
    let mut sd = ordered(vec![
        ("0.weight", t(arange(6, &[2, 3]))),
        ("0.bias", t(f32s(&[0.5, -0.5], &[2]))),
        ("1.weight", t(f32s(&[1.0, 1.0], &[2]))),
        ("1.bias", t(f32s(&[0.0, 0.0], &[2]))),
        ("1.running_mean", t(f32s(&[0.0, 0.0], &[2]))),
        ("1.running_var", t(f32s(&[1.0, 1.0], &[2]))),
        (
            "1.num_batches_tracked",
            t(Tensor::from_slice(&[0i64], &[]).unwrap()),
        ),
    ]);
    if let Value::Dict(d) = &mut sd {
        d.set_attribute("_metadata", metadata(&[("", 1), ("0", 1), ("1", 2)]));
    }
    sd
}

fn int_dict(items: Vec<(i64, Value)>) -> Value {
    dict(
        DictKind::Dict,
        items.into_iter().map(|(k, v)| (Key::Int(k), v)).collect(),
    )
}

fn adam_case() -> Value {
    let state = |i: usize| {
        plain(vec![
            ("step", t(f32s(&[1.0], &[]))),
            ("exp_avg", t(arange(6 + i, &[6 + i]))),
            ("exp_avg_sq", t(arange(6 + i, &[6 + i]))),
        ])
    };
    let group = plain(vec![
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
    ]);
    plain(vec![
        ("state", int_dict(vec![(0, state(0)), (1, state(1))])),
        ("param_groups", Value::List(vec![group])),
    ])
}

fn sgd_case() -> Value {
    let group = plain(vec![
        ("lr", Value::Float(0.1)),
        ("momentum", Value::Float(0.9)),
        ("dampening", Value::Int(0)),
        ("weight_decay", Value::Float(1e-4)),
        ("nesterov", Value::Bool(false)),
        ("maximize", Value::Bool(false)),
        ("foreach", Value::None),
        ("differentiable", Value::Bool(false)),
        ("fused", Value::None),
        ("params", Value::List(vec![Value::Int(0)])),
    ]);
    plain(vec![
        (
            "state",
            int_dict(vec![(
                0,
                plain(vec![("momentum_buffer", t(arange(4, &[2, 2])))]),
            )]),
        ),
        ("param_groups", Value::List(vec![group])),
    ])
}

fn scalars_case() -> Value {
    let big: BigInt = BigInt::from(1) << 70;
    let keys = dict(
        DictKind::Dict,
        vec![
            (Key::Int(-5), s("int")),
            (Key::Float(2.5f64.to_bits()), s("float")),
            (Key::None, s("none")),
            (
                Key::Tuple(vec![Key::Int(1), Key::Str("a".into())]),
                s("tuple"),
            ),
            (Key::Bytes(b"k".to_vec()), s("bytes")),
            (Key::DType(DType::Float32), s("dtype")),
            (Key::Str("s".into()), s("str")),
        ],
    );
    let counter = dict(
        DictKind::Counter,
        vec![
            (Key::from("x"), Value::Int(2)),
            (Key::from("y"), Value::Int(1)),
        ],
    );
    plain(vec![
        ("big", Value::BigInt(big.clone())),
        ("neg_big", Value::BigInt(-big)),
        ("i64max", Value::Int(i64::MAX)),
        ("i64min", Value::Int(i64::MIN)),
        ("minus_one", Value::Int(-1)),
        ("b255", Value::Int(255)),
        ("b256", Value::Int(256)),
        ("b65536", Value::Int(65536)),
        ("i32min", Value::Int(i32::MIN as i64)),
        ("nan", Value::Float(f64::NAN)),
        ("inf", Value::Float(f64::INFINITY)),
        ("ninf", Value::Float(f64::NEG_INFINITY)),
        ("negzero", Value::Float(-0.0)),
        ("text", s("héllo wörld ✓ 日本")),
        ("empty_text", s("")),
        ("bytes", Value::Bytes(b"\x00\xff abc\x80".to_vec())),
        ("empty_bytes", Value::Bytes(Vec::new())),
        ("bytearray", Value::ByteArray(vec![1, 2, 255])),
        (
            "tuple",
            Value::Tuple(vec![Value::Int(1), s("a"), Value::None, Value::Float(2.5)]),
        ),
        ("tuple1", Value::Tuple(vec![Value::Int(1)])),
        ("empty_tuple", Value::Tuple(vec![])),
        ("empty_list", Value::List(vec![])),
        ("empty_dict", plain(vec![])),
        ("none", Value::None),
        (
            "set",
            Value::Set(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
        ),
        ("size", Value::Size(vec![2, 3])),
        ("empty_size", Value::Size(vec![])),
        (
            "device",
            Value::Device {
                kind: "cuda".into(),
                index: Some(1),
            },
        ),
        (
            "device_cpu",
            Value::Device {
                kind: "cpu".into(),
                index: None,
            },
        ),
        ("dtype", Value::DType(DType::Float16)),
        ("dtype_new", Value::DType(DType::Float8E4M3Fn)),
        ("complex", Value::Complex(1.5, -2.0)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        (
            "nested",
            Value::List(vec![
                Value::List(vec![
                    Value::Int(1),
                    Value::List(vec![Value::Int(2), Value::List(vec![Value::Int(3)])]),
                ]),
                plain(vec![("a", plain(vec![("b", plain(vec![]))]))]),
            ]),
        ),
        ("counter", counter),
        ("keys", keys),
        ("empty_ordered", ordered(vec![])),
    ])
}

fn parameters_case() -> Value {
    plain(vec![
        (
            "p",
            Value::Parameter(arange(4, &[2, 2]).with_requires_grad(true)),
        ),
        ("p_frozen", Value::Parameter(arange(3, &[3]))),
        ("t_grad", t(arange(2, &[2]).with_requires_grad(true))),
        (
            "ndarray",
            Value::NdArray(Tensor::from_slice(&[1.0f64, 2.0], &[2]).unwrap()),
        ),
        (
            "int_grad_ignored",
            t(Tensor::from_slice(&[1i64], &[1])
                .unwrap()
                .with_requires_grad(true)),
        ),
    ])
}

fn many_case() -> Value {
    // 1001 tensors (memo and storage keys past 255, SETITEMS batches of 1000) and a list
    // of 1001 strings.
    let mut d = Dict::ordered();
    for i in 0..1001usize {
        d.insert(
            format!("layer{i}.weight"),
            t(f32s(&[i as f32, -(i as f32)], &[2])),
        );
    }
    d.insert(
        "names",
        Value::List((0..1001).map(|i| s(&format!("n{i}"))).collect()),
    );
    Value::Dict(d)
}

fn cases() -> Vec<(&'static str, Value, SaveOptions)> {
    let default = SaveOptions::default;
    vec![
        ("dtypes", dtypes_case(), default()),
        ("shapes", shapes_case(), default()),
        ("views", views_case(), default()),
        ("module", module_case(), default()),
        ("adam", adam_case(), default()),
        ("sgd", sgd_case(), default()),
        ("scalars", scalars_case(), default()),
        ("parameters", parameters_case(), default()),
        ("many", many_case(), default()),
        (
            "align4096",
            module_case(),
            SaveOptions::default().with_alignment(4096),
        ),
        (
            "nocrc",
            views_case(),
            SaveOptions::default().with_crc32(false),
        ),
        (
            "named",
            shapes_case(),
            SaveOptions::default().with_archive_name("my_ckpt-v2"),
        ),
    ]
}

fn run_checker(python: &Path, dir: &Path) {
    let script = repo_file("tests/interop/writer/check_torch_files.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "torch rejected our files:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ALL OK"), "{stdout}\n{stderr}");
}

#[test]
fn written_files_load_in_torch_weights_only_with_and_without_mmap() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, value, options) in cases() {
        let path = dir.path().join(format!("{name}.pt"));
        save_torch(&path, &value, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    run_checker(&python, dir.path());
}

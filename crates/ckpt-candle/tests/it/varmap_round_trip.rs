//! A `VarMap` saved to a real torch file and loaded into another `VarMap`: every dtype both
//! libraries have comes back bit for bit; other dtypes are converted into the variables' as
//! torch converts them; shape and dtype mismatches, missing and unexpected names are reported
//! and leave the variables they concern untouched.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ckpt::format::{load, save_torch, SaveOptions};
use ckpt::{shared, Checkpointer, Dict, Model, StateDict, Value};
use ckpt_candle::VarMapModel;

const ALL_DTYPES: [DType; 10] = [
    DType::U8,
    DType::U32,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::BF16,
    DType::F16,
    DType::F32,
    DType::F64,
    DType::F8E4M3,
];

/// A tensor of `dtype` whose values depend on `seed` (so two maps differ).
fn sample(dtype: DType, shape: &[usize], seed: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|i| ((i as f64 * 1.75 + seed) % 13.0) - 4.0)
        .collect();
    let values: Vec<f64> = if dtype.is_int() || dtype == DType::U8 {
        values.iter().map(|v| v.abs().floor()).collect()
    } else {
        values
    };
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn varmap_with(entries: &[(&str, Tensor)]) -> VarMap {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, t) in entries {
            data.insert(name.to_string(), Var::from_tensor(t).unwrap());
        }
    }
    varmap
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    ckpt_candle::to_ckpt(t).unwrap().contiguous_bytes().to_vec()
}

#[test]
fn every_shared_dtype_round_trips_through_a_torch_file_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ALL_DTYPES {
        let name = format!("layer.{}", dtype.as_str());
        let source = varmap_with(&[(&name, sample(dtype, &[3, 5], 1.0))]);
        let state = VarMapModel::new(source.clone()).state_dict().unwrap();
        assert_eq!(
            state.get(&name).unwrap().dtype(),
            ckpt_candle::dtype_to_ckpt(dtype).unwrap()
        );

        let path = dir.path().join(format!("{}.pth", dtype.as_str()));
        let mut top = Dict::new();
        top.insert("model", state.to_value());
        save_torch(&path, &Value::Dict(top), &SaveOptions::default()).unwrap();

        let target = varmap_with(&[(&name, sample(dtype, &[3, 5], 6.0))]);
        let loaded = StateDict::from_value(load(&path).unwrap().get("model").unwrap()).unwrap();
        let report = VarMapModel::new(target.clone())
            .load_non_strict(loaded)
            .unwrap();
        assert!(report.is_empty(), "{dtype:?}: {report:?}");

        let original = source.data().lock().unwrap()[&name].as_tensor().clone();
        let restored = target.data().lock().unwrap()[&name].as_tensor().clone();
        assert_eq!(restored.dtype(), dtype);
        assert_eq!(bytes_of(&restored), bytes_of(&original), "{dtype:?}");
    }
}

#[test]
fn loading_converts_to_the_variables_dtype() {
    let target = varmap_with(&[("w", sample(DType::F32, &[4], 0.0))]);
    let mut state = StateDict::new();
    state.insert(
        "w",
        ckpt::Tensor::from_slice(&[1.5f64, -2.0, 0.25, 8.0], &[4]).unwrap(),
    );
    VarMapModel::new(target.clone())
        .load_state_dict(state)
        .unwrap();
    let w = target.data().lock().unwrap()["w"].as_tensor().clone();
    assert_eq!(w.dtype(), DType::F32);
    assert_eq!(w.to_vec1::<f32>().unwrap(), vec![1.5, -2.0, 0.25, 8.0]);
}

#[test]
fn shape_mismatch_missing_and_unexpected_names_are_reported() {
    let before = sample(DType::F32, &[2, 3], 0.0);
    let target = varmap_with(&[
        ("fc.weight", before.clone()),
        ("fc.bias", sample(DType::F32, &[2], 0.0)),
        ("head.weight", sample(DType::F32, &[1, 2], 0.0)),
    ]);
    let mut state = StateDict::new();
    state.insert(
        "fc.weight",
        ckpt::Tensor::from_slice(&[0f32; 6], &[3, 2]).unwrap(),
    );
    state.insert(
        "fc.bias",
        ckpt::Tensor::from_slice(&[7f32, 8.], &[2]).unwrap(),
    );
    state.insert(
        "extra.weight",
        ckpt::Tensor::from_slice(&[1f32], &[1]).unwrap(),
    );

    let report = VarMapModel::new(target.clone())
        .load_non_strict(state)
        .unwrap();
    assert_eq!(
        report.incorrect_shapes,
        vec![ckpt::ShapeMismatch::new(
            "fc.weight",
            vec![3, 2],
            vec![2, 3]
        )]
    );
    assert_eq!(report.missing_keys, vec!["fc.weight", "head.weight"]);
    assert_eq!(report.unexpected_keys, vec!["extra.weight"]);

    let data = target.data().lock().unwrap();
    assert_eq!(bytes_of(data["fc.weight"].as_tensor()), bytes_of(&before));
    assert_eq!(
        data["fc.bias"].as_tensor().to_vec1::<f32>().unwrap(),
        vec![7., 8.]
    );
}

#[test]
fn checkpointer_skips_mismatched_shapes_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let source = varmap_with(&[
        ("fc.weight", sample(DType::F32, &[3, 2], 1.0)),
        ("fc.bias", sample(DType::F32, &[2], 1.0)),
    ]);
    Checkpointer::new(shared(VarMapModel::new(source)), dir.path())
        .save("model_final", Dict::new())
        .unwrap();

    let weight = sample(DType::F32, &[2, 3], 5.0);
    let target = varmap_with(&[
        ("fc.weight", weight.clone()),
        ("fc.bias", sample(DType::F32, &[2], 5.0)),
    ]);
    Checkpointer::new(shared(VarMapModel::new(target.clone())), dir.path())
        .load(
            dir.path().join("model_final.pth"),
            ckpt::Checkpointables::All,
        )
        .unwrap();
    let data = target.data().lock().unwrap();
    assert_eq!(bytes_of(data["fc.weight"].as_tensor()), bytes_of(&weight));
    assert_eq!(
        bytes_of(data["fc.bias"].as_tensor()),
        bytes_of(&sample(DType::F32, &[2], 1.0))
    );
}

fn complex64(values: &[f32]) -> ckpt::Tensor {
    let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    ckpt::Tensor::from_bytes(ckpt::DType::Complex64, &[values.len() / 2], bytes).unwrap()
}

#[test]
fn a_state_that_cannot_be_converted_is_refused_and_changes_nothing() {
    let before = sample(DType::F32, &[2], 0.0);
    let target = varmap_with(&[("a", before.clone()), ("b", sample(DType::F32, &[2], 0.0))]);
    let mut state = StateDict::new();
    state.insert("a", ckpt::Tensor::from_slice(&[9f32, 9.], &[2]).unwrap());
    state.insert("b", complex64(&[1.0, 2.0, 3.0, 4.0]));
    let err = VarMapModel::new(target.clone())
        .load_state_dict(state)
        .unwrap_err();
    assert_eq!(err.entry_key(), Some("b"), "{err:?}");
    assert!(
        matches!(
            err.root(),
            ckpt::Error::DTypeMismatch {
                expected: ckpt::DType::Float32,
                found: ckpt::DType::Complex64
            }
        ),
        "{err:?}"
    );
    assert!(err.report().to_string().contains("imaginary"), "{err}");
    assert_eq!(
        bytes_of(target.data().lock().unwrap()["a"].as_tensor()),
        bytes_of(&before)
    );
}

#[test]
fn dtypes_candle_lacks_load_into_its_variables_as_torch_converts_them() {
    let target = varmap_with(&[
        ("mask", sample(DType::F32, &[3], 0.0)),
        ("small", sample(DType::I64, &[2], 0.0)),
        ("wide", sample(DType::F16, &[2], 0.0)),
    ]);
    let mut state = StateDict::new();
    state.insert(
        "mask",
        ckpt::Tensor::from_slice(&[true, false, true], &[3]).unwrap(),
    );
    state.insert(
        "small",
        ckpt::Tensor::from_slice(&[-3i8, 100], &[2]).unwrap(),
    );
    // float64 → float16 rounds through float32 as torch does (directly it would round up).
    let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    state.insert("wide", ckpt::Tensor::from_slice(&[x, -2.5], &[2]).unwrap());
    VarMapModel::new(target.clone())
        .load_state_dict(state)
        .unwrap();
    let data = target.data().lock().unwrap();
    let mask = data["mask"].as_tensor();
    assert_eq!(mask.dtype(), DType::F32);
    assert_eq!(mask.to_vec1::<f32>().unwrap(), vec![1.0, 0.0, 1.0]);
    assert_eq!(
        data["small"].as_tensor().to_vec1::<i64>().unwrap(),
        vec![-3, 100]
    );
    let wide = data["wide"].as_tensor().to_vec1::<half::f16>().unwrap();
    assert_eq!(wide, vec![half::f16::ONE, half::f16::from_f32(-2.5)]);
}

#[test]
fn complex_entries_are_reported_like_shape_mismatches() {
    let before = sample(DType::F32, &[2], 0.0);
    let target = varmap_with(&[("w", before.clone()), ("b", sample(DType::F32, &[2], 0.0))]);
    let mut state = StateDict::new();
    state.insert("w", complex64(&[1.0, 2.0, 3.0, 4.0]));
    state.insert("b", ckpt::Tensor::from_slice(&[7f64, 8.], &[2]).unwrap());
    let model = VarMapModel::new(target.clone());
    let report = model.clone().load_non_strict(state.clone()).unwrap();
    assert_eq!(
        report.incorrect_dtypes,
        vec![ckpt::DTypeMismatch::new(
            "w",
            ckpt::DType::Complex64,
            ckpt::DType::Float32
        )]
    );
    assert_eq!(report.missing_keys, vec!["w"]);
    {
        let data = target.data().lock().unwrap();
        assert_eq!(bytes_of(data["w"].as_tensor()), bytes_of(&before));
        assert_eq!(
            data["b"].as_tensor().to_vec1::<f32>().unwrap(),
            vec![7., 8.]
        );
    }

    // Through a checkpointer: decided from the model's dtypes before anything is loaded.
    let dir = tempfile::tempdir().unwrap();
    let mut root = Dict::new();
    root.insert("model", state.to_value());
    save_torch(
        dir.path().join("c.pth"),
        &Value::Dict(root),
        &SaveOptions::default(),
    )
    .unwrap();
    let info = model.tensor_info().unwrap();
    assert!(info.iter().all(|i| i.dtype == ckpt::DType::Float32));
    Checkpointer::new(shared(model), "")
        .load(dir.path().join("c.pth"), ckpt::Checkpointables::All)
        .unwrap();
    assert_eq!(
        bytes_of(target.data().lock().unwrap()["w"].as_tensor()),
        bytes_of(&before)
    );
}

#[test]
fn the_model_order_puts_listed_names_first_then_sorts() {
    let varmap = varmap_with(&[
        ("z", sample(DType::F32, &[1], 0.0)),
        ("fc.weight", sample(DType::F32, &[1], 0.0)),
        ("fc.bias", sample(DType::F32, &[1], 0.0)),
        ("a", sample(DType::F32, &[1], 0.0)),
    ]);
    let model = VarMapModel::new(varmap)
        .with_order(["fc.weight", "fc.bias"])
        .unwrap();
    assert_eq!(model.names(), vec!["fc.weight", "fc.bias", "a", "z"]);
}

#[test]
fn an_fp8_entry_loads_into_an_f64_variable() {
    let target = varmap_with(&[("w", sample(DType::F64, &[2], 0.0))]);
    let mut state = StateDict::new();
    let fp8 = ckpt::Tensor::from_bytes(ckpt::DType::Float8E4M3Fn, &[2], vec![0x38, 0xC4]).unwrap();
    state.insert("w", fp8);
    VarMapModel::new(target.clone())
        .load_state_dict(state)
        .unwrap();
    let w = target.data().lock().unwrap()["w"]
        .as_tensor()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(w, vec![1.0, -3.0]);
}

#[test]
fn many_variables_load_with_unexpected_names_in_file_order() {
    // Enough entries that a per-entry shift of the checkpoint's map would dominate the load.
    let n = 20_000;
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for i in 0..n {
            let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
            data.insert(format!("v{i:05}"), Var::from_tensor(&t).unwrap());
        }
    }
    let mut model = VarMapModel::new(varmap.clone());
    let mut state = StateDict::new();
    state.insert("zz.extra", ckpt::Tensor::from_slice(&[1f32], &[1]).unwrap());
    for i in 0..n {
        state.insert(
            format!("v{i:05}"),
            ckpt::Tensor::from_slice(&[i as f32], &[1]).unwrap(),
        );
    }
    state.insert("aa.extra", ckpt::Tensor::from_slice(&[2f32], &[1]).unwrap());
    let loaded = model.load_state_dict(state).unwrap();
    assert!(loaded.missing_keys.is_empty());
    assert_eq!(loaded.unexpected_keys, ["zz.extra", "aa.extra"]);
    let last = varmap.data().lock().unwrap()[&format!("v{:05}", n - 1)].clone();
    assert_eq!(last.to_vec1::<f32>().unwrap(), [(n - 1) as f32]);
}

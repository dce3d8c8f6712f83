//! Loading into an existing parameter keeps the parameter's dtype, as torch's
//! `load_state_dict` (`param.copy_(value)`) does: a float32 model stays float32 whatever the
//! file holds (float64, float16, numpy arrays), an int64 buffer stays int64, and later saves
//! write the model's dtypes. Complex values are not loaded into real parameters: the key is
//! reported like a shape mismatch, before anything is loaded.

use std::path::Path;

use ckpt::format::{save_torch, SaveOptions};
use ckpt::{
    shared, Checkpointer, DType, Dict, Model, Shared, StateDict, StateDictModel, Tensor, Value,
};
use half::f16;

use crate::support::{capture_logs, python};

fn f32s(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, &[values.len()]).unwrap()
}

/// A float32 model with an int64 buffer, a float16 parameter, and a lazy parameter (any
/// shape) not initialised yet.
fn model() -> Shared<StateDictModel> {
    let mut sd = StateDict::new();
    sd.insert("w", Tensor::zeros(DType::Float32, &[3]).unwrap());
    sd.insert("b", Tensor::zeros(DType::Float32, &[2]).unwrap());
    sd.insert("num_batches", Tensor::zeros(DType::Int64, &[2]).unwrap());
    sd.insert("h", Tensor::zeros(DType::Float16, &[2]).unwrap());
    sd.insert("c", f32s(&[9.0, 9.0]));
    sd.insert("lazy", Tensor::zeros(DType::Float32, &[0]).unwrap());
    shared(StateDictModel::new(sd).with_any_shape(["lazy"]))
}

fn checkpoint(model: Dict) -> Value {
    let mut root = Dict::new();
    root.insert("model", Value::Dict(model));
    Value::Dict(root)
}

fn tensor(t: Tensor) -> Value {
    Value::Tensor(t)
}

/// Entries of other dtypes than the model's, all loadable.
fn mixed_model_entry() -> Dict {
    let mut m = Dict::new();
    m.insert(
        "w",
        tensor(Tensor::from_slice(&[0.1f64, 1.5, -2.25], &[3]).unwrap()),
    );
    m.insert(
        "b",
        tensor(Tensor::from_slice(&[f16::from_f32(0.5), f16::from_f32(-1.0)], &[2]).unwrap()),
    );
    m.insert(
        "num_batches",
        tensor(Tensor::from_slice(&[7i32, -3], &[2]).unwrap()),
    );
    m.insert(
        "h",
        tensor(Tensor::from_slice(&[2.5f64, -0.25], &[2]).unwrap()),
    );
    m
}

fn dtype_of(model: &Shared<StateDictModel>, name: &str) -> DType {
    model.lock().unwrap().get(name).unwrap().dtype()
}

fn assert_converted(model: &Shared<StateDictModel>) {
    let m = model.lock().unwrap();
    let w = m.get("w").unwrap();
    assert_eq!(w.dtype(), DType::Float32);
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.1f32, 1.5, -2.25]);
    let b = m.get("b").unwrap();
    assert_eq!(b.dtype(), DType::Float32);
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![0.5, -1.0]);
    let n = m.get("num_batches").unwrap();
    assert_eq!(n.dtype(), DType::Int64);
    assert_eq!(n.to_vec::<i64>().unwrap(), vec![7, -3]);
    let h = m.get("h").unwrap();
    assert_eq!(h.dtype(), DType::Float16);
    assert_eq!(
        h.to_vec::<f16>().unwrap(),
        vec![f16::from_f32(2.5), f16::from_f32(-0.25)]
    );
}

#[test]
fn a_float32_model_stays_float32_and_later_saves_write_float32() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.pth");
    save_torch(
        &file,
        &checkpoint(mixed_model_entry()),
        &SaveOptions::default(),
    )
    .unwrap();

    let model = model();
    let checkpointer = Checkpointer::new(model.clone(), dir.path().join("out"));
    checkpointer
        .load(&file, ckpt::Checkpointables::All)
        .unwrap();
    assert_converted(&model);

    checkpointer.save("after", Dict::new()).unwrap();
    let saved = ckpt::format::load(dir.path().join("out/after.pth")).unwrap();
    let saved = StateDict::from_value(saved.get("model").unwrap()).unwrap();
    let dtypes: Vec<(&str, DType)> = saved.iter().map(|(n, t)| (n, t.dtype())).collect();
    assert_eq!(
        dtypes[..4],
        [
            ("w", DType::Float32),
            ("b", DType::Float32),
            ("num_batches", DType::Int64),
            ("h", DType::Float16)
        ]
    );
}

#[test]
fn numpy_arrays_are_loaded_in_the_parameters_dtype() {
    let mut m = Dict::new();
    m.insert(
        "w",
        Value::NdArray(Tensor::from_slice(&[0.1f64, 1.5, -2.25], &[3]).unwrap()),
    );
    let Value::Dict(dict) = checkpoint(m) else {
        unreachable!()
    };
    let model = model();
    Checkpointer::new(model.clone(), "")
        .load_checkpoint(Path::new("numpy.pkl"), dict, ckpt::Checkpointables::All)
        .unwrap();
    assert_eq!(dtype_of(&model, "w"), DType::Float32);
    let w = model
        .lock()
        .unwrap()
        .get("w")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(w, vec![0.1f32, 1.5, -2.25]);
}

#[test]
fn complex_values_are_skipped_for_real_parameters_and_reported_like_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("complex.pth");
    let complex = || {
        Tensor::from_bytes(
            DType::Complex64,
            &[2],
            [1f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        )
        .unwrap()
    };
    let mut m = mixed_model_entry();
    m.insert("c", tensor(complex()));
    m.insert("lazy", tensor(complex()));
    save_torch(&file, &checkpoint(m), &SaveOptions::default()).unwrap();

    let model = model();
    let (result, logs) = capture_logs(|| {
        Checkpointer::new(model.clone(), "").load(&file, ckpt::Checkpointables::All)
    });
    result.unwrap();
    assert!(
        logs.contains(
            "Skip loading parameter 'c' to the model due to incompatible dtypes: torch.complex64 in the checkpoint but torch.float32 in the model"
        ),
        "{logs}"
    );
    assert!(
        logs.contains("Some model parameters or buffers are not found in the checkpoint:\nc"),
        "{logs}"
    );
    // Nothing else was refused: the other entries are loaded and converted.
    assert_converted(&model);
    let m = model.lock().unwrap();
    assert_eq!(m.get("c").unwrap().to_vec::<f32>().unwrap(), vec![9.0, 9.0]);
    // A parameter not initialised yet takes the tensor as it is.
    let lazy = m.get("lazy").unwrap();
    assert_eq!(lazy.dtype(), DType::Complex64);
    assert!(lazy.data_eq(&complex()));
}

#[test]
fn a_direct_load_of_complex_into_real_is_an_error_that_changes_nothing() {
    let model = model();
    let mut state = StateDict::new();
    state.insert("w", f32s(&[1.0, 2.0, 3.0]));
    state.insert(
        "c",
        Tensor::from_bytes(DType::Complex128, &[2], vec![0; 32]).unwrap(),
    );
    let err = model.lock().unwrap().load_state_dict(state).unwrap_err();
    assert!(
        matches!(
            err.root(),
            ckpt::Error::DTypeMismatch {
                expected: DType::Float32,
                found: DType::Complex128
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.entry_key(), Some("c"));
    let w = model
        .lock()
        .unwrap()
        .get("w")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(w, vec![0.0; 3]);
}

#[test]
fn the_model_reports_its_dtypes_without_a_state_dict() {
    let model = model();
    let info = model.lock().unwrap().tensor_info().unwrap();
    let dtypes: Vec<(String, DType)> = info.into_iter().map(|i| (i.name, i.dtype)).collect();
    assert_eq!(dtypes[2], ("num_batches".to_string(), DType::Int64));
    assert_eq!(dtypes[3], ("h".to_string(), DType::Float16));
}

/// Files Python wrote: a Detectron-style pickle of float64 numpy arrays and a torch file of
/// float16 tensors both load into the float32 model as float32.
#[test]
fn python_files_of_other_dtypes_load_into_float32() {
    let Some(python) =
        python::interop_python("the numpy/float16 checkpoint load test", "torch, numpy")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import pickle, sys
import numpy as np
import torch
d = sys.argv[1]
with open(f"{d}/numpy.pkl", "wb") as f:
    pickle.dump({"model": {"w": np.array([0.1, 1.5, -2.25], dtype=np.float64)}}, f)
torch.save({"model": {"w": torch.tensor([0.1, 1.5, -2.25], dtype=torch.float16)}}, f"{d}/half.pth")
print("ok")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, expected) in [
        ("numpy.pkl", [0.1f32, 1.5, -2.25]),
        ("half.pth", [f16::from_f64(0.1).to_f32(), 1.5, -2.25]),
    ] {
        let model = model();
        let checkpointer = Checkpointer::new(model.clone(), dir.path().join("out"));
        checkpointer
            .load(dir.path().join(file), ckpt::Checkpointables::All)
            .unwrap();
        assert_eq!(dtype_of(&model, "w"), DType::Float32, "{file}");
        let w = model
            .lock()
            .unwrap()
            .get("w")
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(w, expected, "{file}");
        checkpointer.save("again", Dict::new()).unwrap();
        let saved = ckpt::format::load(dir.path().join("out/again.pth")).unwrap();
        let saved = StateDict::from_value(saved.get("model").unwrap()).unwrap();
        assert_eq!(saved.get("w").unwrap().dtype(), DType::Float32, "{file}");
    }
}

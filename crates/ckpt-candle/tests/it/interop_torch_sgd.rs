//! Interop with PyTorch for SGD with momentum: a candle `Linear` and [`Sgd`] checkpointed
//! after a few steps resume in torch (`tests/interop/candle/torch_sgd.py`), and the same
//! further steps in torch and in candle give the same weights and momentum buffers.
//!
//! Python comes from `CKPT_PYTHON` (`scripts/setup-python.sh` makes it). Without it the
//! test is skipped loudly, except with `CI=true`, where that is a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Optimizer, VarBuilder, VarMap};
use ckpt::{shared, Checkpointable, Checkpointer, Dict};
use ckpt_candle::{Sgd, SgdConfig, VarMapModel};

use crate::support::{interop_script, python};

/// The Python interpreter for these tests, or `None` (after saying why) to skip.
fn python() -> Option<PathBuf> {
    python::interop_python("the candle/torch SGD interop test", "torch")
}

#[derive(serde::Deserialize, Debug)]
struct Snapshot {
    params: BTreeMap<String, Vec<f64>>,
    momentum: BTreeMap<String, Vec<f64>>,
    group: BTreeMap<String, serde_json::Value>,
}

fn assert_close(what: &str, rust: &[f32], torch: &[f64]) {
    assert_eq!(rust.len(), torch.len(), "{what}");
    let scale = torch.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (r, t) in rust.iter().zip(torch) {
        assert!(
            (f64::from(*r) - t).abs() <= 1e-5 * scale,
            "{what}: {rust:?} vs torch {torch:?}"
        );
    }
}

fn resumes_in_torch_with(config: SgdConfig) {
    let Some(python) = python() else { return };
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let fc = linear(3, 2, VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
    let model = VarMapModel::new(varmap)
        .with_order(["weight", "bias"])
        .unwrap();
    for (name, var) in model.vars() {
        let n = var.elem_count();
        let values: Vec<f32> = (0..n).map(|i| (i as f32 - 2.0) * 0.125).collect();
        let values = if name == "bias" {
            values.iter().map(|v| v + 0.5).collect()
        } else {
            values
        };
        var.set(&Tensor::from_vec(values, var.shape(), &device).unwrap())
            .unwrap();
    }
    let optimizer = shared(Sgd::from_model(&model, config).unwrap());
    let x = Tensor::new(&[[1f32, -2., 0.5], [0.25, 1., -1.]], &device).unwrap();
    let y = Tensor::new(&[[1f32, 0.], [0., 1.]], &device).unwrap();
    let train = |steps: usize| {
        for _ in 0..steps {
            let loss = (fc.forward(&x).unwrap() - &y)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            optimizer.lock().unwrap().backward_step(&loss).unwrap();
        }
    };
    train(3);

    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(shared(model.clone()), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    checkpointer.save("sgd", Dict::new()).unwrap();

    let line = python::run_script_last_line(
        &python,
        &interop_script("candle/torch_sgd.py"),
        &[
            "--resume",
            dir.path().join("sgd.pth").to_str().unwrap(),
            "--steps",
            "4",
        ],
    );
    let torch: Snapshot = serde_json::from_str(&line).unwrap();
    assert_eq!(torch.group["momentum"].as_f64(), Some(config.momentum));
    assert_eq!(torch.group["nesterov"].as_bool(), Some(config.nesterov));

    train(4);
    let state = model.vars();
    for (name, var) in &state {
        assert_close(
            name,
            &var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &torch.params[name],
        );
    }
    let saved = optimizer.lock().unwrap().state_dict().unwrap();
    for (index, name) in ["weight", "bias"].iter().enumerate() {
        let buf = saved
            .get("state")
            .and_then(|s| s.as_dict())
            .and_then(|s| s.get_key(&ckpt::Key::Int(index as i64)))
            .and_then(|e| e.get("momentum_buffer"))
            .and_then(|b| b.as_tensor())
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_close(
            &format!("momentum of {name}"),
            &buf,
            &torch.momentum[&index.to_string()],
        );
    }
}

#[test]
fn sgd_with_momentum_dampening_and_weight_decay_resumes_in_torch() {
    resumes_in_torch_with(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 0.01,
        nesterov: false,
    });
}

#[test]
fn sgd_with_nesterov_momentum_resumes_in_torch() {
    resumes_in_torch_with(SgdConfig {
        lr: 0.05,
        momentum: 0.8,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: true,
    });
}

//! Interop with the Python reference (fvcore's Checkpointer and PeriodicCheckpointer) in one
//! shared save directory: Python trains and saves; Rust resumes, trains on and saves; Python
//! resumes the Rust checkpoint and gets the same tensors, momentum and iteration.
//!
//! Python comes from `CKPT_PYTHON` (`scripts/setup-python.sh` makes it). Without it the test
//! is skipped loudly, except with `CI=true`, where that is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckpt::{
    shared, Checkpointer, Dict, PeriodicCheckpointer, StateDict, StateDictModel, Tensor, Value,
};

use crate::support::train::{mlp, sgd};
use crate::support::{interop_script, python};

fn script() -> PathBuf {
    interop_script("fvcore/fvcore_side.py")
}

/// The Python interpreter for these tests, or `None` (after saying why) to skip.
fn python() -> Option<PathBuf> {
    python::interop_python("the fvcore interop test", "torch, fvcore.common.checkpoint")
}

#[derive(serde::Deserialize, Debug)]
struct Snapshot {
    iteration: Option<i64>,
    params: BTreeMap<String, Vec<f64>>,
    momentum: BTreeMap<String, Vec<f64>>,
}

fn run_python(python: &Path, args: &[&str]) -> Snapshot {
    let line = python::run_script_last_line(python, &script(), args);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line}"))
}

fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|v| *v as f32).collect()
}

fn assert_same(name: &str, rust: &[f32], python: &[f64]) {
    let python = as_f32(python);
    let same = rust.len() == python.len()
        && rust
            .iter()
            .zip(&python)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{name} differs:\nrust   {rust:?}\npython {python:?}");
}

fn zero_state() -> StateDict {
    let mut sd = StateDict::new();
    for (name, shape) in mlp::NAMES.iter().zip(mlp::shapes()) {
        sd.insert(*name, Tensor::zeros(ckpt::DType::Float32, &shape).unwrap());
    }
    sd
}

#[test]
fn python_and_rust_resume_each_others_checkpoints() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let save_dir = dir.path().to_str().unwrap();

    // 1. Python trains iterations 0..=19 and saves model_0000009 and model_0000019.
    let from_python = run_python(
        &python,
        &[
            "train",
            save_dir,
            "--max-iter",
            "40",
            "--period",
            "10",
            "--max-to-keep",
            "2",
            "--stop-at",
            "19",
        ],
    );
    assert_eq!(from_python.iteration, Some(19));

    // 2. Rust resumes: same weights, same momentum, same iteration.
    let model = shared(StateDictModel::new(zero_state()));
    let optimizer = shared(sgd::Sgd::new(mlp::shapes().to_vec(), 1.0, 0.0));
    let mut checkpointer = Checkpointer::new(model.clone(), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    let extra = checkpointer.resume_or_load(None, true).unwrap();
    assert_eq!(extra.get("iteration").and_then(Value::as_int), Some(19));
    let params = mlp::read_params(&model).unwrap();
    for (name, values) in mlp::NAMES.iter().zip(&params) {
        assert_same(name, values, &from_python.params[*name]);
    }
    {
        let opt = optimizer.lock().unwrap();
        assert_eq!(
            (opt.lr, opt.momentum),
            (0.05, 0.9),
            "hyper-parameters come from torch's param_groups"
        );
        for (name, buffer) in mlp::NAMES.iter().zip(opt.buffers()) {
            assert_same(
                name,
                buffer.as_ref().expect("momentum restored"),
                &from_python.momentum[*name],
            );
        }
    }

    // Rust trains on to the end; retention counts Python's periodic files too.
    let data = mlp::synthetic_data();
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(10)
        .max_iter(40)
        .max_to_keep(2)
        .build()
        .unwrap();
    for iteration in 20..40u64 {
        let mut params = mlp::read_params(&model).unwrap();
        let (_, grads) = mlp::loss_and_grads(&params, &data);
        optimizer.lock().unwrap().step(&mut params, &grads);
        mlp::write_params(&model, &params).unwrap();
        periodic.step(iteration, Dict::new()).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ckpt::retention::STATE_FILE,
            "last_checkpoint",
            "model_0000029.pth",
            "model_0000039.pth",
            "model_final.pth"
        ]
    );

    // 3. Python resumes the Rust checkpoint.
    let back = run_python(&python, &["verify", save_dir]);
    assert_eq!(back.iteration, Some(39));
    let params = mlp::read_params(&model).unwrap();
    for (name, values) in mlp::NAMES.iter().zip(&params) {
        assert_same(name, values, &back.params[*name]);
    }
    let opt = optimizer.lock().unwrap();
    for (name, buffer) in mlp::NAMES.iter().zip(opt.buffers()) {
        assert_same(name, buffer.as_ref().unwrap(), &back.momentum[*name]);
    }
}

#[test]
fn python_checkpoints_load_with_their_exact_python_extras() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let save_dir = dir.path().to_str().unwrap();
    run_python(
        &python,
        &["train", save_dir, "--max-iter", "10", "--period", "5"],
    );
    // Python's tag and file names are read as they are.
    let checkpointer = Checkpointer::new(shared(StateDictModel::new(zero_state())), dir.path());
    assert_eq!(
        checkpointer.last_checkpoint_name().unwrap().as_deref(),
        Some("model_final.pth")
    );
    let files = checkpointer.get_all_checkpoint_files().unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let left = checkpointer.resume_or_load(None, true).unwrap();
    assert_eq!(left.get("iteration").and_then(Value::as_int), Some(9));
    assert!(
        left.get("optimizer").is_some(),
        "no optimizer registered: it stays a leftover"
    );
}

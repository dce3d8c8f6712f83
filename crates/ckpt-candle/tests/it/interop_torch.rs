//! Interop with PyTorch: the train_mlp network and AdamW in torch
//! (`tests/interop/candle/torch_mlp.py`) and in candle resume each other's checkpoints, and
//! the same steps from the same checkpoint give the same weights (within 1e-5 of each
//! tensor's scale: the matmul kernels round differently, the optimizer math is the same).
//!
//! Python comes from `CKPT_PYTHON` (`scripts/setup-python.sh` makes it). Without it the
//! tests are skipped loudly, except with `CI=true`, where that is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::Model;

use crate::support::train_mlp::{run, Config};
use crate::support::{interop_script, python};

/// Steps trained before the checkpoint is handed over, and after.
const N: u64 = 20;
const M: u64 = 15;

fn script(name: &str) -> PathBuf {
    interop_script(&format!("candle/{name}"))
}

/// The Python interpreter for these tests, or `None` (after saying why) to skip.
fn python() -> Option<PathBuf> {
    python::interop_python("the candle/torch interop tests", "torch")
}

#[derive(serde::Deserialize, Debug)]
struct Snapshot {
    iteration: i64,
    started_at: u64,
    params: BTreeMap<String, Vec<f64>>,
    steps: BTreeMap<String, f64>,
}

fn run_torch(python: &Path, args: &[&str]) -> Snapshot {
    let line = python::run_script_last_line(python, &script("torch_mlp.py"), args);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line}"))
}

/// Every tensor of `model` equals torch's within 1e-5 of the tensor's largest magnitude.
fn assert_close(model: &ckpt_candle::VarMapModel, torch: &Snapshot) {
    let state = model.state_dict().unwrap();
    let mut names: Vec<&str> = state.keys().collect();
    names.sort_unstable();
    let torch_names: Vec<&str> = torch.params.keys().map(String::as_str).collect();
    assert_eq!(names, torch_names, "parameter names differ");
    for (name, tensor) in state.iter() {
        let rust = tensor.to_vec::<f32>().unwrap();
        let torch = &torch.params[name];
        assert_eq!(rust.len(), torch.len(), "{name}");
        let scale = torch.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = rust
            .iter()
            .zip(torch)
            .map(|(r, t)| (f64::from(*r) - t).abs())
            .fold(0f64, f64::max);
        assert!(
            worst <= 1e-5 * scale,
            "{name}: differs from torch by {worst:e} (scale {scale:e})"
        );
    }
}

fn config(dir: &Path, max_iter: u64, period: u64, stop_at: Option<u64>) -> Config {
    Config {
        save_dir: dir.to_path_buf(),
        max_iter,
        period,
        max_to_keep: Some(3),
        stop_at,
    }
}

#[test]
fn torch_checkpoint_resumes_in_candle_and_matches_torch_resuming_it() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let handed_over = dir.path().join(format!("model_{:07}.pth", N - 1));
    let handed_over_arg = handed_over.to_str().unwrap();
    let torch_first = run_torch(
        &python,
        &["--max-iter", &N.to_string(), "--out", handed_over_arg],
    );
    assert_eq!(torch_first.iteration, N as i64 - 1);

    let other = tempfile::tempdir().unwrap();
    let torch_out = other.path().join("torch_final.pth");
    let torch = run_torch(
        &python,
        &[
            "--resume",
            handed_over_arg,
            "--max-iter",
            &(N + M).to_string(),
            "--out",
            torch_out.to_str().unwrap(),
        ],
    );
    assert_eq!(torch.started_at, N);

    std::fs::write(
        dir.path().join(ckpt::LAST_CHECKPOINT),
        format!("model_{:07}.pth", N - 1),
    )
    .unwrap();
    let rust = run(&config(dir.path(), N + M, 1000, None)).unwrap();
    assert_eq!(rust.started_at, N);
    assert_close(&rust.model, &torch);

    // The candle run's optimizer counted on from torch's step.
    let saved = ckpt::format::load(dir.path().join("model_final.pth")).unwrap();
    let optimizer = saved.get("optimizer").unwrap();
    let state = optimizer.get("state").and_then(|s| s.as_dict()).unwrap();
    for (index, entry) in state.iter() {
        let step = entry.get("step").and_then(|s| s.as_tensor()).unwrap();
        assert_eq!(
            step.to_vec::<f32>().unwrap(),
            vec![(N + M) as f32],
            "state[{index}]"
        );
    }
}

#[test]
fn candle_checkpoint_resumes_in_torch_and_matches_candle_resuming_it() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = run(&config(dir.path(), N + M, N, Some(N - 1))).unwrap();
    assert_eq!(first.stopped_at, Some(N - 1));
    let handed_over = dir.path().join(format!("model_{:07}.pth", N - 1));

    let other = tempfile::tempdir().unwrap();
    let torch = run_torch(
        &python,
        &[
            "--resume",
            handed_over.to_str().unwrap(),
            "--max-iter",
            &(N + M).to_string(),
            "--out",
            other.path().join("torch_final.pth").to_str().unwrap(),
        ],
    );
    assert_eq!(torch.started_at, N);
    assert_eq!(torch.steps.len(), 4);
    assert!(
        torch.steps.values().all(|s| *s == (N + M) as f64),
        "{:?}",
        torch.steps
    );

    let rust = run(&config(dir.path(), N + M, N, None)).unwrap();
    assert_eq!(rust.started_at, N);
    assert_close(&rust.model, &torch);
}

#[test]
fn candle_and_torch_trained_from_scratch_agree() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rust = run(&config(dir.path(), N + M, 1000, None)).unwrap();
    let torch = run_torch(
        &python,
        &[
            "--max-iter",
            &(N + M).to_string(),
            "--out",
            dir.path().join("torch.pth").to_str().unwrap(),
        ],
    );
    assert_close(&rust.model, &torch);
}

fn run_dtypes_script(python: &Path, mode: &str, file: &Path) -> String {
    let out = Command::new(python)
        .arg(script("torch_dtypes.py"))
        .arg(mode)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const DTYPES: [(&str, candle_core::DType); 10] = [
    ("uint8", candle_core::DType::U8),
    ("uint32", candle_core::DType::U32),
    ("int16", candle_core::DType::I16),
    ("int32", candle_core::DType::I32),
    ("int64", candle_core::DType::I64),
    ("bfloat16", candle_core::DType::BF16),
    ("float16", candle_core::DType::F16),
    ("float32", candle_core::DType::F32),
    ("float64", candle_core::DType::F64),
    ("float8_e4m3fn", candle_core::DType::F8E4M3),
];

fn values_of(t: &candle_core::Tensor) -> Vec<f64> {
    ckpt_candle::cast(t, candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn every_dtype_candle_and_torch_share_crosses_in_both_directions() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<f64> = (0..15).map(f64::from).collect();

    // torch → candle: each torch tensor loads into a variable of the matching candle dtype.
    let from_torch = dir.path().join("torch_dtypes.pth");
    run_dtypes_script(&python, "write", &from_torch);
    let varmap = candle_nn::VarMap::new();
    for (name, dtype) in DTYPES {
        let var = candle_core::Var::zeros((3, 5), dtype, &candle_core::Device::Cpu).unwrap();
        varmap.data().lock().unwrap().insert(name.to_string(), var);
    }
    let mut model = ckpt_candle::VarMapModel::new(varmap.clone());
    let file = ckpt::format::load(&from_torch).unwrap();
    let state = ckpt::StateDict::from_value(file.get("model").unwrap()).unwrap();
    let report = model.load_non_strict(state).unwrap();
    assert!(report.is_empty(), "{report:?}");
    for (name, dtype) in DTYPES {
        let t = varmap.data().lock().unwrap()[name].as_tensor().clone();
        assert_eq!(t.dtype(), dtype);
        assert_eq!(values_of(&t), expected, "{name}");
    }

    // candle → torch: torch reads each variable with its dtype and values.
    let from_candle = dir.path().join("candle_dtypes.pth");
    let mut top = ckpt::Dict::new();
    top.insert("model", model.state_dict().unwrap().to_value());
    ckpt::format::save_torch(&from_candle, &ckpt::Value::Dict(top), &Default::default()).unwrap();
    let read: BTreeMap<String, (String, Vec<f64>)> =
        serde_json::from_str(run_dtypes_script(&python, "read", &from_candle).trim()).unwrap();
    assert_eq!(read.len(), DTYPES.len());
    for (name, _) in DTYPES {
        assert_eq!(read[name], (name.to_string(), expected.clone()), "{name}");
    }
}

/// torch's AdamW on one parameter whose gradient at step `k` is `c * (1 + k / 8)` exactly
/// (so only the optimizer's arithmetic can differ); prints the final values as JSON.
const TORCH_ADAMW_ONLY: &str = r#"
import json, torch
n = 64
p = torch.tensor([((i * 37 % 17) - 8.0) * 0.0625 for i in range(n)], requires_grad=True)
c = torch.tensor([((i * 11 % 13) - 6.0) * 0.03125 for i in range(n)])
opt = torch.optim.AdamW([p], lr=0.01, weight_decay=0.05)
for step in range(40):
    loss = (p * (c * (1.0 + step / 8.0))).sum()
    opt.zero_grad(); loss.backward(); opt.step()
print(json.dumps(p.detach().tolist()))
"#;

#[test]
fn adamw_arithmetic_matches_torch_to_rounding_on_identical_gradients() {
    use candle_core::{Device, Tensor, Var};
    use candle_nn::Optimizer;
    let Some(python) = python() else { return };
    let n = 64;
    let p0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.0625)
        .collect();
    let c: Vec<f32> = (0..n)
        .map(|i| ((i * 11 % 13) as f32 - 6.0) * 0.03125)
        .collect();
    let var = Var::from_tensor(&Tensor::from_vec(p0, n, &Device::Cpu).unwrap()).unwrap();
    let c = Tensor::from_vec(c, n, &Device::Cpu).unwrap();
    let config = ckpt_candle::AdamWConfig {
        lr: 0.01,
        weight_decay: 0.05,
        ..Default::default()
    };
    let mut opt = ckpt_candle::AdamW::new(vec![var.clone()], config).unwrap();
    for step in 0..40 {
        let grad_scale = 1.0 + step as f64 / 8.0;
        let loss = (var.as_tensor() * (&c * grad_scale).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let out = Command::new(&python)
        .args(["-c", TORCH_ADAMW_ONLY])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let torch: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    let rust = var.as_tensor().to_vec1::<f32>().unwrap();
    // torch fuses multiply-adds and vectorises sqrt, so a few ulps differ after 40 steps:
    // within 1e-7 of the tensor's scale (the MLP tests allow 1e-5, for the matmuls).
    let scale = torch.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (r, t)) in rust.iter().zip(&torch).enumerate() {
        assert!(
            (f64::from(*r) - t).abs() <= 1e-7 * scale,
            "element {i}: candle {r} vs torch {t}"
        );
    }
}

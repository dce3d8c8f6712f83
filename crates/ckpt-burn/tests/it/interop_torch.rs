//! Interop with PyTorch: the train_mlp network in torch (`tests/interop/candle/torch_mlp.py`,
//! the same network, data and optimizer as the burn example) and in burn resume each other's
//! checkpoints, with AdamW, and with SGD (momentum) under a StepLR schedule
//! (`torch_mlp.py --optimizer sgd`, the example's [`Optim::SgdStepLr`]); the same steps from
//! the same checkpoint give the same weights within float tolerance (the kernels round
//! differently, the optimizer math is the same), and the same learning rate. The largest
//! difference is printed.
//!
//! Python comes from `CKPT_PYTHON` (`scripts/setup-python.sh` makes it). Without it the
//! tests are skipped loudly, except with `CI=true`, where that is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ckpt::Model;

use crate::support::train_mlp::{run_with, Config, Mlp, Optim, OptimizerEnd};
use crate::support::{interop_script, python};

/// Steps trained before the checkpoint is handed over, and after.
const N: u64 = 20;
const M: u64 = 15;

fn python() -> Option<PathBuf> {
    python::interop_python("the burn/torch interop tests", "torch")
}

#[derive(serde::Deserialize, Debug)]
struct Snapshot {
    started_at: u64,
    params: BTreeMap<String, Vec<f64>>,
    steps: BTreeMap<String, f64>,
    /// The optimizer's learning rate at the end.
    lr: f64,
    /// The StepLR schedule's `last_epoch` (SGD only).
    last_epoch: Option<u64>,
}

/// `torch_mlp.py args...` with the optimizer of `optim`.
fn run_torch(python: &Path, optim: Optim, args: &[&str]) -> Snapshot {
    let script = interop_script("candle/torch_mlp.py");
    let optimizer = match optim {
        Optim::AdamW => "adamw",
        Optim::SgdStepLr => "sgd",
    };
    let mut args = args.to_vec();
    args.extend(["--optimizer", optimizer]);
    let line = python::run_script_last_line(python, &script, &args);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line}"))
}

/// The largest difference between burn's and torch's weights, relative to each tensor's
/// largest magnitude; fails beyond 1e-5.
fn assert_close(model: &ckpt_burn::BurnModel<Mlp>, torch: &Snapshot, what: &str) {
    let state = model.state_dict().unwrap();
    let mut names: Vec<&str> = state.keys().collect();
    names.sort_unstable();
    let torch_names: Vec<&str> = torch.params.keys().map(String::as_str).collect();
    assert_eq!(names, torch_names, "parameter names differ");
    let mut worst_overall = 0f64;
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
        worst_overall = worst_overall.max(worst / scale);
        assert!(
            worst <= 1e-5 * scale,
            "{name}: differs from torch by {worst:e} (scale {scale:e})"
        );
    }
    eprintln!("{what}: largest difference from torch after {M} steps: {worst_overall:e} of the tensor's scale");
}

fn config(dir: &Path, max_iter: u64) -> Config {
    Config {
        save_dir: dir.to_path_buf(),
        max_iter,
        period: 1000,
        max_to_keep: Some(3),
        stop_at: None,
    }
}

/// burn's optimizer ended where torch's did: the same learning rate (exactly: the schedule's
/// factor is a power of two) and, with StepLR, the same schedule step.
fn assert_same_optimizer_end(burn: OptimizerEnd, torch: &Snapshot, what: &str) {
    assert_eq!(burn.lr, torch.lr, "{what}: learning rates differ");
    assert_eq!(
        burn.last_epoch, torch.last_epoch,
        "{what}: schedule steps differ"
    );
    eprintln!(
        "{what}: learning rate after {M} further steps: {} on both sides",
        burn.lr
    );
}

/// torch trains N steps and saves; torch and burn each resume that checkpoint for M steps.
fn torch_checkpoint_resumes_in_burn(optim: Optim, what: &str) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let handed_over = dir.path().join(format!("model_{:07}.pth", N - 1));
    let handed_over = handed_over.to_str().unwrap();
    run_torch(
        &python,
        optim,
        &["--max-iter", &N.to_string(), "--out", handed_over],
    );
    let other = tempfile::tempdir().unwrap();
    let torch_out = other.path().join("torch_final.pth");
    let torch = run_torch(
        &python,
        optim,
        &[
            "--resume",
            handed_over,
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
    let (burn, end) = run_with(&config(dir.path(), N + M), optim, Duration::ZERO).unwrap();
    assert_eq!(burn.started_at, N);
    assert_close(&burn.model, &torch, what);
    assert_same_optimizer_end(end, &torch, what);

    let saved = ckpt::format::load(dir.path().join("model_final.pth")).unwrap();
    let state = saved
        .get("optimizer")
        .and_then(|o| o.get("state"))
        .and_then(|s| s.as_dict())
        .unwrap();
    assert_eq!(state.len(), 4);
    for (_, entry) in state.iter() {
        match optim {
            // burn's optimizer counted on from torch's step.
            Optim::AdamW => {
                let step = entry.get("step").and_then(|s| s.as_tensor()).unwrap();
                assert_eq!(step.to_vec::<f32>().unwrap(), [(N + M) as f32]);
            }
            Optim::SgdStepLr => assert!(entry.get("momentum_buffer").is_some(), "{entry:?}"),
        }
    }
}

/// burn trains N steps and saves; torch and burn each resume that checkpoint for M steps.
fn burn_checkpoint_resumes_in_torch(optim: Optim, what: &str) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = run_with(&config(dir.path(), N), optim, Duration::ZERO).unwrap();
    assert_eq!(first.started_at, 0);
    let handed_over = dir.path().join("model_final.pth");

    let other = tempfile::tempdir().unwrap();
    let torch_out = other.path().join("torch_final.pth");
    let torch = run_torch(
        &python,
        optim,
        &[
            "--resume",
            handed_over.to_str().unwrap(),
            "--max-iter",
            &(N + M).to_string(),
            "--out",
            torch_out.to_str().unwrap(),
        ],
    );
    assert_eq!(torch.started_at, N, "torch read the iteration burn saved");
    if optim == Optim::AdamW {
        assert!(
            torch.steps.values().all(|s| *s == (N + M) as f64),
            "{:?}",
            torch.steps
        );
    }

    let (burn, end) = run_with(&config(dir.path(), N + M), optim, Duration::ZERO).unwrap();
    assert_eq!(burn.started_at, N);
    assert_close(&burn.model, &torch, what);
    assert_same_optimizer_end(end, &torch, what);
}

#[test]
fn torch_checkpoint_resumes_in_burn_and_matches_torch_resuming_it() {
    torch_checkpoint_resumes_in_burn(Optim::AdamW, "torch -> burn (AdamW)");
}

#[test]
fn burn_checkpoint_resumes_in_torch_and_matches_burn_resuming_it() {
    burn_checkpoint_resumes_in_torch(Optim::AdamW, "burn -> torch (AdamW)");
}

#[test]
fn torch_sgd_step_lr_checkpoint_resumes_in_burn_with_the_same_rate_and_weights() {
    torch_checkpoint_resumes_in_burn(Optim::SgdStepLr, "torch -> burn (SGD momentum, StepLR)");
}

#[test]
fn burn_sgd_step_lr_checkpoint_resumes_in_torch_with_the_same_rate_and_weights() {
    burn_checkpoint_resumes_in_torch(Optim::SgdStepLr, "burn -> torch (SGD momentum, StepLR)");
}

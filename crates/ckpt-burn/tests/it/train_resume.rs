//! The train_mlp example: a run killed with SIGKILL and resumed ends with bit-identical
//! weights to a run that was never interrupted, and really trains.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckpt::Model;

use crate::support::train_mlp::{self, run, run_paced, Config};

/// Set in the child process this test starts: the directory it trains into.
const CHILD_DIR: &str = "CKPT_BURN_TRAIN_CHILD_DIR";

fn config(dir: &Path) -> Config {
    Config {
        save_dir: dir.to_path_buf(),
        max_iter: 90,
        period: 10,
        max_to_keep: Some(2),
        stop_at: None,
    }
}

fn weights_bits(model: &ckpt_burn::BurnModel<train_mlp::Mlp>) -> Vec<(String, Vec<u8>)> {
    model
        .state_dict()
        .unwrap()
        .iter()
        .map(|(name, t)| (name.to_string(), t.contiguous_bytes().to_vec()))
        .collect()
}

/// The training process the test below kills: does nothing unless started by it.
#[test]
fn child_training_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    run_paced(&config(Path::new(&dir)), Duration::from_millis(30)).unwrap();
}

/// The iteration of the checkpoint `last_checkpoint` names, if there is one.
fn tagged_iteration(dir: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(dir.join(ckpt::LAST_CHECKPOINT)).ok()?;
    name.trim()
        .strip_prefix("model_")?
        .strip_suffix(".pth")?
        .parse()
        .ok()
}

#[test]
fn training_killed_with_sigkill_resumes_to_bit_identical_weights() {
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&config(straight_dir.path())).unwrap();
    assert_eq!(straight.started_at, 0);

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "train_resume::child_training_until_killed",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while tagged_iteration(dir.path()).is_none_or(|i| i < 29) {
        assert!(Instant::now() < deadline, "the child wrote no checkpoint");
        assert!(child.try_wait().unwrap().is_none(), "the child ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Child::kill is SIGKILL: no destructor, no flush, possibly in the middle of a save.
    child.kill().unwrap();
    child.wait().unwrap();

    let resumed = run(&config(dir.path())).unwrap();
    assert!(
        resumed.started_at >= 30 && resumed.started_at < 90,
        "resumed at {}",
        resumed.started_at
    );
    assert_eq!(weights_bits(&resumed.model), weights_bits(&straight.model));
    assert_eq!(resumed.checksum, straight.checksum);
    assert_eq!(resumed.loss.to_bits(), straight.loss.to_bits());

    // At most max_to_keep periodic files, the final one, and the tag.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000079.pth",
            "model_0000089.pth",
            "model_final.pth"
        ]
    );
}

#[test]
fn a_run_stopped_at_any_iteration_resumes_to_the_same_weights() {
    let short = |dir: &Path, stop_at| Config {
        save_dir: dir.to_path_buf(),
        max_iter: 12,
        period: 5,
        max_to_keep: Some(1),
        stop_at,
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&short(straight_dir.path(), None)).unwrap();
    for stop_at in [0, 4, 5, 7, 11] {
        let dir = tempfile::tempdir().unwrap();
        run(&short(dir.path(), Some(stop_at))).unwrap();
        let resumed = run(&short(dir.path(), None)).unwrap();
        assert_eq!(
            weights_bits(&resumed.model),
            weights_bits(&straight.model),
            "stopped at {stop_at}"
        );
    }
}

#[test]
fn training_reduces_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&config(dir.path())).unwrap();
    let device = burn::tensor::Device::default();
    let data = train_mlp::synthetic_data();
    let model = train_mlp::build_mlp(&device).unwrap();
    let x = burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(data.x.clone(), [train_mlp::SAMPLES, train_mlp::IN]),
        &device,
    );
    let y = burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(data.y.clone(), [train_mlp::SAMPLES, train_mlp::OUT]),
        &device,
    );
    let initial = train_mlp::scalar(train_mlp::mse(model.module(), x, y));
    assert!(
        outcome.loss < initial * 0.6,
        "loss {initial} -> {}",
        outcome.loss
    );
}

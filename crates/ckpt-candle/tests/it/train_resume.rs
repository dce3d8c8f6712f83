//! The train_mlp example: a run preempted twice and resumed ends with bit-identical weights
//! to a run that was never interrupted, keeps at most `max_to_keep` periodic files, and
//! really trains.

use std::path::Path;

use ckpt::Model;

use crate::support::train_mlp::{self, run, Config};

fn config(dir: &Path, stop_at: Option<u64>) -> Config {
    Config {
        save_dir: dir.to_path_buf(),
        max_iter: 90,
        period: 10,
        max_to_keep: Some(2),
        stop_at,
    }
}

fn weights_bits(model: &ckpt_candle::VarMapModel) -> Vec<(String, Vec<u8>)> {
    model
        .state_dict()
        .unwrap()
        .iter()
        .map(|(name, t)| (name.to_string(), t.contiguous_bytes().to_vec()))
        .collect()
}

#[test]
fn interrupted_and_resumed_training_equals_uninterrupted_training_bit_for_bit() {
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&config(straight_dir.path(), None)).unwrap();
    assert_eq!(straight.started_at, 0);

    let dir = tempfile::tempdir().unwrap();
    // Preempted after iteration 33: the last checkpoint is iteration 29.
    let first = run(&config(dir.path(), Some(33))).unwrap();
    assert_eq!(first.stopped_at, Some(33));
    // Preempted right after a checkpoint.
    let second = run(&config(dir.path(), Some(59))).unwrap();
    assert_eq!(second.started_at, 30);
    let last = run(&config(dir.path(), None)).unwrap();
    assert_eq!(last.started_at, 60);

    assert_eq!(weights_bits(&last.model), weights_bits(&straight.model));
    assert_eq!(last.checksum, straight.checksum);
    assert_eq!(last.loss.to_bits(), straight.loss.to_bits());

    // A finished run resumes at max_iter and changes nothing.
    let again = run(&config(dir.path(), None)).unwrap();
    assert_eq!(again.started_at, 90);
    assert_eq!(again.checksum, straight.checksum);
}

#[test]
fn a_run_interrupted_at_any_iteration_resumes_to_the_same_weights() {
    let short = |dir: &Path, stop_at| Config {
        save_dir: dir.to_path_buf(),
        max_iter: 24,
        period: 5,
        max_to_keep: Some(1),
        stop_at,
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&short(straight_dir.path(), None)).unwrap();
    for stop_at in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        run(&short(dir.path(), Some(stop_at))).unwrap();
        let resumed = run(&short(dir.path(), None)).unwrap();
        // The last checkpoint: the periodic one before the stop, or the final one.
        let expected_start = if stop_at == 23 {
            24
        } else {
            (stop_at + 1) / 5 * 5
        };
        assert_eq!(resumed.started_at, expected_start, "stopped at {stop_at}");
        assert_eq!(
            weights_bits(&resumed.model),
            weights_bits(&straight.model),
            "stopped at {stop_at}"
        );
    }
}

#[test]
fn periodic_checkpoints_keep_at_most_max_to_keep_files() {
    let dir = tempfile::tempdir().unwrap();
    run(&config(dir.path(), Some(44))).unwrap();
    run(&config(dir.path(), None)).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
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
fn training_reduces_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&config(dir.path(), None)).unwrap();
    let data = train_mlp::synthetic_data();
    let (mlp, _) = train_mlp::build_mlp().unwrap();
    let x = candle_core::Tensor::from_vec(
        data.x.clone(),
        (train_mlp::SAMPLES, train_mlp::IN),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let y = candle_core::Tensor::from_vec(
        data.y.clone(),
        (train_mlp::SAMPLES, train_mlp::OUT),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let initial = train_mlp::mse(&mlp, &x, &y)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        outcome.loss < initial * 0.6,
        "loss {initial} -> {}",
        outcome.loss
    );
}

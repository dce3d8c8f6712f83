//! The example training loop: a run preempted twice and resumed ends bit-identical to a
//! run that was never interrupted, and the training really optimises.

use std::path::Path;

use crate::support::train::{driver, mlp, run};

fn config(dir: &Path, stop_at: Option<u64>) -> driver::Config {
    driver::Config {
        save_dir: dir.to_path_buf(),
        max_iter: 120,
        period: 10,
        max_to_keep: Some(2),
        stop_at,
    }
}

#[test]
fn interrupted_and_resumed_training_equals_uninterrupted_training() {
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run::run(&config(straight_dir.path(), None)).unwrap();
    assert_eq!(straight.started_at, 0);

    let (initial_loss, _) = mlp::loss_and_grads(
        &mlp::initial_state()
            .unwrap()
            .iter()
            .map(|(_, t)| t.to_vec::<f32>().unwrap())
            .collect::<Vec<_>>(),
        &mlp::synthetic_data(),
    );
    assert!(
        straight.loss < initial_loss / 2.0,
        "loss {initial_loss} -> {}",
        straight.loss
    );

    let dir = tempfile::tempdir().unwrap();
    // Preempted after iteration 44: the last checkpoint is iteration 39.
    let first = run::run(&config(dir.path(), Some(44))).unwrap();
    assert_eq!(first.stopped_at, Some(44));
    let second = run::run(&config(dir.path(), Some(87))).unwrap();
    assert_eq!(second.started_at, 40);
    let last = run::run(&config(dir.path(), None)).unwrap();
    assert_eq!(last.started_at, 80);
    assert_eq!(last.checksum, straight.checksum);
    assert_eq!(last.loss.to_bits(), straight.loss.to_bits());

    // A finished run resumes at max_iter and does nothing more.
    let again = run::run(&config(dir.path(), None)).unwrap();
    assert_eq!(again.started_at, 120);
    assert_eq!(again.checksum, straight.checksum);
}

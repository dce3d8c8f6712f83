//! Composed retention policies over real runs: separate processes that restart in one save
//! directory, the state file they share, and what retention never touches.

use std::fs;
use std::path::Path;
use std::process::Command;

use ckpt::retention::{Mode, Policy, RetentionState, STATE_FILE};
use ckpt::store::LocalDir;
use ckpt::{Checkpointer, Dict, PeriodicCheckpointer};

use crate::support::model;

fn periodic_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("model_00"))
        .collect();
    names.sort();
    names
}

fn names(iterations: &[u64]) -> Vec<String> {
    iterations
        .iter()
        .map(|i| format!("model_{i:07}.pth"))
        .collect()
}

fn retain_run(dir: &Path, from: u64, to: u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
        .args([
            "retain",
            dir.to_str().unwrap(),
            &from.to_string(),
            &to.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "retain {from}..{to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checkpoints at 9, 19, ..., 99, saved at 7 s per iteration (63 s, 133 s, ...), losses
/// best at 59. Kept: newest 2 (89, 99), best loss (59), every 50 (49, 99), one per 100 s
/// (9 at 63 s, 29 at 203 s, 49 at 343 s, 69 at 483 s, 89 at 623 s).
#[test]
fn composed_policies_keep_the_union_across_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    retain_run(dir.path(), 0, 40);
    // After the first process: newest 29, 39; best so far 39; one per 100 s: 9, 29.
    assert_eq!(periodic_files(dir.path()), names(&[9, 29, 39]));

    retain_run(dir.path(), 40, 70);
    retain_run(dir.path(), 70, 100);
    assert_eq!(
        periodic_files(dir.path()),
        names(&[9, 29, 49, 59, 69, 89, 99])
    );

    // The state records exactly the files kept, with their save time and loss.
    let state = RetentionState::load(&LocalDir::new(dir.path())).unwrap();
    let recorded: Vec<_> = state.checkpoints.iter().map(|c| c.file.clone()).collect();
    assert_eq!(recorded, names(&[9, 29, 49, 59, 69, 89, 99]));
    let best = &state.checkpoints[3];
    assert_eq!(best.time, Some(59.0 * 7.0));
    assert_eq!(best.metrics["loss"], 0.5);
    assert_eq!(state.policies.len(), 4);
}

#[test]
fn one_uninterrupted_process_keeps_the_same_files_as_restarted_ones() {
    let dir = tempfile::tempdir().unwrap();
    retain_run(dir.path(), 0, 100);
    assert_eq!(
        periodic_files(dir.path()),
        names(&[9, 29, 49, 59, 69, 89, 99])
    );
}

#[test]
fn a_metric_keeps_an_old_checkpoint_and_foreign_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "model_best.pth",
        "model_final.pth",
        "other_0000001.pth",
        "notes.txt",
    ] {
        fs::write(dir.path().join(name), b"not ours").unwrap();
    }
    let build = || {
        PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()))
            .period(1)
            .max_to_keep(1)
            .keep(Policy::Best {
                metric: "acc".into(),
                mode: Mode::Max,
                k: 2,
            })
            .build()
            .unwrap()
    };
    let mut p = build();
    for iteration in 0..6u64 {
        p.step(iteration, Dict::new()).unwrap();
        let acc = [0.1, 0.9, 0.2, 0.8, 0.3, 0.4][iteration as usize];
        assert!(p.record_metric(iteration, "acc", acc).unwrap());
    }
    assert!(!p.record_metric(4, "acc", 1.0).unwrap(), "4 was deleted");
    assert_eq!(periodic_files(dir.path()), names(&[1, 3, 5]));
    drop(p);

    // A restarted run knows the metrics: the best two stay, the newest moves on.
    let mut p = build();
    assert_eq!(
        p.recent_checkpoints().collect::<Vec<_>>(),
        names(&[1, 3, 5])
    );
    p.step(6, Dict::new()).unwrap();
    assert_eq!(periodic_files(dir.path()), names(&[1, 3, 6]));
    for name in [
        "model_best.pth",
        "model_final.pth",
        "other_0000001.pth",
        "notes.txt",
    ] {
        assert_eq!(
            fs::read(dir.path().join(name)).unwrap(),
            b"not ours",
            "{name}"
        );
    }
}

#[test]
fn an_unreadable_state_file_stops_the_build_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
    let err = PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()))
        .period(1)
        .max_to_keep(1)
        .build()
        .unwrap_err();
    let text = err.report().to_string();
    assert!(text.contains(STATE_FILE), "{text}");

    // Without retention the file is not read.
    PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()))
        .period(1)
        .build()
        .unwrap();
}

#[test]
fn bad_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for policy in [
        Policy::Newest(0),
        Policy::EveryIterations(0),
        Policy::OnePerInterval { seconds: 0 },
        Policy::Best {
            metric: String::new(),
            mode: Mode::Min,
            k: 1,
        },
    ] {
        let built = PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()))
            .period(1)
            .keep(policy.clone())
            .build();
        assert!(built.is_err(), "{policy:?}");
    }
}

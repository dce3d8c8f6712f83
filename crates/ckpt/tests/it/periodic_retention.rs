//! PeriodicCheckpointer: file names at the right iterations, `iteration` saved, and
//! `max_to_keep` applied within a run and across restarts without touching other files.

use std::fs;
use std::path::Path;

use ckpt::retention::STATE_FILE;
use ckpt::{Checkpointer, Dict, PeriodicCheckpointer, Value};

use crate::support::*;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn periodic(
    dir: &Path,
    period: u64,
    max_iter: Option<u64>,
    keep: Option<usize>,
) -> PeriodicCheckpointer {
    PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), dir))
        .period(period)
        .max_iter(max_iter)
        .max_to_keep(keep)
        .build()
        .unwrap()
}

#[test]
fn periodic_files_are_saved_at_the_right_iterations_with_their_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = periodic(dir.path(), 10, Some(30), None);
    for iteration in 0..30 {
        let mut extra = Dict::new();
        extra.insert("epoch", Value::Int(iteration as i64 / 10));
        p.step(iteration, extra).unwrap();
    }
    assert_eq!(
        files(dir.path()),
        vec![
            "last_checkpoint",
            "model_0000009.pth",
            "model_0000019.pth",
            "model_0000029.pth",
            "model_final.pth"
        ]
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_final.pth"
    );
    for (name, iteration) in [("model_0000019.pth", 19), ("model_final.pth", 29)] {
        let value = ckpt::format::load(dir.path().join(name)).unwrap();
        assert_eq!(
            value.get("iteration").and_then(Value::as_int),
            Some(iteration),
            "{name}"
        );
        assert_eq!(
            value.get("epoch").and_then(Value::as_int),
            Some(iteration / 10),
            "{name}"
        );
        assert!(value.get("model").is_some());
    }
}

#[test]
fn max_to_keep_over_two_consecutive_runs_in_one_directory() {
    for max_to_keep in [1usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = periodic(dir.path(), 10, Some(99), Some(max_to_keep));
        for _ in 0..2 {
            let mut saved = Vec::new();
            for iteration in 0..50u64 {
                p.step(iteration, Dict::new()).unwrap();
                if (iteration + 1) % 10 == 0 {
                    saved.push(format!("model_{iteration:07}.pth"));
                }
            }
            let (gone, kept) = saved.split_at(saved.len() - max_to_keep);
            for name in gone {
                assert!(!dir.path().join(name).exists(), "{name} should be deleted");
            }
            for name in kept {
                assert!(dir.path().join(name).exists(), "{name} should be kept");
            }
        }
    }
}

#[test]
fn retention_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = periodic(dir.path(), 1, None, Some(2));
    for iteration in 0..4 {
        first.step(iteration, Dict::new()).unwrap();
    }
    drop(first);
    assert_eq!(
        files(dir.path()),
        vec![
            STATE_FILE,
            "last_checkpoint",
            "model_0000002.pth",
            "model_0000003.pth"
        ]
    );

    // A new process resumes in the same directory: the old files count against max_to_keep.
    let mut second = periodic(dir.path(), 1, None, Some(2));
    let recent: Vec<&str> = second.recent_checkpoints().collect();
    assert_eq!(recent, vec!["model_0000002.pth", "model_0000003.pth"]);
    for iteration in 4..6 {
        second.step(iteration, Dict::new()).unwrap();
    }
    assert_eq!(
        files(dir.path()),
        vec![
            STATE_FILE,
            "last_checkpoint",
            "model_0000004.pth",
            "model_0000005.pth"
        ]
    );
}

#[test]
fn retention_never_deletes_final_foreign_or_unpadded_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "model_final.pth",
        "model_best.pth",
        "other_0000001.pth",
        "model_000001.pth",
        "notes.txt",
    ] {
        fs::write(dir.path().join(name), b"not ours").unwrap();
    }
    let mut p = periodic(dir.path(), 1, None, Some(1));
    for iteration in 0..3 {
        p.step(iteration, Dict::new()).unwrap();
    }
    assert_eq!(
        files(dir.path()),
        vec![
            STATE_FILE,
            "last_checkpoint",
            "model_0000002.pth",
            "model_000001.pth",
            "model_best.pth",
            "model_final.pth",
            "notes.txt",
            "other_0000001.pth"
        ]
    );
}

#[test]
fn nothing_is_saved_or_deleted_when_saving_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("model_0000000.pth"), b"old").unwrap();
    let checkpointer = Checkpointer::new(model(1.0), dir.path()).save_to_disk(false);
    let mut p = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_iter(3)
        .max_to_keep(1)
        .build()
        .unwrap();
    for iteration in 0..3 {
        p.step(iteration, Dict::new()).unwrap();
    }
    assert_eq!(files(dir.path()), vec!["model_0000000.pth"]);
}

#[test]
fn invalid_arguments_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let make = || Checkpointer::new(model(1.0), dir.path());
    let err = PeriodicCheckpointer::builder(make())
        .period(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, ckpt::Error::Invalid { .. }), "{err:?}");
    let err = PeriodicCheckpointer::builder(make()).build().unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Invalid { .. }), "{err:?}");
    let no_keep = PeriodicCheckpointer::builder(make())
        .period(1)
        .max_to_keep(0);
    let err = no_keep.build().unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Invalid { .. }), "{err:?}");
    let outside = PeriodicCheckpointer::builder(make())
        .period(1)
        .file_prefix("../model");
    let err = outside.build().unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::InvalidName { name, .. } if name == "../model"),
        "{err:?}"
    );
}

#[test]
fn a_manual_save_is_outside_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let p = periodic(dir.path(), 100, None, Some(1));
    p.save("manual", Dict::new()).unwrap();
    assert_eq!(files(dir.path()), vec!["last_checkpoint", "manual.pth"]);
}

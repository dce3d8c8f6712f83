//! BestCheckpointer against detectron2's hook on the same metric sequence (same best file,
//! same log lines), and across a restart, where the best so far comes from the state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckpt::retention::{Mode, RetentionState};
use ckpt::store::LocalDir;
use ckpt::{BestCheckpointer, BestOutcome, Checkpointer, Value};
use tracing::Level;

use crate::support::{captured, interop_script, model, python};

const MAX_ITER: u64 = 100;
const EVAL_PERIOD: u64 = 10;

/// The evaluations: a missing metric at the first check (9), a NaN first value, a tie, an
/// infinite value (saved, not taken as the best), a stale value at 89 (no evaluation ran),
/// and the last evaluation checked after training.
fn evals() -> BTreeMap<u64, f64> {
    BTreeMap::from([
        (19, f64::NAN),
        (29, 0.3),
        (39, 0.5),
        (49, 0.5),
        (59, 0.4),
        (69, f64::INFINITY),
        (79, 0.6),
        (99, 0.7),
    ])
}

fn best(dir: &Path, mode: Mode) -> BestCheckpointer {
    BestCheckpointer::builder(Checkpointer::new(model(1.0), dir))
        .eval_period(EVAL_PERIOD)
        .max_iter(MAX_ITER)
        .metric("bbox/AP50")
        .mode(mode)
        .build()
        .unwrap()
}

/// The hook's own log lines, as Python's level names and messages.
fn hook_lines(lines: Vec<(Level, String)>) -> Vec<(String, String)> {
    lines
        .into_iter()
        .filter(|(_, m)| {
            [
                "Saved first",
                "Saved best",
                "Not saving",
                "Given val metric",
            ]
            .iter()
            .any(|p| m.starts_with(p))
        })
        .map(|(level, m)| {
            let level = if level == Level::WARN {
                "WARNING"
            } else {
                "INFO"
            };
            (level.to_string(), m)
        })
        .collect()
}

/// Runs the training loop in Rust, restarting (a new BestCheckpointer on the same directory,
/// an empty event storage) after `restart_after`.
fn run_rust(dir: &Path, mode: Mode, restart_after: Option<u64>) -> Vec<(String, String)> {
    let evals = evals();
    let ((), lines) = captured(|| {
        let mut hook = best(dir, mode);
        let mut latest = None;
        for iteration in 0..MAX_ITER {
            if let Some(value) = evals.get(&iteration) {
                latest = Some((*value, iteration));
            }
            hook.after_step(iteration, latest).unwrap();
            if restart_after == Some(iteration) {
                drop(hook);
                hook = best(dir, mode);
                latest = None;
            }
        }
        hook.after_train(MAX_ITER - 1, latest).unwrap();
    });
    hook_lines(lines)
}

fn saved_iteration(file: &Path) -> Option<i64> {
    if !file.exists() {
        return None;
    }
    let value = ckpt::format::load(file).unwrap();
    value.get("iteration").and_then(Value::as_int)
}

#[derive(serde::Deserialize)]
struct PythonRun {
    logs: Vec<(String, String)>,
    best_iteration: Option<i64>,
}

fn run_python(python: &Path, dir: &Path, mode: &str) -> PythonRun {
    let evals: BTreeMap<String, String> = evals()
        .into_iter()
        .map(|(i, v)| (i.to_string(), format!("{v:?}").to_lowercase()))
        .collect();
    let script: PathBuf = interop_script("retention/best_checkpointer.py");
    let line = python::run_script_last_line(
        python,
        &script,
        &[
            dir.to_str().unwrap(),
            mode,
            &EVAL_PERIOD.to_string(),
            &MAX_ITER.to_string(),
            &serde_json::to_string(&evals).unwrap(),
        ],
    );
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line}"))
}

#[test]
fn best_checkpointer_saves_and_logs_as_detectron2_does() {
    let Some(python) = python::interop_python(
        "the BestCheckpointer reference test",
        "torch, fvcore.common.checkpoint",
    ) else {
        return;
    };
    for (mode, name) in [(Mode::Max, "max"), (Mode::Min, "min")] {
        let py_dir = tempfile::tempdir().unwrap();
        let reference = run_python(&python, py_dir.path(), name);
        for restart_after in [None, Some(50)] {
            let dir = tempfile::tempdir().unwrap();
            let lines = run_rust(dir.path(), mode, restart_after);
            assert_eq!(
                lines, reference.logs,
                "mode {name}, restart {restart_after:?}"
            );
            assert_eq!(
                saved_iteration(&dir.path().join("model_best.pth")),
                reference.best_iteration,
                "mode {name}, restart {restart_after:?}"
            );
        }
    }
}

#[test]
fn the_best_so_far_survives_a_restart_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = best(dir.path(), Mode::Min);
    assert_eq!(first.check(Some((0.25, 9))).unwrap(), BestOutcome::First);
    assert_eq!(
        first.check(Some((0.5, 19))).unwrap(),
        BestOutcome::NotBetter
    );
    drop(first);
    let state = RetentionState::load(&LocalDir::new(dir.path())).unwrap();
    let record = &state.best["model_best.pth"];
    assert_eq!((record.value, record.iteration), (0.25, 9));

    // A restarted run does not overwrite the better file with a worse first value.
    let mut second = best(dir.path(), Mode::Min);
    assert_eq!(second.best(), Some((0.25, 9)));
    assert_eq!(
        second.check(Some((0.3, 29))).unwrap(),
        BestOutcome::NotBetter
    );
    assert_eq!(saved_iteration(&dir.path().join("model_best.pth")), Some(9));
    assert_eq!(
        second.check(Some((0.2, 39))).unwrap(),
        BestOutcome::Improved
    );
    assert_eq!(
        saved_iteration(&dir.path().join("model_best.pth")),
        Some(39)
    );

    // Another metric or mode starts afresh; so does a missing best file.
    let other = BestCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()))
        .max_iter(MAX_ITER)
        .metric("segm/AP")
        .build()
        .unwrap();
    assert_eq!(other.best(), None);
    std::fs::remove_file(dir.path().join("model_best.pth")).unwrap();
    assert_eq!(best(dir.path(), Mode::Min).best(), None);
}

#[test]
fn a_best_checkpointer_needs_a_metric_and_max_iter() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || BestCheckpointer::builder(Checkpointer::new(model(1.0), dir.path()));
    assert!(builder().metric("ap").build().is_err());
    assert!(builder().max_iter(10).build().is_err());
    assert!(builder()
        .max_iter(10)
        .metric("ap")
        .file_prefix("../x")
        .build()
        .is_err());
}

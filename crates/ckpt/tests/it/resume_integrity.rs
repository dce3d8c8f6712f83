//! Resuming checks the checksums the checkpoint carries (the zip records' crc32) as it
//! copies the bytes in, and falls back to the newest intact checkpoint when the tagged one
//! is corrupt, truncated or missing, saying which file it skipped and why. A
//! `last_checkpoint` that is not a file is an error, never a fresh start.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ckpt::{
    shared, Checkpointer, DetectionCheckpointer, Dict, Error, StateDict, StateDictModel,
    TagProblem, Tensor,
};

use crate::support::{model, model_state, same_state, state_of};

/// Saves `model_state(fill)` as `name` into `dir`, its modification time `age_s` seconds
/// in the past (so that "newest" does not depend on the clock's resolution).
fn save(dir: &Path, name: &str, fill: f32, age_s: u64) {
    Checkpointer::new(model(fill), dir)
        .save(name, Dict::new())
        .unwrap();
    let file = fs::File::options()
        .write(true)
        .open(dir.join(format!("{name}.pth")))
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
        .unwrap();
}

/// Flips one bit in the data of the zip record `record` of `path`.
fn flip_a_bit(path: &Path, record: &str) {
    let mut bytes = fs::read(path).unwrap();
    let name = record.as_bytes();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("record name in the archive");
    let header = at - 30;
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
    let data = header + 30 + u16_at(header + 26) + u16_at(header + 28);
    bytes[data] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

fn two_checkpoints() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), "model_0000009", 1.0, 20);
    save(dir.path(), "model_0000019", 2.0, 10);
    dir
}

#[test]
fn a_flipped_bit_in_the_last_checkpoint_falls_back_to_the_one_before() {
    let dir = two_checkpoints();
    let last = dir.path().join("model_0000019.pth");
    flip_a_bit(&last, "archive/data/0");

    let fresh = model(0.0);
    let report = Checkpointer::new(fresh.clone(), dir.path())
        .resume_or_load_with_report(None, true)
        .unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000009.pth")));
    assert!(same_state(&state_of(&fresh), &model_state(1.0)));
    let [skipped] = &report.skipped[..] else {
        panic!("{:?}", report.skipped)
    };
    assert_eq!(skipped.path, last);
    assert!(
        skipped.reason.contains("archive/data/0") && skipped.reason.contains("crc32"),
        "{}",
        skipped.reason
    );
    assert!(report.to_string().contains("skipped "), "{report}");
}

#[test]
fn without_the_fallback_a_corrupt_last_checkpoint_is_an_error() {
    let dir = two_checkpoints();
    flip_a_bit(&dir.path().join("model_0000019.pth"), "archive/data/0");
    let err = Checkpointer::new(model(0.0), dir.path())
        .resume_fallback(false)
        .resume_or_load(None, true)
        .unwrap_err();
    assert!(matches!(err.root(), Error::Checksum { .. }), "{err:?}");
    assert_eq!(
        err.path(),
        Some(dir.path().join("model_0000019.pth").as_path())
    );
}

#[test]
fn a_truncated_or_missing_last_checkpoint_falls_back() {
    let dir = two_checkpoints();
    let last = dir.path().join("model_0000019.pth");
    let bytes = fs::read(&last).unwrap();
    fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let fresh = model(0.0);
    let checkpointer = Checkpointer::new(fresh.clone(), dir.path());
    let report = checkpointer.resume_or_load_with_report(None, true).unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000009.pth")));
    assert!(same_state(&state_of(&fresh), &model_state(1.0)));

    fs::remove_file(&last).unwrap();
    let report = checkpointer.resume_or_load_with_report(None, true).unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000009.pth")));
    assert!(
        report.skipped[0].reason.contains("does not exist"),
        "{report}"
    );
}

#[test]
fn with_no_intact_checkpoint_the_resume_fails_rather_than_start_from_scratch() {
    let dir = two_checkpoints();
    flip_a_bit(&dir.path().join("model_0000019.pth"), "archive/data/0");
    flip_a_bit(&dir.path().join("model_0000009.pth"), "archive/data/1");
    let err = Checkpointer::new(model(0.0), dir.path())
        .resume_or_load(None, true)
        .unwrap_err();
    assert!(matches!(err.root(), Error::Checksum { .. }), "{err:?}");
}

#[test]
fn a_corrupt_entry_the_model_does_not_load_is_found_before_the_model_changes() {
    let dir = tempfile::tempdir().unwrap();
    // The checkpoint has one more tensor than the model that resumes from it, stored first.
    let mut state = StateDict::new();
    state.insert(
        "extra.weight",
        Tensor::from_slice(&[7.0f32; 5], &[5]).unwrap(),
    );
    for (name, t) in model_state(3.0).iter() {
        state.insert(name, t.clone());
    }
    Checkpointer::new(shared(StateDictModel::new(state)), dir.path())
        .save("model_0000009", Dict::new())
        .unwrap();
    flip_a_bit(&dir.path().join("model_0000009.pth"), "archive/data/0");

    let fresh = model(0.0);
    let err = Checkpointer::new(fresh.clone(), dir.path())
        .resume_fallback(false)
        .resume_or_load(None, true)
        .unwrap_err();
    assert!(matches!(err.root(), Error::Checksum { .. }), "{err:?}");
    assert!(same_state(&state_of(&fresh), &model_state(0.0)));
}

#[test]
fn an_intact_checkpoint_resumes_as_before_and_verification_can_be_turned_off() {
    let dir = two_checkpoints();
    let fresh = model(0.0);
    let report = Checkpointer::new(fresh.clone(), dir.path())
        .resume_or_load_with_report(None, true)
        .unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000019.pth")));
    assert!(report.skipped.is_empty());
    assert!(same_state(&state_of(&fresh), &model_state(2.0)));

    // Unchecked, a flipped bit loads (what torch.load does too).
    flip_a_bit(&dir.path().join("model_0000019.pth"), "archive/data/0");
    let report = Checkpointer::new(model(0.0), dir.path())
        .verify_on_resume(false)
        .resume_or_load_with_report(None, true)
        .unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000019.pth")));
}

#[test]
fn a_last_checkpoint_that_is_a_directory_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), "model_0000009", 1.0, 0);
    fs::remove_file(dir.path().join("last_checkpoint")).unwrap();
    fs::create_dir(dir.path().join("last_checkpoint")).unwrap();
    let err = Checkpointer::new(model(0.0), dir.path())
        .resume_or_load(None, true)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadTag {
                problem: TagProblem::NotAFile,
                ..
            }
        ),
        "{err:?}"
    );
    let err = DetectionCheckpointer::new(model(0.0), dir.path())
        .resume_or_load(None, true)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadTag {
                problem: TagProblem::NotAFile,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_detection_checkpointer_falls_back_too() {
    let dir = two_checkpoints();
    flip_a_bit(&dir.path().join("model_0000019.pth"), "archive/data/0");
    let fresh = model(0.0);
    let report = DetectionCheckpointer::new(fresh.clone(), dir.path())
        .resume_or_load_with_report(None, true)
        .unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000009.pth")));
    assert_eq!(report.skipped.len(), 1);
    assert!(same_state(&state_of(&fresh), &model_state(1.0)));
}

//! Checkpointer behaviour with real files: the scenarios of fvcore's test suite, and the
//! places where ckpt does better (broken tags, failed loads leaving the model unchanged).

use std::fs;
use std::sync::Arc;

use ckpt::{
    shared, Checkpointer, Dict, Error, IncompatibleKeys, Serde, StateDict, StateDictModel,
    TagProblem, Tensor, Value,
};

use crate::support::*;

fn extra_with(pairs: &[(&str, Value)]) -> Dict {
    let mut d = Dict::new();
    for (k, v) in pairs {
        d.insert(*k, v.clone());
    }
    d
}

#[test]
fn save_then_load_in_the_same_directory_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let trained = model(1.5);
    let counter = shared(Counter(7));
    let mut saver = Checkpointer::new(trained.clone(), dir.path());
    saver.add_checkpointable("counter", counter).unwrap();
    saver
        .save(
            "checkpoint_file",
            extra_with(&[
                ("iteration", Value::Int(99)),
                ("note", Value::Str("hi".into())),
            ]),
        )
        .unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "checkpoint_file.pth"
    );

    let fresh = model(0.0);
    let fresh_counter = shared(Counter(0));
    let mut loader = Checkpointer::new(fresh.clone(), dir.path());
    loader
        .add_checkpointable("counter", fresh_counter.clone())
        .unwrap();
    assert!(loader.has_checkpoint().unwrap());
    let file = loader.get_checkpoint_file().unwrap().unwrap();
    assert_eq!(file, dir.path().join("checkpoint_file.pth"));

    let left = loader.load(&file, ckpt::Checkpointables::All).unwrap();
    assert!(same_state(&state_of(&fresh), &state_of(&trained)));
    assert_eq!(fresh_counter.lock().unwrap().0, 7);
    let keys: Vec<String> = left.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        vec!["iteration", "note"],
        "load returns only the leftovers"
    );
    assert_eq!(left.get("iteration").and_then(Value::as_int), Some(99));
}

#[test]
fn a_checkpoint_loads_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let trained = model(2.0);
    Checkpointer::new(trained.clone(), dir.path())
        .save("checkpoint_file", Dict::new())
        .unwrap();
    let moved = elsewhere.path().join("moved.pth");
    fs::copy(dir.path().join("checkpoint_file.pth"), &moved).unwrap();

    let fresh = model(0.0);
    let other = tempfile::tempdir().unwrap();
    let loader = Checkpointer::new(fresh.clone(), other.path());
    assert!(!loader.has_checkpoint().unwrap());
    // Without a tag, resume_or_load falls back to the given path (model only).
    loader.resume_or_load(Some(&moved), true).unwrap();
    assert!(same_state(&state_of(&fresh), &state_of(&trained)));
}

#[test]
fn resume_loads_checkpointables_but_plain_load_from_path_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut saver = Checkpointer::new(model(1.0), dir.path());
    saver
        .add_checkpointable("counter", shared(Counter(5)))
        .unwrap();
    saver.save("a", Dict::new()).unwrap();

    let counter = shared(Counter(0));
    let mut loader = Checkpointer::new(model(0.0), dir.path());
    loader
        .add_checkpointable("counter", counter.clone())
        .unwrap();
    let left = loader
        .resume_or_load(Some(&dir.path().join("a.pth")), false)
        .unwrap();
    assert_eq!(counter.lock().unwrap().0, 0, "not resuming: model only");
    assert!(
        left.get("counter").is_some(),
        "an unconsumed checkpointable is a leftover"
    );
    loader.resume_or_load(None, true).unwrap();
    assert_eq!(counter.lock().unwrap().0, 5);
}

#[test]
fn module_prefixed_state_dicts_load_into_plain_models_and_back() {
    let dir = tempfile::tempdir().unwrap();
    // A model saved while wrapped for data parallelism: every name starts with `module.`.
    let wrapped: StateDict = model_state(3.0)
        .iter()
        .map(|(k, t)| (format!("module.{k}"), t.clone()))
        .collect();
    Checkpointer::new(shared(StateDictModel::new(wrapped)), dir.path())
        .save("wrapped", Dict::new())
        .unwrap();
    let plain = model(0.0);
    let (result, logs) = capture_logs(|| {
        Checkpointer::new(plain.clone(), "")
            .load(dir.path().join("wrapped.pth"), ckpt::Checkpointables::All)
    });
    result.unwrap();
    assert!(same_state(&state_of(&plain), &model_state(3.0)));
    assert!(!logs.contains("not found in the checkpoint"), "{logs}");

    // And a plain checkpoint loads into a plain model.
    Checkpointer::new(model(4.0), dir.path())
        .save("plain", Dict::new())
        .unwrap();
    let again = model(0.0);
    Checkpointer::new(again.clone(), "")
        .load(dir.path().join("plain.pth"), ckpt::Checkpointables::All)
        .unwrap();
    assert!(same_state(&state_of(&again), &model_state(4.0)));
}

#[test]
fn a_prefix_on_only_some_keys_is_kept() {
    let mut sd = model_state(1.0);
    sd.insert("module.extra", Tensor::from_slice(&[1.0f32], &[1]).unwrap());
    let stripped = sd.strip_prefix_if_present("module.");
    assert!(stripped.get("module.extra").is_some());
    assert!(stripped.get("layer1.weight").is_some());
}

#[test]
fn shape_mismatches_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = model_state(5.0);
    other.insert(
        "layer1.bias",
        Tensor::from_slice(&[5.0f32; 3], &[3]).unwrap(),
    );
    other.insert("head.weight", Tensor::from_slice(&[5.0f32], &[1]).unwrap());
    Checkpointer::new(shared(StateDictModel::new(other)), dir.path())
        .save("ckpt", Dict::new())
        .unwrap();

    let fresh = model(0.0);
    let (result, logs) = capture_logs(|| {
        Checkpointer::new(fresh.clone(), "")
            .load(dir.path().join("ckpt.pth"), ckpt::Checkpointables::All)
    });
    result.unwrap();
    let state = state_of(&fresh);
    assert_eq!(
        state.get("layer1.bias").unwrap().to_vec::<f32>().unwrap(),
        vec![0.0; 2]
    );
    assert_eq!(
        state.get("layer1.weight").unwrap().to_vec::<f32>().unwrap(),
        vec![5.0; 6]
    );
    assert!(logs.contains(
        "Skip loading parameter 'layer1.bias' to the model due to incompatible shapes: (3,) in the checkpoint but (2,) in the model! You might want to double check if this is expected."
    ), "{logs}");
    assert!(
        logs.contains(
            "Some model parameters or buffers are not found in the checkpoint:\nlayer1.bias"
        ),
        "{logs}"
    );
    assert!(logs.contains("The checkpoint state_dict contains keys that are not used by the model:\n  head.weight"), "{logs}");
}

#[test]
fn any_shape_keys_load_whatever_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = model_state(5.0);
    other.insert(
        "layer1.bias",
        Tensor::from_slice(&[5.0f32; 3], &[3]).unwrap(),
    );
    Checkpointer::new(shared(StateDictModel::new(other)), dir.path())
        .save("ckpt", Dict::new())
        .unwrap();
    let lazy = shared(StateDictModel::new(model_state(0.0)).with_any_shape(["layer1.bias"]));
    let (result, logs) = capture_logs(|| {
        Checkpointer::new(lazy.clone(), "")
            .load(dir.path().join("ckpt.pth"), ckpt::Checkpointables::All)
    });
    result.unwrap();
    assert_eq!(
        lazy.lock().unwrap().get("layer1.bias").unwrap().shape(),
        &[3]
    );
    assert!(!logs.contains("Skip loading"), "{logs}");
}

#[test]
fn reused_parameters_are_not_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    // The checkpoint holds the shared tensor under one of its names only.
    let mut saved = StateDict::new();
    saved.insert(
        "encoder.weight",
        Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap(),
    );
    Checkpointer::new(shared(StateDictModel::new(saved)), dir.path())
        .save("ckpt", Dict::new())
        .unwrap();

    let tied = Tensor::from_slice(&[0.0f32, 0.0], &[2]).unwrap();
    let mut sd = StateDict::new();
    sd.insert("encoder.weight", tied.clone());
    sd.insert("decoder.weight", tied);
    sd.insert("decoder.bias", Tensor::from_slice(&[0.0f32], &[1]).unwrap());
    let fresh = shared(StateDictModel::new(sd));
    let (result, logs) = capture_logs(|| {
        Checkpointer::new(fresh.clone(), "")
            .load(dir.path().join("ckpt.pth"), ckpt::Checkpointables::All)
    });
    result.unwrap();
    assert!(
        logs.contains("not found in the checkpoint:\ndecoder.bias"),
        "{logs}"
    );
    assert!(
        !logs.contains("decoder.weight") && !logs.contains("decoder.{"),
        "{logs}"
    );
    let decoder = fresh
        .lock()
        .unwrap()
        .get("decoder.weight")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(decoder, vec![1.0, 2.0], "the alias follows the loaded name");
}

#[test]
fn numpy_arrays_are_accepted_as_tensors() {
    let fresh = model(0.0);
    let mut weights = Dict::new();
    for (name, t) in model_state(6.0).iter() {
        weights.insert(name, Value::NdArray(t.clone()));
    }
    let checkpoint = extra_with(&[("model", Value::Dict(weights))]);
    Checkpointer::new(fresh.clone(), "")
        .load_checkpoint("c2.pkl".as_ref(), checkpoint, ckpt::Checkpointables::All)
        .unwrap();
    assert!(same_state(&state_of(&fresh), &model_state(6.0)));
}

#[test]
fn non_tensor_model_entries_are_rejected_naming_key_and_type() {
    let fresh = model(0.0);
    let mut weights = Dict::new();
    weights.insert(
        "layer1.weight",
        Value::Tensor(Tensor::from_slice(&[9.0f32; 6], &[2, 3]).unwrap()),
    );
    weights.insert("layer1.bias", Value::List(vec![Value::Int(1)]));
    let checkpoint = extra_with(&[("model", Value::Dict(weights))]);
    let err = Checkpointer::new(fresh.clone(), "")
        .load_checkpoint("bad.pth".as_ref(), checkpoint, ckpt::Checkpointables::All)
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::Key { key, message }
            if key == "layer1.bias" && message.contains("list")),
        "{err:?}"
    );
    assert_eq!(err.entry_key(), Some("model"), "{err:?}");
    assert!(
        same_state(&state_of(&fresh), &model_state(0.0)),
        "model unchanged"
    );

    let no_model = extra_with(&[("iteration", Value::Int(1))]);
    let err = Checkpointer::new(fresh, "")
        .load_checkpoint("x.pth".as_ref(), no_model, ckpt::Checkpointables::All)
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::MissingKey { key, available }
            if key == "model" && available == &["iteration"]),
        "{err:?}"
    );
}

#[test]
fn loading_a_missing_or_truncated_file_fails_and_leaves_the_model_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = model(0.0);
    let checkpointer = Checkpointer::new(fresh.clone(), "");
    let missing = dir.path().join("nope.pth");
    let err = checkpointer
        .load(&missing, ckpt::Checkpointables::All)
        .unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::Io { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );

    Checkpointer::new(model(1.0), dir.path())
        .save("full", Dict::new())
        .unwrap();
    let bytes = fs::read(dir.path().join("full.pth")).unwrap();
    let truncated = dir.path().join("truncated.pth");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpointer
        .load(&truncated, ckpt::Checkpointables::All)
        .unwrap_err();
    assert_eq!(err.path(), Some(truncated.as_path()), "{err:?}");
    assert!(matches!(err.root(), ckpt::Error::Format { .. }), "{err:?}");
    assert!(same_state(&state_of(&fresh), &model_state(0.0)));
}

#[test]
fn a_checkpointable_rejecting_its_state_rolls_everything_back() {
    let fresh = model(0.0);
    let first = shared(Counter(1));
    let second = shared(Counter(2));
    let mut checkpointer = Checkpointer::new(fresh.clone(), "");
    checkpointer
        .add_checkpointable("first", first.clone())
        .unwrap();
    checkpointer
        .add_checkpointable("second", second.clone())
        .unwrap();
    let checkpoint = extra_with(&[
        ("model", model_state(8.0).to_value()),
        ("first", Value::Int(10)),
        ("second", Value::Str("not an int".into())),
    ]);
    let err = checkpointer
        .load_checkpoint("c.pth".as_ref(), checkpoint, ckpt::Checkpointables::All)
        .unwrap_err();
    assert_eq!(err.entry_key(), Some("second"), "{err:?}");
    assert_eq!(first.lock().unwrap().0, 1);
    assert_eq!(second.lock().unwrap().0, 2);
    assert!(same_state(&state_of(&fresh), &model_state(0.0)));
}

#[test]
fn serde_types_are_checkpointable() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Scheduler {
        step: u64,
        lr: f64,
        milestones: Vec<u64>,
    }
    let dir = tempfile::tempdir().unwrap();
    let scheduler = shared(Serde(Scheduler {
        step: 12,
        lr: 0.01,
        milestones: vec![100, 200],
    }));
    let mut saver = Checkpointer::new(model(1.0), dir.path());
    saver
        .add_checkpointable("scheduler", scheduler.clone())
        .unwrap();
    saver.save("s", Dict::new()).unwrap();

    let restored = shared(Serde(Scheduler {
        step: 0,
        lr: 0.0,
        milestones: vec![],
    }));
    let mut loader = Checkpointer::new(model(0.0), dir.path());
    loader
        .add_checkpointable("scheduler", restored.clone())
        .unwrap();
    loader.resume_or_load(None, true).unwrap();
    assert_eq!(restored.lock().unwrap().0, scheduler.lock().unwrap().0);
}

#[test]
fn a_key_used_twice_is_an_error() {
    let mut checkpointer = Checkpointer::new(model(0.0), "");
    checkpointer
        .add_checkpointable("opt", shared(Counter(0)))
        .unwrap();
    let err = checkpointer
        .add_checkpointable("opt", shared(Counter(0)))
        .unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::DuplicateCheckpointable { name } if name == "opt"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "Key opt already used in the Checkpointer");
}

#[test]
fn saving_without_a_directory_or_with_saving_disabled_does_nothing() {
    Checkpointer::new(model(0.0), "")
        .save("x", Dict::new())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    Checkpointer::new(model(0.0), &target)
        .save_to_disk(false)
        .save("x", Dict::new())
        .unwrap();
    assert!(!target.exists());
}

#[test]
fn names_that_are_not_plain_basenames_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointer = Checkpointer::new(model(0.0), dir.path());
    // A leading blank would be stripped from last_checkpoint: saved, but never resumed.
    for bad in ["../escape", "a/b", "", "..", " model", "\tmodel_final"] {
        let err = checkpointer.save(bad, Dict::new()).unwrap_err();
        assert!(
            matches!(&err, ckpt::Error::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
        let err = checkpointer.tag_last_checkpoint(bad).unwrap_err();
        assert!(
            matches!(&err, ckpt::Error::InvalidName { .. }),
            "{bad:?} tag: {err:?}"
        );
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_tag_pointing_outside_the_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointer = Checkpointer::new(model(0.0), dir.path());
    for tag in ["../x.pth", "/etc/passwd", "sub/x.pth"] {
        fs::write(dir.path().join("last_checkpoint"), tag).unwrap();
        let err = checkpointer.resume_or_load(None, true).unwrap_err();
        assert!(
            matches!(&err, ckpt::Error::BadTag {
                problem: TagProblem::OutsideDirectory { name }, ..
            } if name == tag),
            "{tag:?}: {err:?}"
        );
        assert_eq!(
            err.path(),
            Some(dir.path().join("last_checkpoint").as_path())
        );
    }
    for tag in ["", "  \n"] {
        fs::write(dir.path().join("last_checkpoint"), tag).unwrap();
        let err = checkpointer.resume_or_load(None, true).unwrap_err();
        assert!(
            matches!(
                &err,
                ckpt::Error::BadTag {
                    problem: TagProblem::Empty,
                    ..
                }
            ),
            "{tag:?}: {err:?}"
        );
    }
    fs::write(dir.path().join("last_checkpoint"), b"model\xff.pth").unwrap();
    let err = checkpointer.resume_or_load(None, true).unwrap_err();
    assert!(
        matches!(
            &err,
            ckpt::Error::BadTag {
                problem: TagProblem::NotUtf8,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_tag_naming_a_missing_or_broken_file_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointer = Checkpointer::new(model(0.0), dir.path());
    fs::write(dir.path().join("last_checkpoint"), "model_0000009.pth\n").unwrap();
    let err = checkpointer.resume_or_load(None, true).unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::BadTag {
            problem: TagProblem::MissingFile { name }, ..
        } if name == "model_0000009.pth"),
        "{err:?}"
    );

    fs::write(dir.path().join("model_0000009.pth"), b"PK\x03\x04 torn").unwrap();
    let err = checkpointer.resume_or_load(None, true).unwrap_err();
    assert_eq!(
        err.path(),
        Some(dir.path().join("model_0000009.pth").as_path()),
        "{err:?}"
    );
}

#[test]
fn empty_path_starts_from_scratch() {
    let fresh = model(0.0);
    let (left, logs) =
        capture_logs(|| Checkpointer::new(fresh.clone(), "").resume_or_load(None, true));
    assert!(left.unwrap().is_empty());
    assert!(
        logs.contains("No checkpoint found. Initializing model from scratch"),
        "{logs}"
    );
}

#[test]
fn logs_use_python_wording() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(model(1.0), dir.path());
    checkpointer
        .add_checkpointable("counter", shared(Counter(3)))
        .unwrap();
    let (result, logs) = capture_logs(|| checkpointer.save("m", Dict::new()));
    result.unwrap();
    let path = dir.path().join("m.pth");
    assert!(
        logs.contains(&format!("Saving checkpoint to {}", path.display())),
        "{logs}"
    );
    let (result, logs) = capture_logs(|| checkpointer.resume_or_load(None, true));
    result.unwrap();
    assert!(
        logs.contains(&format!("Loading counter from {} ...", path.display())),
        "{logs}"
    );
}

#[test]
fn listing_shows_pth_files_only_and_never_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    checkpointer.save("b", Dict::new()).unwrap();
    checkpointer.save("a", Dict::new()).unwrap();
    fs::write(dir.path().join(".ckpt-tmp-1-2-c.pth"), b"partial").unwrap();
    fs::write(dir.path().join("notes.txt"), b"").unwrap();
    fs::create_dir(dir.path().join("dir.pth")).unwrap();
    let files = checkpointer.get_all_checkpoint_files().unwrap();
    assert_eq!(
        files,
        vec![dir.path().join("a.pth"), dir.path().join("b.pth")]
    );
}

#[test]
fn the_report_type_is_public_for_custom_logging() {
    let mut report = IncompatibleKeys::default();
    report.missing_keys.push("a.b".into());
    assert_eq!(report.warnings(&[]).len(), 1);
    let _: Arc<dyn ckpt::store::Store> = Arc::new(ckpt::store::LocalDir::new("x"));
    let _ = Error::invalid("x");
}

#[test]
fn the_load_report_says_what_was_loaded_and_what_did_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let mut saved = model_state(2.0);
    saved.remove("layer2.bias");
    saved.insert(
        "layer3.weight",
        Tensor::from_slice(&[1.0f32], &[1]).unwrap(),
    );
    saved.insert(
        "layer1.bias",
        Tensor::from_slice(&[1.0f32; 3], &[3]).unwrap(),
    );
    let mut saver = Checkpointer::new(shared(StateDictModel::new(saved)), dir.path());
    saver
        .add_checkpointable("counter", shared(Counter(5)))
        .unwrap();
    saver
        .save("mixed", extra_with(&[("iteration", Value::Int(41))]))
        .unwrap();

    let fresh = model(0.0);
    let counter = shared(Counter(0));
    let mut loader = Checkpointer::new(fresh, dir.path());
    loader
        .add_checkpointable("counter", counter.clone())
        .unwrap();
    let report = loader.resume_or_load_with_report(None, true).unwrap();
    assert_eq!(report.path, Some(dir.path().join("mixed.pth")));
    assert_eq!(report.model_keys, 4);
    assert_eq!(report.loaded, vec!["layer1.weight", "layer2.weight"]);
    assert_eq!(
        report.incompatible.missing_keys,
        vec!["layer1.bias", "layer2.bias"]
    );
    assert_eq!(report.incompatible.unexpected_keys, vec!["layer3.weight"]);
    assert_eq!(
        report.incompatible.incorrect_shapes,
        vec![ckpt::ShapeMismatch::new("layer1.bias", vec![3], vec![2])]
    );
    assert_eq!(report.checkpointables, vec!["counter"]);
    assert_eq!(
        report.extra.get("iteration").and_then(Value::as_int),
        Some(41)
    );
    assert_eq!(counter.lock().unwrap().0, 5);
    assert!(!report.matched_nothing());

    let text = report.to_string();
    for expected in [
        "mixed.pth: 2 of the model's 4 parameters and buffers",
        "restored counter",
        "left over: iteration",
        "Skip loading parameter 'layer1.bias'",
        "layer2.bias",
        "layer3.weight",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
}

#[test]
fn a_load_that_matches_nothing_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = StateDict::new();
    other.insert(
        "backbone.conv.weight",
        Tensor::from_slice(&[1.0f32], &[1]).unwrap(),
    );
    Checkpointer::new(shared(StateDictModel::new(other)), dir.path())
        .save("other", Dict::new())
        .unwrap();

    let fresh = model(0.0);
    let report = Checkpointer::new(fresh.clone(), "")
        .load_with_report(dir.path().join("other.pth"), ckpt::Checkpointables::All)
        .unwrap();
    assert!(report.matched_nothing());
    assert!(report.loaded.is_empty());
    assert!(
        report.to_string().contains("NONE of the model's names"),
        "{report}"
    );
    assert!(same_state(&state_of(&fresh), &model_state(0.0)));

    // No path loads nothing on purpose: that is not "matched nothing".
    let nothing = Checkpointer::new(fresh, "")
        .resume_or_load_with_report(None, false)
        .unwrap();
    assert!(!nothing.matched_nothing() && nothing.path.is_none());
}

#[test]
fn the_model_entry_can_have_another_name() {
    let dir = tempfile::tempdir().unwrap();
    // A Lightning-style file: the weights under `state_dict`, beside the epoch.
    let mut file = Dict::new();
    file.insert("epoch", Value::Int(3));
    file.insert("state_dict", model_state(4.0).to_value());
    ckpt::format::save_torch(
        dir.path().join("lightning.ckpt"),
        &Value::Dict(file),
        &Default::default(),
    )
    .unwrap();

    let plain = Checkpointer::new(model(0.0), "");
    let err = plain
        .load(
            dir.path().join("lightning.ckpt"),
            ckpt::Checkpointables::All,
        )
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::MissingKey { key, available }
            if key == "model" && available.iter().any(|k| k == "state_dict")),
        "{err:?}"
    );

    let fresh = model(0.0);
    let lightning = Checkpointer::new(fresh.clone(), dir.path()).with_model_key("state_dict");
    let left = lightning
        .load(
            dir.path().join("lightning.ckpt"),
            ckpt::Checkpointables::All,
        )
        .unwrap();
    assert!(same_state(&state_of(&fresh), &model_state(4.0)));
    assert_eq!(left.get("epoch").and_then(Value::as_int), Some(3));

    // It saves under the same name, and a checkpointable cannot take it.
    lightning.save("again", Dict::new()).unwrap();
    let again = ckpt::format::load(dir.path().join("again.pth")).unwrap();
    assert!(again.get("state_dict").is_some() && again.get("model").is_none());
    let mut lightning = lightning;
    let err = lightning
        .add_checkpointable("state_dict", shared(Counter(0)))
        .unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::DuplicateCheckpointable { name } if name == "state_dict"),
        "{err:?}"
    );
}

//! Hugging Face sharded checkpoints: an index and its shards read as one checkpoint (lazily,
//! checked against each other), written with Hugging Face's naming and split, and both
//! directions checked against transformers, huggingface_hub and safetensors.

use std::path::{Path, PathBuf};

use ckpt::format::{
    load, load_with, parse_size, plan_shards, save_sharded_safetensors, save_torch, LoadOptions,
    SaveOptions, ShardedOptions,
};
use ckpt::{Error, StateDict, Tensor, Value};

use crate::support::{interop_script, python};

/// Eight float32 tensors of 400 bytes each, in a known order.
fn state() -> StateDict {
    let mut sd = StateDict::new();
    for i in 0..8 {
        let data: Vec<f32> = (0..100).map(|x| (i * 1000 + x) as f32).collect();
        sd.insert(
            format!("layer{i}.weight"),
            Tensor::from_slice(&data, &[10, 10]).unwrap(),
        );
    }
    sd
}

fn tensors(value: &Value) -> Vec<(String, Tensor)> {
    value
        .as_dict()
        .expect("a dict")
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_tensor().expect("a tensor").clone()))
        .collect()
}

fn assert_same(value: &Value, expected: &StateDict) {
    let read = tensors(value);
    let names: Vec<_> = read.iter().map(|(n, _)| n.as_str()).collect();
    let wanted: Vec<_> = expected.iter().map(|(n, _)| n).collect();
    assert_eq!(names, wanted);
    for (name, tensor) in &read {
        assert!(tensor.data_eq(expected.get(name).unwrap()), "{name}");
    }
}

/// Writes `state()` as shards of 1000 bytes (two tensors each) into a fresh directory.
fn sharded_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    save_sharded_safetensors(&dir, &state(), &ShardedOptions::new(1000)).unwrap();
    (tmp, dir)
}

fn index_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
        .unwrap()
}

fn set_index(dir: &Path, index: &serde_json::Value) {
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(index).unwrap(),
    )
    .unwrap();
}

/// The error's whole chain on one line.
fn message(err: &Error) -> String {
    err.report().to_string()
}

#[test]
fn written_shards_follow_hugging_face_naming_and_read_back_as_one_checkpoint() {
    let (_tmp, dir) = sharded_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "model-00001-of-00004.safetensors",
            "model-00002-of-00004.safetensors",
            "model-00003-of-00004.safetensors",
            "model-00004-of-00004.safetensors",
            "model.safetensors.index.json",
        ]
    );
    let index = index_json(&dir);
    assert_eq!(index["metadata"]["total_size"], 3200);
    assert_eq!(
        index["weight_map"]["layer3.weight"],
        "model-00002-of-00004.safetensors"
    );

    // The directory, or the index in it: one checkpoint, shards in order, each a map.
    for path in [dir.clone(), dir.join("model.safetensors.index.json")] {
        let loaded = load_with(&path, &LoadOptions::default()).unwrap();
        assert_eq!(loaded.format, ckpt::format::Format::HfSharded);
        assert_same(&loaded.value, &state());
        for (name, tensor) in tensors(&loaded.value) {
            assert!(
                tensor.storage().is_mapped(),
                "{name} is a view of its shard"
            );
        }
    }
    // Eagerly too.
    let eager = load_with(&dir, &LoadOptions::default().with_mmap(false)).unwrap();
    assert_same(&eager.value, &state());
}

#[test]
fn the_split_is_hugging_faces() {
    let mut sd = StateDict::new();
    let t = |n: usize| Tensor::zeros(ckpt::DType::UInt8, &[n]).unwrap();
    sd.insert("a", t(60));
    sd.insert("b", t(50)); // 110 > 100: a new shard
    sd.insert("big", t(250)); // larger than the limit: alone, the current shard stays open
    sd.insert("c", t(40));
    sd.insert("d", t(10)); // 100: still fits
    sd.insert("e", t(1));
    assert_eq!(
        plan_shards(&sd, 100),
        vec![vec!["a"], vec!["big"], vec!["b", "c", "d"], vec!["e"]]
    );
}

#[test]
fn one_shard_is_model_safetensors_without_an_index_and_its_directory_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let written =
        save_sharded_safetensors(tmp.path(), &state(), &ShardedOptions::new(1 << 20)).unwrap();
    assert!(written.index.is_none());
    assert_eq!(written.shards, [tmp.path().join("model.safetensors")]);
    assert_same(&load(tmp.path()).unwrap(), &state());
}

#[test]
fn sizes_parse_as_hugging_face_parses_them() {
    assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
    assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
    assert_eq!(parse_size("10KB").unwrap(), 10_000);
    assert_eq!(parse_size("8Gb").unwrap(), 1_000_000_000);
    assert_eq!(parse_size("12345").unwrap(), 12345);
    for bad in ["", "MB", "1.5GB", "-1", "99999999999999GB"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_missing_shard_is_an_error_naming_it_and_the_index() {
    let (_tmp, dir) = sharded_dir();
    std::fs::remove_file(dir.join("model-00003-of-00004.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    let text = message(&err);
    assert!(text.contains("model-00003-of-00004.safetensors"), "{text}");
    assert_eq!(
        err.path(),
        Some(dir.join("model.safetensors.index.json").as_path())
    );
}

#[test]
fn a_name_its_shard_lacks_is_an_error() {
    let (_tmp, dir) = sharded_dir();
    let mut index = index_json(&dir);
    index["weight_map"]["ghost.weight"] = "model-00001-of-00004.safetensors".into();
    set_index(&dir, &index);
    let text = message(&load(&dir).unwrap_err());
    assert!(
        text.contains("'ghost.weight' in the shard 'model-00001-of-00004.safetensors', which does not hold it"),
        "{text}"
    );
}

#[test]
fn a_tensor_the_index_puts_elsewhere_or_omits_is_an_error_naming_the_shard() {
    let (_tmp, dir) = sharded_dir();
    let mut index = index_json(&dir);
    index["weight_map"]["layer0.weight"] = "model-00002-of-00004.safetensors".into();
    set_index(&dir, &index);
    let err = load(&dir).unwrap_err();
    assert!(message(&err).contains("which the index puts in 'model-00002-of-00004.safetensors'"));
    assert_eq!(
        err.path(),
        Some(dir.join("model-00001-of-00004.safetensors").as_path())
    );

    let mut index = index_json(&dir);
    index["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("layer0.weight");
    set_index(&dir, &index);
    let text = message(&load(&dir).unwrap_err());
    assert!(
        text.contains("holds 'layer0.weight', which the index does not list"),
        "{text}"
    );
}

#[test]
fn a_name_in_two_shards_says_how_they_differ() {
    let (_tmp, dir) = sharded_dir();
    // Shard 2 rewritten to also hold layer0.weight, as a float64 tensor.
    let mut shard = StateDict::new();
    shard.insert(
        "layer0.weight",
        Tensor::from_slice(&[1.0f64; 4], &[2, 2]).unwrap(),
    );
    shard.insert(
        "layer2.weight",
        state().get("layer2.weight").unwrap().clone(),
    );
    shard.insert(
        "layer3.weight",
        state().get("layer3.weight").unwrap().clone(),
    );
    let path = dir.join("model-00002-of-00004.safetensors");
    ckpt::format::save_safetensors(&path, &shard, None).unwrap();
    let mut index = index_json(&dir);
    index["weight_map"]["layer0.weight"] = "model-00002-of-00004.safetensors".into();
    set_index(&dir, &index);
    let text = message(&load(&dir).unwrap_err());
    // Shard 1 is read first: its layer0 is the one the index does not put there.
    assert!(text.contains("model-00001-of-00004.safetensors"), "{text}");

    // With the index agreeing with shard 1, shard 2's copy is the second one.
    index["weight_map"]["layer0.weight"] = "model-00001-of-00004.safetensors".into();
    set_index(&dir, &index);
    let text = message(&load(&dir).unwrap_err());
    assert!(
        text.contains("which the index puts in 'model-00001-of-00004.safetensors'"),
        "{text}"
    );
}

#[test]
fn a_total_size_that_does_not_add_up_is_an_error() {
    let (_tmp, dir) = sharded_dir();
    let mut index = index_json(&dir);
    index["metadata"]["total_size"] = 3201.into();
    set_index(&dir, &index);
    let err = load(&dir).unwrap_err();
    let text = message(&err);
    assert!(
        text.contains("total_size is 3201 bytes, but its tensors add up to 3200"),
        "{text}"
    );
    assert_eq!(
        err.path(),
        Some(dir.join("model.safetensors.index.json").as_path())
    );
}

#[test]
fn a_shard_named_outside_the_directory_is_refused() {
    let (tmp, dir) = sharded_dir();
    // A real checkpoint beside the directory, that a path in the index would reach.
    save_torch(
        tmp.path().join("secret.pth"),
        &Value::None,
        &SaveOptions::default(),
    )
    .unwrap();
    for name in ["../secret.pth", "/etc/passwd", "sub/x.safetensors"] {
        let mut index = index_json(&dir);
        index["weight_map"]["layer0.weight"] = name.into();
        set_index(&dir, &index);
        let text = message(&load(&dir).unwrap_err());
        assert!(text.contains("not a plain file name"), "{name}: {text}");
    }
}

#[test]
fn malformed_indexes_and_empty_directories_are_errors() {
    let (_tmp, dir) = sharded_dir();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        b"{\"weight_map\": 3}",
    )
    .unwrap();
    let text = message(&load(&dir).unwrap_err());
    assert!(text.contains("weight_map"), "{text}");
    let empty = tempfile::tempdir().unwrap();
    let text = message(&load(empty.path()).unwrap_err());
    assert!(text.contains("holds no checkpoint"), "{text}");
}

fn hf_python() -> Option<PathBuf> {
    python::interop_python(
        "the Hugging Face sharded checkpoint test",
        "torch, safetensors, transformers, huggingface_hub",
    )
}

#[test]
fn shards_of_transformers_and_huggingface_hub_read_as_their_own_loaders_read_them() {
    let Some(python) = hf_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let script = interop_script("sharded/hf_sharded.py");
    let out = tmp.path().to_str().unwrap();
    python::run_script_last_line(&python, &script, &["write", out]);

    for (dir, reference) in [
        ("transformers", "reference.safetensors"),
        ("hub", "hub_reference.safetensors"),
        ("hub_bin", "hub_bin_reference.safetensors"),
    ] {
        let index = ckpt::format::find_index(&tmp.path().join(dir)).unwrap();
        let expected_index = match dir {
            "hub_bin" => "pytorch_model.bin.index.json",
            _ => "model.safetensors.index.json",
        };
        assert!(index.ends_with(expected_index), "{}", index.display());
        let sharded = load(tmp.path().join(dir)).unwrap();
        let expected = load(tmp.path().join(reference)).unwrap();
        let mut read = tensors(&sharded);
        let mut wanted = tensors(&expected);
        assert!(read.len() > 10, "{dir}: {} tensors", read.len());
        read.sort_by(|a, b| a.0.cmp(&b.0));
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read.len(), wanted.len(), "{dir}");
        for ((name, got), (wanted_name, want)) in read.iter().zip(&wanted) {
            assert_eq!(name, wanted_name, "{dir}");
            assert_eq!(got.dtype(), want.dtype(), "{dir} {name}");
            assert!(got.data_eq(want), "{dir} {name}");
        }
    }

    // Re-sharded by ckpt at another size: transformers and safetensors read it back.
    let (flat, _) = ckpt::format::flatten_tensors(&load(tmp.path().join("transformers")).unwrap());
    let ours = tmp.path().join("ours");
    let written = save_sharded_safetensors(&ours, &flat, &ShardedOptions::new(25_000)).unwrap();
    assert!(written.shards.len() > 2, "{:?}", written.shards);
    let reference = tmp.path().join("reference.safetensors");
    let last = python::run_script_last_line(
        &python,
        &script,
        &["check", ours.to_str().unwrap(), reference.to_str().unwrap()],
    );
    assert_eq!(last, "ALL OK");
}

#[test]
fn a_checkpointer_loads_a_sharded_directory_into_its_model() {
    use crate::support::{model, model_state, same_state, state_of};
    let tmp = tempfile::tempdir().unwrap();
    let weights = model_state(1.5);
    let written = save_sharded_safetensors(
        tmp.path().join("shards"),
        &weights,
        &ShardedOptions::new(20),
    )
    .unwrap();
    assert!(written.shards.len() > 1);
    let target = model(0.0);
    // A file without a "model" entry is the model, as DetectionCheckpointer reads it.
    let checkpointer = ckpt::DetectionCheckpointer::new(target.clone(), tmp.path().join("out"));
    let shards = tmp.path().join("shards");
    checkpointer
        .load(shards.to_str().unwrap(), ckpt::Checkpointables::All)
        .unwrap();
    assert!(same_state(&state_of(&target), &weights));
}

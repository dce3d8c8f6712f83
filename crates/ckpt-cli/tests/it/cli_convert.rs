//! `ckpt convert`: torch and safetensors output from every readable format.

use std::path::Path;

use crate::support::{
    ckpt, entries, entry, fixture, inspect_json, one_line_error, stderr, success,
};
use serde_json::json;

fn convert(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert".into(),
        input.as_os_str().to_owned(),
        output.as_os_str().to_owned(),
    ];
    args.extend(extra.iter().map(Into::into));
    ckpt(&args)
}

/// Only `expected` is left in `dir` (no temporary file of an atomic write).
fn assert_dir_holds(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, expected);
}

#[test]
fn torch_round_trip_keeps_every_entry_and_the_sharing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.pth");
    let input = fixture("train_state.pth");
    success(&convert(&input, &out, &[]));
    let before = inspect_json(&input);
    let after = inspect_json(&out);
    assert_eq!(after["format"], "torch-zip");
    assert_eq!(entries(&after), entries(&before));
    assert_eq!(after["totals"], before["totals"]);
}

#[test]
fn detectron_numpy_arrays_become_torch_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.pt");
    success(&convert(&fixture("detectron.pkl"), &out, &[]));
    let report = inspect_json(&out);
    let conv = entry(&report, json!(["blobs", "conv1_w"]));
    assert_eq!(conv["type"], "Tensor");
    assert_eq!(conv["dtype"], "float32");
    assert_eq!(conv["shape"], json!([2, 1, 2, 2]));
    assert_eq!(
        entry(&report, json!(["__author__"]))["repr"],
        "\"ckpt tests\""
    );
}

#[test]
fn non_tensor_values_block_safetensors_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    let line = one_line_error(&convert(&fixture("train_state.pth"), &out, &[]));
    assert!(line.contains("train_state.pth"), "{line}");
    assert!(line.contains("iteration (int)"), "{line}");
    assert!(line.contains("--tensors-only"), "{line}");
    assert_dir_holds(dir.path(), &[]);
}

#[test]
fn tensors_only_drops_values_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    let output = convert(&fixture("train_state.pth"), &out, &["--tensors-only"]);
    success(&output);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ckpt: dropping "), "{err}");
    assert!(err.contains("iteration (int)"), "{err}");

    let report = inspect_json(&out);
    assert_eq!(report["format"], "safetensors");
    assert_eq!(report["totals"]["values"], 0);
    // Nested dicts are flattened with `.`-joined keys.
    let weight = entry(&report, json!(["model.0.weight"]));
    assert_eq!(weight["shape"], json!([3, 2]));
    let transposed = entry(&report, json!(["tied.weight_t"]));
    assert_eq!(transposed["shape"], json!([3, 2]));
}

#[test]
fn key_selects_one_sub_dict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    success(&convert(
        &fixture("train_state.pth"),
        &out,
        &["--key", "model"],
    ));
    let report = inspect_json(&out);
    assert_eq!(report["totals"]["tensors"], 7);
    assert_eq!(entry(&report, json!(["1.running_var"]))["dtype"], "float32");

    let out = dir.path().join("model_only.pth");
    success(&convert(&fixture("opaque.pth"), &out, &["--key", "model"]));
    let report = inspect_json(&out);
    assert_eq!(entries(&report).len(), 1);
    assert_eq!(entry(&report, json!(["w"]))["shape"], json!([2]));
}

#[test]
fn missing_key_lists_the_keys_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pth");
    let line = one_line_error(&convert(
        &fixture("train_state.pth"),
        &out,
        &["--key", "state"],
    ));
    assert!(line.contains("train_state.pth"), "{line}");
    assert!(
        line.contains("keys: model, optimizer, tied, iteration, meta"),
        "{line}"
    );
    assert_dir_holds(dir.path(), &[]);
}

#[test]
fn opaque_object_cannot_be_written_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pth");
    let line = one_line_error(&convert(&fixture("opaque.pth"), &out, &[]));
    assert!(line.contains("Namespace"), "{line}");
    assert_dir_holds(dir.path(), &[]);
}

#[test]
fn safetensors_converts_to_torch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weights.bin");
    success(&convert(&fixture("tensors.safetensors"), &out, &[]));
    let report = inspect_json(&out);
    assert_eq!(report["format"], "torch-zip");
    assert_eq!(entry(&report, json!(["a.bias"]))["dtype"], "float16");
    assert_eq!(entry(&report, json!(["a.weight"]))["type"], "Tensor");
}

#[test]
fn converting_over_an_existing_file_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    std::fs::write(&out, b"old contents").unwrap();
    success(&convert(&fixture("tensors.safetensors"), &out, &[]));
    assert_eq!(inspect_json(&out)["totals"]["tensors"], 2);
    assert_dir_holds(dir.path(), &["out.safetensors"]);
}

#[test]
fn a_model_saved_whole_converts_to_its_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    // The module under `model` becomes its state dict, named as state_dict() names it.
    let out = dir.path().join("model.safetensors");
    let output = convert(&fixture("full_model.pt"), &out, &["--key", "model"]);
    success(&output);
    let note = stderr(&output);
    assert!(
        note.contains("wrote the state dict of 1 pickled torch.nn.Module")
            && note.contains("torch.nn.modules.container.Sequential"),
        "{note}"
    );
    let report = inspect_json(&out);
    let listed = entries(&report);
    let mut names: Vec<&str> = listed
        .iter()
        .map(|e| e["path"][0].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "0.bias",
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
        ]
    );
    assert_eq!(entry(&report, json!(["0.weight"]))["shape"], json!([3, 2]));

    // The whole file: a flat torch state dict with `.`-joined names; the rest is dropped.
    let out = dir.path().join("flat.pth");
    let output = convert(&fixture("full_model.pt"), &out, &["--tensors-only"]);
    success(&output);
    let err = stderr(&output);
    assert!(
        err.contains("dropping 2 non-tensor values: epoch (int), args (argparse.Namespace)"),
        "{err}"
    );
    let report = inspect_json(&out);
    assert_eq!(report["totals"]["tensors"], 7);
    assert_eq!(report["totals"]["values"], 0);
    let weight = entry(&report, json!(["model.0.weight"]));
    assert_eq!(weight["type"], "Tensor");
    assert_eq!(weight["requires_grad"], false);

    // A path into the module selects a submodule.
    let out = dir.path().join("norm.pth");
    success(&convert(
        &fixture("full_model.pt"),
        &out,
        &["--key", "model._modules.1"],
    ));
    let report = inspect_json(&out);
    assert_eq!(report["totals"]["tensors"], 5);
    assert_eq!(entry(&report, json!(["running_var"]))["dtype"], "float32");

    // Without --tensors-only, the other opaque object still cannot be written.
    let out = dir.path().join("all.pth");
    let line = one_line_error(&convert(&fixture("full_model.pt"), &out, &[]));
    assert!(line.contains("argparse.Namespace"), "{line}");
}

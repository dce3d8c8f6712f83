//! `ckpt diff`: torch files written by PyTorch against their conversions, perturbed copies,
//! renamed keys, and the exit codes scripts rely on (0 equal, 1 different, 2 error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{ckpt, python, repo_fixture, stderr, stdout, success};

/// Files written by PyTorch in a temporary directory:
/// - `a.pth`: a state dict (conv, bn, fc; float32 and an int64 buffer);
/// - `perturbed.pth`: the same with `fc.weight[2, 1]` increased by 0.5;
/// - `extra.pth`: without `fc.bias`, with `head.weight` added;
/// - `renamed.pth`: every key prefixed by `backbone.`, stored as float16;
/// - `full.pth` / `full2.pth`: `{model, iteration, optimizer}` differing in iteration and lr.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const SCRIPT: &str = r#"
import sys, torch
out = sys.argv[1]
torch.manual_seed(0)
sd = {
    "conv.weight": torch.randn(4, 3, 3, 3),
    "conv.bias": torch.randn(4),
    "bn.num_batches_tracked": torch.tensor(7),
    "fc.weight": torch.randn(10, 4),
    "fc.bias": torch.randn(10),
}
torch.save(sd, f"{out}/a.pth")
p = {k: v.clone() for k, v in sd.items()}
p["fc.weight"][2, 1] += 0.5
torch.save(p, f"{out}/perturbed.pth")
e = {k: v for k, v in sd.items() if k != "fc.bias"}
e["head.weight"] = torch.zeros(2, 2)
torch.save(e, f"{out}/extra.pth")
torch.save({"backbone." + k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
           f"{out}/renamed.pth")
opt = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
torch.save({"model": sd, "iteration": 5, "optimizer": opt}, f"{out}/full.pth")
opt2 = {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}
torch.save({"model": sd, "iteration": 6, "optimizer": opt2}, f"{out}/full2.pth")
print("ok")
"#;

fn torch_files(test: &str) -> Option<Files> {
    let python = python::interop_python(test, "torch")?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(dir.path())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Files { dir })
}

fn diff(a: &Path, b: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "diff".into(),
        a.as_os_str().to_owned(),
        b.as_os_str().to_owned(),
    ];
    args.extend(extra.iter().map(Into::into));
    ckpt(&args)
}

fn diff_json(a: &Path, b: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let out = diff(a, b, &extra);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(&out), stderr(&out)));
    (out.status.code(), json)
}

fn keys(rows: &serde_json::Value) -> Vec<String> {
    rows.as_array()
        .expect("a list")
        .iter()
        .map(|r| r["key"].as_str().expect("a key").to_string())
        .collect()
}

#[test]
fn a_torch_file_equals_its_safetensors_conversion() {
    let Some(files) = torch_files("diff against a safetensors conversion") else {
        return;
    };
    let converted = files.path("a.safetensors");
    success(&ckpt(&[
        "convert".as_ref(),
        files.path("a.pth").as_os_str(),
        converted.as_os_str(),
    ]));
    let out = success(&diff(&files.path("a.pth"), &converted, &[]));
    assert!(out.contains("5 tensors compared: 5 bit-identical"), "{out}");
    assert!(out.ends_with("result: equal\n"), "{out}");
}

#[test]
fn a_perturbed_copy_differs_and_names_the_key_and_the_difference() {
    let Some(files) = torch_files("diff of a perturbed copy") else {
        return;
    };
    let out = diff(&files.path("a.pth"), &files.path("perturbed.pth"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("fc.weight"))
        .unwrap_or_else(|| panic!("no fc.weight row: {text}"));
    assert!(row.contains("5.000000e-1"), "{row}");
    assert!(text.ends_with("result: different\n"), "{text}");

    let (code, json) = diff_json(&files.path("a.pth"), &files.path("perturbed.pth"), &[]);
    assert_eq!(code, Some(1));
    let different = json["different_tensors"].as_array().unwrap();
    assert_eq!(different.len(), 1, "{json}");
    assert_eq!(different[0]["key_a"], "fc.weight");
    assert_eq!(different[0]["max_abs_diff"], 0.5);
    assert_eq!(different[0]["mismatched"], 1);
    assert_eq!(different[0]["max_abs_index"], 2 * 4 + 1);
    assert_eq!(different[0]["bit_identical"], false);

    // Within a tolerance wide enough, the same files are equal.
    let out = diff(
        &files.path("a.pth"),
        &files.path("perturbed.pth"),
        &["--atol", "0.6"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn keys_only_in_one_file_are_listed() {
    let Some(files) = torch_files("diff with missing and extra keys") else {
        return;
    };
    let (code, json) = diff_json(&files.path("a.pth"), &files.path("extra.pth"), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(keys(&json["only_in_a"]), ["fc.bias"]);
    assert_eq!(keys(&json["only_in_b"]), ["head.weight"]);
    assert_eq!(json["only_in_b"][0]["shape"], serde_json::json!([2, 2]));
    assert_eq!(json["equal"], false);
    assert_eq!(json["equal_tensors"].as_array().unwrap().len(), 4);
}

#[test]
fn other_values_compare_structurally_and_key_selects_a_sub_dict() {
    let Some(files) = torch_files("diff of training states") else {
        return;
    };
    let (code, json) = diff_json(&files.path("full.pth"), &files.path("full2.pth"), &[]);
    assert_eq!(code, Some(1));
    let values = json["different_values"].as_array().unwrap();
    assert_eq!(
        keys(&json["different_values"]),
        ["iteration", "optimizer.param_groups.0.lr"]
    );
    assert_eq!(values[0]["a"], "5");
    assert_eq!(values[0]["b"], "6");
    assert!(json["different_tensors"].as_array().unwrap().is_empty());

    // The model entry of the training state is the plain state dict.
    let out = diff(
        &files.path("full.pth"),
        &files.path("a.pth"),
        &["--key", "model"],
    );
    assert_eq!(out.status.code(), Some(2), "the key is not in a.pth");
    assert!(stderr(&out).contains("a.pth"), "{}", stderr(&out));
    let out = diff(
        &files.path("full.pth"),
        &files.path("full2.pth"),
        &["--key", "model"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn match_pairs_renamed_keys_and_compares_across_dtypes() {
    let Some(files) = torch_files("diff --match of renamed keys") else {
        return;
    };
    let (a, renamed) = (files.path("a.pth"), files.path("renamed.pth"));
    let (code, json) = diff_json(&a, &renamed, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(json["only_in_a"].as_array().unwrap().len(), 5);

    let (code, json) = diff_json(&a, &renamed, &["--match"]);
    assert_eq!(code, Some(1), "float16 against float32 is a difference");
    assert!(json["only_in_a"].as_array().unwrap().is_empty(), "{json}");
    assert!(json["only_in_b"].as_array().unwrap().is_empty(), "{json}");
    let different = json["different_tensors"].as_array().unwrap();
    let fc = different
        .iter()
        .find(|t| t["key_a"] == "fc.weight")
        .expect("fc.weight differs");
    assert_eq!(fc["key_b"], "backbone.fc.weight");
    assert_eq!(fc["dtype_a"], "float32");
    assert_eq!(fc["dtype_b"], "float16");
    let abs = fc["max_abs_diff"].as_f64().unwrap();
    assert!(abs > 0.0 && abs < 1e-2, "float16 rounding: {abs}");
    // The int64 buffer is kept as it is: bit-identical under its new name.
    let buffer = json["equal_tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key_a"] == "bn.num_batches_tracked")
        .expect("the buffer pairs");
    assert_eq!(buffer["bit_identical"], true);

    let out = diff(
        &a,
        &renamed,
        &["--match", "--ignore-dtype", "--rtol", "1e-3"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn an_unreadable_file_is_exit_code_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    // A valid empty safetensors file: an 8-byte header length then `{}`.
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&good, bytes).unwrap();
    let bad = dir.path().join("garbage.pth");
    std::fs::write(&bad, b"not a checkpoint at all").unwrap();

    for (a, b) in [(&good, &bad), (&bad, &good)] {
        let out = diff(a, b, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("ckpt: "), "{err}");
        assert!(err.contains("garbage.pth"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = diff(&good, &dir.path().join("missing.pth"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.pth"), "{}", stderr(&out));

    // Usage errors are not "different" either.
    let out = ckpt(&["diff".as_ref(), good.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = diff(&good, &good, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_training_state_equals_its_safetensors_conversion_without_its_other_values() {
    let Some(files) = torch_files("diff against a tensors-only conversion") else {
        return;
    };
    let converted = files.path("full.safetensors");
    success(&ckpt(&[
        "convert".as_ref(),
        "--tensors-only".as_ref(),
        files.path("full.pth").as_os_str(),
        converted.as_os_str(),
    ]));
    // The iteration and the optimizer's hyper-parameters cannot be in a safetensors file:
    // listed as not compared, not as differences.
    let (code, json) = diff_json(&files.path("full.pth"), &converted, &[]);
    assert_eq!(code, Some(0), "{json}");
    let not_compared = json["not_compared"].as_array().unwrap();
    assert!(
        not_compared
            .iter()
            .any(|n| n["key"] == "iteration" && n["side"] == "a"),
        "{json}"
    );
    assert!(json["only_in_a"].as_array().unwrap().is_empty(), "{json}");
    let text = success(&diff(&converted, &files.path("full.pth"), &[]));
    assert!(
        text.contains("not compared (the other file cannot hold them): "),
        "{text}"
    );
    assert!(text.ends_with("result: equal\n"), "{text}");

    // Tensors missing from the safetensors file are still differences.
    let out = diff(&files.path("a.pth"), &converted, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

/// The detectron2 weights the committed Caffe2 fixture loads as, written out by hand from
/// detectron2's rules (`tests/fixtures/detection/make_faster_rcnn_c2.py`), as a torch file;
/// `perturb` adds 1 to the first element of one tensor.
fn detectron2_weights(path: &Path, perturb: Option<&str>) {
    use ckpt::format::{save_torch, SaveOptions};
    use ckpt::{Dict, Tensor, Value};
    let text =
        std::fs::read_to_string(repo_fixture("detection/faster_rcnn_c2.expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut model = Dict::new();
    for (name, entry) in expected["loaded"].as_object().unwrap() {
        let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).unwrap();
        let mut values: Vec<f32> = serde_json::from_value(entry["values"].clone()).unwrap();
        if perturb == Some(name.as_str()) {
            values[0] += 1.0;
        }
        let tensor = Tensor::from_slice(&values, &shape).unwrap();
        model.insert(name.as_str(), Value::Tensor(tensor));
    }
    let mut checkpoint = Dict::new();
    checkpoint.insert("model", Value::Dict(model));
    save_torch(path, &Value::Dict(checkpoint), &SaveOptions::default()).unwrap();
}

#[test]
fn match_renames_caffe2_blobs_as_plan_does_and_names_them_as_the_file_does() {
    let dir = tempfile::tempdir().unwrap();
    let c2 = repo_fixture("detection/faster_rcnn_c2.pkl");
    let d2 = dir.path().join("d2.pth");
    detectron2_weights(&d2, None);

    // The classifier of the ImageNet backbone is not in the detectron2 model; every other
    // blob equals its detectron2 tensor, background rows dropped or moved.
    let (code, json) = diff_json(&c2, &d2, &["--match", "--key", "model"]);
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(keys(&json["only_in_a"]), ["fc1000_b", "fc1000_w"]);
    assert!(json["only_in_b"].as_array().unwrap().is_empty(), "{json}");
    assert!(
        json["different_tensors"].as_array().unwrap().is_empty(),
        "{json}"
    );
    let equal = json["equal_tensors"].as_array().unwrap();
    assert_eq!(equal.len(), 98);
    let stem = equal
        .iter()
        .find(|t| t["key_b"] == "backbone.bottom_up.stem.conv1.weight")
        .expect("the stem pairs");
    assert_eq!(stem["key_a"], "conv1_w");

    // Without --key the detectron2 side's names have the `model.` prefix: they still pair.
    let (_, json) = diff_json(&c2, &d2, &["--match"]);
    assert_eq!(
        json["equal_tensors"].as_array().unwrap().len(),
        98,
        "{json}"
    );

    // A changed value is reported under both names.
    let perturbed = dir.path().join("perturbed.pth");
    detectron2_weights(&perturbed, Some("roi_heads.box_predictor.cls_score.weight"));
    let (code, json) = diff_json(&c2, &perturbed, &["--match", "--key", "model"]);
    assert_eq!(code, Some(1));
    let different = json["different_tensors"].as_array().unwrap();
    assert_eq!(different.len(), 1, "{json}");
    assert_eq!(different[0]["key_a"], "cls_score_w");
    assert_eq!(
        different[0]["key_b"],
        "roi_heads.box_predictor.cls_score.weight"
    );
    assert_eq!(different[0]["max_abs_diff"], 1.0);

    // Without --match the file is read as it is: its blobs are not a `model` entry.
    let out = diff(&c2, &d2, &["--key", "model"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("blobs"), "{}", stderr(&out));
}

//! `ckpt plan` and `ckpt convert --heuristics`: a dry run of a DetectionCheckpointer load and
//! the renamed checkpoint it would load, from the command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::format::{load, save_torch, SaveOptions};
use ckpt::{DType, Dict, StateDict, Tensor, Value};
use serde_json::Value as Json;

use crate::support::http::{Reply, Server};
use crate::support::{ckpt, one_line_error, repo_fixture, stderr, success};

fn detection_fixture(name: &str) -> PathBuf {
    repo_fixture(&format!("detection/{name}"))
}

fn expected() -> Json {
    let text = std::fs::read_to_string(detection_fixture("faster_rcnn_c2.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shape(json: &Json) -> Vec<usize> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// A detectron2 model file (`{"model": zeros}`) with the fixture's names, one shape changed.
fn d2_model_file(dir: &Path) -> PathBuf {
    let mut sd = StateDict::new();
    for (name, s) in expected()["model"].as_object().unwrap() {
        let mut s = shape(s);
        if name == "roi_heads.box_head.fc2.weight" {
            s = vec![8, 9];
        }
        sd.insert(name.clone(), Tensor::zeros(DType::Float32, &s).unwrap());
    }
    let mut d = Dict::new();
    d.insert("model", sd.to_value());
    let path = dir.join("d2_model.pth");
    save_torch(&path, &Value::Dict(d), &SaveOptions::default()).unwrap();
    path
}

fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape).unwrap()
}

fn save_sd(path: &Path, entries: &[(&str, Tensor)]) {
    let sd: StateDict = entries
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    save_torch(path, &sd.to_value(), &SaveOptions::default()).unwrap();
}

fn plan_json(args: &[&str]) -> Json {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&success(&ckpt(&all))).unwrap()
}

#[test]
fn plan_of_caffe2_weights_lists_pairs_mismatches_and_unexpected_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = d2_model_file(dir.path());
    let pkl = detection_fixture("faster_rcnn_c2.pkl");
    let out = ckpt(&[
        "plan",
        "--json",
        "--model",
        model.to_str().unwrap(),
        pkl.to_str().unwrap(),
    ]);
    // A dry run: only the plan on stdout, nothing on stderr.
    assert_eq!(stderr(&out), "");
    let plan: Json = serde_json::from_str(&success(&out)).unwrap();
    let keys: Vec<&str> = plan
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 5);
    for key in [
        "matched",
        "shape_mismatch",
        "missing",
        "unexpected",
        "error",
    ] {
        assert!(keys.contains(&key), "{keys:?}");
    }
    assert_eq!(plan["error"], Json::Null);
    let matched = plan["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 97);
    assert!(matched.contains(
        &serde_json::json!({"model_key": "backbone.bottom_up.stem.conv1.weight", "checkpoint_key": "conv1_w", "shape": [4, 3, 1, 1]})
    ));
    let bbox = matched
        .iter()
        .find(|m| m["model_key"] == "roi_heads.box_predictor.bbox_pred.weight")
        .unwrap();
    assert_eq!(bbox["checkpoint_key"], "bbox_pred_w");
    assert_eq!(bbox["shape"], serde_json::json!([12, 8]));
    assert_eq!(
        plan["shape_mismatch"],
        serde_json::json!([{"model_key": "roi_heads.box_head.fc2.weight", "checkpoint_key": "fc7_w", "model_shape": [8, 9], "checkpoint_shape": [8, 8]}])
    );
    assert_eq!(
        plan["missing"],
        serde_json::json!(["roi_heads.box_head.fc2.weight"])
    );
    assert_eq!(
        plan["unexpected"],
        serde_json::json!(["box_head.fc2.weight", "fc1000.bias", "fc1000.weight"])
    );
}

#[test]
fn plan_text_shows_renames_and_background_row_edits() {
    let dir = tempfile::tempdir().unwrap();
    let model = d2_model_file(dir.path());
    let pkl = detection_fixture("faster_rcnn_c2.pkl");
    let text = success(&ckpt(&[
        "plan",
        "--model",
        model.to_str().unwrap(),
        pkl.to_str().unwrap(),
    ]));
    assert!(
        text.contains("matching:   Caffe2 renaming, then name matching heuristics"),
        "{text}"
    );
    assert!(text.contains("matched: 97"), "{text}");
    assert!(
        text.contains("res3_0_branch1_bn_s") && text.contains("res3.0.shortcut.norm.weight"),
        "{text}"
    );
    let edit = text
        .lines()
        .find(|l| l.trim_start().starts_with("bbox_pred.weight"))
        .unwrap();
    assert!(
        edit.contains("dropped the first 4 rows")
            && edit.contains("(16, 8)")
            && edit.contains("(12, 8)"),
        "{edit}"
    );
    let edit = text
        .lines()
        .find(|l| l.trim_start().starts_with("cls_score.weight"))
        .unwrap();
    assert!(edit.contains("moved the first row to the end"), "{edit}");
    assert!(text.contains("shape mismatches (not loaded): 1"), "{text}");
    assert!(
        text.contains("unexpected (in the checkpoint, not used): 3"),
        "{text}"
    );
    assert!(
        !text.contains("pixel_mean"),
        "pixel_mean is not reported missing: {text}"
    );
}

#[test]
fn plain_torch_file_loads_by_exact_name_unless_the_query_asks_for_matching() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.pth");
    save_sd(
        &model,
        &[
            ("backbone.layer1.weight", tensor(&[0.0; 2], &[2])),
            ("head.bias", tensor(&[0.0], &[1])),
        ],
    );
    let ckpt_file = dir.path().join("weights.pth");
    save_sd(
        &ckpt_file,
        &[
            ("layer1.weight", tensor(&[1.0, 2.0], &[2])),
            ("head.bias", tensor(&[3.0], &[1])),
        ],
    );
    let model = model.to_str().unwrap();

    let plain = plan_json(&["--model", model, ckpt_file.to_str().unwrap()]);
    assert_eq!(
        plain["matched"],
        serde_json::json!([{"model_key": "head.bias", "checkpoint_key": "head.bias", "shape": [1]}])
    );
    assert_eq!(
        plain["missing"],
        serde_json::json!(["backbone.layer1.weight"])
    );
    assert_eq!(plain["unexpected"], serde_json::json!(["layer1.weight"]));

    let query = format!("{}?matching_heuristics=True", ckpt_file.display());
    let matched = plan_json(&["--model", model, &query]);
    assert_eq!(matched["matched"].as_array().unwrap().len(), 2);
    assert_eq!(matched["matched"][0]["checkpoint_key"], "layer1.weight");
    assert_eq!(matched["missing"], serde_json::json!([]));
    assert_eq!(matched["unexpected"], serde_json::json!([]));
}

#[test]
fn ambiguous_match_is_reported_and_fails_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.pth");
    save_sd(
        &model,
        &[
            ("a.weight", tensor(&[0.0; 2], &[2])),
            ("b.weight", tensor(&[0.0; 2], &[2])),
        ],
    );
    let ckpt_file = dir.path().join("short.pth");
    save_sd(&ckpt_file, &[("weight", tensor(&[1.0, 2.0], &[2]))]);
    let query = format!("{}?matching_heuristics=True", ckpt_file.display());
    let out = ckpt(&["plan", "--json", "--model", model.to_str().unwrap(), &query]);
    assert_eq!(out.status.code(), Some(1));
    let plan: Json = serde_json::from_str(&crate::support::stdout(&out)).unwrap();
    let error = plan["error"].as_str().unwrap();
    assert!(
        error.contains("Ambiguity found for weight in checkpoint!"),
        "{error}"
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ckpt: the load would fail: Ambiguity found"),
        "{err}"
    );
}

#[test]
fn unknown_query_key_and_unreadable_model_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = d2_model_file(dir.path());
    let pkl = detection_fixture("faster_rcnn_c2.pkl");
    let query = format!("{}?strict=1", pkl.display());
    let line = one_line_error(&ckpt(&["plan", "--model", model.to_str().unwrap(), &query]));
    assert!(
        line.contains("Unsupported query remaining: strict=1"),
        "{line}"
    );
    let missing = dir.path().join("absent.pth");
    let line = one_line_error(&ckpt(&[
        "plan",
        "--model",
        missing.to_str().unwrap(),
        pkl.to_str().unwrap(),
    ]));
    assert!(line.contains("absent.pth"), "{line}");
}

#[test]
fn convert_with_heuristics_writes_what_loads_under_the_model_names() {
    let dir = tempfile::tempdir().unwrap();
    let model = d2_model_file(dir.path());
    let pkl = detection_fixture("faster_rcnn_c2.pkl");
    let expected = expected();
    for name in ["renamed.pth", "renamed.safetensors"] {
        let out_file = dir.path().join(name);
        let out = ckpt(&[
            "convert",
            "--heuristics",
            "--model",
            model.to_str().unwrap(),
            pkl.to_str().unwrap(),
            out_file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        let notes = stderr(&out);
        assert!(
            notes.contains("3 checkpoint tensors not written") && notes.contains("fc7_w"),
            "{notes}"
        );
        assert!(
            notes.contains("1 model name is not in the output: roi_heads.box_head.fc2.weight"),
            "{notes}"
        );

        let written = load(&out_file).unwrap();
        let written = written.as_dict().unwrap();
        assert_eq!(written.len(), 97, "{name}");
        for (key, value) in written.iter() {
            let key = key.as_str().unwrap();
            let want: Vec<f32> = expected["loaded"][key]["values"]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is not a model name"))
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                value.as_tensor().unwrap().to_vec::<f32>().unwrap(),
                want,
                "{name}: {key}"
            );
        }
    }
}

#[test]
fn convert_heuristics_needs_a_model_and_excludes_key() {
    let pkl = detection_fixture("faster_rcnn_c2.pkl");
    let pkl = pkl.to_str().unwrap();
    let line = one_line_error(&ckpt(&["convert", "--heuristics", pkl, "out.pth"]));
    assert!(line.contains("--model"), "{line}");
    let line = one_line_error(&ckpt(&["convert", "--model", "m.pth", pkl, "out.pth"]));
    assert!(line.contains("--heuristics"), "{line}");
    let line = one_line_error(&ckpt(&[
        "convert",
        "--heuristics",
        "--model",
        "m.pth",
        "--key",
        "model",
        pkl,
        "out.pth",
    ]));
    assert!(line.contains("--key"), "{line}");
}

#[test]
fn plan_and_inspect_fetch_a_url_once_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let model = d2_model_file(dir.path());
    let cache = dir.path().join("cache");
    let server = Server::start();
    let url = server.route(
        "/models/R-50-FPN.pkl",
        Reply::Body(std::fs::read(detection_fixture("faster_rcnn_c2.pkl")).unwrap()),
    );
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .args(args)
            .env("CKPT_CACHE_DIR", &cache)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let fetched = run(&["plan", "--json", "--model", model.to_str().unwrap(), &url]);
    // stderr is a pipe, not a terminal: no progress bar is drawn into it.
    let stderr = String::from_utf8_lossy(&fetched.stderr);
    assert!(
        !stderr.contains(['\r', '\u{1b}']) && !stderr.contains("downloading"),
        "{stderr:?}"
    );
    let plan: Json = serde_json::from_str(&success(&fetched)).unwrap();
    assert_eq!(plan["matched"].as_array().unwrap().len(), 97);
    // inspect reads the cached copy.
    let text = success(&run(&["inspect", &url]));
    assert!(text.contains("format:  pickle"), "{text}");
    assert!(text.contains("blobs.conv1_w"), "{text}");
    assert_eq!(server.requests(), 1);
}

//! A Detectron1/Caffe2 Mask R-CNN weights file written as Python 2 cPickle did loads into a
//! model with detectron2's names: renamed keys, background-class rows, values, report.
//! Fixture: `tests/fixtures/detection/make_faster_rcnn_c2.py`.

use ckpt::detection::{plan_load, read_detection_file, FileKind};
use ckpt::matching::ValueEditKind;
use ckpt::resolve::Resolver;
use ckpt::DetectionCheckpointer;
use ckpt::Value;
use serde_json::Value as Json;
use tracing::Level;

use crate::support::{at, captured, fixture, values, zero_model};

fn expected() -> Json {
    let text = std::fs::read_to_string(fixture("detection/faster_rcnn_c2.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shape(json: &Json) -> Vec<usize> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn model_shapes(expected: &Json) -> Vec<(String, Vec<usize>)> {
    expected["model"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, s)| (name.clone(), shape(s)))
        .collect()
}

fn checkpointer(
    shapes: &[(String, Vec<usize>)],
) -> (DetectionCheckpointer, ckpt::Shared<ckpt::StateDictModel>) {
    let model = zero_model(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())));
    let checkpointer =
        DetectionCheckpointer::new(model.clone(), "").with_resolver(Resolver::local_only());
    (checkpointer, model)
}

#[test]
fn caffe2_pickle_becomes_blobs_without_momentum_and_asks_for_matching() {
    let path = fixture("detection/faster_rcnn_c2.pkl");
    assert_eq!(FileKind::of(&path), FileKind::Pickle);
    let checkpoint = read_detection_file(&path, false).unwrap();
    assert_eq!(
        checkpoint.get("__author__").and_then(Value::as_str),
        Some("Caffe2")
    );
    assert_eq!(
        checkpoint
            .get("matching_heuristics")
            .and_then(Value::as_bool),
        Some(true)
    );
    assert!(checkpoint.get("cfg").is_none(), "only the blobs are kept");
    let model = checkpoint.get("model").unwrap().as_dict().unwrap();
    assert_eq!(model.len(), 100);
    assert!(model.get("conv1_w").is_some());
    for key in expected()["momentum"].as_array().unwrap() {
        assert!(model.get(key.as_str().unwrap()).is_none(), "{key} kept");
    }
}

#[test]
fn caffe2_weights_load_under_detectron2_names_with_background_rows_fixed() {
    let expected = expected();
    let shapes = model_shapes(&expected);
    let (checkpointer, model) = checkpointer(&shapes);
    let path = fixture("detection/faster_rcnn_c2.pkl");
    let (extra, lines) =
        captured(|| checkpointer.load(path.to_str().unwrap(), ckpt::Checkpointables::All));
    let extra = extra.unwrap();
    // What is left of the checkpoint dict is returned, as in Python.
    assert_eq!(
        extra.get("__author__").and_then(Value::as_str),
        Some("Caffe2")
    );
    assert!(extra.get("model").is_none());

    for (name, entry) in expected["loaded"].as_object().unwrap() {
        let want: Vec<f32> = entry["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            values(&model, name),
            want,
            "{name} (from {})",
            entry["from"]
        );
    }
    assert!(values(&model, "pixel_mean").iter().all(|v| *v == 0.0));

    let info = at(&lines, Level::INFO);
    assert!(info
        .iter()
        .any(|m| m.contains("[DetectionCheckpointer] Loading from")));
    assert!(info.contains(&"Renaming Caffe2 weights ......"));
    assert!(
        info.iter()
            .any(|m| m.starts_with("Following weights matched with")),
        "{info:#?}"
    );
    // Each background-class edit is logged with the shapes before and after.
    assert!(
        info.iter().any(|m| m.contains("bbox_pred.weight")
            && m.contains("(16, 8)")
            && m.contains("(12, 8)")),
        "{info:#?}"
    );
    assert!(
        info.iter().any(|m| m.contains("mask_head.predictor.weight")
            && m.contains("(4, 4, 1, 1)")
            && m.contains("(3, 4, 1, 1)")),
        "{info:#?}"
    );

    let warnings = at(&lines, Level::WARN);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0]
        .starts_with("The checkpoint state_dict contains keys that are not used by the model:"));
    assert!(
        warnings[0].contains("fc1000.{bias, weight}"),
        "{}",
        warnings[0]
    );
    // pixel_mean / pixel_std are top-level model names: not reported missing.
    assert!(!lines.iter().any(|(_, m)| m.contains("pixel_mean")));
}

#[test]
fn plan_of_caffe2_weights_names_the_blobs_renames_and_edits() {
    let expected = expected();
    let shapes = model_shapes(&expected);
    let checkpoint = read_detection_file(&fixture("detection/faster_rcnn_c2.pkl"), false).unwrap();
    let plan = plan_load(&shapes, checkpoint).unwrap();
    assert_eq!(plan.matched.len(), 98);
    assert!(plan.shape_mismatches.is_empty());
    assert!(plan.missing_keys.is_empty(), "{:?}", plan.missing_keys);
    assert_eq!(plan.unexpected_keys, vec!["fc1000.bias", "fc1000.weight"]);
    for m in &plan.matched {
        let entry = &expected["loaded"][m.model_key.as_str()];
        assert_eq!(
            m.checkpoint_key,
            entry["from"].as_str().unwrap(),
            "{}",
            m.model_key
        );
        assert_eq!(m.shape, shape(&entry["shape"]));
    }
    assert!(plan.c2_renames.contains(&(
        "_[mask]_fcn1_w".to_string(),
        "mask_head.mask_fcn1.weight".to_string()
    )));
    assert!(plan.c2_renames.contains(&(
        "res3_0_branch1_bn_s".to_string(),
        "res3.0.shortcut.norm.weight".to_string()
    )));
    let edits: Vec<(&str, ValueEditKind)> = plan
        .c2_edits
        .iter()
        .map(|e| (e.key.as_str(), e.kind))
        .collect();
    assert_eq!(
        edits,
        vec![
            ("bbox_pred.bias", ValueEditKind::DropLeadingRows(4)),
            ("bbox_pred.weight", ValueEditKind::DropLeadingRows(4)),
            ("cls_score.bias", ValueEditKind::MoveFirstRowToEnd),
            ("cls_score.weight", ValueEditKind::MoveFirstRowToEnd),
            (
                "mask_head.predictor.bias",
                ValueEditKind::DropLeadingRows(1)
            ),
            (
                "mask_head.predictor.weight",
                ValueEditKind::DropLeadingRows(1)
            ),
        ]
    );
    assert_eq!(plan.loaded.len(), 98);
}

//! Matching logs what detectron2 logs: the shape warnings, the table of matches, the
//! ambiguity, an empty match and the Caffe2 row edits.

use ckpt::matching::{align_and_update_state_dicts, convert_c2_detectron_names};
use ckpt::StateDict;
use tracing::Level;

use crate::support::{captured, zeros};

#[test]
fn shape_mismatch_logs_both_warnings_and_the_table_lists_the_rest() {
    let model = vec![
        ("backbone.fc.weight".to_string(), vec![3, 2]),
        ("backbone.fc.bias".to_string(), vec![3]),
    ];
    let mut ckpt = StateDict::new();
    ckpt.insert("fc.weight", zeros(&[3, 2]));
    ckpt.insert("fc.bias", zeros(&[4]));
    let (result, lines) = captured(|| align_and_update_state_dicts(&model, ckpt, false));
    result.unwrap();
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|(level, _)| *level == Level::WARN)
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(
        warnings,
        vec![
            "Shape of fc.bias in checkpoint is torch.Size([4]), while shape of backbone.fc.bias in model is torch.Size([3]).",
            "fc.bias will not be loaded. Please double check and see if this is desired.",
        ]
    );
    let table = lines
        .iter()
        .find(|(level, m)| *level == Level::INFO && m.starts_with("Following weights"))
        .map(|(_, m)| m.as_str())
        .unwrap();
    assert_eq!(
        table,
        "Following weights matched with submodule backbone.fc.weight:\n\
         | Names in Model   | Names in Checkpoint   | Shapes   |\n\
         |:-----------------|:----------------------|:---------|\n\
         |                  | fc.weight             | (3, 2)   |"
    );
}

#[test]
fn no_match_and_ambiguity_are_logged() {
    let model = vec![("a.weight".to_string(), vec![1])];
    let mut ckpt = StateDict::new();
    ckpt.insert("b.weight", zeros(&[1]));
    let (_, lines) = captured(|| align_and_update_state_dicts(&model, ckpt, false));
    assert!(lines.contains(&(
        Level::WARN,
        "No weights in checkpoint matched with model.".to_string()
    )));

    let model = vec![
        ("x.weight".to_string(), vec![1]),
        ("y.weight".to_string(), vec![1]),
    ];
    let mut ckpt = StateDict::new();
    ckpt.insert("weight", zeros(&[1]));
    let (result, lines) = captured(|| align_and_update_state_dicts(&model, ckpt, false));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::Invalid { message } if message.contains("Ambiguity found")),
        "{err:?}"
    );
    assert!(lines.contains(&(
        Level::ERROR,
        "Ambiguity found for weight in checkpoint!It matches at least two keys in the model (y.weight and x.weight).".to_string()
    )));
}

#[test]
fn caffe2_row_edits_are_logged_with_shapes() {
    let mut ckpt = StateDict::new();
    ckpt.insert("bbox_pred_w", zeros(&[12, 5]));
    ckpt.insert("cls_score_b", zeros(&[3]));
    let (result, lines) = captured(|| convert_c2_detectron_names(ckpt));
    result.unwrap();
    let infos: Vec<&str> = lines.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        infos,
        vec![
            "Renaming Caffe2 weights ......",
            "Remove prediction weight for background class in bbox_pred.weight. The shape changes from (12, 5) to (8, 5).",
            "Move classification weights for background class in cls_score.bias from index 0 to index 2.",
        ]
    );
}

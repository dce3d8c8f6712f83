//! Caffe2 / Detectron1 blob names become detectron2 parameter names, and the predictor
//! rows move the way detectron2 moves them.

use ckpt::matching::{convert_c2_detectron_names, convert_c2_name, ValueEditKind};
use ckpt::{StateDict, Tensor};

/// (Caffe2 name, detectron2 name) for a Mask R-CNN R50-FPN-like model.
const FASTER_RCNN_NAMES: &[(&str, &str)] = &[
    ("conv1_w", "stem.conv1.weight"),
    ("res_conv1_bn_s", "stem.conv1.norm.weight"),
    ("res_conv1_bn_b", "stem.conv1.norm.bias"),
    ("res2_0_branch2a_w", "res2.0.conv1.weight"),
    ("res2_0_branch2a_bn_s", "res2.0.conv1.norm.weight"),
    ("res2_0_branch2a_bn_b", "res2.0.conv1.norm.bias"),
    ("res2_0_branch2a_bn_rm", "res2.0.conv1.norm.running_mean"),
    ("res2_0_branch2a_bn_riv", "res2.0.conv1.norm.running_var"),
    ("res2_0_branch2b_w", "res2.0.conv2.weight"),
    ("res2_0_branch2c_w", "res2.0.conv3.weight"),
    ("res2_0_branch2c_bn_s", "res2.0.conv3.norm.weight"),
    ("res2_0_branch1_w", "res2.0.shortcut.weight"),
    ("res2_0_branch1_bn_s", "res2.0.shortcut.norm.weight"),
    ("res2_0_branch1_bn_b", "res2.0.shortcut.norm.bias"),
    ("res3_0_branch2a_w", "res3.0.conv1.weight"),
    ("res4_5_branch2c_bn_b", "res4.5.conv3.norm.bias"),
    ("res5_2_branch2b_bn_s", "res5.2.conv2.norm.weight"),
    ("fpn_inner_res5_2_sum_w", "fpn_lateral5.weight"),
    ("fpn_inner_res5_2_sum_b", "fpn_lateral5.bias"),
    ("fpn_inner_res4_5_sum_lateral_w", "fpn_lateral4.weight"),
    ("fpn_res4_5_sum_w", "fpn_output4.weight"),
    ("fpn_res4_5_sum_b", "fpn_output4.bias"),
    ("fpn_res2_2_sum_gn_s", "fpn_output2.norm.weight"),
    ("conv_rpn_fpn2_w", "proposal_generator.rpn_head.conv.weight"),
    ("conv_rpn_fpn2_b", "proposal_generator.rpn_head.conv.bias"),
    (
        "rpn_bbox_pred_fpn2_w",
        "proposal_generator.rpn_head.anchor_deltas.weight",
    ),
    (
        "rpn_cls_logits_fpn2_w",
        "proposal_generator.rpn_head.objectness_logits.weight",
    ),
    ("fc6_w", "box_head.fc1.weight"),
    ("fc6_b", "box_head.fc1.bias"),
    ("fc7_w", "box_head.fc2.weight"),
    ("cls_score_w", "cls_score.weight"),
    ("cls_score_b", "cls_score.bias"),
    ("bbox_pred_w", "bbox_pred.weight"),
    ("bbox_pred_b", "bbox_pred.bias"),
    ("_[mask]_fcn1_w", "mask_head.mask_fcn1.weight"),
    ("_[mask]_fcn4_b", "mask_head.mask_fcn4.bias"),
    ("conv5_mask_w", "mask_head.deconv.weight"),
    ("mask_fcn_logits_w", "mask_head.predictor.weight"),
    ("mask_fcn_logits_b", "mask_head.predictor.bias"),
];

/// Names of other Detectron1 heads and backbones.
const OTHER_NAMES: &[(&str, &str)] = &[
    ("conv_rpn_w", "proposal_generator.rpn_head.conv.weight"),
    (
        "rpn_bbox_pred_b",
        "proposal_generator.rpn_head.anchor_deltas.bias",
    ),
    (
        "rpn_cls_logits_w",
        "proposal_generator.rpn_head.objectness_logits.weight",
    ),
    ("pred_w", "linear.weight"),
    ("pred_b", "linear.bias"),
    ("head_conv1_w", "box_head.conv1.weight"),
    ("head_conv1_gn_s", "box_head.conv1.norm.weight"),
    (
        "kps_score_lowres_w",
        "roi_heads.keypoint_head.score_lowres.weight",
    ),
    ("kps_score_w", "roi_heads.keypoint_head.score.weight"),
    ("conv_fcn1_w", "roi_heads.keypoint_head.conv_fcn1.weight"),
    ("body_conv_fcn1_w", "body_conv_fcn1.weight"),
    ("AnnIndex_lowres_w", "ann_index_lowres.weight"),
    ("Index_UV_lowres_b", "index_uv_lowres.bias"),
    ("U_lowres_w", "u_lowres.weight"),
    ("V_lowres_b", "v_lowres.bias"),
    (
        "res2_0_branch2a_bn_running_mean",
        "res2.0.conv1.norm.running_mean",
    ),
    ("res2_0_branch2a_bn_gamma", "res2.0.conv1.norm.weight"),
    ("res2_0_branch2a_bn_beta", "res2.0.conv1.norm.bias"),
];

fn counting(rows: usize, cols: usize) -> Tensor {
    let data: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
    Tensor::from_slice(&data, &[rows, cols]).unwrap()
}

#[test]
fn faster_rcnn_caffe2_names_become_detectron2_names() {
    for (c2, d2) in FASTER_RCNN_NAMES.iter().chain(OTHER_NAMES) {
        assert_eq!(convert_c2_name(c2).unwrap(), *d2, "renaming {c2}");
    }
}

#[test]
fn conversion_renames_in_sorted_order_and_reports_every_pair() {
    let mut sd = StateDict::new();
    for (c2, _) in FASTER_RCNN_NAMES.iter().rev() {
        sd.insert(*c2, counting(8, 2));
    }
    let converted = convert_c2_detectron_names(sd).unwrap();

    let mut expected: Vec<(String, String)> = FASTER_RCNN_NAMES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    expected.sort();
    assert_eq!(converted.renames, expected);
    let keys: Vec<&str> = converted.state_dict.keys().collect();
    let expected_keys: Vec<&str> = expected.iter().map(|(_, new)| new.as_str()).collect();
    assert_eq!(keys, expected_keys);
    assert_eq!(converted.changed().count(), expected.len());
}

#[test]
fn background_rows_are_dropped_or_moved_on_real_values() {
    let mut sd = StateDict::new();
    sd.insert("bbox_pred_w", counting(12, 2)); // 3 classes x 4 deltas incl. background
    sd.insert(
        "bbox_pred_b",
        Tensor::from_slice(&(0..12).map(|x| x as f32).collect::<Vec<_>>(), &[12]).unwrap(),
    );
    sd.insert("mask_fcn_logits_w", counting(3, 2));
    sd.insert("cls_score_w", counting(3, 2));
    sd.insert(
        "cls_score_b",
        Tensor::from_slice(&[10i64, 11, 12], &[3]).unwrap(),
    );
    sd.insert("fc6_w", counting(2, 2));
    let original_bbox = sd.get("bbox_pred_w").unwrap().clone();

    let converted = convert_c2_detectron_names(sd).unwrap();
    let out = &converted.state_dict;

    let bbox = out.get("bbox_pred.weight").unwrap();
    assert_eq!(bbox.shape(), &[8, 2]);
    assert_eq!(
        bbox.to_vec::<f32>().unwrap(),
        (8..24).map(|x| x as f32).collect::<Vec<_>>()
    );
    assert!(
        bbox.storage().same_as(original_bbox.storage()),
        "dropping rows is a view"
    );
    assert_eq!(
        out.get("bbox_pred.bias").unwrap().to_vec::<f32>().unwrap(),
        vec![4., 5., 6., 7., 8., 9., 10., 11.]
    );

    let mask = out.get("mask_head.predictor.weight").unwrap();
    assert_eq!(mask.shape(), &[2, 2]);
    assert_eq!(mask.to_vec::<f32>().unwrap(), vec![2., 3., 4., 5.]);

    let cls = out.get("cls_score.weight").unwrap();
    assert_eq!(cls.shape(), &[3, 2]);
    assert_eq!(cls.to_vec::<f32>().unwrap(), vec![2., 3., 4., 5., 0., 1.]);
    assert_eq!(
        out.get("cls_score.bias").unwrap().to_vec::<i64>().unwrap(),
        vec![11, 12, 10]
    );

    assert!(out
        .get("box_head.fc1.weight")
        .unwrap()
        .data_eq(&counting(2, 2)));

    let edits: Vec<(&str, ValueEditKind, &[usize], &[usize])> = converted
        .edits
        .iter()
        .map(|e| {
            (
                e.key.as_str(),
                e.kind,
                e.shape_before.as_slice(),
                e.shape_after.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        edits,
        vec![
            (
                "bbox_pred.bias",
                ValueEditKind::DropLeadingRows(4),
                &[12][..],
                &[8][..]
            ),
            (
                "bbox_pred.weight",
                ValueEditKind::DropLeadingRows(4),
                &[12, 2][..],
                &[8, 2][..]
            ),
            (
                "cls_score.bias",
                ValueEditKind::MoveFirstRowToEnd,
                &[3][..],
                &[3][..]
            ),
            (
                "cls_score.weight",
                ValueEditKind::MoveFirstRowToEnd,
                &[3, 2][..],
                &[3, 2][..]
            ),
            (
                "mask_head.predictor.weight",
                ValueEditKind::DropLeadingRows(1),
                &[3, 2][..],
                &[2, 2][..]
            ),
        ]
    );
}

#[test]
fn rows_of_a_strided_view_move_correctly() {
    // A transposed (non-contiguous) classifier weight: rows are columns of the storage.
    let base = counting(2, 3);
    let transposed = base.view(&[3, 2], &[1, 3], 0).unwrap();
    let mut sd = StateDict::new();
    sd.insert("cls_score_w", transposed.clone());
    sd.insert("bbox_pred_w", transposed);
    let out = convert_c2_detectron_names(sd).unwrap().state_dict;
    // transposed rows: [0,3], [1,4], [2,5]
    assert_eq!(
        out.get("cls_score.weight")
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1., 4., 2., 5., 0., 3.]
    );
    assert_eq!(out.get("bbox_pred.weight").unwrap().shape(), &[0, 2]);
}

#[test]
fn too_few_predictor_rows_leave_an_empty_tensor_as_python_slicing_does() {
    let mut sd = StateDict::new();
    sd.insert(
        "bbox_pred_b",
        Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap(),
    );
    sd.insert("cls_score_b", Tensor::from_slice::<f32>(&[], &[0]).unwrap());
    let out = convert_c2_detectron_names(sd).unwrap().state_dict;
    assert_eq!(out.get("bbox_pred.bias").unwrap().shape(), &[0]);
    assert_eq!(out.get("cls_score.bias").unwrap().shape(), &[0]);
}

#[test]
fn scalar_predictor_is_an_error_naming_the_caffe2_key() {
    let mut sd = StateDict::new();
    sd.insert("bbox_pred_b", Tensor::from_slice(&[1.0f32], &[]).unwrap());
    let err = convert_c2_detectron_names(sd).unwrap_err().to_string();
    assert!(err.contains("bbox_pred_b"), "{err}");
    assert!(err.contains("0-d"), "{err}");
}

#[test]
fn two_names_renamed_alike_are_an_error_naming_both() {
    let mut sd = StateDict::new();
    sd.insert("conv_rpn_fpn2_w", counting(1, 1));
    sd.insert("conv_rpn_w", counting(1, 1));
    let err = convert_c2_detectron_names(sd).unwrap_err().to_string();
    assert!(err.contains("conv_rpn_fpn2_w"), "{err}");
    assert!(err.contains("conv_rpn_w"), "{err}");
    assert!(
        err.contains("proposal_generator.rpn_head.conv.weight"),
        "{err}"
    );
}

#[test]
fn fpn_names_with_a_non_integer_stage_are_an_error() {
    let err = convert_c2_name("fpn_inner_resA_sum_w")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fpn_inner_resA_sum_w"), "{err}");
}

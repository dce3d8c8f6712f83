//! Checkpoint keys are renamed to model keys by the longest dot-suffix, as detectron2's
//! `align_and_update_state_dicts` does (its own test scenarios first).

use ckpt::matching::{align_and_update_state_dicts, format_match_table, MatchedKey};
use ckpt::{StateDict, Tensor};

fn filled(value: f32, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_slice(&vec![value; n], shape).unwrap()
}

/// The flat state dict detectron2's test loads into a nested model.
fn flat_state_dict() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("layer1.weight", filled(1.0, &[3, 2]));
    sd.insert("layer1.bias", filled(2.0, &[3]));
    sd.insert("layer2.weight", filled(3.0, &[2, 3]));
    sd.insert("layer2.bias", filled(4.0, &[2]));
    sd.insert("res.layer2.weight", filled(5.0, &[2, 3]));
    sd.insert("res.layer2.bias", filled(6.0, &[2]));
    sd
}

/// `block1.layer1 = Linear(2, 3)`, `layer2 = Linear(3, 2)`, `res.layer2 = Linear(3, 2)`,
/// optionally wrapped in `DataParallel` (`module.`).
fn complex_model(prefix: &str) -> Vec<(String, Vec<usize>)> {
    [
        ("block1.layer1.weight", vec![3, 2]),
        ("block1.layer1.bias", vec![3]),
        ("layer2.weight", vec![2, 3]),
        ("layer2.bias", vec![2]),
        ("res.layer2.weight", vec![2, 3]),
        ("res.layer2.bias", vec![2]),
    ]
    .into_iter()
    .map(|(k, s)| (format!("{prefix}{k}"), s))
    .collect()
}

#[test]
fn nested_model_loads_a_flat_state_dict_with_and_without_data_parallel() {
    for prefix in ["", "module."] {
        let model = complex_model(prefix);
        let stored = flat_state_dict();
        // detectron2's test runs with the Caffe2 conversion on: these names survive it.
        let aligned = align_and_update_state_dicts(&model, stored.clone(), true).unwrap();
        assert!(aligned.shape_mismatches.is_empty());
        assert_eq!(aligned.state_dict.len(), 6);
        for ((model_key, _), (stored_key, stored_tensor)) in model.iter().zip(stored.iter()) {
            let loaded = aligned.state_dict.get(model_key).unwrap();
            assert!(loaded.data_eq(stored_tensor), "{model_key} <- {stored_key}");
        }
        let pairs: Vec<(&str, &str)> = aligned
            .matched
            .iter()
            .map(|m| (m.model_key.as_str(), m.checkpoint_key.as_str()))
            .collect();
        let p = |k: &str| format!("{prefix}{k}");
        assert_eq!(
            pairs,
            vec![
                (p("block1.layer1.bias").as_str(), "layer1.bias"),
                (p("block1.layer1.weight").as_str(), "layer1.weight"),
                (p("layer2.bias").as_str(), "layer2.bias"),
                (p("layer2.weight").as_str(), "layer2.weight"),
                (p("res.layer2.bias").as_str(), "res.layer2.bias"),
                (p("res.layer2.weight").as_str(), "res.layer2.weight"),
            ]
        );
    }
}

#[test]
fn shape_mismatch_skips_the_pair_and_keeps_the_checkpoint_key() {
    let model = complex_model("");
    let mut stored = flat_state_dict();
    stored.insert("layer2.bias", filled(4.0, &[5]));
    let aligned = align_and_update_state_dicts(&model, stored, false).unwrap();
    assert_eq!(aligned.shape_mismatches.len(), 1);
    let mismatch = &aligned.shape_mismatches[0];
    assert_eq!(mismatch.model_key, "layer2.bias");
    assert_eq!(mismatch.checkpoint_key, "layer2.bias");
    assert_eq!(mismatch.model_shape, vec![2]);
    assert_eq!(mismatch.checkpoint_shape, vec![5]);
    // Still present, under its own name (reported as unexpected later), after the matches.
    let keys: Vec<&str> = aligned.state_dict.keys().collect();
    assert_eq!(
        keys,
        vec![
            "block1.layer1.bias",
            "block1.layer1.weight",
            "layer2.weight",
            "res.layer2.bias",
            "res.layer2.weight",
            "layer2.bias",
        ]
    );
    assert_eq!(aligned.state_dict.get("layer2.bias").unwrap().shape(), &[5]);
}

#[test]
fn one_checkpoint_key_for_two_model_keys_is_an_ambiguity_error() {
    let model = vec![
        ("backbone.conv1.weight".to_string(), vec![2]),
        ("head.conv1.weight".to_string(), vec![2]),
    ];
    let mut stored = StateDict::new();
    stored.insert("conv1.weight", filled(1.0, &[2]));
    let err = align_and_update_state_dicts(&model, stored, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Ambiguity found for conv1.weight in checkpoint!It matches at least two keys in the \
         model (head.conv1.weight and backbone.conv1.weight). Cannot match one checkpoint key \
         to multiple keys in the model."
    );
}

#[test]
fn a_pair_skipped_for_its_shape_does_not_count_as_ambiguous() {
    let model = vec![
        ("backbone.conv1.weight".to_string(), vec![2]),
        ("head.conv1.weight".to_string(), vec![7]),
    ];
    let mut stored = StateDict::new();
    stored.insert("conv1.weight", filled(1.0, &[2]));
    let aligned = align_and_update_state_dicts(&model, stored, false).unwrap();
    assert_eq!(aligned.matched.len(), 1);
    assert_eq!(aligned.shape_mismatches[0].model_key, "head.conv1.weight");
}

#[test]
fn no_match_returns_the_checkpoint_unchanged() {
    let model = vec![("fc.weight".to_string(), vec![2])];
    let mut stored = StateDict::new();
    stored.insert("zeta", filled(1.0, &[1]));
    stored.insert("alpha", filled(1.0, &[1]));
    stored.insert("xfc.weight", filled(1.0, &[2]));
    let aligned = align_and_update_state_dicts(&model, stored, false).unwrap();
    assert!(aligned.matched.is_empty());
    let keys: Vec<&str> = aligned.state_dict.keys().collect();
    assert_eq!(keys, vec!["zeta", "alpha", "xfc.weight"]);
}

#[test]
fn caffe2_checkpoint_matches_a_detectron2_model_and_reports_file_names() {
    let model = vec![
        (
            "backbone.bottom_up.stem.conv1.weight".to_string(),
            vec![4, 3],
        ),
        (
            "backbone.bottom_up.res2.0.conv1.norm.weight".to_string(),
            vec![4],
        ),
        (
            "roi_heads.box_predictor.cls_score.weight".to_string(),
            vec![3, 2],
        ),
        (
            "roi_heads.box_predictor.bbox_pred.weight".to_string(),
            vec![8, 2],
        ),
    ];
    let mut stored = StateDict::new();
    stored.insert("conv1_w", filled(1.0, &[4, 3]));
    stored.insert("res2_0_branch2a_bn_s", filled(2.0, &[4]));
    stored.insert(
        "cls_score_w",
        Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0], &[3, 2]).unwrap(),
    );
    stored.insert("bbox_pred_w", filled(3.0, &[12, 2]));
    stored.insert("fc1000_w", filled(4.0, &[1]));
    let aligned = align_and_update_state_dicts(&model, stored, true).unwrap();

    let pairs: Vec<(&str, &str, &str)> = aligned
        .matched
        .iter()
        .map(|m| {
            (
                m.model_key.as_str(),
                m.checkpoint_key.as_str(),
                m.converted_key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (
                "backbone.bottom_up.res2.0.conv1.norm.weight",
                "res2_0_branch2a_bn_s",
                "res2.0.conv1.norm.weight"
            ),
            (
                "backbone.bottom_up.stem.conv1.weight",
                "conv1_w",
                "stem.conv1.weight"
            ),
            (
                "roi_heads.box_predictor.bbox_pred.weight",
                "bbox_pred_w",
                "bbox_pred.weight"
            ),
            (
                "roi_heads.box_predictor.cls_score.weight",
                "cls_score_w",
                "cls_score.weight"
            ),
        ]
    );
    let cls = aligned
        .state_dict
        .get("roi_heads.box_predictor.cls_score.weight")
        .unwrap();
    assert_eq!(cls.to_vec::<f32>().unwrap(), vec![1., 1., 2., 2., 0., 0.]);
    assert_eq!(aligned.state_dict.keys().last(), Some("fc1000.weight"));
    assert_eq!(aligned.c2_renames.len(), 5);
    assert_eq!(aligned.c2_edits.len(), 2);
}

#[test]
fn a_model_key_listed_twice_is_an_error() {
    let model = vec![("a.w".to_string(), vec![1]), ("a.w".to_string(), vec![1])];
    let err = align_and_update_state_dicts(&model, StateDict::new(), false).unwrap_err();
    assert!(err.to_string().contains("a.w"), "{err}");
}

fn matched(model_key: &str, checkpoint_key: &str, shape: &[usize]) -> MatchedKey {
    MatchedKey::new(model_key, checkpoint_key, shape.to_vec())
}

#[test]
fn match_table_groups_submodules_and_compresses_checkpoint_names() {
    let rows = vec![
        matched(
            "backbone.res2.0.conv1.norm.bias",
            "res2_0_branch2a_bn_b",
            &[4],
        ),
        matched(
            "backbone.res2.0.conv1.norm.weight",
            "res2_0_branch2a_bn_s",
            &[4],
        ),
        matched(
            "backbone.res2.0.conv1.weight",
            "res2_0_branch2a_w",
            &[4, 3, 1, 1],
        ),
        matched("backbone.stem.conv1.weight", "conv1_w", &[4, 3, 7, 7]),
    ];
    let table = format_match_table(&rows);
    // Laid out as Python's `tabulate(..., tablefmt="pipe")` prints it.
    let expected = "\
Following weights matched with submodule backbone:
| Names in Model    | Names in Checkpoint           | Shapes              |
|:------------------|:------------------------------|:--------------------|
| res2.0.conv1.*    | res2_0_branch2a_{bn_b,bn_s,w} | (4,) (4,) (4,3,1,1) |
| stem.conv1.weight | conv1_w                       | (4, 3, 7, 7)        |";
    assert_eq!(table, expected);
}

#[test]
fn match_table_of_a_flat_model_says_model() {
    let rows = vec![matched("fc.weight", "fc.weight", &[2, 3])];
    let table = format_match_table(&rows);
    assert!(table.starts_with("Following weights matched with submodule fc.weight:"));
    let rows = vec![
        matched("a.weight", "a.weight", &[2]),
        matched("b.weight", "b.weight", &[2]),
    ];
    assert!(format_match_table(&rows).starts_with("Following weights matched with model:"));
}

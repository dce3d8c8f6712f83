//! The hash-indexed matcher gives exactly the result of detectron2's quadratic rule on
//! thousands of random key sets.
//!
//! The oracle below is a direct transcription of `align_and_update_state_dicts`: a full
//! model × checkpoint table of match lengths, the first longest match per model key, then
//! the same loop over model keys in sorted order. With Caffe2 conversion, the oracle runs
//! on the renamed keys and reports the names from the file.

use ckpt::matching::{
    align_and_update_state_dicts, convert_c2_name, format_match_table, Alignment,
};
use ckpt::{StateDict, Tensor};

use crate::support::rng::Rng;

#[derive(Debug, PartialEq)]
struct Outcome {
    /// (model key, checkpoint key) in result order.
    pairs: Vec<(String, String)>,
    /// (model key, checkpoint key, model shape, checkpoint shape).
    mismatches: Vec<(String, String, Vec<usize>, Vec<usize>)>,
    /// The error message, when matching failed.
    error: Option<String>,
    /// Keys of the returned state dict, in order.
    keys: Vec<String>,
}

fn oracle(model: &[(String, Vec<usize>)], ckpt: &[(String, Vec<usize>)]) -> Outcome {
    let mut model_keys: Vec<&(String, Vec<usize>)> = model.iter().collect();
    model_keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ckpt_keys: Vec<&(String, Vec<usize>)> = ckpt.iter().collect();
    ckpt_keys.sort_by(|a, b| a.0.cmp(&b.0));

    let matches = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
    // The match matrix and its row-wise argmax (first maximum), 0 meaning no match.
    let idxs: Vec<Option<usize>> = model_keys
        .iter()
        .map(|(m, _)| {
            let row: Vec<usize> = ckpt_keys
                .iter()
                .map(|(c, _)| if matches(m, c) { c.len() } else { 0 })
                .collect();
            let mut best = 0;
            for (j, &len) in row.iter().enumerate() {
                if len > row[best] {
                    best = j;
                }
            }
            (row.get(best).copied().unwrap_or(0) > 0).then_some(best)
        })
        .collect();

    let mut outcome = Outcome {
        pairs: Vec::new(),
        mismatches: Vec::new(),
        error: None,
        keys: Vec::new(),
    };
    let mut matched_keys: Vec<(String, String)> = Vec::new(); // ckpt -> model, insertion order
    for (i, idx) in idxs.iter().enumerate() {
        let Some(j) = idx else { continue };
        let (key_model, shape_model) = model_keys[i];
        let (key_ckpt, shape_ckpt) = ckpt_keys[*j];
        if shape_model != shape_ckpt {
            outcome.mismatches.push((
                key_model.clone(),
                key_ckpt.clone(),
                shape_model.clone(),
                shape_ckpt.clone(),
            ));
            continue;
        }
        if let Some((_, earlier)) = matched_keys.iter().find(|(c, _)| c == key_ckpt) {
            return Outcome {
                pairs: Vec::new(),
                mismatches: Vec::new(),
                error: Some(format!(
                    "Ambiguity found for {key_ckpt} in checkpoint!It matches at least two keys in the model ({key_model} and {earlier}). Cannot match one checkpoint key to multiple keys in the model."
                )),
                keys: Vec::new(),
            };
        }
        matched_keys.push((key_ckpt.clone(), key_model.clone()));
        outcome.pairs.push((key_model.clone(), key_ckpt.clone()));
    }
    if matched_keys.is_empty() {
        outcome.keys = ckpt.iter().map(|(k, _)| k.clone()).collect();
        return outcome;
    }
    outcome.keys = matched_keys.iter().map(|(_, m)| m.clone()).collect();
    for (c, _) in &ckpt_keys {
        if !matched_keys.iter().any(|(k, _)| k == c) {
            outcome.keys.push(c.clone());
        }
    }
    outcome
}

fn fast(model: &[(String, Vec<usize>)], ckpt: &[(String, Vec<usize>)]) -> Outcome {
    let mut sd = StateDict::new();
    for (key, shape) in ckpt {
        sd.insert(
            key.clone(),
            Tensor::zeros(ckpt::DType::UInt8, shape).unwrap(),
        );
    }
    let result = align_and_update_state_dicts(model, sd, false);
    if let Ok(a) = &result {
        // The logged table must cope with any names (empty segments, one key, ...).
        if !a.matched.is_empty() {
            assert!(format_match_table(&a.matched).starts_with("Following weights matched"));
        }
    }
    outcome_of(result)
}

fn outcome_of(result: ckpt::Result<Alignment>) -> Outcome {
    match result {
        Ok(a) => Outcome {
            pairs: a
                .matched
                .iter()
                .map(|m| (m.model_key.clone(), m.checkpoint_key.clone()))
                .collect(),
            mismatches: a
                .shape_mismatches
                .iter()
                .map(|m| {
                    (
                        m.model_key.clone(),
                        m.checkpoint_key.clone(),
                        m.model_shape.clone(),
                        m.checkpoint_shape.clone(),
                    )
                })
                .collect(),
            error: None,
            keys: a.state_dict.keys().map(str::to_string).collect(),
        },
        Err(e) => Outcome {
            pairs: Vec::new(),
            mismatches: Vec::new(),
            error: Some(e.to_string()),
            keys: Vec::new(),
        },
    }
}

const SEGMENTS: &[&str] = &[
    "a", "b", "c", "layer1", "layer2", "conv", "0", "1", "weight", "bias", "res", "x_y", "",
];
const LEAVES: &[&str] = &["weight", "bias", "running_mean", "w", "b"];
const SHAPES: &[&[usize]] = &[&[2], &[3], &[2, 3], &[]];

fn random_name(rng: &mut Rng, max_segments: usize) -> String {
    let n = rng.below(max_segments);
    let mut parts: Vec<&str> = (0..n).map(|_| rng.pick(SEGMENTS)).collect();
    parts.push(rng.pick(LEAVES));
    parts.join(".")
}

/// A trailing run of `name`'s segments (a candidate checkpoint key for it).
fn random_suffix(rng: &mut Rng, name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let from = rng.below(parts.len());
    parts[from..].join(".")
}

/// Names with shapes, as a model or a checkpoint lists them.
type Keys = Vec<(String, Vec<usize>)>;

fn random_case(rng: &mut Rng) -> (Keys, Keys) {
    let shape = |rng: &mut Rng| SHAPES[rng.below(SHAPES.len())].to_vec();
    let model_size = 1 + rng.below(14);
    let wrap = rng.chance(20);
    let mut model: Keys = Vec::new();
    while model.len() < model_size {
        let mut name = random_name(rng, 5);
        if wrap {
            name = format!("module.{name}");
        }
        if !model.iter().any(|(k, _)| *k == name) {
            model.push((name, shape(rng)));
        }
    }
    let ckpt_size = rng.below(14);
    let mut ckpt: Keys = Vec::new();
    for _ in 0..ckpt_size * 3 {
        if ckpt.len() >= ckpt_size {
            break;
        }
        let (name, model_shape) = model[rng.below(model.len())].clone();
        let key = match rng.below(10) {
            0 => random_name(rng, 4),
            1 if rng.chance(20) => String::new(),
            _ => random_suffix(rng, &name),
        };
        // Mostly the model's shape, sometimes not, so that some best matches are skipped.
        let key_shape = if rng.chance(80) {
            model_shape
        } else {
            shape(rng)
        };
        if !ckpt.iter().any(|(k, _)| *k == key) {
            ckpt.push((key, key_shape));
        }
    }
    (model, ckpt)
}

#[test]
fn fast_matcher_agrees_with_the_quadratic_rule_on_random_key_sets() {
    let mut rng = Rng(0x5EED_0001);
    let (mut ok, mut ambiguous, mut unmatched, mut with_mismatch) = (0, 0, 0, 0);
    for case in 0..5000 {
        let (model, ckpt) = random_case(&mut rng);
        let expected = oracle(&model, &ckpt);
        let got = fast(&model, &ckpt);
        assert_eq!(
            got, expected,
            "case {case}: model {model:?}, checkpoint {ckpt:?}"
        );
        match (&expected.error, expected.pairs.is_empty()) {
            (Some(_), _) => ambiguous += 1,
            (None, true) => unmatched += 1,
            (None, false) => ok += 1,
        }
        if !expected.mismatches.is_empty() {
            with_mismatch += 1;
        }
    }
    // The generator must exercise every outcome, or the comparison proves little.
    assert!(ok > 1000, "{ok} matched cases");
    assert!(ambiguous > 100, "{ambiguous} ambiguous cases");
    assert!(unmatched > 100, "{unmatched} cases without a match");
    assert!(
        with_mismatch > 100,
        "{with_mismatch} cases with a shape mismatch"
    );
}

const C2_STAGES: &[&str] = &["res2", "res3", "res4", "res5"];
const C2_BRANCHES: &[&str] = &["branch1", "branch2a", "branch2b", "branch2c"];
const C2_PARAMS: &[&str] = &["w", "b", "bn_s", "bn_b", "bn_rm", "bn_riv"];
const C2_HEADS: &[&str] = &[
    "conv1_w",
    "res_conv1_bn_s",
    "res_conv1_bn_b",
    "fc6_w",
    "fc6_b",
    "fc7_w",
    "cls_score_w",
    "cls_score_b",
    "bbox_pred_w",
    "bbox_pred_b",
    "mask_fcn_logits_w",
    "conv5_mask_w",
    "fpn_inner_res4_5_sum_w",
    "fpn_res3_3_sum_b",
    "rpn_cls_logits_fpn2_w",
];
const MODEL_PREFIXES: &[&str] = &[
    "",
    "backbone.",
    "backbone.bottom_up.",
    "roi_heads.box_predictor.",
    "roi_heads.",
];

#[test]
fn caffe2_renaming_then_matching_agrees_with_the_quadratic_rule() {
    let mut rng = Rng(0x5EED_0002);
    let mut matched_cases = 0;
    for case in 0..1500 {
        // A Caffe2 checkpoint: blob names with 1-d shapes of 5 to 7 rows.
        let mut blobs: Vec<(String, usize)> = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let name = if rng.chance(60) {
                format!(
                    "{}_{}_{}_{}",
                    rng.pick(C2_STAGES),
                    rng.below(3),
                    rng.pick(C2_BRANCHES),
                    rng.pick(C2_PARAMS)
                )
            } else {
                rng.pick(C2_HEADS).to_string()
            };
            if !blobs.iter().any(|(k, _)| *k == name) {
                blobs.push((name, 5 + rng.below(3)));
            }
        }
        blobs.sort();
        // The renamed keys with their shapes after the background-row edits.
        let renamed: Vec<(String, String, Vec<usize>)> = blobs
            .iter()
            .map(|(old, rows)| {
                let new = convert_c2_name(old).unwrap();
                let rows = if new.starts_with("bbox_pred.") {
                    rows - 4
                } else if new.starts_with("mask_head.predictor.") {
                    rows - 1
                } else {
                    *rows
                };
                (new, old.clone(), vec![rows])
            })
            .collect();
        // A detectron2 model with some of these names under module prefixes.
        let mut model: Keys = Vec::new();
        for (new, _, shape) in &renamed {
            if rng.chance(75) {
                let name = format!("{}{new}", rng.pick(MODEL_PREFIXES));
                let shape = if rng.chance(90) {
                    shape.clone()
                } else {
                    vec![shape[0] + 1]
                };
                if !model.iter().any(|(k, _)| *k == name) {
                    model.push((name, shape));
                }
            }
        }
        if model.is_empty() {
            model.push(("unrelated.weight".to_string(), vec![1]));
        }

        let plain: Keys = renamed
            .iter()
            .map(|(new, _, shape)| (new.clone(), shape.clone()))
            .collect();
        let file_name = |new: &str| -> String {
            renamed
                .iter()
                .find(|(n, _, _)| n == new)
                .map(|(_, old, _)| old.clone())
                .unwrap()
        };
        let mut expected = oracle(&model, &plain);
        for pair in &mut expected.pairs {
            pair.1 = file_name(&pair.1);
        }
        for mismatch in &mut expected.mismatches {
            mismatch.1 = file_name(&mismatch.1);
        }
        if expected.error.is_none() && !expected.pairs.is_empty() {
            matched_cases += 1;
        }

        let mut sd = StateDict::new();
        for (old, rows) in &blobs {
            sd.insert(
                old.clone(),
                Tensor::zeros(ckpt::DType::UInt8, &[*rows]).unwrap(),
            );
        }
        let got = outcome_of(align_and_update_state_dicts(&model, sd, true));
        assert_eq!(
            got, expected,
            "case {case}: model {model:?}, blobs {blobs:?}"
        );
    }
    assert!(matched_cases > 500, "{matched_cases} cases with matches");
}

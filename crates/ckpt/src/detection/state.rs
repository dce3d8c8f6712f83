//! The model part of a `DetectionCheckpointer` load: the checkpoint's `model` entry renamed
//! by the matching heuristics when the checkpoint asks for them, and the report adjusted
//! afterwards (`docs/behaviour.md#detection-model`). [`plan_load`] runs the same steps
//! without a model, for a dry run.

use std::collections::{HashMap, HashSet};

use crate::checkpointer::{strip_prefix_if_present, take_model_entry};
use crate::error::Result;
use crate::incompatible::{IncompatibleKeys, ShapeMismatch};
use crate::matching::{align_and_update_state_dicts, Alignment, MatchedKey, ValueEdit};
use crate::value::{Dict, StateDict, Value};

/// Top-level buffers a model builds from its config, not reported missing.
const PIXEL_STATS: [&str; 2] = ["pixel_mean", "pixel_std"];

/// Old checkpoints saved anchors that are now non-persistent buffers: not reported unexpected.
const CELL_ANCHORS: &str = "anchor_generator.cell_anchors";

/// The model state a `DetectionCheckpointer` loads, and how it was obtained.
#[derive(Debug, Clone)]
pub(crate) struct PreparedState {
    /// The state to load (before the checkpointer drops entries of the wrong shape).
    pub state: StateDict,
    /// The name matching done when the checkpoint asked for it (its `state_dict` is moved
    /// into [`PreparedState::state`] and left empty).
    pub alignment: Option<Alignment>,
    /// Whether every key had a `module.` prefix, removed before anything else.
    pub module_prefix_stripped: bool,
}

impl PreparedState {
    /// The name under which the entry now called `key` was matched: after Caffe2 renaming
    /// and without a removed `module.` prefix (entries not renamed by matching keep `key`).
    fn converted_names(&self) -> HashMap<&str, String> {
        let mut names: HashMap<&str, String> = HashMap::new();
        if let Some(alignment) = &self.alignment {
            for m in &alignment.matched {
                names.insert(m.model_key.as_str(), m.converted_key.clone());
            }
        }
        names
    }

    /// The name under which the entry now called `key` is stored in the file.
    fn file_names(&self) -> HashMap<&str, String> {
        let prefix = if self.module_prefix_stripped {
            "module."
        } else {
            ""
        };
        let mut names: HashMap<&str, String> = HashMap::new();
        if let Some(alignment) = &self.alignment {
            for (old, new) in &alignment.c2_renames {
                names.insert(new.as_str(), format!("{prefix}{old}"));
            }
            for m in &alignment.matched {
                names.insert(
                    m.model_key.as_str(),
                    format!("{prefix}{}", m.checkpoint_key),
                );
            }
        }
        if !prefix.is_empty() {
            for key in self.state.keys() {
                names.entry(key).or_insert_with(|| format!("{prefix}{key}"));
            }
        }
        names
    }
}

/// Whether the checkpoint dict asks for name matching (`matching_heuristics` true).
pub(crate) fn wants_matching(checkpoint: &Dict) -> bool {
    match checkpoint.get("matching_heuristics") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        _ => false,
    }
}

/// Whether the checkpoint was converted from Caffe2 (`__author__ == "Caffe2"`).
pub(crate) fn is_caffe2(checkpoint: &Dict) -> bool {
    checkpoint.get("__author__").and_then(Value::as_str) == Some("Caffe2")
}

/// Takes `model` out of `checkpoint` (every value a tensor or numpy array, `module.` prefix
/// removed) and, when `matching_heuristics` is set, renames it to the model's names by
/// [`align_and_update_state_dicts`] (with Caffe2 renaming first for `__author__ == "Caffe2"`).
///
/// The prefix is removed before matching (detectron2 removes it after, so a checkpoint saved
/// from a wrapped model would match nothing); without matching the result is the same.
pub(crate) fn prepare_model_state(
    checkpoint: &mut Dict,
    model_shapes: &[(String, Vec<usize>)],
) -> Result<PreparedState> {
    let state = take_model_entry(checkpoint, "model")?;
    let module_prefix_stripped = !state.is_empty()
        && state
            .keys()
            .all(|k| k.is_empty() || k.starts_with("module."));
    let state = strip_prefix_if_present(state, "module.");
    if !wants_matching(checkpoint) {
        return Ok(PreparedState {
            state,
            alignment: None,
            module_prefix_stripped,
        });
    }
    let mut alignment = align_and_update_state_dicts(model_shapes, state, is_caffe2(checkpoint))?;
    let state = std::mem::take(&mut alignment.state_dict);
    Ok(PreparedState {
        state,
        alignment: Some(alignment),
        module_prefix_stripped,
    })
}

/// Drops from `report` what detectron2 does not warn about: `pixel_mean` / `pixel_std`
/// missing when they are top-level names of the model (`has_name`), and unexpected keys
/// containing `anchor_generator.cell_anchors`.
pub(crate) fn filter_detection_report(
    report: &mut IncompatibleKeys,
    has_name: impl Fn(&str) -> bool,
) {
    for name in PIXEL_STATS {
        if has_name(name) {
            report.missing_keys.retain(|k| k != name);
        }
    }
    report.unexpected_keys.retain(|k| !k.contains(CELL_ANCHORS));
}

/// What loading a checkpoint into a model would do, computed without the model's data
/// ([`plan_load`], [`DetectionCheckpointer::plan`](crate::DetectionCheckpointer::plan)).
///
/// Checkpoint keys are named as in the file (with a `module.` prefix the load removes, and
/// before Caffe2 renaming); [`MatchedKey::converted_key`] is the name after those.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadPlan {
    /// Entries loaded, in the model's order.
    pub matched: Vec<MatchedKey>,
    /// Entries skipped because the shapes differ: best matches of the heuristics first,
    /// then same-name entries.
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// Model keys not loaded (as [`IncompatibleKeys::missing_keys`] would report them).
    pub missing_keys: Vec<String>,
    /// Checkpoint keys (after renaming) the model does not have (as
    /// [`IncompatibleKeys::unexpected_keys`] would report them).
    pub unexpected_keys: Vec<String>,
    /// Caffe2 renames that changed a name, `(file name, new name)`.
    pub c2_renames: Vec<(String, String)>,
    /// Caffe2 background-class edits.
    pub c2_edits: Vec<ValueEdit>,
    /// Whether the checkpoint asked for name matching.
    pub matching_heuristics: bool,
    /// Whether the checkpoint's names were converted from Caffe2 first.
    pub caffe2: bool,
    /// The tensors that would be loaded, under the model's names, in the model's order.
    pub loaded: StateDict,
    /// The checkpoint entries that would not be loaded, named as in the file.
    pub not_loaded: Vec<String>,
}

/// The dry run of a `DetectionCheckpointer` load of `checkpoint` (a dict as
/// [`read_detection_file`](crate::detection::read_detection_file) returns it) into a model
/// with `model_shapes`: the same renaming, shape checks and report filtering, without
/// touching any model. Fails where the load would fail before touching the model (an
/// ambiguous match, a model entry that is not a dict of tensors), with the same error.
pub fn plan_load(model_shapes: &[(String, Vec<usize>)], mut checkpoint: Dict) -> Result<LoadPlan> {
    let mut plan = LoadPlan {
        matching_heuristics: wants_matching(&checkpoint),
        caffe2: wants_matching(&checkpoint) && is_caffe2(&checkpoint),
        ..LoadPlan::default()
    };
    let prepared = prepare_model_state(&mut checkpoint, model_shapes)?;
    let file_names = prepared.file_names();
    let converted_names = prepared.converted_names();
    let converted_name = |key: &str| {
        converted_names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    };
    let file_name = |key: &str| {
        file_names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    };

    if let Some(alignment) = &prepared.alignment {
        plan.c2_renames = alignment
            .c2_renames
            .iter()
            .filter(|(old, new)| old != new)
            .cloned()
            .collect();
        plan.c2_edits = alignment.c2_edits.clone();
        plan.shape_mismatches = alignment
            .shape_mismatches
            .iter()
            .map(|m| ShapeMismatch {
                checkpoint_key: file_name_of_mismatch(&prepared, &m.checkpoint_key),
                ..m.clone()
            })
            .collect();
    }

    let model: HashMap<&str, &[usize]> = model_shapes
        .iter()
        .map(|(k, s)| (k.as_str(), s.as_slice()))
        .collect();
    let mut loadable: HashSet<&str> = HashSet::new();
    let mut report = IncompatibleKeys::default();
    for (key, tensor) in prepared.state.iter() {
        match model.get(key) {
            Some(shape) if *shape == tensor.shape() => {
                loadable.insert(key);
            }
            Some(shape) => plan.shape_mismatches.push(ShapeMismatch {
                model_key: key.to_string(),
                checkpoint_key: file_name(key),
                checkpoint_shape: tensor.shape().to_vec(),
                model_shape: shape.to_vec(),
            }),
            None => report.unexpected_keys.push(key.to_string()),
        }
    }
    for (key, shape) in model_shapes {
        if !loadable.contains(key.as_str()) {
            report.missing_keys.push(key.clone());
            continue;
        }
        plan.matched.push(MatchedKey {
            model_key: key.clone(),
            checkpoint_key: file_name(key),
            converted_key: converted_name(key),
            shape: shape.clone(),
        });
        if let Some(tensor) = prepared.state.get(key) {
            plan.loaded.insert(key.clone(), tensor.clone());
        }
    }
    plan.not_loaded = prepared
        .state
        .keys()
        .filter(|key| !loadable.contains(key))
        .map(file_name)
        .collect();
    filter_detection_report(&mut report, |name| model.contains_key(name));
    plan.missing_keys = report.missing_keys;
    plan.unexpected_keys = report.unexpected_keys;
    Ok(plan)
}

/// The file name of a checkpoint key reported by the heuristics (already a file name, but
/// without a removed `module.` prefix).
fn file_name_of_mismatch(prepared: &PreparedState, key: &str) -> String {
    if prepared.module_prefix_stripped {
        format!("module.{key}")
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn checkpoint(keys: &[&str], matching: bool) -> Dict {
        let mut model = Dict::ordered();
        for key in keys {
            let t = Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
            model.insert(*key, Value::Tensor(t));
        }
        let mut d = Dict::new();
        d.insert("model", Value::Dict(model));
        if matching {
            d.insert("matching_heuristics", Value::Bool(true));
        }
        d
    }

    fn shapes(names: &[&str]) -> Vec<(String, Vec<usize>)> {
        names.iter().map(|n| (n.to_string(), vec![2])).collect()
    }

    #[test]
    fn plan_names_checkpoint_keys_as_in_the_file_with_their_module_prefix() {
        let plan = plan_load(
            &shapes(&["a.w", "b"]),
            checkpoint(&["module.a.w", "module.c"], false),
        )
        .unwrap();
        assert_eq!(plan.matched.len(), 1);
        assert_eq!(plan.matched[0].checkpoint_key, "module.a.w");
        assert_eq!(plan.not_loaded, vec!["module.c"]);
        assert_eq!(plan.unexpected_keys, vec!["c"]);
        assert_eq!(plan.missing_keys, vec!["b"]);
        assert_eq!(plan.matched[0].converted_key, "a.w");

        let plan = plan_load(&shapes(&["net.a.w"]), checkpoint(&["module.a.w"], true)).unwrap();
        assert!(plan.matching_heuristics && !plan.caffe2);
        assert_eq!(plan.matched[0].model_key, "net.a.w");
        assert_eq!(plan.matched[0].checkpoint_key, "module.a.w");
        assert_eq!(plan.matched[0].converted_key, "a.w");
    }

    #[test]
    fn report_filter_keeps_nested_pixel_stats_and_other_anchors() {
        let mut report = IncompatibleKeys {
            missing_keys: vec![
                "pixel_mean".into(),
                "pixel_std".into(),
                "x.pixel_mean".into(),
            ],
            unexpected_keys: vec![
                "proposal_generator.anchor_generator.cell_anchors.0".into(),
                "anchor_generator.cell".into(),
            ],
            ..Default::default()
        };
        filter_detection_report(&mut report, |name| name == "pixel_mean");
        assert_eq!(report.missing_keys, vec!["pixel_std", "x.pixel_mean"]);
        assert_eq!(report.unexpected_keys, vec!["anchor_generator.cell"]);
    }
}

//! Renaming a checkpoint's keys to the model's by suffix, as detectron2's
//! `align_and_update_state_dicts` does.
//!
//! A checkpoint key `c` matches a model key `m` when `m == c` or `m` ends with `"." + c`;
//! each model key takes the longest checkpoint key that matches it. detectron2 fills a
//! model × checkpoint matrix to find it (quadratic time and memory); here the checkpoint keys
//! sit in a hash map (`SuffixIndex`) and each model key costs one lookup per dot, with the
//! same result.

use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::incompatible::ShapeMismatch;
use crate::matching::c2_names::{convert_c2_detectron_names, ValueEdit};
use crate::matching::report::format_match_table;
use crate::matching::suffix_index::SuffixIndex;
use crate::matching::{torch_size, MatchedKey};
use crate::tensor::Tensor;
use crate::value::StateDict;

/// What [`align_and_update_state_dicts`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Alignment {
    /// The matched pairs, sorted by model key.
    pub matched: Vec<MatchedKey>,
    /// Model keys whose best checkpoint match has another shape, sorted by model key (the
    /// checkpoint key named as in the file, before Caffe2 renaming). The checkpoint value is
    /// not loaded into it and stays under its checkpoint name (unless another model key
    /// takes it).
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// The checkpoint renamed for loading: the matched tensors under their model names
    /// (sorted by model key), then every other checkpoint tensor under its (Caffe2-renamed)
    /// name, sorted. When nothing matched, the (Caffe2-renamed) checkpoint unchanged.
    pub state_dict: StateDict,
    /// Every `(old, new)` Caffe2 rename (empty without Caffe2 conversion).
    pub c2_renames: Vec<(String, String)>,
    /// The Caffe2 background-class edits (empty without Caffe2 conversion).
    pub c2_edits: Vec<ValueEdit>,
}

/// Renames the checkpoint's keys to the model's by the suffix rule, as detectron2's
/// `align_and_update_state_dicts` does, in near-linear time: sorting the names, hashing each
/// checkpoint name once and one lookup per dot of each model name.
///
/// `model` lists the model's parameter and buffer names with their shapes (any order; a
/// name listed twice is an error). With `c2_conversion` the checkpoint is first renamed by
/// [`convert_c2_detectron_names`]. Tensors are moved, never copied.
///
/// Logs the two shape warnings per skipped pair, the table of matches (info), and
/// `No weights in checkpoint matched with model.` when nothing matched. Fails when one
/// checkpoint key is the best match of two model keys, with detectron2's message.
pub fn align_and_update_state_dicts(
    model: &[(String, Vec<usize>)],
    ckpt: StateDict,
    c2_conversion: bool,
) -> Result<Alignment> {
    let mut model_order: Vec<&(String, Vec<usize>)> = model.iter().collect();
    model_order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = model_order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::invalid(format!(
            "model key '{}' is listed twice",
            pair[0].0
        )));
    }

    let (ckpt, c2_renames, c2_edits) = if c2_conversion {
        let converted = convert_c2_detectron_names(ckpt)?;
        (converted.state_dict, converted.renames, converted.edits)
    } else {
        (ckpt, Vec::new(), Vec::new())
    };
    // The file name of each checkpoint entry, by position (Caffe2 output keeps rename order).
    let original = |i: usize, key: &str| -> String {
        c2_renames
            .get(i)
            .map_or_else(|| key.to_string(), |(old, _)| old.clone())
    };

    let index = SuffixIndex::new(ckpt.keys());
    let mut claimed: Vec<Option<usize>> = vec![None; ckpt.len()];
    let mut matched = Vec::new();
    let mut shape_mismatches = Vec::new();
    for (position, (model_key, model_shape)) in model_order.iter().map(|p| (&p.0, &p.1)).enumerate()
    {
        let Some(c) = index.longest_match(model_key) else {
            continue;
        };
        let Some((ckpt_key, tensor)) = ckpt.tensors.get_index(c) else {
            continue;
        };
        if tensor.shape() != model_shape.as_slice() {
            warn!(
                "Shape of {ckpt_key} in checkpoint is {}, while shape of {model_key} in model is {}.",
                torch_size(tensor.shape()),
                torch_size(model_shape)
            );
            warn!("{ckpt_key} will not be loaded. Please double check and see if this is desired.");
            shape_mismatches.push(ShapeMismatch {
                model_key: model_key.clone(),
                checkpoint_key: original(c, ckpt_key),
                checkpoint_shape: tensor.shape().to_vec(),
                model_shape: model_shape.clone(),
            });
            continue;
        }
        if let Some(earlier) = claimed[c] {
            let message = format!(
                "Ambiguity found for {ckpt_key} in checkpoint!It matches at least two keys in the model ({model_key} and {}).",
                model_order[earlier].0
            );
            error!("{message}");
            return Err(Error::invalid(format!(
                "{message} Cannot match one checkpoint key to multiple keys in the model."
            )));
        }
        claimed[c] = Some(position);
        matched.push((c, position));
    }

    if matched.is_empty() {
        warn!("No weights in checkpoint matched with model.");
        return Ok(Alignment {
            matched: Vec::new(),
            shape_mismatches,
            state_dict: ckpt,
            c2_renames,
            c2_edits,
        });
    }

    let (matched_keys, taken): (Vec<MatchedKey>, Vec<usize>) = matched
        .iter()
        .filter_map(|&(c, position)| {
            let (key, tensor) = ckpt.tensors.get_index(c)?;
            let pair = MatchedKey {
                model_key: model_order[position].0.clone(),
                checkpoint_key: original(c, key),
                converted_key: key.clone(),
                shape: tensor.shape().to_vec(),
            };
            Some((pair, c))
        })
        .unzip();
    // Formatted only if a subscriber (or `log` logger) records the event.
    info!("{}", MatchTable(&matched_keys));

    Ok(Alignment {
        state_dict: rename_for_loading(ckpt, &matched_keys, &taken),
        matched: matched_keys,
        shape_mismatches,
        c2_renames,
        c2_edits,
    })
}

/// The matched tensors under their model names (in the order given), then the others under
/// their own names, sorted. `positions[i]` is the checkpoint position of `matched[i]`.
fn rename_for_loading(ckpt: StateDict, matched: &[MatchedKey], positions: &[usize]) -> StateDict {
    let mut slots: Vec<Option<(String, Tensor)>> = ckpt.tensors.into_iter().map(Some).collect();
    let mut out = StateDict::new();
    out.tensors.reserve(slots.len());
    for (m, &c) in matched.iter().zip(positions) {
        if let Some((_, tensor)) = slots.get_mut(c).and_then(Option::take) {
            out.insert(m.model_key.clone(), tensor);
        }
    }
    let mut rest: Vec<(String, Tensor)> = slots.into_iter().flatten().collect();
    rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.tensors.extend(rest);
    out
}

/// Formats the table of matches when displayed.
struct MatchTable<'a>(&'a [MatchedKey]);

impl std::fmt::Display for MatchTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_match_table(self.0))
    }
}

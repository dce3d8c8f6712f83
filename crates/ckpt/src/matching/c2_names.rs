//! Caffe2 / Detectron1 blob names to detectron2 parameter names (the rules in order:
//! `docs/behaviour.md#caffe2-names` in the repository).
//!
//! The rules are detectron2's `convert_basic_c2_names` and `convert_c2_detectron_names`,
//! applied in the same order with the same regular-expression semantics: a `.` in an
//! unescaped position matches any character but a newline, and a pattern anchored at the
//! end also matches just before a final newline, as Python's `$` does.

use std::collections::HashMap;

use tracing::info;

use crate::error::{Error, Result};
use crate::matching::shape_tuple;
use crate::tensor::Tensor;
use crate::value::StateDict;

/// A Caffe2 state dict renamed to detectron2 names.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct C2Conversion {
    /// The tensors under their new names, in the sorted order of the old names.
    pub state_dict: StateDict,
    /// Every `(old, new)` name pair, in the sorted order of the old names; `old == new` for
    /// names no rule changes.
    pub renames: Vec<(String, String)>,
    /// The tensors whose values were changed (background-class rows), in the same order.
    pub edits: Vec<ValueEdit>,
}

impl C2Conversion {
    /// The pairs whose name actually changed.
    pub fn changed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.renames
            .iter()
            .filter(|(old, new)| old != new)
            .map(|(old, new)| (old.as_str(), new.as_str()))
    }
}

/// A change to the values of one tensor made while renaming.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValueEdit {
    /// The new (detectron2) name of the tensor.
    pub key: String,
    /// What was done.
    pub kind: ValueEditKind,
    /// The tensor's shape before.
    pub shape_before: Vec<usize>,
    /// Its shape after.
    pub shape_after: Vec<usize>,
}

/// What was done to a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEditKind {
    /// The first `n` rows were dropped (`bbox_pred.*`: 4, `mask_head.predictor.*`: 1): the
    /// background class Detectron1 predicted and detectron2 does not.
    DropLeadingRows(usize),
    /// The first row was moved to the end (`cls_score.*`): Detectron1 puts the background
    /// class first, detectron2 last.
    MoveFirstRowToEnd,
}

/// Renames every key of a Caffe2/Detectron1 state dict and fixes the predictor rows.
///
/// Keys are processed in sorted order (the order of the result). Two keys renamed to the
/// same name are an error naming both. The rows dropped from `bbox_pred.*` and
/// `mask_head.predictor.*` are zero-copy views of the original storage; the `cls_score.*`
/// rotation makes a new contiguous tensor. Each edit is logged with its shapes.
pub fn convert_c2_detectron_names(weights: StateDict) -> Result<C2Conversion> {
    info!("Renaming Caffe2 weights ......");
    let mut entries: Vec<(String, Tensor)> = weights.tensors.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut renames: Vec<(String, String)> = Vec::with_capacity(entries.len());
    let mut claimed: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (index, (old, _)) in entries.iter().enumerate() {
        let new = convert_c2_name(old)?;
        if let Some(&first) = claimed.get(&new) {
            let first_old = &renames[first].0;
            return Err(Error::invalid(format!(
                "Caffe2 renaming maps both '{first_old}' and '{old}' to '{new}'"
            )));
        }
        claimed.insert(new.clone(), index);
        renames.push((old.clone(), new));
    }

    let mut state_dict = StateDict::new();
    let mut edits = Vec::new();
    for ((_, tensor), (old, new)) in entries.into_iter().zip(&renames) {
        let (tensor, edit) = fix_background_rows(new, tensor).map_err(|e| match e {
            Error::Invalid { message } => Error::key(old.clone(), message),
            other => other,
        })?;
        if let Some(edit) = edit {
            edits.push(edit);
        }
        state_dict.insert(new.clone(), tensor);
    }
    Ok(C2Conversion {
        state_dict,
        renames,
        edits,
    })
}

/// The detectron2 name of one Caffe2 blob name.
///
/// Fails only when an FPN name (`fpn_inner_resN_...`, `fpn_resN_...`) has a stage that is
/// not an integer, where detectron2 raises too.
///
/// ```
/// use ckpt::matching::convert_c2_name;
/// assert_eq!(convert_c2_name("res2_0_branch2a_bn_s").unwrap(), "res2.0.conv1.norm.weight");
/// assert_eq!(convert_c2_name("conv1_w").unwrap(), "stem.conv1.weight");
/// assert_eq!(convert_c2_name("fpn_inner_res5_2_sum_w").unwrap(), "fpn_lateral5.weight");
/// ```
pub fn convert_c2_name(original: &str) -> Result<String> {
    let mut k = convert_basic_name(original);

    // RPN: the FPN head is shared by all levels and named after level 2.
    replace(&mut k, "conv.rpn.fpn2", "proposal_generator.rpn_head.conv");
    replace(&mut k, "conv.rpn", "proposal_generator.rpn_head.conv");
    replace(
        &mut k,
        "rpn.bbox.pred.fpn2",
        "proposal_generator.rpn_head.anchor_deltas",
    );
    replace(
        &mut k,
        "rpn.cls.logits.fpn2",
        "proposal_generator.rpn_head.objectness_logits",
    );
    replace(
        &mut k,
        "rpn.bbox.pred",
        "proposal_generator.rpn_head.anchor_deltas",
    );
    replace(
        &mut k,
        "rpn.cls.logits",
        "proposal_generator.rpn_head.objectness_logits",
    );

    // Fast R-CNN box head.
    sub_start(&mut k, "bbox.pred", "bbox_pred");
    sub_start(&mut k, "cls.score", "cls_score");
    sub_start(&mut k, "fc6.", "box_head.fc1.");
    sub_start(&mut k, "fc7.", "box_head.fc2.");
    sub_start(&mut k, "head.conv", "box_head.conv");

    if let Some(fpn) = fpn_name(&k).map_err(|message| Error::key(original, message))? {
        k = fpn;
    }

    // Mask head (StandardROIHeads, then Res5ROIHeads).
    replace(&mut k, ".[mask].fcn", "mask_head.mask_fcn");
    sub_start(&mut k, ".mask.fcn", "mask_head.mask_fcn");
    replace(&mut k, "mask.fcn.logits", "mask_head.predictor");
    replace(&mut k, "conv5.mask", "mask_head.deconv");

    // Keypoint head.
    replace(&mut k, "conv.fcn", "roi_heads.keypoint_head.conv_fcn");
    replace(
        &mut k,
        "kps.score.lowres",
        "roi_heads.keypoint_head.score_lowres",
    );
    replace(&mut k, "kps.score.", "roi_heads.keypoint_head.score.");
    Ok(k)
}

/// The backbone renames (detectron2's `convert_basic_c2_names`).
fn convert_basic_name(original: &str) -> String {
    let mut k = match original {
        "pred_b" => "linear_b".to_string(),
        "pred_w" => "linear_w".to_string(),
        other => other.to_string(),
    };
    replace(&mut k, "_", ".");
    sub_end(&mut k, ".b", ".bias");
    sub_end(&mut k, ".w", ".weight");

    // Batch norm and group norm both become `norm`.
    sub_end(&mut k, "bn.s", "norm.weight");
    sub_end(&mut k, "bn.bias", "norm.bias");
    replace(&mut k, "bn.rm", "norm.running_mean");
    sub_end(&mut k, "bn.running?mean", "norm.running_mean");
    sub_end(&mut k, "bn.riv", "norm.running_var");
    sub_end(&mut k, "bn.running?var", "norm.running_var");
    sub_end(&mut k, "bn.gamma", "norm.weight");
    sub_end(&mut k, "bn.beta", "norm.bias");
    sub_end(&mut k, "gn.s", "norm.weight");
    sub_end(&mut k, "gn.bias", "norm.bias");

    // Stem; `conv1` alone would also catch heads, hence the anchor.
    sub_start(&mut k, "res.conv1.norm.", "conv1.norm.");
    sub_start(&mut k, "conv1.", "stem.conv1.");

    // Residual blocks.
    replace(&mut k, ".branch1.", ".shortcut.");
    replace(&mut k, ".branch2a.", ".conv1.");
    replace(&mut k, ".branch2b.", ".conv2.");
    replace(&mut k, ".branch2c.", ".conv3.");

    // DensePose.
    sub_start(&mut k, "body?conv?fcn", "body_conv_fcn");
    replace(&mut k, "AnnIndex.lowres", "ann_index_lowres");
    replace(&mut k, "Index.UV.lowres", "index_uv_lowres");
    replace(&mut k, "U.lowres", "u_lowres");
    replace(&mut k, "V.lowres", "v_lowres");
    k
}

/// FPN lateral (`fpn.inner.resN...`) and output (`fpn.resN...`) convolutions.
fn fpn_name(name: &str) -> std::result::Result<Option<String>, String> {
    let (kind, stage_index) = if name.starts_with("fpn.inner.") {
        ("fpn_lateral", 2)
    } else if name.starts_with("fpn.res") {
        ("fpn_output", 1)
    } else {
        return Ok(None);
    };
    let splits: Vec<&str> = name.split('.').collect();
    let norm = if splits.contains(&"norm") {
        ".norm"
    } else {
        ""
    };
    let last = splits.last().copied().unwrap_or_default();
    // detectron2 drops three characters (`res`) without checking them.
    let digits: String = splits
        .get(stage_index)
        .copied()
        .unwrap_or_default()
        .chars()
        .skip(3)
        .collect();
    let stage = python_int(&digits)
        .ok_or_else(|| format!("FPN stage '{digits}' in Caffe2 name '{name}' is not an integer"))?;
    Ok(Some(format!("{kind}{stage}{norm}.{last}")))
}

/// `str(int(text))` for the decimal integers Python's `int()` accepts (ASCII digits).
fn python_int(text: &str) -> Option<String> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let valid = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !valid {
        return None;
    }
    let plain: String = digits.chars().filter(|c| *c != '_').collect();
    let plain = plain.trim_start_matches('0');
    Some(match (plain.is_empty(), negative) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{plain}"),
        (false, false) => plain.to_string(),
    })
}

/// The byte length of the text `pattern` matches at the start of `text`, where `?` matches
/// any character but a newline (the unescaped `.` of the Python patterns).
fn match_here(text: &str, pattern: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    for p in pattern.chars() {
        let (_, c) = chars.next()?;
        let ok = if p == '?' { c != '\n' } else { c == p };
        if !ok {
            return None;
        }
    }
    Some(chars.next().map_or(text.len(), |(i, _)| i))
}

/// `str.replace(from, to)`, allocating only when `from` occurs.
fn replace(text: &mut String, from: &str, to: &str) {
    if text.contains(from) {
        *text = text.replace(from, to);
    }
}

/// `re.sub("^" + pattern, replacement, text)`.
fn sub_start(text: &mut String, pattern: &str, replacement: &str) {
    if let Some(len) = match_here(text, pattern) {
        text.replace_range(..len, replacement);
    }
}

/// `re.sub(pattern + "$", replacement, text)`: Python's `$` matches at the end and just
/// before a newline that ends the text.
fn sub_end(text: &mut String, pattern: &str, replacement: &str) {
    let width = pattern.chars().count();
    let before_newline = text.strip_suffix('\n').map(str::len);
    for end in [Some(text.len()), before_newline].into_iter().flatten() {
        let head = &text[..end];
        let Some((start, _)) = head.char_indices().rev().nth(width.wrapping_sub(1)) else {
            continue;
        };
        if width > 0 && match_here(&head[start..], pattern) == Some(end - start) {
            text.replace_range(start..end, replacement);
            return;
        }
    }
}

/// Drops the background-class rows of the box and mask predictors, or moves the background
/// class of the classifier from first to last, as detectron2 does after renaming.
fn fix_background_rows(name: &str, tensor: Tensor) -> Result<(Tensor, Option<ValueEdit>)> {
    let kind = if name.starts_with("bbox_pred.") {
        ValueEditKind::DropLeadingRows(4)
    } else if name.starts_with("mask_head.predictor.") {
        ValueEditKind::DropLeadingRows(1)
    } else if name.starts_with("cls_score.") {
        ValueEditKind::MoveFirstRowToEnd
    } else {
        return Ok((tensor, None));
    };
    let shape_before = tensor.shape().to_vec();
    let edited = match kind {
        ValueEditKind::DropLeadingRows(rows) => {
            let edited = drop_leading_rows(&tensor, rows)?;
            info!(
                "Remove prediction weight for background class in {name}. The shape changes from {} to {}.",
                shape_tuple(&shape_before),
                shape_tuple(edited.shape())
            );
            edited
        }
        ValueEditKind::MoveFirstRowToEnd => {
            let edited = move_first_row_to_end(&tensor)?;
            info!(
                "Move classification weights for background class in {name} from index 0 to index {}.",
                shape_before.first().map_or(-1, |&rows| rows as i64 - 1)
            );
            edited
        }
    };
    let edit = ValueEdit {
        key: name.to_string(),
        kind,
        shape_before,
        shape_after: edited.shape().to_vec(),
    };
    Ok((edited, Some(edit)))
}

/// `tensor[rows:]` as a view of the same storage (fewer rows than `rows` leave none).
pub(crate) fn drop_leading_rows(tensor: &Tensor, rows: usize) -> Result<Tensor> {
    let Some((&first, rest)) = tensor.shape().split_first() else {
        return Err(Error::invalid(
            "cannot drop rows of a 0-d tensor (expected at least one dimension)",
        ));
    };
    let dropped = rows.min(first);
    let mut shape = vec![first - dropped];
    shape.extend_from_slice(rest);
    let stride = tensor.strides().first().copied().unwrap_or(1);
    let empty = shape.contains(&0);
    let offset = if empty {
        tensor.storage_offset()
    } else {
        // In bounds: the view's last element is the original's last element.
        tensor.storage_offset() + dropped * stride
    };
    tensor.view(&shape, tensor.strides(), offset)
}

/// `torch.cat([tensor[1:], tensor[:1]])`: a new contiguous tensor.
pub(crate) fn move_first_row_to_end(tensor: &Tensor) -> Result<Tensor> {
    let Some(&rows) = tensor.shape().first() else {
        return Err(Error::invalid(
            "cannot move the first row of a 0-d tensor (expected at least one dimension)",
        ));
    };
    let mut bytes = tensor.try_contiguous_bytes()?.into_owned();
    // No rows: nothing to move.
    if let Some(row_bytes) = bytes.len().checked_div(rows) {
        bytes.rotate_left(row_bytes);
    }
    Ok(Tensor::from_bytes(tensor.dtype(), tensor.shape(), bytes)?
        .with_requires_grad(tensor.requires_grad()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(text: &str, pattern: &str, replacement: &str) -> String {
        let mut k = text.to_string();
        sub_end(&mut k, pattern, replacement);
        k
    }

    fn start(text: &str, pattern: &str, replacement: &str) -> String {
        let mut k = text.to_string();
        sub_start(&mut k, pattern, replacement);
        k
    }

    #[test]
    fn end_anchor_matches_before_a_final_newline_like_python() {
        assert_eq!(end("x.b\n", ".b", ".bias"), "x.bias\n");
        assert_eq!(end("x.b", ".b", ".bias"), "x.bias");
        assert_eq!(end("x.bb", ".b", ".bias"), "x.bb");
        assert_eq!(end("b", ".b", ".bias"), "b");
    }

    #[test]
    fn unescaped_dots_match_any_character_but_newline() {
        assert_eq!(
            end(
                "res.bn.runningXmean",
                "bn.running?mean",
                "norm.running_mean"
            ),
            "res.norm.running_mean"
        );
        assert_eq!(
            end(
                "res.bn.running\nmean",
                "bn.running?mean",
                "norm.running_mean"
            ),
            "res.bn.running\nmean"
        );
        assert_eq!(
            start("body-conv-fcn1.w", "body?conv?fcn", "body_conv_fcn"),
            "body_conv_fcn1.w"
        );
        assert_eq!(start("bodyéconvéfcn", "body?conv?fcn", "X"), "X");
    }

    #[test]
    fn fpn_stage_follows_python_int() {
        assert_eq!(python_int("02").as_deref(), Some("2"));
        assert_eq!(python_int(" +1_0 ").as_deref(), Some("10"));
        assert_eq!(python_int("-0").as_deref(), Some("0"));
        assert_eq!(python_int(""), None);
        assert_eq!(python_int("x"), None);
        assert_eq!(python_int("1__0"), None);
        let err = convert_c2_name("fpn_inner_resX_w").unwrap_err();
        assert!(
            matches!(err.root(), Error::Key { key, .. } if key == "fpn_inner_resX_w"),
            "{err:?}"
        );
        assert_eq!(
            convert_c2_name("fpn_res03_w").unwrap(),
            "fpn_output3.weight"
        );
    }
}

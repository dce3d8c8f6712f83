//! Caffe2 / Detectron1 blob names to detectron2 parameter names (BEHAVIOUR.md §7).
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
pub struct ValueEdit {
    /// The new (detectron2) name of the tensor.
    pub key: String,
    pub kind: ValueEditKind,
    pub shape_before: Vec<usize>,
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

    let mut renames = Vec::with_capacity(entries.len());
    let mut claimed: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (index, (old, _)) in entries.iter().enumerate() {
        let new = convert_c2_name(old)?;
        if let Some(&first) = claimed.get(&new) {
            let (first_old, _): &(String, String) = &renames[first];
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
    k = k.replace("conv.rpn.fpn2", "proposal_generator.rpn_head.conv");
    k = k.replace("conv.rpn", "proposal_generator.rpn_head.conv");
    k = k.replace(
        "rpn.bbox.pred.fpn2",
        "proposal_generator.rpn_head.anchor_deltas",
    );
    k = k.replace(
        "rpn.cls.logits.fpn2",
        "proposal_generator.rpn_head.objectness_logits",
    );
    k = k.replace("rpn.bbox.pred", "proposal_generator.rpn_head.anchor_deltas");
    k = k.replace(
        "rpn.cls.logits",
        "proposal_generator.rpn_head.objectness_logits",
    );

    // Fast R-CNN box head.
    k = sub_start(&k, "bbox.pred", "bbox_pred");
    k = sub_start(&k, "cls.score", "cls_score");
    k = sub_start(&k, "fc6.", "box_head.fc1.");
    k = sub_start(&k, "fc7.", "box_head.fc2.");
    k = sub_start(&k, "head.conv", "box_head.conv");

    k = fpn_name(&k).map_err(|message| Error::key(original, message))?;

    // Mask head (StandardROIHeads, then Res5ROIHeads).
    k = k.replace(".[mask].fcn", "mask_head.mask_fcn");
    k = sub_start(&k, ".mask.fcn", "mask_head.mask_fcn");
    k = k.replace("mask.fcn.logits", "mask_head.predictor");
    k = k.replace("conv5.mask", "mask_head.deconv");

    // Keypoint head.
    k = k.replace("conv.fcn", "roi_heads.keypoint_head.conv_fcn");
    k = k.replace("kps.score.lowres", "roi_heads.keypoint_head.score_lowres");
    k = k.replace("kps.score.", "roi_heads.keypoint_head.score.");
    Ok(k)
}

/// The backbone renames (detectron2's `convert_basic_c2_names`).
fn convert_basic_name(original: &str) -> String {
    let mut k = match original {
        "pred_b" => "linear_b".to_string(),
        "pred_w" => "linear_w".to_string(),
        other => other.to_string(),
    };
    k = k.replace('_', ".");
    k = sub_end(&k, ".b", ".bias");
    k = sub_end(&k, ".w", ".weight");

    // Batch norm and group norm both become `norm`.
    k = sub_end(&k, "bn.s", "norm.weight");
    k = sub_end(&k, "bn.bias", "norm.bias");
    k = k.replace("bn.rm", "norm.running_mean");
    k = sub_end(&k, "bn.running?mean", "norm.running_mean");
    k = sub_end(&k, "bn.riv", "norm.running_var");
    k = sub_end(&k, "bn.running?var", "norm.running_var");
    k = sub_end(&k, "bn.gamma", "norm.weight");
    k = sub_end(&k, "bn.beta", "norm.bias");
    k = sub_end(&k, "gn.s", "norm.weight");
    k = sub_end(&k, "gn.bias", "norm.bias");

    // Stem; `conv1` alone would also catch heads, hence the anchor.
    k = sub_start(&k, "res.conv1.norm.", "conv1.norm.");
    k = sub_start(&k, "conv1.", "stem.conv1.");

    // Residual blocks.
    k = k.replace(".branch1.", ".shortcut.");
    k = k.replace(".branch2a.", ".conv1.");
    k = k.replace(".branch2b.", ".conv2.");
    k = k.replace(".branch2c.", ".conv3.");

    // DensePose.
    k = sub_start(&k, "body?conv?fcn", "body_conv_fcn");
    k = k.replace("AnnIndex.lowres", "ann_index_lowres");
    k = k.replace("Index.UV.lowres", "index_uv_lowres");
    k = k.replace("U.lowres", "u_lowres");
    k = k.replace("V.lowres", "v_lowres");
    k
}

/// FPN lateral (`fpn.inner.resN...`) and output (`fpn.resN...`) convolutions.
fn fpn_name(name: &str) -> std::result::Result<String, String> {
    let splits: Vec<&str> = name.split('.').collect();
    let norm = if splits.contains(&"norm") {
        ".norm"
    } else {
        ""
    };
    let last = splits.last().copied().unwrap_or_default();
    let (kind, stage_segment) = if name.starts_with("fpn.inner.") {
        ("fpn_lateral", splits.get(2))
    } else if name.starts_with("fpn.res") {
        ("fpn_output", splits.get(1))
    } else {
        return Ok(name.to_string());
    };
    // detectron2 drops three characters (`res`) without checking them.
    let digits: String = stage_segment
        .copied()
        .unwrap_or_default()
        .chars()
        .skip(3)
        .collect();
    let stage = python_int(&digits)
        .ok_or_else(|| format!("FPN stage '{digits}' in Caffe2 name '{name}' is not an integer"))?;
    Ok(format!("{kind}{stage}{norm}.{last}"))
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

/// `re.sub("^" + pattern, replacement, text)`.
fn sub_start(text: &str, pattern: &str, replacement: &str) -> String {
    match match_here(text, pattern) {
        Some(len) => format!("{replacement}{}", &text[len..]),
        None => text.to_string(),
    }
}

/// `re.sub(pattern + "$", replacement, text)`: Python's `$` matches at the end and just
/// before a newline that ends the text.
fn sub_end(text: &str, pattern: &str, replacement: &str) -> String {
    let width = pattern.chars().count();
    let mut ends = vec![text.len()];
    if text.ends_with('\n') {
        ends.push(text.len() - 1);
    }
    for end in ends {
        let head = &text[..end];
        let Some((start, _)) = head.char_indices().rev().nth(width.wrapping_sub(1)) else {
            continue;
        };
        if width > 0 && match_here(&head[start..], pattern) == Some(end - start) {
            return format!("{}{replacement}{}", &text[..start], &text[end..]);
        }
    }
    text.to_string()
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
            info!(
                "Move classification weights for background class in {name} from index 0 to index {}.",
                shape_before.first().map_or(-1, |&rows| rows as i64 - 1)
            );
            move_first_row_to_end(&tensor)?
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
    let mut bytes = tensor.contiguous_bytes().into_owned();
    if rows > 0 {
        let row_bytes = bytes.len() / rows;
        bytes.rotate_left(row_bytes);
    }
    Ok(Tensor::from_bytes(tensor.dtype(), tensor.shape(), bytes)?
        .with_requires_grad(tensor.requires_grad()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_anchor_matches_before_a_final_newline_like_python() {
        assert_eq!(sub_end("x.b\n", ".b", ".bias"), "x.bias\n");
        assert_eq!(sub_end("x.b", ".b", ".bias"), "x.bias");
        assert_eq!(sub_end("x.bb", ".b", ".bias"), "x.bb");
        assert_eq!(sub_end("b", ".b", ".bias"), "b");
    }

    #[test]
    fn unescaped_dots_match_any_character_but_newline() {
        assert_eq!(
            sub_end(
                "res.bn.runningXmean",
                "bn.running?mean",
                "norm.running_mean"
            ),
            "res.norm.running_mean"
        );
        assert_eq!(
            sub_end(
                "res.bn.running\nmean",
                "bn.running?mean",
                "norm.running_mean"
            ),
            "res.bn.running\nmean"
        );
        assert_eq!(
            sub_start("body-conv-fcn1.w", "body?conv?fcn", "body_conv_fcn"),
            "body_conv_fcn1.w"
        );
        assert_eq!(sub_start("bodyéconvéfcn", "body?conv?fcn", "X"), "X");
    }

    #[test]
    fn fpn_stage_follows_python_int() {
        assert_eq!(python_int("02").as_deref(), Some("2"));
        assert_eq!(python_int(" +1_0 ").as_deref(), Some("10"));
        assert_eq!(python_int("-0").as_deref(), Some("0"));
        assert_eq!(python_int(""), None);
        assert_eq!(python_int("x"), None);
        assert_eq!(python_int("1__0"), None);
        assert!(convert_c2_name("fpn_inner_resX_w").is_err());
        assert_eq!(
            convert_c2_name("fpn_res03_w").unwrap(),
            "fpn_output3.weight"
        );
    }
}

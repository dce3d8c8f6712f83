//! Matching checkpoint names to model names: Caffe2/Detectron1 renaming and the suffix
//! heuristics of detectron2's `align_and_update_state_dicts`.
//!
//! Everything here is a pure function over names, shapes and tensors: no file is read.
//!
//! - [`convert_c2_detectron_names`] renames Caffe2 blobs (`res2_0_branch2a_w`) to detectron2
//!   parameter names (`res2.0.conv1.weight`) and fixes the background-class rows of the box
//!   and mask predictors.
//! - [`align_and_update_state_dicts`] pairs every model name with the longest checkpoint name
//!   it ends with, with one hash lookup per dot of each model name (detectron2 compares every
//!   pair).
//! - [`format_match_table`] prints the table of matches the way detectron2 logs it.
//!
//! ```
//! use ckpt::matching::align_and_update_state_dicts;
//! use ckpt::{StateDict, Tensor};
//!
//! let mut ckpt = StateDict::new();
//! ckpt.insert("layer1.weight", Tensor::from_slice(&[1.0f32; 6], &[3, 2])?);
//! let model = vec![("backbone.layer1.weight".to_string(), vec![3, 2])];
//! let aligned = align_and_update_state_dicts(&model, ckpt, false)?;
//! assert_eq!(aligned.matched[0].checkpoint_key, "layer1.weight");
//! assert!(aligned.state_dict.get("backbone.layer1.weight").is_some());
//! # Ok::<(), ckpt::Error>(())
//! ```

mod align;
mod c2_names;
mod report;
mod suffix_index;

pub(crate) use crate::incompatible::python_shape as shape_tuple;
pub use align::{align_and_update_state_dicts, Alignment};
pub use c2_names::{
    convert_c2_detectron_names, convert_c2_name, C2Conversion, ValueEdit, ValueEditKind,
};
pub use report::format_match_table;

/// A model key and the checkpoint entry loaded into it.
///
/// ```
/// use ckpt::matching::MatchedKey;
/// let m = MatchedKey::new("backbone.fc.weight", "fc.weight", vec![2, 3]);
/// assert_eq!(m.converted_key, "fc.weight");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchedKey {
    /// The model's name.
    pub model_key: String,
    /// The entry's name in the checkpoint file (before any Caffe2 renaming, with a `module.`
    /// prefix the load removes).
    pub checkpoint_key: String,
    /// The entry's name after those renamings (equal to `checkpoint_key` without them).
    pub converted_key: String,
    /// The shape, the same in the model and the checkpoint.
    pub shape: Vec<usize>,
}

impl MatchedKey {
    /// `model_key` loaded from the entry `checkpoint_key` (not renamed) of `shape`.
    pub fn new(
        model_key: impl Into<String>,
        checkpoint_key: impl Into<String>,
        shape: Vec<usize>,
    ) -> MatchedKey {
        let checkpoint_key = checkpoint_key.into();
        MatchedKey {
            model_key: model_key.into(),
            converted_key: checkpoint_key.clone(),
            checkpoint_key,
            shape,
        }
    }
}

/// A shape as torch prints `tensor.shape`: `torch.Size([2, 3])`.
pub(crate) fn torch_size(shape: &[usize]) -> String {
    format!("torch.Size({shape:?})")
}

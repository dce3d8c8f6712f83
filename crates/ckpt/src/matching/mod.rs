//! Matching checkpoint names to model names: Caffe2/Detectron1 renaming and the suffix
//! heuristics of detectron2's `align_and_update_state_dicts`.
//!
//! Everything here is a pure function over names, shapes and tensors: no file is read.
//!
//! - [`c2_names`] renames Caffe2 blobs (`res2_0_branch2a_w`) to detectron2 parameter names
//!   (`res2.0.conv1.weight`) and fixes the background-class rows of the box and mask
//!   predictors.
//! - [`align`] pairs every model name with the longest checkpoint name it ends with, with one
//!   hash lookup per dot of each model name (detectron2 compares every pair).
//! - [`report`] the helpers that print the table of matches the way detectron2 logs it.
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

pub mod align;
pub mod c2_names;
pub mod report;
mod suffix_index;

pub(crate) use crate::incompatible::python_shape as shape_tuple;
pub use align::{align_and_update_state_dicts, Alignment, MatchedKey, ShapeMismatch};
pub use c2_names::{
    convert_c2_detectron_names, convert_c2_name, C2Conversion, ValueEdit, ValueEditKind,
};
pub use report::{format_match_table, group_str, longest_common_prefix, longest_common_prefix_str};

/// A shape as torch prints `tensor.shape`: `torch.Size([2, 3])`.
pub(crate) fn torch_size(shape: &[usize]) -> String {
    format!("torch.Size({shape:?})")
}

//! Loading a state dict into a [`Model`] the forgiving way a checkpointer loads a file, for
//! the framework adapters' own `load_non_strict` methods.

use std::collections::HashSet;

use super::Model;
use crate::error::Result;
use crate::incompatible::{DTypeMismatch, IncompatibleKeys, ShapeMismatch};
use crate::value::StateDict;

/// Loads `state` into `model` non-strictly, as `Checkpointer` does with a file: entries whose
/// shape differs from the model's ([`Model::tensor_info`]), or whose dtype cannot be loaded
/// into the model's (complex into real, [`can_cast`](crate::can_cast)), are skipped and
/// reported with the missing and unexpected names.
///
/// ```
/// use ckpt::{load_non_strict, StateDict, StateDictModel, Tensor};
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[0.5f32; 6], &[2, 3])?);
/// let mut model = StateDictModel::new(sd);
///
/// let mut file = StateDict::new();
/// file.insert("fc.weight", Tensor::from_slice(&[1.0f32; 3], &[3])?);
/// let report = load_non_strict(&mut model, file)?;
/// assert_eq!(report.incorrect_shapes[0].model_key, "fc.weight");
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn load_non_strict<M: Model + ?Sized>(
    model: &mut M,
    mut state: StateDict,
) -> Result<IncompatibleKeys> {
    let mut incorrect_shapes = Vec::new();
    let mut incorrect_dtypes = Vec::new();
    for info in model.tensor_info()? {
        if let Some(t) = state.get(&info.name) {
            if t.shape() != info.shape.as_slice() {
                incorrect_shapes.push(ShapeMismatch::new(
                    info.name,
                    t.shape().to_vec(),
                    info.shape,
                ));
            } else if !crate::can_cast(t.dtype(), info.dtype) {
                incorrect_dtypes.push(DTypeMismatch::new(info.name, t.dtype(), info.dtype));
            }
        }
    }
    let skipped: HashSet<&str> = incorrect_shapes
        .iter()
        .map(|m| m.model_key.as_str())
        .chain(incorrect_dtypes.iter().map(|m| m.key.as_str()))
        .collect();
    state.retain(|name, _| !skipped.contains(name));
    let loaded = model.load_state_dict(state)?;
    Ok(IncompatibleKeys {
        missing_keys: loaded.missing_keys,
        unexpected_keys: loaded.unexpected_keys,
        incorrect_shapes,
        incorrect_dtypes,
    })
}

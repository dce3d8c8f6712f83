//! [`VarMapModel`]: a `candle_nn::VarMap` as a ckpt [`Model`].
//!
//! A `VarMap` is a hash map, so it has no order of its own. The model's order (of its state
//! dict, and of the parameter indices an optimizer built from it uses) is the order given
//! with [`VarMapModel::with_order`] (or taken from a checkpoint with
//! [`VarMapModel::with_param_order`]), followed by every other name in sorted order. Give the
//! order `torch.nn.Module.parameters()` has to exchange optimizer state with PyTorch.

use std::collections::{HashMap, HashSet};

use candle_core::Var;
use candle_nn::VarMap;
use ckpt::{can_cast, Error, IncompatibleKeys, LoadedKeys, Model, StateDict, Tensor, TensorInfo};

use crate::convert::{candle_error, cast, dtype_to_ckpt, to_candle, to_ckpt};
use crate::error::Result;
use crate::names::{duplicates, list};
use crate::ParamOrder;

/// A `candle_nn::VarMap` checkpointed as a state dict of its variables.
///
/// The model shares the variables with the `VarMap` it was made from (a `VarMap` clone is a
/// handle): loading a state dict writes into the very tensors the candle model computes with.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{linear, VarBuilder, VarMap};
/// use ckpt::Model;
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let _fc = linear(3, 2, vb.pp("fc"))?;
/// let model = ckpt_candle::VarMapModel::new(varmap).with_order(["fc.weight", "fc.bias"])?;
/// let sd = model.state_dict()?;
/// assert_eq!(sd.keys().collect::<Vec<_>>(), ["fc.weight", "fc.bias"]);
/// assert_eq!(sd.get("fc.weight").unwrap().shape(), &[2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct VarMapModel {
    varmap: VarMap,
    order: Vec<String>,
}

impl std::fmt::Debug for VarMapModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarMapModel")
            .field("names", &self.names())
            .finish()
    }
}

impl VarMapModel {
    /// The variables of `varmap`, in sorted name order.
    pub fn new(varmap: VarMap) -> VarMapModel {
        VarMapModel {
            varmap,
            order: Vec::new(),
        }
    }

    /// Puts `names` first, in this order; the other variables follow sorted by name.
    ///
    /// Every name must be a variable of the `VarMap` and appear once: a typo would otherwise
    /// leave that parameter at another position, and an optimizer state exchanged with
    /// PyTorch would be applied to the wrong parameters. The error lists the unknown
    /// names. Call it once the model is built (the `VarMap` gets its variables then). To
    /// take the order from a checkpoint rather than typing it, see
    /// [`VarMapModel::with_param_order`].
    pub fn with_order<I, S>(mut self, names: I) -> Result<VarMapModel>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let duplicated = duplicates(&names);
        if !duplicated.is_empty() {
            return Err(Error::invalid(format!(
                "with_order lists {} more than once",
                list(duplicated)
            ))
            .into());
        }
        let unknown: Vec<&str> = {
            let data = self.lock();
            names
                .iter()
                .filter(|name| !data.contains_key(name.as_str()))
                .map(String::as_str)
                .collect()
        };
        if !unknown.is_empty() {
            return Err(Error::invalid(format!(
                "with_order names {} that the VarMap does not have (it has {})",
                list(&unknown),
                list(self.sorted_names())
            ))
            .into());
        }
        self.order = names;
        Ok(self)
    }

    /// Puts the variables in the order of `order` (taken from a checkpoint with
    /// [`ParamOrder::from_file`], or from a state dict), passing over the names the
    /// `VarMap` does not have (buffers such as `num_batches_tracked`, layers the candle
    /// model leaves out). Every variable must be in `order`, else the error lists those
    /// that are not (add them with [`ParamOrder::then`]).
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// use candle_nn::{linear, VarBuilder, VarMap};
    /// use ckpt::{StateDict, Tensor};
    /// use ckpt_candle::{ParamOrder, VarMapModel};
    /// let varmap = VarMap::new();
    /// let _fc = linear(3, 2, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("fc"))?;
    /// // The key order of a torch state dict, with a buffer candle's model has no variable for:
    /// let mut sd = StateDict::new();
    /// sd.insert("fc.weight", Tensor::zeros(ckpt::DType::Float32, &[2, 3])?);
    /// sd.insert("fc.bias", Tensor::zeros(ckpt::DType::Float32, &[2])?);
    /// sd.insert("fc.num_batches_tracked", Tensor::zeros(ckpt::DType::Int64, &[])?);
    /// let model = VarMapModel::new(varmap).with_param_order(&ParamOrder::of_state_dict(&sd))?;
    /// assert_eq!(model.names(), ["fc.weight", "fc.bias"]);
    /// # Ok::<(), ckpt_candle::Error>(())
    /// ```
    pub fn with_param_order(mut self, order: &ParamOrder) -> Result<VarMapModel> {
        let duplicated = duplicates(order.names());
        if !duplicated.is_empty() {
            return Err(Error::invalid(format!(
                "{} lists {} more than once",
                order.source(),
                list(duplicated)
            ))
            .into());
        }
        let (known, unplaced) = {
            let data = self.lock();
            let known: Vec<String> = order
                .names()
                .iter()
                .filter(|name| data.contains_key(name.as_str()))
                .cloned()
                .collect();
            let listed: HashSet<&str> = known.iter().map(String::as_str).collect();
            let mut unplaced: Vec<String> = data
                .keys()
                .filter(|name| !listed.contains(name.as_str()))
                .cloned()
                .collect();
            unplaced.sort_unstable();
            (known, unplaced)
        };
        if !unplaced.is_empty() {
            return Err(Error::invalid(format!(
                "{} of the VarMap's {} variables are not in {}: {}; {} names there, e.g. {} \
                 (add variables the checkpoint lacks with ParamOrder::then)",
                unplaced.len(),
                unplaced.len() + known.len(),
                order.source(),
                list(&unplaced),
                order.names().len(),
                list(order.names().iter().take(3)),
            ))
            .into());
        }
        let passed_over = order.names().len() - known.len();
        if passed_over > 0 {
            tracing::debug!(
                "{passed_over} names of {} are not variables of the VarMap (buffers?)",
                order.source()
            );
        }
        self.order = known;
        Ok(self)
    }

    /// The `VarMap` (a handle to the same variables).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The names of the variables, in the model's order.
    pub fn names(&self) -> Vec<String> {
        self.vars().into_iter().map(|(name, _)| name).collect()
    }

    /// The variables with their names, in the model's order. An optimizer built from
    /// these (see [`crate::AdamW::from_model`]) numbers its parameters in this order.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let data = self.lock();
        let mut out = Vec::with_capacity(data.len());
        let mut listed = HashSet::new();
        for name in &self.order {
            if let Some(var) = data.get(name) {
                if listed.insert(name.as_str()) {
                    out.push((name.clone(), var.clone()));
                }
            }
        }
        let mut rest: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(name, _)| !listed.contains(name.as_str()))
            .collect();
        rest.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(rest.into_iter().map(|(n, v)| (n.clone(), v.clone())));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Var>> {
        self.varmap
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sorted_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Loads `state` non-strictly, as `Checkpointer` does with a file: entries whose shape
    /// differs from the variable's, or whose dtype cannot be loaded into the variable's
    /// (complex into real, [`ckpt::can_cast`]), are skipped and reported with the
    /// missing and unexpected names. Nothing is changed when an entry cannot be converted.
    pub fn load_non_strict(&mut self, state: StateDict) -> Result<IncompatibleKeys> {
        Ok(ckpt::load_non_strict(self, state)?)
    }
}

impl Model for VarMapModel {
    fn state_dict(&self) -> ckpt::Result<StateDict> {
        self.vars()
            .into_iter()
            .map(|(name, var)| {
                let t = to_ckpt(var.as_tensor()).map_err(|e| Error::from(e).in_entry(&name))?;
                Ok((name, t))
            })
            .collect()
    }

    /// Every variable named in `state` takes its value, converted to the variable's dtype
    /// (with torch's `copy_` rules, [`ckpt::cast_bytes`]) and device. All entries are converted
    /// before any variable is written, so an error leaves the model unchanged. A shape that
    /// differs from the variable's, or a dtype that cannot be loaded into its dtype (complex
    /// into real), is an error naming the key. The variables never share memory with
    /// `state` (nor with a file it may be a view of).
    fn load_state_dict(&mut self, state: StateDict) -> ckpt::Result<LoadedKeys> {
        let mut updates = Vec::new();
        let mut missing = Vec::new();
        // Marked rather than removed: removing from an ordered map shifts every later entry,
        // which would make a load quadratic in the number of tensors.
        let mut used = vec![false; state.len()];
        for (name, var) in self.vars() {
            let Some((index, t)) = state.get_full(&name) else {
                missing.push(name);
                continue;
            };
            if let Some(slot) = used.get_mut(index) {
                *slot = true;
            }
            if t.shape() != var.dims() {
                return Err(Error::shape_mismatch(var.dims(), t.shape()).in_entry(name));
            }
            let value = load_value(t, &var).map_err(|e| Error::from(e).in_entry(&name))?;
            updates.push((name, var, value));
        }
        for (name, var, value) in updates {
            var.set(&value)
                .map_err(|e| candle_error(e).in_entry(name))?;
        }
        let unexpected = state
            .keys()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(name, _)| name.to_string())
            .collect();
        Ok(LoadedKeys::new(missing, unexpected))
    }

    fn shapes(&self) -> ckpt::Result<Vec<(String, Vec<usize>)>> {
        Ok(self
            .vars()
            .into_iter()
            .map(|(name, var)| (name, var.dims().to_vec()))
            .collect())
    }

    /// Names, shapes and dtypes, read from the variables without copying them. A variable
    /// of a candle dtype torch has no counterpart for (fp4, fp6) is an error naming it.
    fn tensor_info(&self) -> ckpt::Result<Vec<TensorInfo>> {
        self.vars()
            .into_iter()
            .map(|(name, var)| {
                let dtype = dtype_to_ckpt(var.dtype()).ok_or_else(|| {
                    Error::unsupported(format!(
                        "candle dtype {:?} has no torch counterpart",
                        var.dtype()
                    ))
                    .in_entry(&name)
                })?;
                Ok(TensorInfo::new(name, var.dims().to_vec(), dtype))
            })
            .collect()
    }
}

/// `t` as a candle tensor of `var`'s dtype, on its device: converted by ckpt with torch's
/// rules when the dtypes differ, then copied once into candle's memory.
fn load_value(t: &Tensor, var: &Var) -> Result<candle_core::Tensor> {
    let Some(dtype) = dtype_to_ckpt(var.dtype()) else {
        // A candle dtype torch lacks: only candle can convert into it.
        return to_candle(t, var.device()).and_then(|c| cast(&c, var.dtype()));
    };
    if t.dtype() == dtype {
        return to_candle(t, var.device());
    }
    if !can_cast(t.dtype(), dtype) {
        let mismatch = Error::DTypeMismatch {
            expected: dtype,
            found: t.dtype(),
        };
        return Err(mismatch.into());
    }
    to_candle(&t.to_owned_as(dtype)?, var.device())
}

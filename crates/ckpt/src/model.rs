//! What a checkpointer saves and restores: a [`Model`] (named tensors) and any number of
//! [`Checkpointable`]s (optimizer, scheduler, data position, ...), shared with the training
//! loop through [`Shared`] handles so training goes on between saves.
//!
//! ```
//! use ckpt::{shared, Model, StateDict, StateDictModel, Tensor};
//! let mut sd = StateDict::new();
//! sd.insert("fc.weight", Tensor::from_slice(&[0.5f32; 6], &[2, 3])?);
//! let model = shared(StateDictModel::new(sd));
//! // The training loop and a checkpointer can both hold `model`.
//! assert_eq!(model.lock().unwrap().state_dict()?.len(), 1);
//! # Ok::<(), ckpt::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cast::can_cast;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::parallel::map_weighted;
use crate::tensor::Tensor;
use crate::value::{StateDict, Value};

/// A handle shared by the training loop and a checkpointer.
pub type Shared<T> = Arc<Mutex<T>>;

/// Wraps `value` in a [`Shared`] handle.
pub fn shared<T>(value: T) -> Shared<T> {
    Arc::new(Mutex::new(value))
}

/// Locks a shared handle; a lock poisoned by a panic elsewhere still yields the data (a
/// checkpoint of the last consistent state is more useful than a second panic).
pub(crate) fn lock<T: ?Sized>(handle: &Mutex<T>) -> MutexGuard<'_, T> {
    handle
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The keys a non-strict load did not match, as `nn.Module.load_state_dict(strict=False)`
/// reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedKeys {
    /// Names the model has that the state dict did not provide.
    pub missing_keys: Vec<String>,
    /// Names in the state dict the model does not have.
    pub unexpected_keys: Vec<String>,
}

/// The name, shape and dtype of one parameter or buffer of a [`Model`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A model: named parameters and buffers in, named parameters and buffers out.
pub trait Model: Send {
    /// The model's parameters and buffers, in the model's order.
    fn state_dict(&self) -> Result<StateDict>;

    /// Loads `state` non-strictly: every name the model has is taken from `state` when
    /// present; the names that did not match are reported. The checkpointer has already
    /// dropped entries whose shape differs from the model's, and entries whose dtype cannot
    /// be loaded into the model's ([`crate::cast::can_cast`]), both from
    /// [`Model::tensor_info`].
    ///
    /// As torch's `load_state_dict` does (`param.copy_(value)`), a parameter keeps its own
    /// dtype: values are converted with [`crate::Tensor::to_owned_as`]. A name that accepts
    /// any shape ([`Model::accepts_any_shape`]) takes the tensor as it is.
    ///
    /// The tensors of `state` may be views of a memory-mapped file, valid while this call
    /// runs: a model that keeps them must copy them into memory it owns (as
    /// [`crate::Tensor::to_owned_as`] does), or it will read the file for as long as it keeps
    /// them, and die with `SIGBUS` when the file is truncated or change when it is rewritten
    /// (see [`Buffer`](crate::Buffer#a-map-depends-on-its-file)).
    fn load_state_dict(&mut self, state: StateDict) -> Result<LoadedKeys>;

    /// The name, shape and dtype of every parameter and buffer, in the model's order. The
    /// default reads [`Model::state_dict`]; a model should answer without copying data.
    fn tensor_info(&self) -> Result<Vec<TensorInfo>> {
        Ok(self
            .state_dict()?
            .iter()
            .map(|(name, t)| TensorInfo {
                name: name.to_string(),
                shape: t.shape().to_vec(),
                dtype: t.dtype(),
            })
            .collect())
    }

    /// The name and shape of every parameter and buffer. The default reads
    /// [`Model::tensor_info`].
    fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(self
            .tensor_info()?
            .into_iter()
            .map(|info| (info.name, info.shape))
            .collect())
    }

    /// Whether `name` takes a tensor of any shape (a parameter not initialised yet, a
    /// quantization observer buffer): such names are never skipped for a shape mismatch.
    fn accepts_any_shape(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// Groups of names that are one tensor registered under several names (tied or reused
    /// parameters). A name of a group is not reported missing when another name of the
    /// group was loaded.
    fn aliases(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
}

/// Anything else whose state goes into a checkpoint under its own key (an optimizer, an LR
/// scheduler, a data-loader position, an RNG).
///
/// Any `Serialize + DeserializeOwned` type becomes one by wrapping it in [`Serde`].
pub trait Checkpointable: Send {
    /// The state to save.
    fn state_dict(&self) -> Result<Value>;
    /// Restores a state produced by [`Checkpointable::state_dict`] (possibly by Python).
    fn load_state_dict(&mut self, state: Value) -> Result<()>;
}

/// Makes any serde type checkpointable: its state is the type serialized to a [`Value`]
/// (structs become dicts, so Python sees a plain dict).
///
/// ```
/// use ckpt::{shared, Serde};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Scheduler { step: u64, lr: f64 }
/// let scheduler = shared(Serde(Scheduler { step: 0, lr: 0.1 }));
/// scheduler.lock().unwrap().step += 1; // Serde<T> derefs to T
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Serde<T>(pub T);

impl<T> Deref for Serde<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Serde<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize + DeserializeOwned + Send> Checkpointable for Serde<T> {
    fn state_dict(&self) -> Result<Value> {
        crate::serde_value::to_value(&self.0)
    }

    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        self.0 = crate::serde_value::from_value(&state)?;
        Ok(())
    }
}

/// A model that is just its named tensors: usable without any framework, and the model of
/// the example training loop.
///
/// Tensors sharing one storage view when the model is made (tied weights) stay tied: a load
/// that sets one name of such a group sets all of them.
///
/// A load copies every tensor it takes into memory the model owns, converted to the dtype
/// of the tensor it replaces (a float32 model stays float32 whatever the file holds), so
/// the model never depends on the file it was loaded from. Large loads copy on a few
/// threads.
#[derive(Debug, Clone, Default)]
pub struct StateDictModel {
    state: StateDict,
    any_shape: HashSet<String>,
    aliases: Vec<Vec<String>>,
}

impl StateDictModel {
    /// A model holding `state`; tied tensors are found by storage identity.
    pub fn new(state: StateDict) -> StateDictModel {
        let aliases = find_aliases(&state);
        StateDictModel {
            state,
            any_shape: HashSet::new(),
            aliases,
        }
    }

    /// Marks names that accept a tensor of any shape (see [`Model::accepts_any_shape`]).
    pub fn with_any_shape<I, S>(mut self, names: I) -> StateDictModel
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.any_shape.extend(names.into_iter().map(Into::into));
        self
    }

    /// Declares names that are one tensor (in addition to those found by storage identity).
    pub fn with_alias_group<I, S>(mut self, names: I) -> StateDictModel
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases
            .push(names.into_iter().map(Into::into).collect());
        self
    }

    /// The tensors.
    pub fn tensors(&self) -> &StateDict {
        &self.state
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.state.get(name)
    }

    /// Replaces the tensor called `name` (and the names tied to it); returns whether the
    /// model has that name.
    pub fn set(&mut self, name: &str, tensor: Tensor) -> bool {
        if !self.state.tensors.contains_key(name) {
            return false;
        }
        let tied: Vec<String> = self
            .aliases
            .iter()
            .filter(|group| group.iter().any(|n| n == name))
            .flatten()
            .cloned()
            .collect();
        for other in tied {
            if let Some(slot) = self.state.tensors.get_mut(&other) {
                *slot = tensor.clone();
            }
        }
        if let Some(slot) = self.state.tensors.get_mut(name) {
            *slot = tensor;
        }
        true
    }
}

impl Model for StateDictModel {
    fn state_dict(&self) -> Result<StateDict> {
        Ok(self.state.clone())
    }

    fn load_state_dict(&mut self, state: StateDict) -> Result<LoadedKeys> {
        let group_of: HashMap<&str, usize> = self
            .aliases
            .iter()
            .enumerate()
            .flat_map(|(i, group)| group.iter().map(move |n| (n.as_str(), i)))
            .collect();
        let mut unexpected = Vec::new();
        // Everything is checked and copied before the model changes, so an error (a dtype
        // that cannot be converted, memory that cannot be had) leaves it as it was.
        let mut copies = Vec::new();
        for (name, tensor) in state.tensors {
            match self.state.tensors.get(&name) {
                Some(current) => {
                    let target = self.target_of(&name, current, &tensor)?;
                    copies.push((name, tensor, target));
                }
                None => unexpected.push(name),
            }
        }
        let owned = map_weighted(
            &copies,
            |(_, tensor, _)| tensor.nbytes(),
            |(_, tensor, target)| {
                // A tensor that is a whole allocation of its own in the right dtype (one the
                // program made, or a state the model had) is shared, not copied: storages
                // never change.
                let copy = if tensor.dtype() == target.dtype
                    && tensor.is_whole_storage()
                    && tensor.storage().owns_its_bytes()
                {
                    tensor.clone()
                } else {
                    tensor.to_owned_as(target.dtype)?
                };
                Ok::<_, Error>(match target.requires_grad {
                    Some(flag) => copy.with_requires_grad(flag),
                    None => copy,
                })
            },
        );
        let mut loaded = HashSet::new();
        let mut tied_updates = Vec::new();
        let mut updates = Vec::with_capacity(copies.len());
        for ((name, _, _), copy) in copies.into_iter().zip(owned) {
            let copy = copy.map_err(|e| Error::key(&name, e.to_string()))?;
            updates.push((name, copy));
        }
        for (name, tensor) in updates {
            if let Some(slot) = self.state.tensors.get_mut(&name) {
                if let Some(&group) = group_of.get(name.as_str()) {
                    tied_updates.push((group, tensor.clone()));
                }
                *slot = tensor;
                loaded.insert(name);
            }
        }
        // Like torch's in-place copies: the last name loaded of a tied group wins for all.
        for (group, tensor) in tied_updates {
            for name in &self.aliases[group] {
                if let Some(slot) = self.state.tensors.get_mut(name) {
                    *slot = tensor.clone();
                }
            }
        }
        let missing = self
            .state
            .keys()
            .filter(|name| !loaded.contains(*name))
            .map(str::to_string)
            .collect();
        Ok(LoadedKeys {
            missing_keys: missing,
            unexpected_keys: unexpected,
        })
    }

    fn tensor_info(&self) -> Result<Vec<TensorInfo>> {
        Ok(self
            .state
            .iter()
            .map(|(name, t)| TensorInfo {
                name: name.to_string(),
                shape: t.shape().to_vec(),
                dtype: t.dtype(),
            })
            .collect())
    }

    fn accepts_any_shape(&self, name: &str) -> bool {
        self.any_shape.contains(name)
    }

    fn aliases(&self) -> Vec<Vec<String>> {
        self.aliases.clone()
    }
}

/// What a loaded tensor becomes in a [`StateDictModel`].
struct Target {
    dtype: DType,
    /// The flag of the parameter it replaces (`None`: the incoming tensor's own).
    requires_grad: Option<bool>,
}

impl StateDictModel {
    /// The dtype `incoming` takes under `name`, whose tensor now is `current`: the current
    /// dtype (torch's `copy_`), or the incoming one for a name that accepts any shape.
    fn target_of(&self, name: &str, current: &Tensor, incoming: &Tensor) -> Result<Target> {
        if self.accepts_any_shape(name) {
            return Ok(Target {
                dtype: incoming.dtype(),
                requires_grad: None,
            });
        }
        if !can_cast(incoming.dtype(), current.dtype()) {
            return Err(Error::key(
                name,
                format!(
                    "cannot load {} values into this {} tensor: the imaginary part would be lost",
                    incoming.dtype(),
                    current.dtype()
                ),
            ));
        }
        Ok(Target {
            dtype: current.dtype(),
            requires_grad: Some(current.requires_grad()),
        })
    }
}

/// Groups of names whose tensors are the very same view of one storage.
fn find_aliases(state: &StateDict) -> Vec<Vec<String>> {
    type ViewId = (usize, usize, Vec<usize>, Vec<usize>);
    let mut groups: HashMap<ViewId, Vec<String>> = HashMap::new();
    let mut order = Vec::new();
    for (name, t) in state.iter() {
        let id = (
            t.storage().id(),
            t.storage_offset(),
            t.shape().to_vec(),
            t.strides().to_vec(),
        );
        let group = groups.entry(id.clone()).or_default();
        if group.is_empty() {
            order.push(id);
        }
        group.push(name.to_string());
    }
    order
        .into_iter()
        .filter_map(|id| groups.remove(&id))
        .filter(|g| g.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::from_slice(values, &[values.len()]).unwrap()
    }

    #[test]
    fn tied_tensors_are_found_and_stay_tied_after_load() {
        let shared_t = t(&[1.0, 2.0]);
        let mut sd = StateDict::new();
        sd.insert("enc.weight", shared_t.clone());
        sd.insert("dec.weight", shared_t);
        sd.insert("dec.bias", t(&[0.0]));
        let mut model = StateDictModel::new(sd);
        assert_eq!(model.aliases(), vec![vec!["enc.weight", "dec.weight"]]);

        let mut incoming = StateDict::new();
        incoming.insert("enc.weight", t(&[5.0, 6.0]));
        incoming.insert("extra", t(&[1.0]));
        let keys = model.load_state_dict(incoming).unwrap();
        assert_eq!(keys.unexpected_keys, vec!["extra"]);
        assert_eq!(keys.missing_keys, vec!["dec.weight", "dec.bias"]);
        let dec = model.get("dec.weight").unwrap().to_vec::<f32>().unwrap();
        assert_eq!(dec, vec![5.0, 6.0]);
    }
}

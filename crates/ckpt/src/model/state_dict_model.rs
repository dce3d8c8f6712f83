use std::collections::{HashMap, HashSet};

use super::copy_in::{fits_in_place, new_copies, write_in_place, CopyIn};
use super::{LoadedKeys, Model, TensorInfo};
use crate::cast::can_cast;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::value::StateDict;

/// A model that is just its named tensors: usable without any framework, and the model of
/// the example training loop.
///
/// Tensors sharing one storage view when the model is made (tied weights) stay tied: a load
/// that sets one name of such a group sets all of them.
///
/// A load copies every tensor it takes into memory the model owns, converted to the dtype
/// of the tensor it replaces (a float32 model stays float32 whatever the file holds), so
/// the model never depends on the file it was loaded from: in place when the model's tensor
/// is the only handle on its memory (as torch writes into a parameter), else into a new
/// allocation (the old tensor may be shared: a snapshot, a tied weight, a clone the program
/// kept).
///
/// ```
/// use ckpt::{DType, LoadedKeys, Model, StateDict, StateDictModel, Tensor};
/// let mut init = StateDict::new();
/// init.insert("fc.weight", Tensor::zeros(DType::Float32, &[2])?);
/// init.insert("fc.bias", Tensor::zeros(DType::Float32, &[1])?);
/// let mut model = StateDictModel::new(init);
/// let mut file = StateDict::new();
/// file.insert("fc.weight", Tensor::from_slice(&[1.0f64, 2.0], &[2])?); // float64 in the file
/// let report = model.load_state_dict(file)?;
/// assert_eq!(report, LoadedKeys::new(vec!["fc.bias".into()], vec![]));
/// let weight = model.get("fc.weight").unwrap();
/// assert_eq!(weight.dtype(), DType::Float32); // the model keeps its dtype
/// assert_eq!(weight.to_vec::<f32>()?, [1.0, 2.0]);
/// # Ok::<(), ckpt::Error>(())
/// ```
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
        // Everything that can fail (a dtype that cannot be converted, memory that cannot be
        // had) happens before the model changes, so an error leaves it as it was; only a file
        // truncated while it is read fails later (a map read would kill the process).
        let mut fresh = Vec::new();
        let mut in_place: HashMap<&str, &Tensor> = HashMap::new();
        for (name, incoming) in state.tensors.iter() {
            let Some(current) = self.state.tensors.get(name) else {
                unexpected.push(name.clone());
                continue;
            };
            let target = self.target_of(name, current, incoming)?;
            if fits_in_place(current, incoming, target.dtype) {
                in_place.insert(name, incoming);
            } else {
                fresh.push(CopyIn {
                    name,
                    incoming,
                    dtype: target.dtype,
                    requires_grad: target.requires_grad,
                });
            }
        }
        let names: Vec<&str> = fresh.iter().map(|job| job.name).collect();
        let copies = new_copies(fresh)?;

        let writes: Vec<(&str, &mut Tensor, &Tensor)> = self
            .state
            .tensors
            .iter_mut()
            .filter_map(|(name, current)| {
                Some((name.as_str(), current, *in_place.get(name.as_str())?))
            })
            .collect();
        write_in_place(writes)?;
        for (name, copy) in names.into_iter().zip(copies) {
            if let Some(slot) = self.state.tensors.get_mut(name) {
                *slot = copy;
            }
        }

        // Like torch's in-place copies: the last name loaded of a tied group wins for all.
        let mut loaded = HashSet::new();
        for name in state.tensors.keys() {
            let Some(tensor) = self.state.tensors.get(name) else {
                continue;
            };
            if let Some(&group) = group_of.get(name.as_str()) {
                let tensor = tensor.clone();
                for other in &self.aliases[group] {
                    if let Some(slot) = self.state.tensors.get_mut(other) {
                        *slot = tensor.clone();
                    }
                }
            }
            loaded.insert(name.as_str());
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
            let mismatch = Error::DTypeMismatch {
                expected: current.dtype(),
                found: incoming.dtype(),
            };
            return Err(mismatch.in_entry(name));
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

    fn model(values: &[f32]) -> StateDictModel {
        let mut sd = StateDict::new();
        sd.insert("w", t(values));
        StateDictModel::new(sd)
    }

    fn incoming(values: &[f64]) -> StateDict {
        let mut sd = StateDict::new();
        sd.insert("w", Tensor::from_slice(values, &[values.len()]).unwrap());
        sd
    }

    #[test]
    fn a_tensor_only_the_model_holds_takes_the_values_in_place() {
        let mut model = model(&[0.0, 0.0]);
        let before = model.get("w").unwrap().storage().id();
        model.load_state_dict(incoming(&[1.5, -2.0])).unwrap();
        let w = model.get("w").unwrap();
        assert_eq!(w.storage().id(), before);
        assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn a_tensor_held_elsewhere_never_changes_under_its_holder() {
        let mut model = model(&[0.0, 0.0]);
        let snapshot = model.state_dict().unwrap();
        model.load_state_dict(incoming(&[1.5, -2.0])).unwrap();
        assert_eq!(
            snapshot.get("w").unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 0.0]
        );
        let w = model.get("w").unwrap();
        assert_eq!(w.dtype(), DType::Float32);
        assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
        // The snapshot is loaded back as it is (shared, not copied).
        model.load_state_dict(snapshot.clone()).unwrap();
        assert!(model
            .get("w")
            .unwrap()
            .storage()
            .same_as(snapshot.get("w").unwrap().storage()));
    }

    #[test]
    fn parameters_keep_their_requires_grad_flag() {
        let mut sd = StateDict::new();
        sd.insert("w", t(&[0.0]).with_requires_grad(true));
        let mut model = StateDictModel::new(sd);
        let _keep = model.state_dict().unwrap(); // forces a new allocation
        model.load_state_dict(incoming(&[3.0])).unwrap();
        assert!(model.get("w").unwrap().requires_grad());
    }
}

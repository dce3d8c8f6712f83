//! [`BurnModel`]: a burn `Module` as a ckpt [`Model`].

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor as BTensor, TensorData};
use ckpt::{Error, IncompatibleKeys, LoadedKeys, Model, Result, StateDict, TensorInfo};

use crate::convert::{data_to_ckpt, dtype_to_ckpt, to_burn_data};
use crate::names::{PathStack, TorchNames};

/// A burn module checkpointed as a state dict of its float parameters and running statistics
/// (batch-norm `running_mean`/`running_var`), under their module paths, in the module's
/// visiting order (its field order: torch's `named_parameters()` order for a module written
/// like its torch counterpart).
///
/// Names and layouts follow [`TorchNames`] (torch's by default), so the state dict is the one
/// the same network has in PyTorch. Loading replaces the module (burn modules are values: a
/// load maps the parameters to new ones with the same ids, devices and `require_grad`). Int
/// and bool parameters are not part of the state dict.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use ckpt::Model;
/// let linear = LinearConfig::new(3, 2).init(&Device::default());
/// let model = ckpt_burn::BurnModel::new(linear);
/// let sd = model.state_dict()?;
/// assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight", "bias"]);
/// assert_eq!(sd.get("weight").unwrap().shape(), &[2, 3]); // torch's [out, in]
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BurnModel<M: Module> {
    module: M,
    names: TorchNames,
}

impl<M: Module> BurnModel<M> {
    /// `module` under torch's names ([`TorchNames::torch`]).
    pub fn new(module: M) -> BurnModel<M> {
        BurnModel {
            module,
            names: TorchNames::torch(),
        }
    }

    /// Uses `names` for the state dict.
    pub fn with_names(mut self, names: TorchNames) -> BurnModel<M> {
        self.names = names;
        self
    }

    /// The naming convention.
    pub fn names(&self) -> TorchNames {
        self.names
    }

    /// The module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// Replaces the module (after a training step, which returns a new one).
    pub fn set_module(&mut self, module: M) {
        self.module = module;
    }

    /// The module, giving up the wrapper.
    pub fn into_module(self) -> M {
        self.module
    }

    /// The state-dict entries of the module: name, shape (as in the state dict), dtype and
    /// whether the tensor is transposed from burn's layout.
    pub(crate) fn entries(&self) -> Result<Vec<Entry>> {
        self.list_entries(false)
    }

    /// [`BurnModel::entries`] without initializing a parameter that is not yet (burn
    /// initializes parameters on first use): its shape, device and the device's float dtype
    /// (what its initializer would make) are read instead, and it counts as trainable. For a
    /// load, which replaces the parameter anyway: initializing it would cost its memory and
    /// the time of its random values for nothing.
    fn lazy_entries(&self) -> Result<Vec<Entry>> {
        self.list_entries(true)
    }

    fn list_entries(&self, lazy: bool) -> Result<Vec<Entry>> {
        let mut lister = Lister {
            path: PathStack::default(),
            names: self.names,
            entries: Vec::new(),
            error: None,
            lazy,
        };
        self.module.visit(&mut lister);
        if let Some(e) = lister.error {
            return Err(e);
        }
        let mut seen = HashSet::new();
        if let Some(dup) = lister
            .entries
            .iter()
            .find(|e| !seen.insert(e.name.as_str()))
        {
            return Err(Error::invalid(format!(
                "two parameters of the burn module have the state-dict name {:?}",
                dup.name
            )));
        }
        Ok(lister.entries)
    }

    /// Loads `state` non-strictly, as `Checkpointer` does with a file: entries whose shape
    /// differs from the parameter's, or whose dtype cannot be loaded into the parameter's
    /// (complex into real, [`ckpt::can_cast`]), are skipped and reported with the missing and
    /// unexpected names.
    pub fn load_non_strict(&mut self, state: StateDict) -> Result<IncompatibleKeys> {
        ckpt::load_non_strict(self, state)
    }
}

/// One float parameter as the state dict sees it.
pub(crate) struct Entry {
    pub name: String,
    /// The shape in the state dict (torch's layout).
    pub shape: Vec<usize>,
    /// The shape of the burn tensor.
    pub burn_shape: Vec<usize>,
    pub dtype: burn::tensor::DType,
    pub transposed: bool,
    /// Whether the parameter requires a gradient (a trained parameter, not a buffer).
    pub trainable: bool,
    /// The device of its values without autodiff (where optimizer state lives).
    pub device: burn::tensor::Device,
}

/// Lists the float parameters with their state-dict names.
struct Lister {
    path: PathStack,
    names: TorchNames,
    entries: Vec<Entry>,
    error: Option<Error>,
    /// Leave parameters that are not initialized yet as they are ([`BurnModel::lazy_entries`]).
    lazy: bool,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<BTensor<D>>) {
        let (name, transposed) = self.path.param_name(&self.names);
        let transposed = transposed && D == 2;
        let (burn_shape, dtype, trainable, device) = if self.lazy && !param.is_initialized() {
            let device = param.lazy_device();
            let dtype = device.settings().float_dtype.into();
            (param.lazy_shape().to_vec(), dtype, true, device)
        } else {
            let value = param.val();
            let (dims, dtype, trainable) = (
                value.dims().to_vec(),
                value.dtype(),
                value.is_require_grad(),
            );
            (dims, dtype, trainable, value.inner().device())
        };
        let mut shape = burn_shape.clone();
        if transposed {
            shape.swap(0, 1);
        }
        if dtype_to_ckpt(dtype).is_none() && self.error.is_none() {
            self.error = Some(
                Error::unsupported(format!("burn dtype {dtype:?} has no torch counterpart"))
                    .in_entry(&name),
            );
        }
        self.entries.push(Entry {
            name,
            shape,
            burn_shape,
            dtype,
            transposed,
            trainable,
            device,
        });
    }
}

/// Collects the parameters' values as ckpt tensors.
struct Collector {
    path: PathStack,
    names: TorchNames,
    state: StateDict,
    error: Option<Error>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<BTensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let (name, transposed) = self.path.param_name(&self.names);
        let value = param.val();
        let data = if transposed && D == 2 {
            value.transpose().to_data()
        } else {
            value.to_data()
        };
        match data_to_ckpt(data) {
            Ok(t) => {
                self.state.insert(name, t);
            }
            Err(e) => self.error = Some(e.in_entry(name)),
        }
    }
}

/// Replaces the parameters named in `updates` by their new values.
struct Loader {
    path: PathStack,
    names: TorchNames,
    updates: HashMap<String, Update>,
    /// The first conversion that failed (the module is then left as it was).
    error: Option<Error>,
}

/// A checked state-dict entry waiting for its parameter: converted when the mapper reaches it,
/// so that a load holds one converted tensor at a time, not all of them.
struct Update {
    tensor: ckpt::Tensor,
    dtype: ckpt::DType,
    transposed: bool,
}

impl Update {
    /// The entry in burn's layout and dtype. Transposed by reading the file's bytes through
    /// a transposed view: one copy. The mapped pages it was read from are given back after.
    fn convert(self) -> Result<TensorData> {
        let t = &self.tensor;
        let data = if self.transposed {
            let (shape, strides) = (t.shape(), t.strides());
            t.view(
                &[shape[1], shape[0]],
                &[strides[1], strides[0]],
                t.storage_offset(),
            )
            .and_then(|view| to_burn_data(&view, self.dtype))
        } else {
            to_burn_data(t, self.dtype)
        };
        t.storage().release_mapped_pages();
        data
    }
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<BTensor<D>>) -> Param<BTensor<D>> {
        let (name, _) = self.path.param_name(&self.names);
        if self.error.is_some() {
            return param;
        }
        let Some(update) = self.updates.remove(&name) else {
            return param;
        };
        let data = match update.convert() {
            Ok(data) => data,
            Err(e) => {
                self.error = Some(e.in_entry(name));
                return param;
            }
        };
        let value = BTensor::<D>::from_data(data, &param.lazy_device());
        let id = param.id;
        param.transform_for_load(value, id)
    }
}

impl<M: Module> Model for BurnModel<M> {
    fn state_dict(&self) -> Result<StateDict> {
        let mut collector = Collector {
            path: PathStack::default(),
            names: self.names,
            state: StateDict::new(),
            error: None,
        };
        self.module.visit(&mut collector);
        match collector.error {
            Some(e) => Err(e),
            None => Ok(collector.state),
        }
    }

    /// Every parameter named in `state` takes its value, converted to the parameter's dtype
    /// (with torch's `copy_` rules, [`ckpt::cast_bytes`]). Every entry's shape and dtype is
    /// checked before the module changes: a shape that differs from the parameter's, or a
    /// dtype that cannot be loaded into it, is an error naming the key, and the module is
    /// unchanged. Entries are then converted one at a time as their parameters are replaced,
    /// so the load needs memory for the module and one tensor, not a second copy of the
    /// module; a parameter burn has not initialized yet is never initialized. Should reading
    /// an entry fail after the checks (a remote object that changed), the module is left as
    /// it was too.
    fn load_state_dict(&mut self, state: StateDict) -> Result<LoadedKeys> {
        let mut updates = HashMap::new();
        let mut missing = Vec::new();
        // Marked rather than removed: removing from an ordered map shifts every later entry.
        let mut used = vec![false; state.len()];
        for entry in self.lazy_entries()? {
            let Some((index, t)) = state.get_full(&entry.name) else {
                missing.push(entry.name);
                continue;
            };
            if let Some(slot) = used.get_mut(index) {
                *slot = true;
            }
            if t.shape() != entry.shape.as_slice() {
                return Err(Error::shape_mismatch(&entry.shape, t.shape()).in_entry(entry.name));
            }
            let dtype = dtype_to_ckpt(entry.dtype).ok_or_else(|| {
                Error::unsupported(format!("burn dtype {:?}", entry.dtype)).in_entry(&entry.name)
            })?;
            if !ckpt::can_cast(t.dtype(), dtype) {
                return Err(Error::DTypeMismatch {
                    expected: dtype,
                    found: t.dtype(),
                }
                .in_entry(entry.name));
            }
            let update = Update {
                tensor: t.clone(),
                dtype,
                transposed: entry.transposed,
            };
            updates.insert(entry.name, update);
        }
        let unexpected = state
            .keys()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(name, _)| name.to_string())
            .collect();
        // The entries hold what they need; the rest of the state is not kept during the load.
        drop(state);
        let mut loader = Loader {
            path: PathStack::default(),
            names: self.names,
            updates,
            error: None,
        };
        let loaded = self.module.clone().map(&mut loader);
        if let Some(e) = loader.error {
            return Err(e);
        }
        self.module = loaded;
        Ok(LoadedKeys::new(missing, unexpected))
    }

    /// Names, shapes and dtypes, read without copying any parameter.
    fn tensor_info(&self) -> Result<Vec<TensorInfo>> {
        self.lazy_entries()?
            .into_iter()
            .map(|e| {
                let dtype = dtype_to_ckpt(e.dtype).ok_or_else(|| {
                    Error::unsupported(format!("burn dtype {:?}", e.dtype)).in_entry(&e.name)
                })?;
                Ok(TensorInfo::new(e.name, e.shape, dtype))
            })
            .collect()
    }
}

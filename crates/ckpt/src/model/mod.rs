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

mod copy_in;
mod non_strict;
mod state_dict_model;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dtype::DType;
use crate::error::Result;
use crate::value::{StateDict, Value};

pub use non_strict::load_non_strict;

pub use state_dict_model::StateDictModel;

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
#[non_exhaustive]
pub struct LoadedKeys {
    /// Names the model has that the state dict did not provide.
    pub missing_keys: Vec<String>,
    /// Names in the state dict the model does not have.
    pub unexpected_keys: Vec<String>,
}

impl LoadedKeys {
    /// The names a load did not match.
    pub fn new(missing_keys: Vec<String>, unexpected_keys: Vec<String>) -> LoadedKeys {
        LoadedKeys {
            missing_keys,
            unexpected_keys,
        }
    }
}

/// The name, shape and dtype of one parameter or buffer of a [`Model`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorInfo {
    /// The name in the model's state dict.
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: DType,
}

impl TensorInfo {
    /// The parameter or buffer `name`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, dtype: DType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            shape,
            dtype,
        }
    }
}

/// A model: named parameters and buffers in, named parameters and buffers out.
///
/// [`StateDictModel`] is a ready one; an adapter for a framework implements the two required
/// methods over the framework's variables (`ckpt-candle`'s `VarMapModel` does for candle).
///
/// ```
/// use ckpt::{shared, Model, StateDict, StateDictModel, Tensor};
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[0.5f32; 6], &[2, 3])?);
/// let model = shared(StateDictModel::new(sd));
/// // The training loop and a checkpointer can both hold `model`.
/// let info = model.lock().unwrap().tensor_info()?;
/// assert_eq!((info[0].name.as_str(), info[0].shape.as_slice()), ("fc.weight", &[2, 3][..]));
/// # Ok::<(), ckpt::Error>(())
/// ```
pub trait Model: Send {
    /// The model's parameters and buffers, in the model's order.
    fn state_dict(&self) -> Result<StateDict>;

    /// Loads `state` non-strictly: every name the model has is taken from `state` when
    /// present; the names that did not match are reported. The checkpointer has already
    /// dropped entries whose shape differs from the model's, and entries whose dtype cannot
    /// be loaded into the model's ([`can_cast`](crate::can_cast)), both from
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
    /// (see [`Storage`](crate::Storage#a-map-depends-on-its-file)).
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
    ///
    /// A checkpointer hands over tensors that own their memory, unless
    /// [`Checkpointable::keeps_loaded_tensors`] says they are only read.
    fn load_state_dict(&mut self, state: Value) -> Result<()>;

    /// Whether [`Checkpointable::load_state_dict`] may keep tensors of the state it is given
    /// (in the [`Value`] itself or a clone of a tensor). The default, `true`, is always safe:
    /// a checkpointer then copies every tensor out of the checkpoint file before the call.
    ///
    /// Return `false` when the state's values are only read and copied into types of the
    /// checkpointable's own (`Vec<f32>`, a framework's tensors, numbers), as an optimizer
    /// converting momentum buffers does: a checkpointer then hands over tensors that may be
    /// views of a memory map of the file, valid during the call, and every value is copied
    /// once instead of twice (for an optimizer's state, as large as the model, that halves
    /// its part of a resume). A checkpointable that returns `false` and keeps a view
    /// depends on the file afterwards: reading it dies with `SIGBUS` once the file is
    /// truncated (see [`Storage`](crate::Storage#a-map-depends-on-its-file)).
    ///
    /// ```
    /// use ckpt::{Checkpointable, Value};
    /// /// Momentum buffers as plain vectors.
    /// struct Momentum(Vec<Vec<f32>>);
    /// impl Checkpointable for Momentum {
    ///     fn state_dict(&self) -> ckpt::Result<Value> {
    ///         let tensors = self.0.iter().map(|m| ckpt::Tensor::from_slice(m, &[m.len()]));
    ///         Ok(Value::List(tensors.map(|t| t.map(Value::Tensor)).collect::<ckpt::Result<_>>()?))
    ///     }
    ///     fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
    ///         let Value::List(items) = state else { return Err(ckpt::Error::invalid("not a list")) };
    ///         self.0 = items
    ///             .iter()
    ///             .map(|v| v.as_tensor().ok_or(ckpt::Error::invalid("not a tensor"))?.to_vec::<f32>())
    ///             .collect::<ckpt::Result<_>>()?; // copies: nothing of `state` is kept
    ///         Ok(())
    ///     }
    ///     fn keeps_loaded_tensors(&self) -> bool {
    ///         false
    ///     }
    /// }
    /// ```
    fn keeps_loaded_tensors(&self) -> bool {
        true
    }
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

    /// Deserializing copies every value (a serde type cannot hold a [`crate::Tensor`]).
    fn keeps_loaded_tensors(&self) -> bool {
        false
    }
}

//! Pretrained weights from any checkpoint file ckpt reads, as candle tensors or a
//! `candle_nn::VarBuilder`, in one call.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! // torch (`torch.save`, zip or legacy), Detectron/detectron2 pickles, safetensors:
//! let vb = ckpt_candle::load_var_builder("model_final.pth", DType::F32, &Device::Cpu)?;
//! let fc = candle_nn::linear(16, 4, vb.pp("fc"))?;
//! # Ok::<(), ckpt_candle::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use candle_nn::VarBuilder;
use ckpt::format::flatten_tensors;
use ckpt::{DType, Dict, Error as CkptError, StateDict, Tensor, Value};

use crate::convert::{cast, dtype_to_candle, to_candle};
use crate::error::Result;
use crate::names::list;

/// The entry a checkpoint keeps its model under (detectron2, fvcore and ckpt checkpoints;
/// detectron2 model-zoo pickles).
pub const MODEL_ENTRY: &str = "model";

/// The tensors of [`Pretrained::read`] as candle tensors on `device`, floating-point ones
/// converted to `dtype` (see [`Pretrained::tensors`]).
///
/// ```no_run
/// use candle_core::{DType, Device};
/// let weights = ckpt_candle::load_tensors("model_final.pkl", DType::F32, &Device::Cpu)?;
/// println!("{} tensors", weights.len());
/// # Ok::<(), ckpt_candle::Error>(())
/// ```
pub fn load_tensors(
    path: impl AsRef<Path>,
    dtype: CDType,
    device: &Device,
) -> Result<HashMap<String, CTensor>> {
    Pretrained::read(path)?.tensors(dtype, device)
}

/// A `VarBuilder` over the tensors of [`Pretrained::read`], on `device`, of `dtype` (see
/// [`Pretrained::var_builder`]).
///
/// ```no_run
/// use candle_core::{DType, Device};
///
/// fn main() -> ckpt_candle::Result<()> {
///     // torch.save files, Detectron / detectron2 pickles, safetensors:
///     let vb = ckpt_candle::load_var_builder("model_final.pkl", DType::F32, &Device::Cpu)?;
///     let fc = candle_nn::linear(2048, 1000, vb.pp("fc"))?;
///     // Lightning keeps the model under "state_dict"; a HashMap<String, Tensor> this time:
///     let weights = ckpt_candle::Pretrained::read_entry("last.ckpt", "state_dict")?;
///     let tensors = weights.tensors(DType::BF16, &Device::Cpu)?;
///     Ok(())
/// }
/// ```
pub fn load_var_builder(
    path: impl AsRef<Path>,
    dtype: CDType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    Pretrained::read(path)?.var_builder(dtype, device)
}

/// A value of the checkpoint that is not among the tensors, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its name (nested keys joined with `.`).
    pub name: String,
    /// Why it was left out: what it is (`str`, `int`, `complex64 tensor`, ...).
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.reason)
    }
}

/// The tensors of a checkpoint's model, read from a file and not yet on a device.
///
/// Which part of the checkpoint is the model: the `model` entry when the checkpoint has one
/// that is a dict (detectron2, fvcore and ckpt checkpoints, detectron2 model-zoo pickles),
/// otherwise the whole file (a `torch.save(model.state_dict())` file, safetensors). Another
/// entry is picked by name with [`Pretrained::read_entry`] (`state_dict` for Lightning,
/// `blobs` for Detectron1 pickles, `model_state` for pycls). Nested dicts are flattened with
/// `.`-joined names.
///
/// Tensors and numpy arrays are taken. Everything else is skipped and listed by
/// [`Pretrained::skipped`] (and in a `tracing` warning): non-tensor values (numbers,
/// strings, optimizer state in a list, ...) and tensors of a dtype candle cannot hold
/// without loss (uint64, complex, fp8 other than e4m3fn). Bool, int8 and uint16 tensors are
/// widened to u8, i16 and u32, which hold every value.
///
/// ```no_run
/// use candle_core::{DType, Device};
/// use ckpt_candle::Pretrained;
/// let weights = Pretrained::read_entry("epoch=9.ckpt", "state_dict")?; // a Lightning file
/// for skipped in weights.skipped() {
///     println!("not a tensor: {skipped}");
/// }
/// let vb = weights.var_builder(DType::BF16, &Device::Cpu)?;
/// # Ok::<(), ckpt_candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pretrained {
    entry: Option<String>,
    tensors: StateDict,
    skipped: Vec<Skipped>,
}

impl Pretrained {
    /// Reads `path` (any format ckpt reads, detected from its content) and takes its
    /// `model` entry, or the whole file when it has none.
    pub fn read(path: impl AsRef<Path>) -> Result<Pretrained> {
        let path = path.as_ref();
        let checkpoint = ckpt::format::load(path)?;
        Ok(Pretrained::select(&checkpoint, None).map_err(|e| e.in_file(path))?)
    }

    /// Reads `path` and takes the entry `entry` (an error names the entries the file has
    /// when it lacks this one).
    pub fn read_entry(path: impl AsRef<Path>, entry: &str) -> Result<Pretrained> {
        let path = path.as_ref();
        let checkpoint = ckpt::format::load(path)?;
        Ok(Pretrained::select(&checkpoint, Some(entry)).map_err(|e| e.in_file(path))?)
    }

    /// The model of a checkpoint already read: the entry `entry`, or with `None` the
    /// `model` entry when there is one, else the whole checkpoint.
    pub fn from_checkpoint(checkpoint: &Value, entry: Option<&str>) -> Result<Pretrained> {
        Ok(Pretrained::select(checkpoint, entry)?)
    }

    fn select(checkpoint: &Value, entry: Option<&str>) -> ckpt::Result<Pretrained> {
        let (entry, model) = model_value(checkpoint, entry)?;
        let place = entry
            .as_deref()
            .map_or("the checkpoint".to_string(), |e| format!("entry '{e}'"));
        let (mut tensors, others) = flatten_tensors(model);
        let mut skipped: Vec<Skipped> = others
            .into_iter()
            .map(|(name, value)| Skipped {
                reason: match value.as_tensor() {
                    Some(_) => "a tensor whose joined name another tensor has".into(),
                    None => value.type_name(),
                },
                name,
            })
            .collect();
        tensors.retain(|name, t| match candle_form(t.dtype()) {
            Some(_) => true,
            None => {
                skipped.push(Skipped {
                    name: name.to_string(),
                    reason: format!("{} tensor: candle has no such dtype", t.dtype()),
                });
                false
            }
        });
        if tensors.is_empty() {
            return Err(CkptError::invalid(format!(
                "no tensors in {place} (it holds {}){}",
                describe(model),
                match entry {
                    None => "; pick the entry that holds the model with Pretrained::read_entry",
                    Some(_) => "",
                }
            )));
        }
        tracing::info!("{} tensors from {place}", tensors.len());
        if !skipped.is_empty() {
            tracing::warn!(
                "{} values of {place} are not tensors candle can hold and are skipped: {}",
                skipped.len(),
                list(skipped.iter().map(ToString::to_string))
            );
        }
        tensors.set_metadata(None);
        Ok(Pretrained {
            entry,
            tensors,
            skipped,
        })
    }

    /// The entry the tensors come from (`None`: the whole checkpoint).
    pub fn entry(&self) -> Option<&str> {
        self.entry.as_deref()
    }

    /// The tensors' names, in the file's order (for a torch state dict, the order of
    /// `model.state_dict()`; see [`crate::ParamOrder`]).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys()
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors (never true for a value [`Pretrained::read`] returns).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// What was left out, in the file's order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The tensors as ckpt tensors (views of the file while it is memory-mapped), for
    /// [`crate::VarMapModel::load_non_strict`] or [`ckpt::Model::load_state_dict`], which
    /// copy them into the model's variables.
    pub fn state_dict(&self) -> &StateDict {
        &self.tensors
    }

    /// The tensors as candle tensors on `device`. Floating-point tensors are converted to
    /// `dtype`; integer tensors keep their dtype (bool, int8 and uint16 widened, see
    /// [`Pretrained`]). Each tensor is copied once from the file into memory candle owns,
    /// so the tensors do not depend on the file afterwards.
    pub fn tensors(&self, dtype: CDType, device: &Device) -> Result<HashMap<String, CTensor>> {
        let mut out = HashMap::with_capacity(self.tensors.len());
        for (name, tensor) in self.tensors.iter() {
            let converted = to_candle_as(tensor, dtype, device)
                .map_err(|e| CkptError::from(e).in_entry(name))?;
            out.insert(name.to_string(), converted);
        }
        Ok(out)
    }

    /// A `VarBuilder` over [`Pretrained::tensors`]: `vb.get(shape, name)` checks the shape
    /// and returns the tensor as `dtype` on `device`.
    pub fn var_builder(&self, dtype: CDType, device: &Device) -> Result<VarBuilder<'static>> {
        Ok(VarBuilder::from_tensors(
            self.tensors(dtype, device)?,
            dtype,
            device,
        ))
    }
}

/// The entry's name and value: `entry` (which must exist and be a dict), or the `model`
/// entry when it is a dict, or the whole checkpoint.
fn model_value<'a>(
    checkpoint: &'a Value,
    entry: Option<&str>,
) -> ckpt::Result<(Option<String>, &'a Value)> {
    let Some(top) = checkpoint.as_dict() else {
        return Err(CkptError::format(format!(
            "expected the checkpoint to be a dict, found a {}",
            checkpoint.type_name()
        )));
    };
    match entry {
        Some(name) => match top.get(name) {
            Some(value @ Value::Dict(_)) => Ok((Some(name.to_string()), value)),
            Some(other) => Err(CkptError::key(
                name,
                format!("expected a dict of tensors, found a {}", other.type_name()),
            )),
            None => Err(CkptError::missing_key(name, top.keys())),
        },
        None => match top.get(MODEL_ENTRY) {
            Some(value @ Value::Dict(_)) => Ok((Some(MODEL_ENTRY.to_string()), value)),
            _ => Ok((None, checkpoint)),
        },
    }
}

/// The candle dtype a tensor of `dtype` becomes: its own, or a wider one that holds every
/// value; `None` when candle has none.
fn candle_form(dtype: DType) -> Option<CDType> {
    dtype_to_candle(dtype).or(match dtype {
        DType::Bool => Some(CDType::U8),
        DType::Int8 => Some(CDType::I16),
        DType::UInt16 => Some(CDType::U32),
        _ => None,
    })
}

/// `tensor` on `device`, a float one converted to `dtype`.
fn to_candle_as(tensor: &Tensor, dtype: CDType, device: &Device) -> Result<CTensor> {
    let converted = match tensor.dtype() {
        DType::Bool => widen(tensor.to_vec::<bool>()?, u8::from, tensor, device)?,
        DType::Int8 => widen(tensor.to_vec::<i8>()?, i16::from, tensor, device)?,
        DType::UInt16 => widen(tensor.to_vec::<u16>()?, u32::from, tensor, device)?,
        _ => to_candle(tensor, device)?,
    };
    if tensor.dtype().is_float() && converted.dtype() != dtype {
        cast(&converted, dtype)
    } else {
        Ok(converted)
    }
}

fn widen<T, U: candle_core::WithDType>(
    values: Vec<T>,
    to: impl Fn(T) -> U,
    like: &Tensor,
    device: &Device,
) -> Result<CTensor> {
    let values: Vec<U> = values.into_iter().map(to).collect();
    Ok(CTensor::from_vec(values, like.shape(), device)?)
}

/// The keys of a dict, for an error message.
fn entries(top: &Dict) -> String {
    if top.is_empty() {
        return "no entries".into();
    }
    let keys = top
        .iter()
        .map(|(k, v)| format!("'{k}' ({})", v.type_name()));
    format!("entries {}", list(keys))
}

/// What a value holds, for an error message.
fn describe(value: &Value) -> String {
    match value.as_dict() {
        Some(d) => entries(d),
        None => format!("a {}", value.type_name()),
    }
}

//! A serde bridge between Rust types and [`Value`]s: [`to_value`] and [`from_value`].

mod de;
mod error;
mod ser;

use serde::de::DeserializeOwned;
use serde::ser::Serialize;

use crate::error::Result;
use crate::value::Value;

use de::ValueDeserializer;
use error::PathError;
use ser::ValueSerializer;

/// Converts any `Serialize` value into a [`Value`] torch can load; [`from_value`] reads any
/// `DeserializeOwned` type back from a [`Value`], including one Python wrote.
///
/// This is how non-tensor training state (an LR scheduler, a data-loader position, RNG state,
/// optimizer hyper-parameters) is stored in a checkpoint with one derive.
///
/// | Rust (serde data model)      | Python value                                            |
/// |------------------------------|---------------------------------------------------------|
/// | struct, map with string keys | `dict` with `str` keys, in field order                  |
/// | map with other keys          | `dict` keeping `int` (tuple, ...) keys, as in optimizer `state` |
/// | `Vec`, sequence              | `list`                                                  |
/// | tuple, tuple struct          | `tuple`                                                 |
/// | `()`, unit struct, `None`    | `None`                                                  |
/// | `Some(x)`, newtype struct    | `x`                                                     |
/// | integers                     | `int` (`u64`/`u128` above `i64::MAX` too)               |
/// | `f32`, `f64`                 | `float`                                                 |
/// | `char`, `String`             | `str`                                                   |
/// | bytes (`serde_bytes`)        | `bytes`                                                 |
/// | unit enum variant            | `"Variant"`                                             |
/// | other enum variants          | `{"Variant": content}` (serde's external tagging)       |
///
/// Reading is lenient where Python is: an `int` is accepted where a float is expected
/// (`weight_decay: 0`), a `tuple`, `list`, `set` or `torch.Size` where a sequence is expected,
/// any `dict` kind (`OrderedDict` included) where a map or struct is expected, string and int
/// keys for one another (as Python's `json` converts them), and a 0-d tensor or numpy scalar
/// (Adam's `step`, `np.float64(0.1)`) where a number is expected. Dict entries that a struct
/// does not name are ignored unless the struct says `#[serde(deny_unknown_fields)]`.
///
/// Tensors are not serde values: a struct cannot hold a `Tensor` field through this bridge.
/// State with tensors (model weights, an optimizer's momentum buffers) goes through the
/// [`Checkpointable`](crate::Checkpointable) trait, which produces and consumes a [`Value`] directly; the
/// non-tensor part of it may still be built with [`to_value`] and read with [`from_value`].
///
/// Errors name the path of the offending entry (`param_groups[0].lr`) and what was expected.
///
/// ```
/// use ckpt::{from_value, to_value};
/// use ckpt::Value;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Scheduler {
///     base_lrs: Vec<f64>,
///     last_epoch: i64,
///     milestones: (u32, u32),
/// }
///
/// let sched = Scheduler { base_lrs: vec![0.02], last_epoch: 7, milestones: (30, 60) };
/// let value = to_value(&sched)?;
/// assert_eq!(value.get("last_epoch").and_then(Value::as_int), Some(7));
/// assert!(matches!(value.get("milestones"), Some(Value::Tuple(_))));
/// assert_eq!(from_value::<Scheduler>(&value)?, sched);
/// # Ok::<(), ckpt::Error>(())
/// ```
///
/// Fails only if the type's `Serialize` impl fails or a map key is not hashable in Python
/// (a list or dict used as a key); the error names the path.
///
/// ```
/// use std::collections::BTreeMap;
/// use ckpt::{to_value, Key, Value};
/// let state: BTreeMap<u32, f64> = [(0, 0.5), (1, 0.25)].into();
/// let Value::Dict(dict) = to_value(&state)? else { unreachable!() };
/// assert!(dict.contains_key(&Key::Int(1)));
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value
        .serialize(ValueSerializer)
        .map_err(PathError::into_error)
}

/// Reads a `DeserializeOwned` type from a [`Value`], accepting what Python would plausibly
/// have written (see [`to_value`] for the mapping and what is accepted).
///
/// On a mismatch the error is an [`Error::Key`](crate::Error::Key) naming the path (`param_groups[0].lr`) and
/// what was expected and found; an error at the top level is an [`Error::Invalid`](crate::Error::Invalid).
///
/// ```
/// use ckpt::{from_value, Dict, Value};
/// #[derive(serde::Deserialize)]
/// struct Hyper { lr: f64, weight_decay: f64 }
///
/// let mut d = Dict::ordered(); // as torch would give it
/// d.insert("lr", Value::Float(0.1));
/// d.insert("weight_decay", Value::Int(0));
/// let hyper: Hyper = from_value(&Value::Dict(d))?;
/// assert_eq!(hyper.weight_decay, 0.0);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    T::deserialize(ValueDeserializer(value)).map_err(PathError::into_error)
}

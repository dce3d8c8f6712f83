//! The layout of `torch.optim.Optimizer.state_dict()`, written and read for one parameter
//! group (`docs/formats.md#optimizer-state` in the repository):
//!
//! ```text
//! {'state': {0: {...per-parameter tensors...}, 1: {...}},      # int keys = parameter index
//!  'param_groups': [{...hyperparameters..., 'params': [0, 1]}]}
//! ```
//!
//! Loading follows `Optimizer.load_state_dict`: the saved group's `params` list is matched
//! to this optimizer's parameters by position, and its hyperparameters replace ours.

use std::collections::HashMap;

use candle_core::{Device, Tensor as CTensor, Var};
use ckpt::{Dict, Error, Key, Result, Value};

use super::Params;
use crate::convert::{cast, to_candle, to_ckpt};

/// `{'state': state, 'param_groups': [group + {'params': [0..n]}]}`.
pub(crate) fn optimizer_state(
    per_param: Vec<(usize, Dict)>,
    hyperparameters: Vec<(&str, Value)>,
    n_params: usize,
) -> Result<Value> {
    let mut state = Dict::new();
    for (index, entry) in per_param {
        state.insert(index_key(index)?, Value::Dict(entry));
    }
    let mut group = Dict::new();
    for (name, value) in hyperparameters {
        group.insert(name, value);
    }
    let params = (0..n_params)
        .map(|i| Ok(Value::Int(index_key(i)?)))
        .collect::<Result<Vec<_>>>()?;
    group.insert("params", Value::List(params));
    let mut top = Dict::new();
    top.insert("state", Value::Dict(state));
    top.insert("param_groups", Value::List(vec![Value::Dict(group)]));
    Ok(Value::Dict(top))
}

fn index_key(index: usize) -> Result<i64> {
    i64::try_from(index).map_err(|_| Error::invalid(format!("parameter index {index} too large")))
}

/// A loaded optimizer state: the one parameter group's dict, and each parameter's state
/// (by position in this optimizer), if the file has one.
pub(crate) struct Loaded<'a> {
    pub group: &'a Dict,
    pub per_param: Vec<Option<&'a Dict>>,
}

/// Reads `value` as the state dict of an optimizer over `n_params` parameters.
pub(crate) fn read_optimizer_state(value: &Value, n_params: usize) -> Result<Loaded<'_>> {
    let top = value.as_dict().ok_or_else(|| {
        Error::invalid(format!(
            "expected an optimizer state dict, found a {}",
            value.type_name()
        ))
    })?;
    let groups = match top.get("param_groups") {
        Some(Value::List(groups)) | Some(Value::Tuple(groups)) => groups,
        Some(other) => {
            return Err(Error::key(
                "param_groups",
                format!("expected a list, found a {}", other.type_name()),
            ))
        }
        None => return Err(Error::missing_key("param_groups", top.keys())),
    };
    let [group] = groups.as_slice() else {
        return Err(Error::unsupported(format!(
            "the optimizer state has {} parameter groups; this optimizer has one",
            groups.len()
        )));
    };
    let group = group.as_dict().ok_or_else(|| {
        Error::key(
            "param_groups[0]",
            format!("expected a dict, found a {}", group.type_name()),
        )
    })?;
    let ids: Vec<Key> = match group.get("params") {
        Some(Value::List(ids)) | Some(Value::Tuple(ids)) => ids
            .iter()
            .map(|id| match id {
                Value::Int(i) => Ok(Key::Int(*i)),
                other => Err(Error::key(
                    "param_groups[0].params",
                    format!("expected int parameter ids, found a {}", other.type_name()),
                )),
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(Error::key(
                "param_groups[0].params",
                "expected a list of ints",
            ))
        }
    };
    if ids.len() != n_params {
        return Err(Error::invalid(format!(
            "loaded state dict contains a parameter group of {} parameters; this optimizer has {n_params}",
            ids.len()
        )));
    }
    let state = match top.get("state") {
        Some(Value::Dict(state)) => state,
        Some(other) => {
            return Err(Error::key(
                "state",
                format!("expected a dict, found a {}", other.type_name()),
            ))
        }
        None => return Err(Error::missing_key("state", top.keys())),
    };
    let per_param = ids
        .iter()
        .map(|id| match state.get_key(id) {
            None => Ok(None),
            Some(Value::Dict(entry)) => Ok(Some(entry)),
            Some(other) => Err(Error::key(
                format!("state[{id}]"),
                format!("expected a dict, found a {}", other.type_name()),
            )),
        })
        .collect::<Result<_>>()?;
    Ok(Loaded { group, per_param })
}

/// A number hyperparameter of the group.
pub(crate) fn number(group: &Dict, name: &str) -> Result<f64> {
    let value = group
        .get(name)
        .ok_or_else(|| Error::missing_key(format!("param_groups[0].{name}"), group.keys()))?;
    match value {
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        other => other.as_float().ok_or_else(|| {
            Error::key(
                format!("param_groups[0].{name}"),
                format!("expected a number, found a {}", other.type_name()),
            )
        }),
    }
}

/// A pair of numbers (`betas`).
pub(crate) fn pair(group: &Dict, name: &str) -> Result<(f64, f64)> {
    let key = format!("param_groups[0].{name}");
    match group.get(name) {
        Some(Value::Tuple(items)) | Some(Value::List(items)) => match items.as_slice() {
            [a, b] => match (a.as_float(), b.as_float()) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err(Error::key(key, "expected two numbers")),
            },
            _ => Err(Error::key(
                key,
                format!("expected two numbers, found {}", items.len()),
            )),
        },
        Some(other) => Err(Error::key(
            key,
            format!("expected a pair of numbers, found a {}", other.type_name()),
        )),
        None => Err(Error::missing_key(key, group.keys())),
    }
}

/// A flag of the group; absent means `false` (older torch versions lack some flags).
pub(crate) fn flag(group: &Dict, name: &str) -> Result<bool> {
    match group.get(name) {
        None | Some(Value::None) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Int(i)) => Ok(*i != 0),
        Some(other) => Err(Error::key(
            format!("param_groups[0].{name}"),
            format!("expected a bool, found a {}", other.type_name()),
        )),
    }
}

/// Refuses a flag this optimizer does not implement when it is set.
pub(crate) fn require_unset(group: &Dict, name: &str) -> Result<()> {
    if flag(group, name)? {
        return Err(Error::unsupported(format!(
            "param_groups[0].{name} is True; this optimizer implements only {name}=False"
        )));
    }
    Ok(())
}

/// Refuses a state whose tensors do not have their parameters' shapes, saying why that
/// usually happens: the parameters are numbered in another order than in the run that saved
/// the state (`varmap.all_vars()` lists a hash map, whose order changes from process to
/// process). `fields` are the per-parameter tensors of the state, `optimizer` the type name.
pub(crate) fn check_state_shapes(
    loaded: &Loaded<'_>,
    params: &Params,
    fields: &[&str],
    optimizer: &str,
) -> Result<()> {
    // (index, field, shape in the state) of every state tensor, and the first mismatch.
    let mut state_shapes: Vec<&[usize]> = Vec::new();
    let mut first_mismatch = None;
    let mut mismatches = 0usize;
    for (index, (entry, var)) in loaded.per_param.iter().zip(&params.vars).enumerate() {
        let Some(entry) = entry else { continue };
        let mut shape_of_entry = None;
        for field in fields {
            let Some(tensor) = entry.get(field).and_then(Value::as_tensor) else {
                continue;
            };
            shape_of_entry.get_or_insert(tensor.shape());
            if tensor.shape() != var.dims() {
                mismatches += 1;
                first_mismatch.get_or_insert((index, *field, tensor.shape(), var.dims()));
            }
        }
        state_shapes.extend(shape_of_entry);
    }
    let Some((index, field, found, expected)) = first_mismatch else {
        return Ok(());
    };
    let parameter = match params.labels.get(index) {
        Some(name) if params.named => format!("parameter {index} ({name})"),
        _ => format!("parameter {index}"),
    };
    let cause = if is_rearrangement(&state_shapes, &params.vars) {
        "The state holds this optimizer's parameter shapes in another order: its parameters \
         are numbered differently from the run that saved it."
    } else {
        "Either the model changed since the state was saved, or its parameters are numbered \
         differently from the run that saved it."
    };
    let fix = if params.named {
        "This optimizer numbers them in its VarMapModel's order: give the order of the run \
         that saved the state with VarMapModel::with_order or with_param_order."
            .to_string()
    } else {
        format!(
            "An optimizer built from `varmap.all_vars()` numbers them in a hash-map order that \
             changes from process to process: build it with `{optimizer}::from_model(&model, \
             config)`, which numbers them in the VarMapModel's order, the same in every process \
             (torch's order with VarMapModel::with_order or with_param_order)."
        )
    };
    Err(Error::key(
        format!("state[{index}].{field}"),
        format!(
            "shape {found:?} in the state, {expected:?} for {parameter} ({mismatches} state \
             tensors do not fit their parameter). {cause} {fix}"
        ),
    ))
}

/// Whether every shape of `state_shapes` can be given a parameter of that shape, each
/// parameter used once: the state fits the parameters in some other order.
fn is_rearrangement(state_shapes: &[&[usize]], vars: &[Var]) -> bool {
    let mut available: HashMap<&[usize], usize> = HashMap::new();
    for var in vars {
        *available.entry(var.dims()).or_default() += 1;
    }
    state_shapes
        .iter()
        .all(|shape| match available.get_mut(shape) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
}

/// A per-parameter state tensor for parameter `index`, as a candle tensor with the
/// parameter's shape, dtype and device (torch casts optimizer state to the parameter's
/// dtype and device on load, too).
pub(crate) fn param_tensor(entry: &Dict, name: &str, index: usize, param: &Var) -> Result<CTensor> {
    let key = format!("state[{index}].{name}");
    let value = entry
        .get(name)
        .ok_or_else(|| Error::missing_key(&key, entry.keys()))?;
    let tensor = value.as_tensor().ok_or_else(|| {
        Error::key(
            &key,
            format!("expected a tensor, found a {}", value.type_name()),
        )
    })?;
    if tensor.shape() != param.dims() {
        return Err(Error::shape_mismatch(param.dims(), tensor.shape()).in_entry(key));
    }
    to_candle(tensor, param.device())
        .and_then(|t| cast(&t, param.dtype()))
        .map_err(|e| ckpt::Error::from(e).in_entry(key))
}

/// torch's `step`: a 0-d tensor (float32 in current torch) or, from old torch, a number.
/// Must be a whole number ≥ 0.
pub(crate) fn step_count(entry: &Dict, index: usize) -> Result<u64> {
    let key = format!("state[{index}].step");
    let value = entry
        .get("step")
        .ok_or_else(|| Error::missing_key(&key, entry.keys()))?;
    let step = match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        other => match other.as_tensor() {
            Some(t) if t.numel() == 1 => {
                let c = to_candle(t, &Device::Cpu)
                    .and_then(|c| cast(&c, candle_core::DType::F64))
                    .and_then(|c| Ok(c.flatten_all()?.to_vec1::<f64>()?))
                    .map_err(|e| ckpt::Error::from(e).in_entry(&key))?;
                c.first().copied().unwrap_or(f64::NAN)
            }
            _ => {
                return Err(Error::key(
                    &key,
                    format!(
                        "expected a 0-d tensor or a number, found a {}",
                        other.type_name()
                    ),
                ))
            }
        },
    };
    if !(step >= 0.0 && step.fract() == 0.0 && step < 9.0e15) {
        return Err(Error::key(
            &key,
            format!("expected a whole number of steps, found {step}"),
        ));
    }
    Ok(step as u64)
}

/// torch's `step` value: a 0-d float32 tensor.
pub(crate) fn step_value(step: u64) -> Result<Value> {
    let t = ckpt::Tensor::from_slice(&[step as f32], &[])?;
    Ok(Value::Tensor(t))
}

/// A candle state tensor as a checkpoint value.
pub(crate) fn tensor_value(t: &CTensor) -> Result<Value> {
    Ok(Value::Tensor(to_ckpt(t)?))
}

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

use ckpt::{DType, Dict, Error, Key, Result, Value};

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

/// A per-parameter state tensor of parameter `index`, which must have `shape` (torch's layout).
pub(crate) fn state_tensor<'a>(
    entry: &'a Dict,
    name: &str,
    index: usize,
    shape: &[usize],
) -> Result<&'a ckpt::Tensor> {
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
    if tensor.shape() != shape {
        return Err(Error::key(
            key,
            format!(
                "shape {:?} in the state, {shape:?} for the parameter: the model changed since \
                 the state was saved, or its parameters are in another order",
                tensor.shape()
            ),
        ));
    }
    Ok(tensor)
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
            Some(t) if t.numel() == 1 => t
                .to_owned_as(DType::Float64)
                .and_then(|t| t.to_vec::<f64>())
                .map_err(|e| e.in_entry(&key))?
                .first()
                .copied()
                .unwrap_or(f64::NAN),
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

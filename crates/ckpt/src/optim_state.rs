//! The layout of `torch.optim.Optimizer.state_dict()`, written and read for one parameter
//! group, independent of any tensor framework: the optimizers of the framework adapters
//! (ckpt-candle, ckpt-burn) keep their state in this form, so that PyTorch loads it with
//! `optimizer.load_state_dict` and they load PyTorch's.
//!
//! ```text
//! {'state': {0: {...per-parameter tensors...}, 1: {...}},      # int keys = parameter index
//!  'param_groups': [{...hyperparameters..., 'params': [0, 1]}]}
//! ```
//!
//! Loading follows `Optimizer.load_state_dict`: the saved group's `params` list is matched
//! to this optimizer's parameters by position, and its hyperparameters replace ours.
//!
//! # Example
//!
//! ```
//! use ckpt::optim_state::{optimizer_state, read_optimizer_state, number, state_tensor, step_count, step_value};
//! use ckpt::{Dict, Tensor, Value};
//!
//! # fn main() -> ckpt::Result<()> {
//! // One parameter of two elements, after 3 steps of SGD with momentum.
//! let mut entry = Dict::new();
//! entry.insert("step", step_value(3)?);
//! entry.insert("momentum_buffer", Value::Tensor(Tensor::from_slice(&[0.5f32, -1.0], &[2])?));
//! let saved = optimizer_state(
//!     vec![(0, entry)],
//!     vec![("lr", Value::Float(0.1)), ("momentum", Value::Float(0.9))],
//!     1,
//! )?;
//!
//! let loaded = read_optimizer_state(&saved, 1)?;
//! assert_eq!(number(loaded.group, "lr")?, 0.1);
//! let entry = loaded.per_param[0].expect("parameter 0 has a state");
//! assert_eq!(step_count(entry, 0)?, 3);
//! assert_eq!(state_tensor(entry, "momentum_buffer", 0)?.shape(), &[2]);
//! # Ok(())
//! # }
//! ```

use crate::{DType, Dict, Error, Key, Result, Tensor, Value};

/// The state dict `{'state': state, 'param_groups': [group + {'params': [0..n]}]}` of an
/// optimizer over `n_params` parameters: `per_param` are the parameters that have a state (by
/// index), `hyperparameters` the group's entries, in the order torch writes them.
pub fn optimizer_state(
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
pub struct LoadedState<'a> {
    /// The parameter group: its hyperparameters, read with [`number`], [`pair`], [`flag`].
    pub group: &'a Dict,
    /// Each parameter's state, in this optimizer's order; `None` for a parameter that has
    /// none yet (torch saves no entry for a parameter that has not had a step).
    pub per_param: Vec<Option<&'a Dict>>,
}

/// Reads `value` as the state dict of an optimizer over `n_params` parameters: one parameter
/// group of `n_params` ids, matched to the parameters by position as torch does.
pub fn read_optimizer_state(value: &Value, n_params: usize) -> Result<LoadedState<'_>> {
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
    Ok(LoadedState { group, per_param })
}

/// A number hyperparameter of the group.
pub fn number(group: &Dict, name: &str) -> Result<f64> {
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
pub fn pair(group: &Dict, name: &str) -> Result<(f64, f64)> {
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
pub fn flag(group: &Dict, name: &str) -> Result<bool> {
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
pub fn require_unset(group: &Dict, name: &str) -> Result<()> {
    if flag(group, name)? {
        return Err(Error::unsupported(format!(
            "param_groups[0].{name} is True; this optimizer implements only {name}=False"
        )));
    }
    Ok(())
}

/// The per-parameter state tensor `name` of parameter `index` (`state[index].name`): an
/// error names that key when it is missing or is not a tensor. Its shape is the caller's to
/// check against the parameter's.
pub fn state_tensor<'a>(entry: &'a Dict, name: &str, index: usize) -> Result<&'a Tensor> {
    let key = format!("state[{index}].{name}");
    let value = entry
        .get(name)
        .ok_or_else(|| Error::missing_key(&key, entry.keys()))?;
    value.as_tensor().ok_or_else(|| {
        Error::key(
            key,
            format!("expected a tensor, found a {}", value.type_name()),
        )
    })
}

/// torch's `step`: a 0-d tensor (float32 in current torch) or, from old torch, a number.
/// Must be a whole number ≥ 0.
pub fn step_count(entry: &Dict, index: usize) -> Result<u64> {
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
pub fn step_value(step: u64) -> Result<Value> {
    let t = Tensor::from_slice(&[step as f32], &[])?;
    Ok(Value::Tensor(t))
}

/// The hyperparameters of torch's `AdamW` parameter group (`Adam` with
/// `decoupled_weight_decay=True` reads the same); the flags this layout cannot follow
/// (`amsgrad`, `maximize`) are written `False` and refused when set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWGroup {
    /// `lr`.
    pub lr: f64,
    /// `betas[0]`.
    pub beta1: f64,
    /// `betas[1]`.
    pub beta2: f64,
    /// `eps`.
    pub eps: f64,
    /// `weight_decay` (decoupled).
    pub weight_decay: f64,
}

impl AdamWGroup {
    /// The group's entries, in the order torch writes them (without `params`), for
    /// [`optimizer_state`].
    pub fn entries(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("lr", Value::Float(self.lr)),
            (
                "betas",
                Value::Tuple(vec![Value::Float(self.beta1), Value::Float(self.beta2)]),
            ),
            ("eps", Value::Float(self.eps)),
            ("weight_decay", Value::Float(self.weight_decay)),
            ("amsgrad", Value::Bool(false)),
            ("maximize", Value::Bool(false)),
            ("foreach", Value::None),
            ("capturable", Value::Bool(false)),
            ("differentiable", Value::Bool(false)),
            ("fused", Value::None),
            ("decoupled_weight_decay", Value::Bool(true)),
        ]
    }

    /// Reads a loaded group; refuses `amsgrad`, `maximize` and torch's `Adam` with L2 decay
    /// (`decoupled_weight_decay=False`).
    pub fn read(group: &Dict) -> Result<AdamWGroup> {
        require_unset(group, "amsgrad")?;
        require_unset(group, "maximize")?;
        if group.get("decoupled_weight_decay").is_some() && !flag(group, "decoupled_weight_decay")?
        {
            return Err(Error::unsupported(
                "param_groups[0].decoupled_weight_decay is False (torch's Adam with L2 \
                 decay); this optimizer is AdamW",
            ));
        }
        let (beta1, beta2) = pair(group, "betas")?;
        Ok(AdamWGroup {
            lr: number(group, "lr")?,
            beta1,
            beta2,
            eps: number(group, "eps")?,
            weight_decay: number(group, "weight_decay")?,
        })
    }
}

/// The hyperparameters of torch's `SGD` parameter group; `maximize` is written `False` and
/// refused when set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdGroup {
    /// `lr`.
    pub lr: f64,
    /// `momentum`.
    pub momentum: f64,
    /// `dampening`.
    pub dampening: f64,
    /// `weight_decay` (an L2 penalty added to the gradient).
    pub weight_decay: f64,
    /// `nesterov`.
    pub nesterov: bool,
}

impl SgdGroup {
    /// The group's entries, in the order torch writes them (without `params`), for
    /// [`optimizer_state`].
    pub fn entries(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("lr", Value::Float(self.lr)),
            ("momentum", Value::Float(self.momentum)),
            ("dampening", Value::Float(self.dampening)),
            ("weight_decay", Value::Float(self.weight_decay)),
            ("nesterov", Value::Bool(self.nesterov)),
            ("maximize", Value::Bool(false)),
            ("foreach", Value::None),
            ("differentiable", Value::Bool(false)),
            ("fused", Value::None),
        ]
    }

    /// Reads a loaded group; refuses `maximize`.
    pub fn read(group: &Dict) -> Result<SgdGroup> {
        require_unset(group, "maximize")?;
        Ok(SgdGroup {
            lr: number(group, "lr")?,
            momentum: number(group, "momentum")?,
            dampening: number(group, "dampening")?,
            weight_decay: number(group, "weight_decay")?,
            nesterov: flag(group, "nesterov")?,
        })
    }
}

//! The layout of `torch.optim.Optimizer.state_dict()` (`ckpt::optim_state`, shared with the
//! other framework adapters), and what candle's optimizers add to it: state tensors as candle
//! tensors on their parameter's device, and the check that they fit their parameters.

use std::collections::HashMap;

use candle_core::{Tensor as CTensor, Var};
use ckpt::optim_state;
pub(crate) use ckpt::optim_state::{
    optimizer_state, read_optimizer_state, step_count, step_value, LoadedState as Loaded,
};
use ckpt::{Dict, Error, Result, Value};

use super::Params;
use crate::convert::{cast, to_candle, to_ckpt};

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
    let tensor = optim_state::state_tensor(entry, name, index)?;
    if tensor.shape() != param.dims() {
        return Err(Error::shape_mismatch(param.dims(), tensor.shape()).in_entry(key));
    }
    to_candle(tensor, param.device())
        .and_then(|t| cast(&t, param.dtype()))
        .map_err(|e| ckpt::Error::from(e).in_entry(key))
}

/// A candle state tensor as a checkpoint value.
pub(crate) fn tensor_value(t: &CTensor) -> Result<Value> {
    Ok(Value::Tensor(to_ckpt(t)?))
}

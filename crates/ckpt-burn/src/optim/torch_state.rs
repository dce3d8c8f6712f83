//! The layout of `torch.optim.Optimizer.state_dict()` (`ckpt::optim_state`, shared with the
//! other framework adapters), and what burn's optimizers add to it: the shape check of a
//! state tensor against its parameter.

use ckpt::optim_state;
pub(crate) use ckpt::optim_state::{
    number, optimizer_state, read_optimizer_state, step_count, step_value,
};
use ckpt::{Dict, Error, Result};

/// A per-parameter state tensor of parameter `index`, which must have `shape` (torch's layout).
pub(crate) fn state_tensor<'a>(
    entry: &'a Dict,
    name: &str,
    index: usize,
    shape: &[usize],
) -> Result<&'a ckpt::Tensor> {
    let tensor = optim_state::state_tensor(entry, name, index)?;
    if tensor.shape() != shape {
        return Err(Error::key(
            format!("state[{index}].{name}"),
            format!(
                "shape {:?} in the state, {shape:?} for the parameter: the model changed since \
                 the state was saved, or its parameters are in another order",
                tensor.shape()
            ),
        ));
    }
    Ok(tensor)
}

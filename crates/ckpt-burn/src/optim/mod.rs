//! Optimizers for burn modules whose checkpoint state is torch's: [`AdamW`] and [`Sgd`]
//! (with momentum). Both compute what `torch.optim.AdamW` / `torch.optim.SGD` compute and
//! implement [`ckpt::Checkpointable`] with exactly their `state_dict()` layout, so optimizer
//! state moves between a burn run and a PyTorch run.
//!
//! Parameters are numbered as torch numbers `model.parameters()`: the trainable float
//! parameters of the module in its field order (see [`crate::BurnModel`]). Per-parameter
//! state is kept flat in burn's layout and converted to torch's (a `Linear` weight's state
//! transposed) when saved.

mod adamw;
mod sgd;
pub(crate) mod torch_state;

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor as BTensor, TensorData};
use ckpt::{DType, Error, Result};

pub use adamw::{AdamW, AdamWConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::convert::{data_to_ckpt, dtype_to_ckpt, to_burn_data};
use crate::names::{PathStack, TorchNames};
use crate::BurnModel;

/// One trainable parameter of the module, as an optimizer numbers it.
#[derive(Debug, Clone)]
pub(crate) struct ParamSlot {
    pub name: String,
    /// Shape in torch's layout (of the state tensors in a checkpoint).
    pub shape: Vec<usize>,
    /// Shape of the burn tensor.
    pub burn_shape: Vec<usize>,
    pub transposed: bool,
    pub dtype: DType,
    pub device: Device,
}

/// The trainable parameters of a module, in torch's numbering.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub slots: Vec<ParamSlot>,
    pub index: HashMap<String, usize>,
    pub names: TorchNames,
}

impl Params {
    pub fn of<M: Module>(model: &BurnModel<M>) -> Result<Params> {
        let mut slots = Vec::new();
        for e in model.entries()? {
            if !e.trainable {
                continue;
            }
            let dtype = dtype_to_ckpt(e.dtype).ok_or_else(|| {
                Error::unsupported(format!("burn dtype {:?}", e.dtype)).in_entry(&e.name)
            })?;
            slots.push(ParamSlot {
                name: e.name,
                shape: e.shape,
                burn_shape: e.burn_shape,
                transposed: e.transposed,
                dtype,
                device: e.device,
            });
        }
        if slots.is_empty() {
            tracing::warn!(
                "the burn module has no trainable parameters (is it on an autodiff device?)"
            );
        }
        let index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Params {
            slots,
            index,
            names: model.names(),
        })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A flat state tensor of parameter `index` as a ckpt tensor in torch's layout.
    pub fn export(&self, index: usize, flat: &BTensor<1>) -> Result<ckpt::Tensor> {
        let slot = &self.slots[index];
        let data = if slot.transposed {
            let [rows, cols] = [slot.burn_shape[0], slot.burn_shape[1]];
            flat.clone().reshape([rows, cols]).transpose().to_data()
        } else {
            flat.to_data()
        };
        let t = data_to_ckpt(data).map_err(|e| e.in_entry(&slot.name))?;
        let bytes = t.try_contiguous_bytes()?.into_owned();
        ckpt::Tensor::from_bytes(t.dtype(), &slot.shape, bytes)
    }

    /// A state tensor in torch's layout (shape already checked) as a flat burn tensor in the
    /// parameter's dtype, on its device.
    pub fn import(&self, index: usize, t: &ckpt::Tensor, key: &str) -> Result<BTensor<1>> {
        let slot = &self.slots[index];
        let data = to_burn_data(t, slot.dtype).map_err(|e| e.in_entry(key))?;
        let numel = t.numel();
        Ok(if slot.transposed {
            BTensor::<2>::from_data(data, &slot.device)
                .transpose()
                .reshape([numel])
        } else {
            let (bytes, _, dtype) = data.into_parts();
            BTensor::<1>::from_data(TensorData::from_bytes(bytes, [numel], dtype), &slot.device)
        })
    }

    /// `module` with every trainable parameter that has a gradient in `grads` replaced by
    /// `update(index, param, grad)`, both flat and without autodiff.
    pub fn apply<M, F>(&self, module: M, grads: &Gradients, update: F) -> M
    where
        M: Module,
        F: FnMut(usize, BTensor<1>, BTensor<1>) -> BTensor<1>,
    {
        let mut mapper = StepMapper {
            path: PathStack::default(),
            params: self,
            grads,
            update,
        };
        module.map(&mut mapper)
    }
}

struct StepMapper<'a, F> {
    path: PathStack,
    params: &'a Params,
    grads: &'a Gradients,
    update: F,
}

impl<F> ModuleMapper for StepMapper<'_, F>
where
    F: FnMut(usize, BTensor<1>, BTensor<1>) -> BTensor<1>,
{
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<BTensor<D>>) -> Param<BTensor<D>> {
        let (name, _) = self.path.param_name(&self.params.names);
        let Some(&index) = self.params.index.get(&name) else {
            return param;
        };
        let Some(grad) = param.val().grad(self.grads) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let numel: usize = dims.iter().product();
        let flat = tensor.inner().reshape([numel]);
        let grad = grad.inner().reshape([numel]);
        let updated = (self.update)(index, flat, grad).reshape(dims);
        let mut value = BTensor::from_inner(updated);
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

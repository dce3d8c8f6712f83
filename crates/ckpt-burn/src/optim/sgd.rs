//! [`Sgd`]: torch's `SGD` (momentum, dampening, nesterov, L2 weight decay) on burn tensors.

use burn::module::Module;
use burn::tensor::Gradients;
use burn::tensor::Tensor as BTensor;
use ckpt::{Checkpointable, Dict, Error, Result, Value};

use super::torch_state as ts;
use super::Params;
use crate::BurnModel;
use ckpt::optim_state::SgdGroup;

/// The hyper-parameters of [`Sgd`], with torch's defaults (but a learning rate to give).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (default 0: plain SGD, no state).
    pub momentum: f64,
    /// Dampening of the momentum (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> SgdConfig {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// With momentum `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> SgdConfig {
        self.momentum = momentum;
        self
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if value.is_nan() || value < 0.0 {
                return Err(Error::invalid(format!("invalid SGD {name}: {value}")));
            }
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        Ok(())
    }
}

/// `torch.optim.SGD` for a burn module, checkpointed in its `state_dict()` layout (a
/// `momentum_buffer` per parameter when momentum is on).
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Tensor};
/// use ckpt_burn::{BurnModel, Sgd, SgdConfig};
/// let device = Device::default().autodiff();
/// let model = BurnModel::new(LinearConfig::new(2, 1).init(&device));
/// let mut sgd = Sgd::from_model(&model, SgdConfig::new(0.1).with_momentum(0.9))?;
/// let loss = model.module().forward(Tensor::<2>::from_floats([[1.0, 2.0]], &device)).sum();
/// let _module = sgd.step(model.module().clone(), &loss.backward());
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    params: Params,
    buffers: Vec<Option<BTensor<1>>>,
}

impl Sgd {
    /// An optimizer over the trainable parameters of `model`, numbered in its order.
    pub fn from_model<M: Module>(model: &BurnModel<M>, config: SgdConfig) -> Result<Sgd> {
        config.validate()?;
        let params = Params::of(model)?;
        let buffers = vec![None; params.len()];
        Ok(Sgd {
            config,
            params,
            buffers,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// One step, as torch's single-tensor SGD computes it.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients) -> M {
        let c = self.config;
        let buffers = &mut self.buffers;
        self.params.apply(module, grads, |index, param, grad| {
            let mut grad = if c.weight_decay != 0.0 {
                grad.add(param.clone().mul_scalar(c.weight_decay))
            } else {
                grad
            };
            if c.momentum != 0.0 {
                let buf = match buffers[index].take() {
                    None => grad.clone(),
                    Some(buf) => buf
                        .mul_scalar(c.momentum)
                        .add(grad.clone().mul_scalar(1.0 - c.dampening)),
                };
                grad = if c.nesterov {
                    grad.add(buf.clone().mul_scalar(c.momentum))
                } else {
                    buf.clone()
                };
                buffers[index] = Some(buf);
            }
            param.add(grad.mul_scalar(-c.lr))
        })
    }
}

impl Checkpointable for Sgd {
    fn state_dict(&self) -> Result<Value> {
        let mut per_param = Vec::new();
        for (index, buf) in self.buffers.iter().enumerate() {
            let Some(buf) = buf else { continue };
            let mut entry = Dict::new();
            entry.insert(
                "momentum_buffer",
                Value::Tensor(self.params.export(index, buf)?),
            );
            per_param.push((index, entry));
        }
        let c = &self.config;
        let group = SgdGroup {
            lr: c.lr,
            momentum: c.momentum,
            dampening: c.dampening,
            weight_decay: c.weight_decay,
            nesterov: c.nesterov,
        };
        ts::optimizer_state(per_param, group.entries(), self.params.len())
    }

    /// Loads torch's `SGD` state; the file's hyper-parameters replace ours.
    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        let loaded = ts::read_optimizer_state(&state, self.params.len())?;
        let group = SgdGroup::read(loaded.group)?;
        let config = SgdConfig {
            lr: group.lr,
            momentum: group.momentum,
            dampening: group.dampening,
            weight_decay: group.weight_decay,
            nesterov: group.nesterov,
        };
        config.validate()?;
        let mut buffers = Vec::with_capacity(self.params.len());
        for (index, entry) in loaded.per_param.iter().enumerate() {
            match entry {
                Some(entry)
                    if !matches!(entry.get("momentum_buffer"), None | Some(Value::None)) =>
                {
                    let shape = &self.params.slots[index].shape;
                    let t = ts::state_tensor(entry, "momentum_buffer", index, shape)?;
                    let key = format!("state[{index}].momentum_buffer");
                    buffers.push(Some(self.params.import(index, t, &key)?));
                }
                _ => buffers.push(None),
            }
        }
        self.config = config;
        self.buffers = buffers;
        Ok(())
    }
}

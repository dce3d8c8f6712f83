//! [`AdamW`]: torch's `AdamW` (decoupled weight decay, no amsgrad) on burn tensors.

use burn::module::Module;
use burn::tensor::Gradients;
use burn::tensor::Tensor as BTensor;
use ckpt::{Checkpointable, Dict, Error, Result, Value};

use super::torch_state as ts;
use super::Params;
use crate::BurnModel;
use ckpt::optim_state::AdamWGroup;

/// The hyper-parameters of [`AdamW`], with torch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (torch's `lr`, default 1e-3).
    pub lr: f64,
    /// `betas[0]` (default 0.9).
    pub beta1: f64,
    /// `betas[1]` (default 0.999).
    pub beta2: f64,
    /// `eps` (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    fn validate(&self) -> Result<()> {
        let checks = [
            ("lr", self.lr, self.lr >= 0.0),
            ("beta1", self.beta1, (0.0..1.0).contains(&self.beta1)),
            ("beta2", self.beta2, (0.0..1.0).contains(&self.beta2)),
            ("eps", self.eps, self.eps >= 0.0),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
        ];
        for (name, value, ok) in checks {
            if !ok {
                return Err(Error::invalid(format!("invalid AdamW {name}: {value}")));
            }
        }
        Ok(())
    }
}

/// One parameter's state.
#[derive(Debug, Clone)]
struct Slot {
    step: u64,
    exp_avg: BTensor<1>,
    exp_avg_sq: BTensor<1>,
}

/// `torch.optim.AdamW` for a burn module, checkpointed in its `state_dict()` layout.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Tensor};
/// use ckpt::Checkpointable;
/// use ckpt_burn::{AdamW, AdamWConfig, BurnModel};
/// let device = Device::default().autodiff();
/// let model = BurnModel::new(LinearConfig::new(2, 1).init(&device));
/// let mut optimizer = AdamW::from_model(&model, AdamWConfig::default())?;
/// let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
/// let loss = model.module().forward(x).sum();
/// let module = optimizer.step(model.module().clone(), &loss.backward());
/// let state = optimizer.state_dict()?;
/// assert!(state.get("state").is_some() && state.get("param_groups").is_some());
/// # let _ = module;
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    params: Params,
    slots: Vec<Option<Slot>>,
}

impl AdamW {
    /// An optimizer over the trainable parameters of `model`, numbered in its order.
    pub fn from_model<M: Module>(model: &BurnModel<M>, config: AdamWConfig) -> Result<AdamW> {
        config.validate()?;
        let params = Params::of(model)?;
        let slots = vec![None; params.len()];
        Ok(AdamW {
            config,
            params,
            slots,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Sets the learning rate (what a torch scheduler does to `param_groups[0]['lr']`).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.len() == 0
    }

    /// One step: `module` with its parameters updated from `grads` (from `loss.backward()`),
    /// as torch's single-tensor AdamW updates them. Parameters without a gradient are left
    /// alone, as torch does.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients) -> M {
        let c = self.config;
        let slots = &mut self.slots;
        self.params.apply(module, grads, |index, param, grad| {
            let slot = slots[index].get_or_insert_with(|| Slot {
                step: 0,
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
            });
            slot.step += 1;
            // Decoupled weight decay first, on the parameter itself.
            let param = if c.weight_decay != 0.0 {
                param.mul_scalar(1.0 - c.lr * c.weight_decay)
            } else {
                param
            };
            slot.exp_avg = lerp(slot.exp_avg.clone(), grad.clone(), 1.0 - c.beta1);
            slot.exp_avg_sq = slot
                .exp_avg_sq
                .clone()
                .mul_scalar(c.beta2)
                .add(grad.clone().mul_scalar(1.0 - c.beta2).mul(grad));
            let step = slot.step as f64;
            let bias_correction1 = 1.0 - c.beta1.powf(step);
            let bias_correction2 = 1.0 - c.beta2.powf(step);
            let step_size = c.lr / bias_correction1;
            let denom = slot
                .exp_avg_sq
                .clone()
                .sqrt()
                .div_scalar(bias_correction2.sqrt())
                .add_scalar(c.eps);
            // torch's addcdiv: (value * exp_avg) / denom.
            param.add(slot.exp_avg.clone().mul_scalar(-step_size).div(denom))
        })
    }
}

/// torch's `lerp(start, end, weight)` with a scalar weight: `start + weight * (end - start)`
/// for `weight < 0.5`, else `end - (end - start) * (1 - weight)`.
fn lerp(start: BTensor<1>, end: BTensor<1>, weight: f64) -> BTensor<1> {
    let diff = end.clone().sub(start.clone());
    if weight.abs() < 0.5 {
        start.add(diff.mul_scalar(weight))
    } else {
        end.sub(diff.mul_scalar(1.0 - weight))
    }
}

impl Checkpointable for AdamW {
    fn state_dict(&self) -> Result<Value> {
        let mut per_param = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let mut entry = Dict::new();
            entry.insert("step", ts::step_value(slot.step)?);
            entry.insert(
                "exp_avg",
                Value::Tensor(self.params.export(index, &slot.exp_avg)?),
            );
            entry.insert(
                "exp_avg_sq",
                Value::Tensor(self.params.export(index, &slot.exp_avg_sq)?),
            );
            per_param.push((index, entry));
        }
        let c = &self.config;
        let group = AdamWGroup {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        };
        ts::optimizer_state(per_param, group.entries(), self.params.len())
    }

    /// Loads torch's `AdamW` (or `Adam` with `decoupled_weight_decay=True`) state: the
    /// hyper-parameters of the file replace ours, as in `Optimizer.load_state_dict`. Nothing
    /// changes when the state is refused.
    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        let loaded = ts::read_optimizer_state(&state, self.params.len())?;
        let group = AdamWGroup::read(loaded.group)?;
        let config = AdamWConfig {
            lr: group.lr,
            beta1: group.beta1,
            beta2: group.beta2,
            eps: group.eps,
            weight_decay: group.weight_decay,
        };
        config.validate()?;
        let mut slots = Vec::with_capacity(self.params.len());
        for (index, entry) in loaded.per_param.iter().enumerate() {
            let Some(entry) = entry else {
                slots.push(None);
                continue;
            };
            let shape = &self.params.slots[index].shape;
            let exp_avg = ts::state_tensor(entry, "exp_avg", index, shape)?;
            let exp_avg_sq = ts::state_tensor(entry, "exp_avg_sq", index, shape)?;
            slots.push(Some(Slot {
                step: ts::step_count(entry, index)?,
                exp_avg: self
                    .params
                    .import(index, exp_avg, &format!("state[{index}].exp_avg"))?,
                exp_avg_sq: self.params.import(
                    index,
                    exp_avg_sq,
                    &format!("state[{index}].exp_avg_sq"),
                )?,
            }));
        }
        self.config = config;
        self.slots = slots;
        Ok(())
    }
}

//! [`AdamW`]: torch's `AdamW` for candle variables, with torch's state-dict layout.

use candle_core::{Tensor as CTensor, Var};
use candle_nn::ParamsAdamW;
use ckpt::optim_state::AdamWGroup;
use ckpt::{Checkpointable, Dict, Value};

use super::torch_state::{self as ts, optimizer_state, read_optimizer_state};
use super::{lerp, scalar_like, Params};
use crate::error::Result;

/// Hyperparameters of [`AdamW`]; the defaults are `torch.optim.AdamW`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (`lr`).
    pub lr: f64,
    /// Decay of the first moment (`betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (`betas[1]`).
    pub beta2: f64,
    /// Added to the denominator (`eps`).
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies the parameter by `1 - lr * weight_decay`.
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The checks of torch's `Adam.__init__`.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.lr >= 0.0, "lr", self.lr),
            (self.eps >= 0.0, "eps", self.eps),
            ((0.0..1.0).contains(&self.beta1), "beta1", self.beta1),
            ((0.0..1.0).contains(&self.beta2), "beta2", self.beta2),
            (self.weight_decay >= 0.0, "weight_decay", self.weight_decay),
        ];
        match checks.iter().find(|(ok, _, _)| !ok) {
            Some((_, name, value)) => {
                Err(ckpt::Error::invalid(format!("invalid AdamW {name}: {value}")).into())
            }
            None => Ok(()),
        }
    }
}

/// The same hyperparameters (`candle_nn::AdamW` computes the same update), for a switch
/// from `candle_nn::AdamW`, whose moments are private and so cannot be checkpointed:
///
/// ```
/// use candle_nn::ParamsAdamW;
/// use ckpt_candle::AdamWConfig;
/// let params = ParamsAdamW { lr: 3e-4, weight_decay: 0.1, ..Default::default() };
/// let config = AdamWConfig::from(params);
/// assert_eq!((config.lr, config.weight_decay, config.beta2), (3e-4, 0.1, 0.999));
/// ```
impl From<ParamsAdamW> for AdamWConfig {
    fn from(p: ParamsAdamW) -> AdamWConfig {
        AdamWConfig {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        }
    }
}

impl From<AdamWConfig> for ParamsAdamW {
    fn from(c: AdamWConfig) -> ParamsAdamW {
        ParamsAdamW {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }
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

/// The state of one parameter: torch's `step`, `exp_avg` and `exp_avg_sq`.
#[derive(Debug, Clone)]
struct ParamState {
    step: u64,
    exp_avg: CTensor,
    exp_avg_sq: CTensor,
}

/// AdamW with decoupled weight decay, computing what torch's single-tensor `AdamW.step`
/// computes (the path torch takes on the CPU by default), with the same operations in the
/// same order, in the parameter's dtype and on its device (torch's kernels fuse some
/// multiply-adds, so results differ by rounding only):
///
/// ```text
/// step += 1
/// param *= 1 - lr * weight_decay
/// exp_avg = lerp(exp_avg, grad, 1 - beta1)
/// exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
/// denom = sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps
/// param += (-lr / (1 - beta1^step)) * exp_avg / denom
/// ```
///
/// Its checkpoint state is `torch.optim.AdamW.state_dict()`: parameter `i` is the `i`-th
/// variable given to [`Optimizer::new`](candle_nn::Optimizer::new) (or of
/// [`VarMapModel::vars`](crate::VarMapModel::vars) for
/// [`AdamW::from_model`]); a parameter gets state at its first step with a gradient.
/// Build it with [`AdamW::from_model`] rather than from `varmap.all_vars()`, whose order
/// changes from process to process (a resume then finds the moments of other parameters).
///
/// It replaces `candle_nn::AdamW`, which computes the same update but keeps its moments
/// private, so its state cannot be saved: `AdamWConfig::from(params_adamw)` takes the same
/// hyperparameters, and the weights agree up to rounding (torch's operation order is kept
/// here). One difference: `candle_nn::AdamW` counts steps for the whole optimizer, torch
/// and this one per parameter, which differs only for parameters that missed a gradient.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{linear, Module, Optimizer, VarBuilder, VarMap};
/// use ckpt::Checkpointable;
/// use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};
/// let varmap = VarMap::new();
/// let fc = linear(2, 1, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("fc"))?;
/// let model = VarMapModel::new(varmap).with_order(["fc.weight", "fc.bias"])?;
/// let mut opt = AdamW::from_model(&model, AdamWConfig { lr: 0.01, ..Default::default() })?;
/// let x = Tensor::new(&[[1f32, 2.]], &Device::Cpu)?;
/// opt.backward_step(&fc.forward(&x)?.sum_all()?)?;
/// let state = opt.state_dict()?;
/// assert!(state.get("state").is_some() && state.get("param_groups").is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AdamW {
    params: Params,
    config: AdamWConfig,
    state: Vec<Option<ParamState>>,
}

// The constructors refuse the hyperparameters torch refuses (negative lr, eps or weight
// decay, betas outside [0, 1)).
torch_optimizer!(AdamW, AdamWConfig, state, "AdamW");

impl AdamW {
    /// How many steps parameter `index` has taken (torch's `state[index]['step']`).
    pub fn step_count(&self, index: usize) -> Option<u64> {
        self.state.get(index)?.as_ref().map(|s| s.step)
    }

    fn step_one(
        config: &AdamWConfig,
        var: &Var,
        slot: &mut Option<ParamState>,
        grad: &CTensor,
    ) -> candle_core::Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = *config;
        let state = match slot {
            Some(state) => state,
            None => slot.insert(ParamState {
                step: 0,
                exp_avg: var.zeros_like()?,
                exp_avg_sq: var.zeros_like()?,
            }),
        };
        state.step += 1;
        let mut param = var.as_tensor().clone();
        if weight_decay != 0.0 {
            param = param.affine(1.0 - lr * weight_decay, 0.0)?;
        }
        let exp_avg = lerp(&state.exp_avg, grad, 1.0 - beta1)?;
        let exp_avg_sq =
            (state.exp_avg_sq.affine(beta2, 0.0)? + grad.affine(1.0 - beta2, 0.0)?.mul(grad)?)?;
        // Python floats, as torch computes them: `beta ** step` with a float step.
        let step = state.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);
        let denom = exp_avg_sq
            .sqrt()?
            .broadcast_div(&scalar_like(bias_correction2_sqrt, &exp_avg_sq)?)?
            .affine(1.0, eps)?;
        let update = exp_avg.affine(-step_size, 0.0)?.div(&denom)?;
        var.set(&(param + update)?)?;
        state.exp_avg = exp_avg;
        state.exp_avg_sq = exp_avg_sq;
        Ok(())
    }
}

impl Checkpointable for AdamW {
    fn state_dict(&self) -> ckpt::Result<Value> {
        let mut per_param = Vec::new();
        for (index, state) in self.state.iter().enumerate() {
            let Some(state) = state else { continue };
            let mut entry = Dict::new();
            entry.insert("step", ts::step_value(state.step)?);
            entry.insert("exp_avg", ts::tensor_value(&state.exp_avg)?);
            entry.insert("exp_avg_sq", ts::tensor_value(&state.exp_avg_sq)?);
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
        optimizer_state(per_param, group.entries(), self.params.len())
    }

    /// Takes the hyperparameters and per-parameter state of `state` (as torch does);
    /// nothing changes unless all of it is valid. Refuses `amsgrad`/`maximize` and a state
    /// without decoupled weight decay (plain `Adam`).
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        let loaded = read_optimizer_state(&state, self.params.len())?;
        ts::check_state_shapes(&loaded, &self.params, &["exp_avg", "exp_avg_sq"], "AdamW")?;
        let group = AdamWGroup::read(loaded.group)?;
        let config = AdamWConfig {
            lr: group.lr,
            beta1: group.beta1,
            beta2: group.beta2,
            eps: group.eps,
            weight_decay: group.weight_decay,
        };
        let mut states = Vec::with_capacity(self.params.len());
        for (index, (entry, param)) in loaded.per_param.iter().zip(&self.params.vars).enumerate() {
            states.push(match entry {
                None => None,
                Some(entry) => Some(ParamState {
                    step: ts::step_count(entry, index)?,
                    exp_avg: ts::param_tensor(entry, "exp_avg", index, param)?,
                    exp_avg_sq: ts::param_tensor(entry, "exp_avg_sq", index, param)?,
                }),
            });
        }
        config.validate()?;
        self.config = config;
        self.state = states;
        Ok(())
    }

    /// The state's tensors are converted into candle tensors (a copy): the checkpointer
    /// need not copy them out of the file first.
    fn keeps_loaded_tensors(&self) -> bool {
        false
    }
}

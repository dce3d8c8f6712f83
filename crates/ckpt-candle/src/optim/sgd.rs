//! [`Sgd`]: torch's `SGD` (momentum, dampening, Nesterov, weight decay) for candle
//! variables, with torch's state-dict layout.

use candle_core::{Tensor as CTensor, Var};
use ckpt::optim_state::SgdGroup;
use ckpt::{Checkpointable, Dict, Value};

use super::torch_state::{self as ts, optimizer_state, read_optimizer_state};
use super::Params;
use crate::error::Result;

/// Hyperparameters of [`Sgd`]; the defaults are `torch.optim.SGD`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (`lr`).
    pub lr: f64,
    /// Momentum factor; 0 keeps no momentum buffers.
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer.
    pub dampening: f64,
    /// L2 penalty added to the gradient (`grad + weight_decay * param`).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and no dampening).
    pub nesterov: bool,
}

impl SgdConfig {
    /// The checks of torch's `SGD.__init__`.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.lr >= 0.0, "lr", self.lr),
            (self.momentum >= 0.0, "momentum", self.momentum),
            (self.weight_decay >= 0.0, "weight_decay", self.weight_decay),
        ];
        if let Some((_, name, value)) = checks.iter().find(|(ok, _, _)| !ok) {
            return Err(ckpt::Error::invalid(format!("invalid SGD {name}: {value}")).into());
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(ckpt::Error::invalid(
                "Nesterov momentum requires a momentum and zero dampening",
            )
            .into());
        }
        Ok(())
    }
}

impl Default for SgdConfig {
    fn default() -> SgdConfig {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// Stochastic gradient descent computing what torch's single-tensor `SGD.step` computes:
///
/// ```text
/// g = grad + weight_decay * param
/// buf = g at the first step, else buf * momentum + (1 - dampening) * g   (if momentum != 0)
/// g = g + momentum * buf if nesterov, else buf                          (if momentum != 0)
/// param += -lr * g
/// ```
///
/// Its checkpoint state is `torch.optim.SGD.state_dict()` (`momentum_buffer` per parameter
/// when momentum is used), parameters numbered as for [`crate::AdamW`].
#[derive(Debug)]
pub struct Sgd {
    params: Params,
    config: SgdConfig,
    momentum_buffers: Vec<Option<CTensor>>,
}

torch_optimizer!(Sgd, SgdConfig, momentum_buffers, "SGD");

impl Sgd {
    fn step_one(
        config: &SgdConfig,
        var: &Var,
        slot: &mut Option<CTensor>,
        grad: &CTensor,
    ) -> candle_core::Result<()> {
        let SgdConfig {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } = *config;
        let param = var.as_tensor();
        let mut g = if weight_decay != 0.0 {
            (grad + param.affine(weight_decay, 0.0)?)?
        } else {
            grad.clone()
        };
        if momentum != 0.0 {
            let buf = match slot.take() {
                None => g.copy()?,
                Some(buf) => (buf.affine(momentum, 0.0)? + g.affine(1.0 - dampening, 0.0)?)?,
            };
            g = if nesterov {
                (&g + buf.affine(momentum, 0.0)?)?
            } else {
                buf.clone()
            };
            *slot = Some(buf);
        }
        var.set(&(param + g.affine(-lr, 0.0)?)?)
    }
}

impl Checkpointable for Sgd {
    fn state_dict(&self) -> ckpt::Result<Value> {
        let mut per_param = Vec::new();
        for (index, buf) in self.momentum_buffers.iter().enumerate() {
            let Some(buf) = buf else { continue };
            let mut entry = Dict::new();
            entry.insert("momentum_buffer", ts::tensor_value(buf)?);
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
        optimizer_state(per_param, group.entries(), self.params.len())
    }

    /// Takes the hyperparameters and momentum buffers of `state` (as torch does); nothing
    /// changes unless all of it is valid. Refuses `maximize`.
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        let loaded = read_optimizer_state(&state, self.params.len())?;
        ts::check_state_shapes(&loaded, &self.params, &["momentum_buffer"], "Sgd")?;
        let group = SgdGroup::read(loaded.group)?;
        let config = SgdConfig {
            lr: group.lr,
            momentum: group.momentum,
            dampening: group.dampening,
            weight_decay: group.weight_decay,
            nesterov: group.nesterov,
        };
        let mut buffers = Vec::with_capacity(self.params.len());
        for (index, (entry, param)) in loaded.per_param.iter().zip(&self.params.vars).enumerate() {
            let buf = match entry {
                Some(entry)
                    if !matches!(entry.get("momentum_buffer"), None | Some(Value::None)) =>
                {
                    Some(ts::param_tensor(entry, "momentum_buffer", index, param)?)
                }
                _ => None,
            };
            buffers.push(buf);
        }
        config.validate()?;
        self.config = config;
        self.momentum_buffers = buffers;
        Ok(())
    }

    /// The state's tensors are converted into candle tensors (a copy): the checkpointer
    /// need not copy them out of the file first.
    fn keeps_loaded_tensors(&self) -> bool {
        false
    }
}

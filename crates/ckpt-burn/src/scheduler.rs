//! [`StepLr`]: torch's `StepLR` learning-rate schedule, checkpointed in its `state_dict()`
//! layout (the `scheduler` entry of a detectron2/fvcore checkpoint).

use ckpt::{Checkpointable, Dict, Error, Result, Value};

use crate::optim::torch_state as ts;

/// `torch.optim.lr_scheduler.StepLR` with one parameter group: the learning rate is
/// `base_lr * gamma ^ (last_epoch / step_size)`. Call [`StepLr::step`] where torch calls
/// `scheduler.step()` and give the optimizer the rate it returns.
///
/// ```
/// use ckpt::Checkpointable;
/// let mut schedule = ckpt_burn::StepLr::new(0.1, 2, 0.5)?;
/// assert_eq!(schedule.lr(), 0.1);
/// schedule.step();
/// assert_eq!(schedule.step(), 0.05);
/// let mut resumed = ckpt_burn::StepLr::new(1.0, 1, 1.0)?;
/// resumed.load_state_dict(schedule.state_dict()?)?;
/// assert_eq!(resumed.lr(), 0.05);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    base_lr: f64,
    step_size: u64,
    gamma: f64,
    last_epoch: u64,
}

impl StepLr {
    /// Starts at `base_lr`, multiplied by `gamma` every `step_size` steps.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<StepLr> {
        if step_size == 0 || !(base_lr >= 0.0 && gamma.is_finite()) {
            return Err(Error::invalid(format!(
                "invalid StepLR: base_lr {base_lr}, step_size {step_size}, gamma {gamma}"
            )));
        }
        Ok(StepLr {
            base_lr,
            step_size,
            gamma,
            last_epoch: 0,
        })
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        let exponent = (self.last_epoch / self.step_size).min(i32::MAX as u64) as i32;
        self.base_lr * self.gamma.powi(exponent)
    }

    /// The number of steps taken (torch's `last_epoch`).
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Advances one step and returns the new learning rate.
    pub fn step(&mut self) -> f64 {
        self.last_epoch += 1;
        self.lr()
    }
}

impl Checkpointable for StepLr {
    fn state_dict(&self) -> Result<Value> {
        let epoch = i64::try_from(self.last_epoch)
            .map_err(|_| Error::invalid("StepLR last_epoch too large"))?;
        let mut d = Dict::new();
        d.insert("step_size", Value::Int(self.step_size as i64));
        d.insert("gamma", Value::Float(self.gamma));
        d.insert("base_lrs", Value::List(vec![Value::Float(self.base_lr)]));
        d.insert("last_epoch", Value::Int(epoch));
        d.insert("_step_count", Value::Int(epoch + 1));
        d.insert("_get_lr_called_within_step", Value::Bool(false));
        d.insert("_last_lr", Value::List(vec![Value::Float(self.lr())]));
        d.insert("_is_initial", Value::Bool(false));
        Ok(Value::Dict(d))
    }

    /// Loads torch's `StepLR` state (one parameter group).
    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        let d = state.as_dict().ok_or_else(|| {
            Error::invalid(format!(
                "expected a StepLR state dict, found a {}",
                state.type_name()
            ))
        })?;
        let step_size = ts::number(d, "step_size")?;
        let gamma = ts::number(d, "gamma")?;
        let last_epoch = ts::number(d, "last_epoch")?;
        let base_lr = match d.get("base_lrs") {
            Some(Value::List(lrs)) | Some(Value::Tuple(lrs)) => match lrs.as_slice() {
                [lr] => lr
                    .as_float()
                    .ok_or_else(|| Error::key("base_lrs", "expected a number"))?,
                _ => {
                    return Err(Error::unsupported(format!(
                        "StepLR state for {} parameter groups; this schedule has one",
                        lrs.len()
                    )))
                }
            },
            _ => return Err(Error::missing_key("base_lrs", d.keys())),
        };
        let whole = |x: f64, name: &str| {
            if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 {
                Ok(x as u64)
            } else {
                Err(Error::key(
                    name,
                    format!("expected a whole number ≥ 0, found {x}"),
                ))
            }
        };
        let mut loaded = StepLr::new(base_lr, whole(step_size, "step_size")?, gamma)?;
        loaded.last_epoch = whole(last_epoch, "last_epoch")?;
        *self = loaded;
        Ok(())
    }
}

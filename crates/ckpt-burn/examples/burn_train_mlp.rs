//! Trains a small burn MLP (ndarray backend) with a PyTorch-compatible AdamW, checkpointing
//! with ckpt; an interrupted run resumes to exactly the weights of an uninterrupted one.
//!
//! ```text
//! cargo run -p ckpt-burn --example burn_train_mlp -- OUTPUT_DIR [--max-iter 300] [--period 25]
//!                                               [--max-to-keep 3] [--stop-at N]
//! ```
//!
//! Kill it (or stop it with `--stop-at N`), run it again: it resumes from
//! `OUTPUT_DIR/last_checkpoint` and prints the same final loss and weight checksum as a run
//! that was never interrupted. The checkpoints are plain `torch.save` files holding the model
//! under torch's names, the optimizer in `torch.optim.AdamW`'s layout and the iteration.
//! (The tests also train it with SGD and a StepLR schedule: [`run_with`], [`Optim`].)

// Also compiled into the tests, which use a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use ckpt::{shared, Checkpointer, Model, StateDict};
use ckpt_burn::{AdamW, AdamWConfig, BurnModel, Sgd, SgdConfig, StepLr};

// The command line, logging and resume-and-train loop of ckpt's own training example.
#[path = "../../ckpt/examples/train/driver.rs"]
mod driver;

pub use driver::{BoxResult, Config, Outcome};

// The network's sizes and its synthetic data, shared with the other framework's example.
#[path = "../../ckpt/examples/train/mlp_data.rs"]
mod mlp_data;

pub use mlp_data::*;

/// The optimizer's hyperparameters (torch's defaults otherwise).
pub fn adamw_config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        weight_decay: 1e-2,
        ..AdamWConfig::default()
    }
}

/// The inputs and targets of the batch trained at `iteration`.
pub fn batch(data: &Data, iteration: u64, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let idx = batch_indices(iteration);
    let x: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data.x[i * IN..(i + 1) * IN].to_vec())
        .collect();
    let y: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data.y[i * OUT..(i + 1) * OUT].to_vec())
        .collect();
    (
        Tensor::from_data(TensorData::new(x, [BATCH, IN]), device),
        Tensor::from_data(TensorData::new(y, [BATCH, OUT]), device),
    )
}

/// `fc2(tanh(fc1(x)))`; torch's `nn.Sequential`-free equivalent has the same state dict.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `IN -> HIDDEN`.
    pub fc1: Linear,
    /// `HIDDEN -> OUT`.
    pub fc2: Linear,
}

impl Mlp {
    /// The network's output.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(self.fc1.forward(x).tanh())
    }
}

/// The network on `device`, with deterministic initial values drawn like torch's default
/// `Linear` init (uniform in ±1/sqrt(fan_in)), in torch's layout and order.
pub fn build_mlp(device: &Device) -> ckpt::Result<BurnModel<Mlp>> {
    let mlp = Mlp {
        fc1: LinearConfig::new(IN, HIDDEN).init(device),
        fc2: LinearConfig::new(HIDDEN, OUT).init(device),
    };
    let mut model = BurnModel::new(mlp);
    let mut rng = SplitMix64(INIT_SEED);
    let mut init = StateDict::new();
    for info in model.tensor_info()? {
        let fan_in = if info.name.starts_with("fc1") {
            IN
        } else {
            HIDDEN
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n: usize = info.shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.next_f32() * bound).collect();
        init.insert(info.name, ckpt::Tensor::from_slice(&values, &info.shape)?);
    }
    model.load_state_dict(init)?;
    Ok(model)
}

/// The mean squared error of `mlp` on inputs `x` and targets `y`.
pub fn mse(mlp: &Mlp, x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let diff = mlp.forward(x) - y;
    (diff.clone() * diff).mean()
}

/// The value of a one-element tensor.
pub fn scalar(t: Tensor<1>) -> f32 {
    t.to_data()
        .try_to_vec::<f32>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f32::NAN)
}

/// FNV-1a over the bits of every weight, in the model's order.
pub fn checksum(model: &BurnModel<Mlp>) -> ckpt::Result<u64> {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (_, t) in model.state_dict()?.iter() {
        for byte in t.contiguous_bytes().iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok(hash)
}

/// Resumes from `save_dir` if it has a checkpoint, then trains up to `max_iter` with a
/// checkpoint every `period` iterations (and `model_final.pth` at the end).
pub fn run(config: &Config) -> BoxResult<Outcome<BurnModel<Mlp>>> {
    run_paced(config, std::time::Duration::ZERO)
}

/// [`run`], pausing `pace` after each iteration (so a test can kill it mid-run).
pub fn run_paced(config: &Config, pace: std::time::Duration) -> BoxResult<Outcome<BurnModel<Mlp>>> {
    Ok(run_with(config, Optim::AdamW, pace)?.0)
}

/// The optimizer a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optim {
    /// AdamW with [`adamw_config`] (what the example runs).
    AdamW,
    /// SGD with momentum ([`sgd_config`]) whose learning rate follows [`step_lr`], stepped
    /// after every iteration as torch's `scheduler.step()` is; the checkpoints hold the
    /// schedule as `scheduler`.
    SgdStepLr,
}

/// SGD's hyperparameters for [`Optim::SgdStepLr`] (torch's defaults otherwise).
pub fn sgd_config() -> SgdConfig {
    SgdConfig::new(5e-2).with_momentum(0.9)
}

/// The schedule of [`Optim::SgdStepLr`]: the rate halves every 10 iterations.
pub fn step_lr() -> ckpt::Result<StepLr> {
    StepLr::new(sgd_config().lr, 10, 0.5)
}

/// Where a run's optimizer ended: its learning rate and, with a schedule, the schedule's
/// step count (torch's `last_epoch`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerEnd {
    /// The learning rate the next step would use.
    pub lr: f64,
    /// The schedule's step count, if there is a schedule.
    pub last_epoch: Option<u64>,
}

/// The optimizer of a run, as the checkpointer shares it.
enum Stepper {
    AdamW(ckpt::Shared<AdamW>),
    Sgd(ckpt::Shared<Sgd>, ckpt::Shared<StepLr>),
}

fn lock<T>(shared: &ckpt::Shared<T>) -> BoxResult<std::sync::MutexGuard<'_, T>> {
    shared.lock().map_err(|_| "lock poisoned".into())
}

impl Stepper {
    fn step(&self, module: Mlp, grads: &burn::tensor::Gradients) -> BoxResult<Mlp> {
        Ok(match self {
            Stepper::AdamW(adamw) => lock(adamw)?.step(module, grads),
            Stepper::Sgd(sgd, schedule) => {
                let mut sgd = lock(sgd)?;
                let module = sgd.step(module, grads);
                sgd.set_lr(lock(schedule)?.step());
                module
            }
        })
    }

    fn end(&self) -> BoxResult<OptimizerEnd> {
        Ok(match self {
            Stepper::AdamW(adamw) => OptimizerEnd {
                lr: lock(adamw)?.config().lr,
                last_epoch: None,
            },
            Stepper::Sgd(sgd, schedule) => OptimizerEnd {
                lr: lock(sgd)?.config().lr,
                last_epoch: Some(lock(schedule)?.last_epoch()),
            },
        })
    }
}

/// [`run_paced`] with optimizer `optim`; also returns where the optimizer ended.
pub fn run_with(
    config: &Config,
    optim: Optim,
    pace: std::time::Duration,
) -> BoxResult<(Outcome<BurnModel<Mlp>>, OptimizerEnd)> {
    let device = Device::default().autodiff();
    let data = synthetic_data();
    let model = build_mlp(&device)?;
    let stepper = match optim {
        Optim::AdamW => Stepper::AdamW(shared(AdamW::from_model(&model, adamw_config())?)),
        Optim::SgdStepLr => Stepper::Sgd(
            shared(Sgd::from_model(&model, sgd_config())?),
            shared(step_lr()?),
        ),
    };
    let model = shared(model);

    let mut checkpointer = Checkpointer::new(model.clone(), &config.save_dir);
    match &stepper {
        Stepper::AdamW(adamw) => checkpointer.add_checkpointable("optimizer", adamw.clone())?,
        Stepper::Sgd(sgd, schedule) => {
            checkpointer.add_checkpointable("optimizer", sgd.clone())?;
            checkpointer.add_checkpointable("scheduler", schedule.clone())?;
        }
    }
    let progress = driver::train(config, checkpointer, |iteration| {
        let (x, y) = batch(&data, iteration, &device);
        let mut model = lock(&model)?;
        let module = model.module().clone();
        let loss = mse(&module, x, y);
        let grads = loss.backward();
        model.set_module(stepper.step(module, &grads)?);
        std::thread::sleep(pace);
        Ok(scalar(loss))
    })?;
    let model = lock(&model)?.clone();
    let x = Tensor::from_data(TensorData::new(data.x.clone(), [SAMPLES, IN]), &device);
    let y = Tensor::from_data(TensorData::new(data.y.clone(), [SAMPLES, OUT]), &device);
    let loss = scalar(mse(model.module(), x, y));
    let checksum = checksum(&model)?;
    Ok((progress.ended(loss, checksum, model), stepper.end()?))
}

fn main() -> std::process::ExitCode {
    let defaults = Config {
        save_dir: PathBuf::new(),
        max_iter: 300,
        period: 25,
        max_to_keep: Some(3),
        stop_at: None,
    };
    driver::main("burn_train_mlp", defaults, run)
}

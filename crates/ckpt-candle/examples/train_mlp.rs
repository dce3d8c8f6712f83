//! Trains a small candle MLP with a PyTorch-compatible AdamW, checkpointing with ckpt; an
//! interrupted run resumes to exactly the weights of an uninterrupted one.
//!
//! ```text
//! cargo run -p ckpt-candle --example train_mlp -- OUTPUT_DIR [--max-iter 300] [--period 25]
//!                                                 [--max-to-keep 3] [--stop-at N]
//! ```
//!
//! Stop it with `--stop-at N` (a simulated preemption) or Ctrl-C, run it again without: it
//! resumes from `OUTPUT_DIR/last_checkpoint` and prints the same final loss and weight
//! checksum as a run that was never interrupted. The checkpoints are plain `torch.save`
//! files: `torch.load` them, or resume them in PyTorch (`tests/interop/candle/torch_mlp.py`).

// Also compiled into the tests, which use a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use ckpt::{shared, Checkpointer};
use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};

// The command line, logging and resume-and-train loop of ckpt's own training example.
#[path = "../../ckpt/examples/train/driver.rs"]
mod driver;

pub use driver::{BoxResult, Config, Outcome};

// The network's sizes and its synthetic data, shared with the other framework's example.
#[path = "../../ckpt/examples/train/mlp_data.rs"]
mod mlp_data;

pub use mlp_data::*;

/// The order of `torch.nn.Module.parameters()` for the same network in PyTorch: the
/// optimizer's parameter indices follow it.
pub const PARAM_ORDER: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

/// The optimizer's hyperparameters (torch's defaults otherwise).
pub fn adamw_config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        weight_decay: 1e-2,
        ..AdamWConfig::default()
    }
}

/// The inputs and targets of the batch trained at `iteration`.
pub fn batch(data: &Data, iteration: u64) -> candle_core::Result<(Tensor, Tensor)> {
    let idx = batch_indices(iteration);
    let x: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data.x[i * IN..(i + 1) * IN].to_vec())
        .collect();
    let y: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data.y[i * OUT..(i + 1) * OUT].to_vec())
        .collect();
    Ok((
        Tensor::from_vec(x, (BATCH, IN), &Device::Cpu)?,
        Tensor::from_vec(y, (BATCH, OUT), &Device::Cpu)?,
    ))
}

/// `fc2(tanh(fc1(x)))`.
pub struct Mlp {
    /// `IN -> HIDDEN`.
    pub fc1: Linear,
    /// `HIDDEN -> OUT`.
    pub fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.tanh()?)
    }
}

/// The network, its variables (in `VarMap`) with deterministic initial values drawn like
/// torch's default `Linear` init (uniform in ±1/sqrt(fan_in)).
pub fn build_mlp() -> candle_core::Result<(Mlp, VarMapModel)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mlp = Mlp {
        fc1: linear(IN, HIDDEN, vb.pp("fc1"))?,
        fc2: linear(HIDDEN, OUT, vb.pp("fc2"))?,
    };
    let model = VarMapModel::new(varmap).with_order(PARAM_ORDER)?;
    let mut rng = SplitMix64(INIT_SEED);
    for (name, var) in model.vars() {
        let fan_in = if name.starts_with("fc1") { IN } else { HIDDEN };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.next_f32() * bound)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
    }
    Ok((mlp, model))
}

/// The mean squared error of `mlp` on inputs `x` and targets `y`.
pub fn mse(mlp: &Mlp, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (mlp.forward(x)? - y)?.sqr()?.mean_all()
}

/// FNV-1a over the bits of every weight, in the model's order.
pub fn checksum(model: &VarMapModel) -> ckpt::Result<u64> {
    use ckpt::Model;
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
pub fn run(config: &Config) -> BoxResult<Outcome<VarMapModel>> {
    let data = synthetic_data();
    let (mlp, model) = build_mlp()?;
    let optimizer = shared(AdamW::from_model(&model, adamw_config())?);

    let mut checkpointer = Checkpointer::new(shared(model.clone()), &config.save_dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let progress = driver::train(config, checkpointer, |iteration| {
        let (x, y) = batch(&data, iteration)?;
        let loss = mse(&mlp, &x, &y)?;
        optimizer
            .lock()
            .map_err(|_| "optimizer lock poisoned")?
            .backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
    })?;
    let x = Tensor::from_vec(data.x.clone(), (SAMPLES, IN), &Device::Cpu)?;
    let y = Tensor::from_vec(data.y.clone(), (SAMPLES, OUT), &Device::Cpu)?;
    let loss = mse(&mlp, &x, &y)?.to_scalar::<f32>()?;
    Ok(progress.ended(loss, checksum(&model)?, model))
}

fn main() -> std::process::ExitCode {
    let defaults = Config {
        save_dir: PathBuf::new(),
        max_iter: 300,
        period: 25,
        max_to_keep: Some(3),
        stop_at: None,
    };
    driver::main("train_mlp", defaults, run)
}

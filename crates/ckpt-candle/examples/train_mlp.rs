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
use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer};
use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};

pub const IN: usize = 16;
pub const HIDDEN: usize = 64;
pub const OUT: usize = 4;
pub const SAMPLES: usize = 512;
pub const BATCH: usize = 32;
pub const DATA_SEED: u64 = 2024;
pub const INIT_SEED: u64 = 7;
/// The order of `torch.nn.Module.parameters()` for the same network in PyTorch: the
/// optimizer's parameter indices follow it.
pub const PARAM_ORDER: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

pub fn adamw_config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        weight_decay: 1e-2,
        ..AdamWConfig::default()
    }
}

/// SplitMix64: the data and the initial weights come from it, so a run is a pure function of
/// its seeds (and `torch_mlp.py` generates the same data).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), exactly representable in f32.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// The synthetic regression data: `x` uniform, `y[j] = x[j] * x[j + 4] + 0.5 * x[j + 8]`.
pub struct Data {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

pub fn synthetic_data() -> Data {
    let mut rng = SplitMix64(DATA_SEED);
    let x: Vec<f32> = (0..SAMPLES * IN).map(|_| rng.next_f32()).collect();
    let mut y = Vec::with_capacity(SAMPLES * OUT);
    for row in x.chunks_exact(IN) {
        for j in 0..OUT {
            y.push(row[j] * row[j + 4] + 0.5 * row[j + 8]);
        }
    }
    Data { x, y }
}

/// The sample indices of the batch trained at `iteration`: each epoch visits the samples in
/// a Fisher–Yates shuffle seeded by the epoch. A pure function of the iteration, so the data
/// position needs no state of its own in the checkpoint.
pub fn batch_indices(iteration: u64) -> Vec<usize> {
    let per_epoch = (SAMPLES / BATCH) as u64;
    let epoch = iteration / per_epoch;
    let mut rng = SplitMix64(DATA_SEED ^ epoch.wrapping_mul(0x5851_F42D_4C95_7F2D));
    let mut order: Vec<usize> = (0..SAMPLES).collect();
    for i in (1..SAMPLES).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let start = (iteration % per_epoch) as usize * BATCH;
    order[start..start + BATCH].to_vec()
}

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
    pub fc1: Linear,
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

pub struct Config {
    pub save_dir: PathBuf,
    pub max_iter: u64,
    pub period: u64,
    pub max_to_keep: Option<usize>,
    /// Stop after this iteration, as if the job were preempted.
    pub stop_at: Option<u64>,
}

pub struct Outcome {
    /// The first iteration this run trained (0 unless it resumed).
    pub started_at: u64,
    /// The iteration after which it stopped early, if it did.
    pub stopped_at: Option<u64>,
    /// Loss on the whole data set when the run ended.
    pub loss: f32,
    /// [`checksum`] of the weights when the run ended.
    pub checksum: u64,
    /// The model (its variables as they ended).
    pub model: VarMapModel,
}

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Resumes from `save_dir` if it has a checkpoint, then trains up to `max_iter` with a
/// checkpoint every `period` iterations (and `model_final.pth` at the end).
pub fn run(config: &Config) -> BoxResult<Outcome> {
    let data = synthetic_data();
    let (mlp, model) = build_mlp()?;
    let optimizer = shared(AdamW::from_model(&model, adamw_config())?);

    let mut checkpointer = Checkpointer::new(shared(model.clone()), &config.save_dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let extra = checkpointer.resume_or_load(None, true)?;
    let started_at = extra
        .get("iteration")
        .and_then(|v| v.as_int())
        .map_or(0, |i| i as u64 + 1);
    if started_at > 0 {
        println!("resumed at iteration {started_at}");
    }
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(config.period)
        .max_iter(config.max_iter)
        .max_to_keep(config.max_to_keep)
        .build()?;

    let mut stopped_at = None;
    for iteration in started_at..config.max_iter {
        let (x, y) = batch(&data, iteration)?;
        let loss = mse(&mlp, &x, &y)?;
        optimizer
            .lock()
            .map_err(|_| "optimizer lock poisoned")?
            .backward_step(&loss)?;
        if iteration % 50 == 0 {
            println!(
                "iteration {iteration}: loss {:.6}",
                loss.to_scalar::<f32>()?
            );
        }
        periodic.step(iteration, Dict::new())?;
        if config.stop_at == Some(iteration) {
            stopped_at = Some(iteration);
            break;
        }
    }
    let x = Tensor::from_vec(data.x.clone(), (SAMPLES, IN), &Device::Cpu)?;
    let y = Tensor::from_vec(data.y.clone(), (SAMPLES, OUT), &Device::Cpu)?;
    let loss = mse(&mlp, &x, &y)?.to_scalar::<f32>()?;
    Ok(Outcome {
        started_at,
        stopped_at,
        loss,
        checksum: checksum(&model)?,
        model,
    })
}

const USAGE: &str =
    "usage: train_mlp OUTPUT_DIR [--max-iter N] [--period N] [--max-to-keep N] [--stop-at N]";

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        save_dir: PathBuf::new(),
        max_iter: 300,
        period: 25,
        max_to_keep: Some(3),
        stop_at: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a non-negative number\n{USAGE}"))
        };
        match arg.as_str() {
            "--max-iter" => config.max_iter = number("--max-iter")?,
            "--period" => config.period = number("--period")?,
            "--max-to-keep" => config.max_to_keep = Some(number("--max-to-keep")? as usize),
            "--stop-at" => config.stop_at = Some(number("--stop-at")?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            dir if !dir.starts_with('-') && config.save_dir.as_os_str().is_empty() => {
                config.save_dir = dir.into()
            }
            other => return Err(format!("unexpected argument '{other}'\n{USAGE}")),
        }
    }
    if config.save_dir.as_os_str().is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(config)
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(outcome) => {
            match outcome.stopped_at {
                Some(i) => println!("stopped after iteration {i}"),
                None => println!("finished at iteration {}", config.max_iter),
            }
            println!("loss {:.6}", outcome.loss);
            println!("weights checksum {:016x}", outcome.checksum);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // The error and its causes, each said once.
            let mut message = e.to_string();
            let mut cause = e.source();
            while let Some(error) = cause {
                message.push_str(&format!(": {error}"));
                cause = error.source();
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

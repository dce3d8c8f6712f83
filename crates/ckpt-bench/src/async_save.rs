//! `ckpt-bench async-save`: what saving costs a training loop, synchronously and in the
//! background, on the big workload (1 GiB / 320 tensors) and the R50-FPN training state
//! (model + SGD momentum).
//!
//! Per save, the time the training thread is blocked:
//! - a plain memcpy of the state into buffers already faulted in (the limit of a copying
//!   snapshot, which reuses its staging buffers the same way);
//! - `Checkpointer::save` (atomic, fsynced, tagged);
//! - `Checkpointer::save_async` with the default snapshot (no copy of the model's memory)
//!   and with `SnapshotMode::Copy` (every tensor copied into staging), each measured once
//!   the previous save is over, so only the snapshot is timed.
//!
//! Then a loop of fixed steps saving every `every` steps: steps per second without saving,
//! with synchronous saves and with background saves, each loop ending with the last save
//! flushed. A step either waits (`--step wait`, the default: a GPU step, during which the
//! training thread leaves the CPU free) or computes on the CPU (`--step cpu`, a CPU-bound
//! step that competes with the writer for the cores).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckpt::{
    shared, Checkpointer, Dict, Shared, SnapshotMode, StateDict, StateDictModel, Tensor, Value,
};

use crate::measure::median;
use crate::ops::OptimizerState;
use crate::spec::{total_bytes, Spec};
use crate::state::{detectron_model, random_state, sgd_state};

type BoxError = Box<dyn std::error::Error>;

/// The settings of one run.
pub struct Options {
    pub quick: bool,
    pub reps: usize,
    pub dir: PathBuf,
    /// Milliseconds of work per training step.
    pub step_ms: u64,
    /// Whether a step computes on the CPU (else it waits, as for a GPU).
    pub cpu_step: bool,
    /// Steps between saves.
    pub every: u64,
    /// Saves per loop.
    pub saves: u64,
}

/// One workload's state, as a training program holds it.
struct Workload {
    name: &'static str,
    model: Shared<StateDictModel>,
    optimizer: Option<Shared<OptimizerState>>,
    bytes: u64,
}

impl Workload {
    fn checkpointer(&self, dir: &Path) -> Result<Checkpointer, BoxError> {
        let mut checkpointer = Checkpointer::new(self.model.clone(), dir);
        if let Some(optimizer) = &self.optimizer {
            checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
        }
        Ok(checkpointer)
    }

    /// Every tensor of the state, as a snapshot would see them.
    fn tensors(&self) -> Result<Vec<Tensor>, BoxError> {
        let mut out: Vec<Tensor> = self
            .model
            .lock()
            .map_err(|_| "model lock poisoned")?
            .tensors()
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        if let Some(optimizer) = &self.optimizer {
            let state = optimizer
                .lock()
                .map_err(|_| "optimizer lock poisoned")?
                .0
                .clone();
            collect(&state, &mut out);
        }
        Ok(out)
    }
}

fn collect(value: &Value, out: &mut Vec<Tensor>) {
    match value {
        Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => out.push(t.clone()),
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|v| collect(v, out)),
        Value::Dict(dict) => dict.iter().for_each(|(_, v)| collect(v, out)),
        _ => {}
    }
}

fn workloads(spec: &Spec) -> Result<Vec<Workload>, BoxError> {
    let big = random_state(&spec.big)?;
    let d = &spec.detectron;
    let detectron: StateDict = detectron_model(d, false)?;
    let detectron_bytes: u64 = detectron.iter().map(|(_, t)| t.nbytes() as u64).sum();
    let sgd = sgd_state(d)?;
    let mut momentum = Vec::new();
    collect(&sgd, &mut momentum);
    let momentum_bytes: u64 = momentum.iter().map(|t| t.nbytes() as u64).sum();
    Ok(vec![
        Workload {
            name: "big",
            model: shared(StateDictModel::new(big)),
            optimizer: None,
            bytes: total_bytes(&spec.big),
        },
        Workload {
            name: "detectron",
            model: shared(StateDictModel::new(detectron)),
            optimizer: Some(shared(OptimizerState(sgd))),
            bytes: detectron_bytes + momentum_bytes,
        },
    ])
}

/// Runs the measurements and returns them as Markdown.
pub fn run(options: &Options) -> Result<String, BoxError> {
    let spec = Spec::new(options.quick);
    let mut text = String::new();
    text.push_str("| workload | state | memcpy of the state | `save` (durable) | `save_async` blocking, shared snapshot | `save_async` blocking, copied snapshot | copy ÷ memcpy |\n");
    text.push_str("|---|---|---|---|---|---|---|\n");
    let workloads = workloads(&spec)?;
    for w in &workloads {
        let dir = options.dir.join(w.name);
        let memcpy = median(&memcpy_times(w, options.reps)?);
        let sync = median(&sync_times(w, &dir.join("sync"), options.reps)?);
        let share = median(&async_times(
            w,
            &dir.join("share"),
            SnapshotMode::Share,
            options.reps,
        )?);
        let copy = median(&async_times(
            w,
            &dir.join("copy"),
            SnapshotMode::Copy,
            options.reps,
        )?);
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} |\n",
            w.name,
            mib(w.bytes),
            ms(memcpy),
            ms(sync),
            ms(share),
            ms(copy),
            copy / memcpy
        ));
        remove_dir(&dir)?;
    }

    text.push_str(&format!(
        "\nTraining loop: {} ms per step ({}), a save every {} steps ({} saves per loop); steps per second and the loss against no saving.\n\n",
        options.step_ms,
        if options.cpu_step { "CPU work" } else { "waiting, as for a GPU" },
        options.every,
        options.saves
    ));
    text.push_str("| workload | no saving | `save` (durable) | `save_async`, shared snapshot | `save_async`, copied snapshot |\n");
    text.push_str("|---|---|---|---|---|\n");
    let step = Duration::from_millis(options.step_ms);
    let work = if options.cpu_step {
        Work::calibrate(step)
    } else {
        Work::Wait(step)
    };
    for w in &workloads {
        let dir = options.dir.join(w.name);
        let steps = options.every * options.saves;
        let none = throughput(w, &dir, &work, steps, options.every, Saving::None)?;
        let sync = throughput(w, &dir, &work, steps, options.every, Saving::Sync)?;
        let share = throughput(
            w,
            &dir,
            &work,
            steps,
            options.every,
            Saving::Async(SnapshotMode::Share),
        )?;
        let copy = throughput(
            w,
            &dir,
            &work,
            steps,
            options.every,
            Saving::Async(SnapshotMode::Copy),
        )?;
        let cell = |rate: f64| format!("{rate:.2} ({:+.1}%)", (rate / none - 1.0) * 100.0);
        text.push_str(&format!(
            "| {} | {none:.2} | {} | {} | {} |\n",
            w.name,
            cell(sync),
            cell(share),
            cell(copy)
        ));
        remove_dir(&dir)?;
    }
    Ok(text)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

fn remove_dir(dir: &Path) -> Result<(), BoxError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A memcpy of every tensor into buffers of its own, faulted in by a first copy.
fn memcpy_times(w: &Workload, reps: usize) -> Result<Vec<f64>, BoxError> {
    let tensors = w.tensors()?;
    let mut buffers: Vec<Vec<u8>> = tensors.iter().map(|t| vec![0u8; t.nbytes()]).collect();
    let mut times = Vec::new();
    for rep in 0..=reps {
        let start = Instant::now();
        for (t, buffer) in tensors.iter().zip(buffers.iter_mut()) {
            buffer.copy_from_slice(&t.contiguous_bytes());
        }
        if rep > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&buffers);
    Ok(times)
}

fn iteration(i: i64) -> Dict {
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(i));
    extra
}

fn sync_times(w: &Workload, dir: &Path, reps: usize) -> Result<Vec<f64>, BoxError> {
    let checkpointer = w.checkpointer(dir)?;
    let mut times = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        checkpointer.save("model", iteration(rep as i64))?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Blocking time of `save_async` once the staging buffers are warm (a first save, untimed).
fn async_times(
    w: &Workload,
    dir: &Path,
    mode: SnapshotMode,
    reps: usize,
) -> Result<Vec<f64>, BoxError> {
    let checkpointer = w.checkpointer(dir)?.with_snapshot_mode(mode);
    checkpointer.save_async("model", iteration(0))?.wait()?;
    let mut times = Vec::new();
    for rep in 0..reps {
        let start = Instant::now();
        let handle = checkpointer.save_async("model", iteration(rep as i64 + 1))?;
        times.push(start.elapsed().as_secs_f64());
        handle.wait()?;
    }
    Ok(times)
}

/// A training step.
enum Work {
    /// Waiting for the step's duration (a GPU step: the CPU is free meanwhile).
    Wait(Duration),
    /// Passes over a buffer of 256 KiB (in the L2 cache), as many as take the step's
    /// duration on an idle machine.
    Cpu { passes: u64 },
}

impl Work {
    fn calibrate(step: Duration) -> Work {
        let probe = Work::Cpu { passes: 8 };
        let start = Instant::now();
        let mut buffer = vec![1.0f32; 1 << 16];
        for _ in 0..16 {
            probe.run(&mut buffer);
        }
        let per_pass = start.elapsed().as_secs_f64() / (16.0 * 8.0);
        Work::Cpu {
            passes: ((step.as_secs_f64() / per_pass.max(1e-9)) as u64).max(1),
        }
    }

    fn run(&self, buffer: &mut [f32]) {
        match self {
            Work::Wait(step) => std::thread::sleep(*step),
            Work::Cpu { passes } => {
                for _ in 0..*passes {
                    for x in buffer.iter_mut() {
                        *x = *x * 0.999_9 + 0.000_1;
                    }
                    std::hint::black_box(&mut *buffer);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Saving {
    None,
    Sync,
    Async(SnapshotMode),
}

/// Steps per second of a loop of `steps` steps saving every `every`.
fn throughput(
    w: &Workload,
    dir: &Path,
    work: &Work,
    steps: u64,
    every: u64,
    saving: Saving,
) -> Result<f64, BoxError> {
    remove_dir(dir)?;
    let checkpointer = match saving {
        Saving::None => None,
        Saving::Sync => Some(w.checkpointer(dir)?),
        Saving::Async(mode) => Some(
            w.checkpointer(dir)?
                .with_async_save(true)
                .with_snapshot_mode(mode),
        ),
    };
    let mut buffer = vec![1.0f32; 1 << 16];
    let start = Instant::now();
    for step in 0..steps {
        work.run(&mut buffer);
        if (step + 1) % every == 0 {
            if let Some(checkpointer) = &checkpointer {
                // One name: each save replaces the last, as a kept-one retention would.
                checkpointer.save("model", iteration(step as i64))?;
            }
        }
    }
    if let Some(checkpointer) = &checkpointer {
        checkpointer.flush()?;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

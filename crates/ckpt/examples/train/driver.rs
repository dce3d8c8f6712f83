//! What the training examples share (this one and the candle adapter's `train_mlp`, which
//! includes this file): the command line, the logging, and the loop that resumes from the
//! last checkpoint and trains with periodic checkpoints.

// Compiled into two examples and their tests, each of which uses a different subset.
#![allow(dead_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use ckpt::{Checkpointer, Dict, PeriodicCheckpointer};

/// The errors of a training run: ckpt's, or those of the model code.
pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A training run: where it saves, how long it trains and how often it saves.
pub struct Config {
    /// Where the checkpoints go (and where a run resumes from).
    pub save_dir: PathBuf,
    /// The iteration the run ends before.
    pub max_iter: u64,
    /// A checkpoint every this many iterations.
    pub period: u64,
    /// How many periodic checkpoints to keep (`None`: all).
    pub max_to_keep: Option<usize>,
    /// Stop after this iteration, as if the job were preempted.
    pub stop_at: Option<u64>,
}

/// Where a run started and stopped.
pub struct Progress {
    /// The first iteration this run trained (0 unless it resumed).
    pub started_at: u64,
    /// The iteration after which it stopped early, if it did.
    pub stopped_at: Option<u64>,
}

impl Progress {
    /// The outcome of the run that made this progress.
    pub fn ended<M>(self, loss: f32, checksum: u64, model: M) -> Outcome<M> {
        Outcome {
            started_at: self.started_at,
            stopped_at: self.stopped_at,
            loss,
            checksum,
            model,
        }
    }
}

/// How a run ended.
pub struct Outcome<M> {
    /// The first iteration this run trained (0 unless it resumed).
    pub started_at: u64,
    /// The iteration after which it stopped early, if it did.
    pub stopped_at: Option<u64>,
    /// Loss on the whole data set when the run ended.
    pub loss: f32,
    /// A checksum of the weights' bits when the run ended: equal checksums mean
    /// bit-identical weights.
    pub checksum: u64,
    /// The model, as it ended.
    pub model: M,
}

/// Resumes `checkpointer` from its directory when that has a checkpoint, then calls `step`
/// for every iteration up to `max_iter` (or `stop_at`), with a checkpoint every `period`
/// iterations and `model_final` at the end. `step` trains one iteration and returns its loss.
pub fn train(
    config: &Config,
    checkpointer: Checkpointer,
    mut step: impl FnMut(u64) -> BoxResult<f32>,
) -> BoxResult<Progress> {
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
        let loss = step(iteration)?;
        if iteration % 50 == 0 {
            println!("iteration {iteration}: loss {loss:.6}");
        }
        periodic.step(iteration, Dict::new())?;
        if config.stop_at == Some(iteration) {
            stopped_at = Some(iteration);
            break;
        }
    }
    Ok(Progress {
        started_at,
        stopped_at,
    })
}

/// The `main` of an example called `program`: reads `OUTPUT_DIR [--max-iter N] [--period N]
/// [--max-to-keep N] [--stop-at N]` over `defaults` (whose `save_dir` is empty), logs to stderr (`RUST_LOG`, default
/// `info`), runs `run` and prints how it ended.
pub fn main<M>(
    program: &str,
    defaults: Config,
    run: impl FnOnce(&Config) -> BoxResult<Outcome<M>>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match parse_args(program, defaults, std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(outcome) => {
            match outcome.stopped_at {
                Some(i) => println!("stopped after iteration {i} (simulated preemption)"),
                None => println!("finished at iteration {}", config.max_iter),
            }
            println!("loss {:.6}", outcome.loss);
            println!("weights checksum {:016x}", outcome.checksum);
            ExitCode::SUCCESS
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
            ExitCode::FAILURE
        }
    }
}

/// `args` read over `defaults`; the error is the message to print (with the usage).
fn parse_args(
    program: &str,
    defaults: Config,
    mut args: impl Iterator<Item = String>,
) -> Result<Config, String> {
    let usage = format!(
        "usage: {program} OUTPUT_DIR [--max-iter N] [--period N] [--max-to-keep N] [--stop-at N]"
    );
    let mut config = defaults;
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a non-negative number\n{usage}"))
        };
        match arg.as_str() {
            "--max-iter" => config.max_iter = number("--max-iter")?,
            "--period" => config.period = number("--period")?,
            "--max-to-keep" => config.max_to_keep = Some(number("--max-to-keep")? as usize),
            "--stop-at" => config.stop_at = Some(number("--stop-at")?),
            "-h" | "--help" => return Err(usage),
            dir if !dir.starts_with('-') && config.save_dir.as_os_str().is_empty() => {
                config.save_dir = dir.into()
            }
            other => return Err(format!("unexpected argument '{other}'\n{usage}")),
        }
    }
    if config.save_dir.as_os_str().is_empty() {
        return Err(usage);
    }
    Ok(config)
}

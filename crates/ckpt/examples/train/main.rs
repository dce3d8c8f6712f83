//! Trains a small network with periodic checkpoints, and resumes after an interruption.
//!
//! ```text
//! cargo run -p ckpt --example train -- OUTPUT_DIR [--max-iter 200] [--period 20]
//!                                      [--max-to-keep 3] [--stop-at N]
//! ```
//!
//! Run it, stop it with `--stop-at N` (a simulated preemption), run it again without
//! `--stop-at`: it resumes from the last checkpoint and ends with the same loss and weight
//! checksum as a run that was never interrupted.

mod mlp;
mod sgd;

use std::process::ExitCode;

use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer, StateDictModel};

struct Args {
    save_dir: String,
    max_iter: u64,
    period: u64,
    max_to_keep: Option<usize>,
    stop_at: Option<u64>,
}

const USAGE: &str =
    "usage: train OUTPUT_DIR [--max-iter N] [--period N] [--max-to-keep N] [--stop-at N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        save_dir: String::new(),
        max_iter: 200,
        period: 20,
        max_to_keep: Some(3),
        stop_at: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a non-negative number\n{USAGE}"))
        };
        match arg.as_str() {
            "--max-iter" => args.max_iter = number("--max-iter")?,
            "--period" => args.period = number("--period")?,
            "--max-to-keep" => args.max_to_keep = Some(number("--max-to-keep")? as usize),
            "--stop-at" => args.stop_at = Some(number("--stop-at")?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            dir if !dir.starts_with('-') && args.save_dir.is_empty() => args.save_dir = dir.into(),
            other => return Err(format!("unexpected argument '{other}'\n{USAGE}")),
        }
    }
    if args.save_dir.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(args)
}

fn run(args: &Args) -> ckpt::Result<()> {
    let data = mlp::synthetic_data();
    let model = shared(StateDictModel::new(mlp::initial_state()?));
    let optimizer = shared(sgd::Sgd::new(mlp::shapes().to_vec(), 0.05, 0.9));

    let mut checkpointer = Checkpointer::new(model.clone(), &args.save_dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let extra = checkpointer.resume_or_load("", true)?;
    let start = extra
        .get("iteration")
        .and_then(|v| v.as_int())
        .map_or(0, |i| i as u64 + 1);
    if start > 0 {
        println!("resumed at iteration {start}");
    }
    let mut periodic = PeriodicCheckpointer::new(
        checkpointer,
        args.period,
        Some(args.max_iter),
        args.max_to_keep,
        "model",
    )?;

    for iteration in start..args.max_iter {
        let mut params = mlp::read_params(&model)?;
        let (loss, grads) = mlp::loss_and_grads(&params, &data);
        optimizer
            .lock()
            .map_err(|_| ckpt::Error::invalid("optimizer lock poisoned"))?
            .step(&mut params, &grads);
        mlp::write_params(&model, &params)?;
        if iteration % 50 == 0 {
            println!("iteration {iteration}: loss {loss:.6}");
        }
        periodic.step(iteration, Dict::new())?;
        if args.stop_at == Some(iteration) {
            println!("stopped after iteration {iteration} (simulated preemption)");
            return Ok(());
        }
    }
    let params = mlp::read_params(&model)?;
    let (loss, _) = mlp::loss_and_grads(&params, &data);
    println!("final loss {loss:.6}");
    println!("weights checksum {:016x}", mlp::checksum(&params));
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

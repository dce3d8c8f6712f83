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
mod run;
mod sgd;

use std::io::IsTerminal;
use std::process::ExitCode;

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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
    let config = run::Config {
        save_dir: args.save_dir.into(),
        max_iter: args.max_iter,
        period: args.period,
        max_to_keep: args.max_to_keep,
        stop_at: args.stop_at,
    };
    match run::run(&config) {
        Ok(outcome) => {
            match outcome.stopped_at {
                Some(at) => println!("stopped after iteration {at} (simulated preemption)"),
                None => {
                    println!("final loss {:.6}", outcome.loss);
                    println!("weights checksum {:016x}", outcome.checksum);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The error and its causes, each said once.
            eprintln!("error: {}", e.report());
            ExitCode::FAILURE
        }
    }
}

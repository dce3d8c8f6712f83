//! `ckpt`: inspect, convert, list and compare deep-learning checkpoints, and plan loading them.
//!
//! Every subcommand lives in its own module; this file only parses arguments, sets up
//! logging and turns errors into one line on stderr with exit code 1.

mod convert;
mod diff;
mod diff_side;
mod error;
mod inspect;
mod kept_by;
mod ls;
mod ls_remote;
mod output;
mod plan;
mod source;
mod subtrees;
mod time;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Read, convert and list PyTorch, Detectron and safetensors checkpoints.
#[derive(Debug, Parser)]
#[command(name = "ckpt", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Convert(convert::Args),
    Ls(ls::Args),
    Plan(plan::Args),
    Diff(diff::Args),
}

fn main() -> ExitCode {
    error::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if is_diff() && !e.use_stderr() => return error::usage_error(e),
        // `ckpt diff` keeps exit status 1 for "different": a usage error is 2.
        Err(e) if is_diff() => {
            let _ = error::usage_error(e);
            return ExitCode::from(2);
        }
        Err(e) => return error::usage_error(e),
    };
    init_logging();
    if let Command::Diff(args) = &cli.command {
        return match diff::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ckpt: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Ls(args) => ls::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Diff(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ckpt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the command line asks for `ckpt diff`.
fn is_diff() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == "diff")
}

/// Library warnings (and more with `RUST_LOG`) go to stderr.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

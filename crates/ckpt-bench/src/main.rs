//! `ckpt-bench`: ckpt against `torch.save`/`torch.load`, safetensors (Python and Rust) and
//! fvcore's Checkpointer, on the same files in one run, with the machine's own limits
//! (`dd` to the page cache and to tmpfs, memcpy) measured beside them.
//!
//! ```text
//! ckpt-bench run [--quick] [--reps N] [--dir DIR] [--results FILE] [--readme README.md]
//! ckpt-bench child --op OP --workload W --dir DIR                     # one measurement
//! ckpt-bench async-save [--quick] [--reps N] [--dir DIR] [--step-ms MS] [--step wait|cpu] [--every N] [--saves N]
//! ```
//! `scripts/bench.sh` builds it in release mode and runs it.

mod async_save;
mod convert;
mod diff;
mod driver;
mod measure;
mod mpi;
mod ops;
mod python;
mod report;
mod s3;
mod spec;
mod state;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark ckpt against torch and safetensors on the same files")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs the whole benchmark and prints the results as Markdown.
    Run {
        /// Small sizes and one repetition: a smoke test.
        #[arg(long)]
        quick: bool,
        /// Repetitions of every row (medians are reported); default 5, 1 with --quick.
        #[arg(long)]
        reps: Option<usize>,
        /// Where the input and output files go (the page-cache `dd` writes here too).
        #[arg(long, default_value_os_t = std::env::temp_dir().join("ckpt-bench"))]
        dir: PathBuf,
        /// Python with torch, safetensors and fvcore (default: $CKPT_PYTHON, else the
        /// project venv).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Run the Rust contenders only.
        #[arg(long)]
        no_python: bool,
        /// Fail instead of running Rust-only when Python is not found.
        #[arg(long)]
        require_python: bool,
        /// The Python contender script.
        #[arg(long, default_value_os_t = default_script())]
        script: PathBuf,
        /// Comma-separated workloads: big, small, detectron, matching, mpi (the big checkpoint
        /// resumed on 4 MPI ranks; skipped without mpirun and ckpt-mpi's resume_bench).
        #[arg(
            long,
            default_value = "big,small,detectron,matching,mpi",
            value_delimiter = ','
        )]
        workloads: Vec<String>,
        /// Reuse the input files of an earlier run with the same sizes.
        #[arg(long)]
        keep_files: bool,
        /// Also write the Markdown report to this file (notes below its notes marker are
        /// kept).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Also put a summary (one row per operation: ckpt's time, how much faster or slower
        /// the others are) into this README, between its benchmark markers.
        #[arg(long)]
        readme: Option<PathBuf>,
        /// The command line to print in the report (default: this one).
        #[arg(long)]
        command_line: Option<String>,
    },
    /// Background saves: blocking time per save (async, sync, memcpy of the state) and the
    /// throughput of a training loop saving every few steps; prints Markdown.
    AsyncSave {
        /// Small sizes: a smoke test.
        #[arg(long)]
        quick: bool,
        /// Timed saves per row (medians are reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Where the checkpoints go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("ckpt-bench-async"))]
        dir: PathBuf,
        /// Milliseconds per training step.
        #[arg(long, default_value_t = 50)]
        step_ms: u64,
        /// What a step does: `wait` (a GPU step, the CPU free meanwhile) or `cpu` (compute).
        #[arg(long, default_value = "wait")]
        step: String,
        /// Steps between saves.
        #[arg(long, default_value_t = 40)]
        every: u64,
        /// Saves per training loop.
        #[arg(long, default_value_t = 5)]
        saves: u64,
    },
    /// Save and load in an S3-compatible object store (`AWS_ENDPOINT_URL`, ...) next to
    /// plain object_store put/get and boto3 of the same bytes; prints a Markdown table.
    S3 {
        /// Where the objects go: `s3://bucket/prefix` (the bucket must exist).
        #[arg(long)]
        url: String,
        /// Small sizes: a smoke test.
        #[arg(long)]
        quick: bool,
        /// Repetitions of each measurement (the median is shown).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// A local directory for copies and the download cache.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("ckpt-bench-s3"))]
        dir: PathBuf,
        /// Python with boto3 (`$CKPT_PYTHON`, else the project venv); without it no boto3 row.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Workloads: big (1 GiB, 320 tensors), small (50,000 tensors).
        #[arg(long, default_value = "big,small", value_delimiter = ',')]
        workloads: Vec<String>,
    },
    #[command(hide = true)]
    S3Child {
        #[arg(long)]
        op: String,
        #[arg(long)]
        workload: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        quick: bool,
    },
    /// Runs one Rust measurement and prints it as a JSON line (used by `run`).
    #[command(hide = true)]
    Child {
        #[arg(long)]
        op: String,
        #[arg(long)]
        workload: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        arg: u64,
    },
}

fn default_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/torch_contender.py")
}

fn find_python(explicit: Option<PathBuf>) -> Option<PathBuf> {
    let path = explicit
        .or_else(|| std::env::var_os("CKPT_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/ckpt/venv/bin/python"));
    path.exists().then_some(path)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ckpt-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Commands::AsyncSave {
            quick,
            reps,
            dir,
            step_ms,
            step,
            every,
            saves,
        } => {
            let cpu_step = match step.as_str() {
                "cpu" => true,
                "wait" => false,
                other => return Err(format!("--step is wait or cpu, not {other}").into()),
            };
            let options = async_save::Options {
                quick,
                reps: reps.max(1),
                dir,
                step_ms,
                cpu_step,
                every: every.max(1),
                saves: saves.max(1),
            };
            println!("{}", async_save::run(&options)?);
        }
        Commands::S3 {
            url,
            quick,
            reps,
            dir,
            python,
            workloads,
        } => {
            let python = find_python(python);
            s3::run(&url, &dir, quick, reps.max(1), python, &workloads)?;
        }
        Commands::S3Child {
            op,
            workload,
            url,
            dir,
            quick,
        } => {
            let job = s3::Job {
                op: &op,
                workload: &workload,
                url: &url,
                dir: &dir,
                quick,
            };
            println!("{}", serde_json::to_string(&s3::child(&job)?)?);
        }
        Commands::Child {
            op,
            workload,
            dir,
            arg,
        } => {
            let paths = ops::Paths { dir };
            let spec: spec::Spec = serde_json::from_str(&std::fs::read_to_string(paths.spec())?)?;
            let sample = ops::run(&op, &workload, &paths, &spec, arg)?;
            println!("{}", serde_json::to_string(&sample)?);
        }
        Commands::Run {
            quick,
            reps,
            dir,
            python,
            no_python,
            require_python,
            script,
            workloads,
            keep_files,
            results,
            readme,
            command_line,
        } => {
            let python = if no_python { None } else { find_python(python) };
            if python.is_none() && !no_python {
                if require_python {
                    return Err("python with torch not found (set CKPT_PYTHON or --python)".into());
                }
                eprintln!("warning: python with torch not found: running the Rust contenders only");
            }
            for w in &workloads {
                if !["big", "small", "detectron", "matching", "mpi"].contains(&w.as_str()) {
                    return Err(format!("unknown workload {w}").into());
                }
            }
            let options = driver::Options {
                quick,
                reps: reps.unwrap_or(if quick { 1 } else { 5 }).max(1),
                dir,
                python,
                script,
                workloads,
                keep_files,
            };
            let outcome = driver::run(&options)?;
            let command =
                command_line.unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
            let text = report::render(&outcome, &command);
            println!("{text}");
            if let Some(path) = results {
                // Notes written by hand below the marker survive a new run.
                let previous = std::fs::read_to_string(&path).ok();
                std::fs::write(&path, report::results_file(&text, previous.as_deref()))?;
                eprintln!("results written to {}", path.display());
            }
            if let Some(path) = readme {
                let old = std::fs::read_to_string(&path)?;
                let summary = report::render_summary(&outcome, &command);
                let new = report::splice_readme(&old, &summary)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                std::fs::write(&path, new)?;
                eprintln!("summary written into {}", path.display());
            }
        }
    }
    Ok(())
}

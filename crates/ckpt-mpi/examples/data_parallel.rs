//! Data-parallel training across processes with MPI: every rank holds the whole model, takes
//! its share of every batch, and the gradients are summed over the ranks with an MPI
//! all-reduce, so that every rank takes the same step and the ranks stay identical. Rank 0
//! writes a checkpoint periodically; a job that was killed resumes on every rank from rank
//! 0's last checkpoint and ends bit-identical to a run that was never interrupted.
//!
//! ```text
//! cargo build --release -p ckpt-mpi --example data_parallel
//! mpirun -np 4 target/release/examples/data_parallel OUTPUT_DIR [--max-iter 200]
//!        [--period 20] [--stop-at N] [--sleep-ms MS] [--node-local]
//! ```
//!
//! `--node-local` gives every rank but 0 a save directory of its own (`OUTPUT_DIR/rankR`,
//! empty), as when each machine has its own disk: they resume from the file rank 0 sends.
//! `--stop-at N` stops after iteration N (a simulated preemption); `--sleep-ms` slows every
//! iteration down, to leave time for killing the job by hand.

#[path = "../../ckpt/examples/train/mlp.rs"]
mod mlp;
#[path = "../../ckpt/examples/train/sgd.rs"]
mod sgd;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ckpt::dist::Communicator as _;
use ckpt::{shared, DetectionCheckpointer, Dict, PeriodicCheckpointer, StateDictModel};
use ckpt_mpi::MpiCommunicator;
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::topology::SimpleCommunicator;
use mpi::Threading;

struct Args {
    save_dir: PathBuf,
    max_iter: u64,
    period: u64,
    stop_at: Option<u64>,
    sleep: Duration,
    node_local: bool,
}

const USAGE: &str = "usage: data_parallel OUTPUT_DIR [--max-iter N] [--period N] [--stop-at N] \
                     [--sleep-ms MS] [--node-local]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        save_dir: PathBuf::new(),
        max_iter: 200,
        period: 20,
        stop_at: None,
        sleep: Duration::ZERO,
        node_local: false,
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
            "--stop-at" => args.stop_at = Some(number("--stop-at")?),
            "--sleep-ms" => args.sleep = Duration::from_millis(number("--sleep-ms")?),
            "--node-local" => args.node_local = true,
            dir if !dir.starts_with('-') && args.save_dir.as_os_str().is_empty() => {
                args.save_dir = dir.into()
            }
            other => return Err(format!("unexpected argument '{other}'\n{USAGE}")),
        }
    }
    if args.save_dir.as_os_str().is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(args)
}

/// This rank's share of the batch: samples `rank`, `rank + world`, ...
fn shard(data: &mlp::Data, rank: usize, world: usize) -> mlp::Data {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (i, (row, target)) in data.x.chunks_exact(mlp::INPUTS).zip(&data.y).enumerate() {
        if i % world == rank {
            x.extend_from_slice(row);
            y.push(*target);
        }
    }
    mlp::Data { x, y }
}

/// Sums every rank's gradients. Each rank's share is already divided by the whole batch's
/// size, so the sum is the gradient of the whole batch, the same on every rank.
fn all_reduce(world: &SimpleCommunicator, grads: &mut [Vec<f32>]) {
    let flat: Vec<f32> = grads.iter().flatten().copied().collect();
    let mut sum = vec![0f32; flat.len()];
    world.all_reduce_into(&flat[..], &mut sum[..], SystemOperation::sum());
    let mut at = 0;
    for grad in grads.iter_mut() {
        let len = grad.len();
        grad.copy_from_slice(&sum[at..at + len]);
        at += len;
    }
}

fn train(world: &SimpleCommunicator, comm: &Arc<MpiCommunicator>, args: &Args) -> ckpt::Result<()> {
    let (rank, size) = (comm.rank(), comm.world_size());
    let main = rank == 0;
    let data = shard(&mlp::synthetic_data(), rank, size);
    let model = shared(StateDictModel::new(mlp::initial_state()?));
    let optimizer = shared(sgd::Sgd::new(mlp::shapes().to_vec(), 0.05, 0.9));

    let save_dir = if args.node_local && !main {
        args.save_dir.join(format!("rank{rank}"))
    } else {
        args.save_dir.clone()
    };
    // Rank 0 alone saves; every rank resumes from rank 0's last checkpoint.
    let mut checkpointer =
        DetectionCheckpointer::new(model.clone(), &save_dir).with_shared_communicator(comm.clone());
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let extra = checkpointer.resume_or_load(None, true)?;
    let started_at = extra
        .get("iteration")
        .and_then(|v| v.as_int())
        .map_or(0, |i| i as u64 + 1);
    if main && started_at > 0 {
        println!("resumed at iteration {started_at} on {size} ranks");
    }
    let mut periodic = PeriodicCheckpointer::builder(checkpointer.into_checkpointer())
        .period(args.period)
        .max_iter(args.max_iter)
        .max_to_keep(3)
        .build()?;

    for iteration in started_at..args.max_iter {
        let mut params = mlp::read_params(&model)?;
        let (loss, mut grads) = mlp::loss_and_grads(&params, &data);
        all_reduce(world, &mut grads);
        optimizer
            .lock()
            .map_err(|_| ckpt::Error::invalid("optimizer lock poisoned"))?
            .step(&mut params, &grads);
        mlp::write_params(&model, &params)?;
        if main && iteration % 50 == 0 {
            println!("iteration {iteration}: loss of rank 0's share {loss:.6}");
        }
        periodic.step(iteration, Dict::new())?;
        if args.stop_at == Some(iteration) {
            if main {
                println!("stopped after iteration {iteration} (simulated preemption)");
            }
            return Ok(());
        }
        std::thread::sleep(args.sleep);
    }

    let params = mlp::read_params(&model)?;
    let (loss, _) = mlp::loss_and_grads(&params, &mlp::synthetic_data());
    let checksum = mlp::checksum(&params);
    let all = comm.all_gather(&checksum.to_le_bytes())?;
    if all.iter().any(|c| *c != checksum.to_le_bytes()) {
        return Err(ckpt::Error::invalid(format!(
            "the ranks' weights differ: {all:?}"
        )));
    }
    if main {
        println!("final loss {loss:.6}");
        println!("weights checksum {checksum:016x} (identical on {size} ranks)");
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The application owns MPI (it all-reduces its gradients itself); ckpt gets a
    // communicator of its own over the same processes.
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Multiple) else {
        eprintln!("error: MPI was already initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let comm = match MpiCommunicator::new(&world) {
        Ok(comm) => Arc::new(comm),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = comm.finish(train(&world, &comm, &args));
    // ckpt's communicator goes before MPI is finalised (when `universe` drops).
    drop(comm);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

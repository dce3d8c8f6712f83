//! The multi-process checks of `tests/mpirun.rs`, one per subcommand, each run by the test
//! under `mpirun -np 4` (or without a launcher, as a world of one). Every rank prints one
//! line starting with `rank R` that the test compares across ranks.
//!
//! ```text
//! mpi_checks world
//! mpi_checks chunks CHUNK_BYTES
//! mpi_checks save DIR                       # rank R saves into DIR/rankR (only rank 0 writes)
//! mpi_checks save-async DIR                 # the same, saving in the background
//! mpi_checks resume DIR [CHUNK_BYTES]       # rank R resumes from DIR/rankR
//! mpi_checks load DIR                       # rank R loads DIR/rankR/model_final.pth
//! mpi_checks failing-rank DIR               # rank 2's optimizer cannot take the state
//! mpi_checks abort                          # rank 2 fails while the others wait for it
//! mpi_checks return                         # rank 2 returns an error while the others wait
//! mpi_checks panic                          # rank 1 panics while the others wait for it
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ckpt::dist::{Communicator, SlicePart};
use ckpt::resolve::Resolver;
use ckpt::{
    shared, Checkpointables, DetectionCheckpointer, Dict, PeriodicCheckpointer, Serde, Shared,
    StateDict, StateDictModel, Tensor, Value,
};
use ckpt_mpi::MpiCommunicator;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Optimizer {
    step: u64,
    lr: f64,
    momentum: Vec<f64>,
}

/// What rank 2 registers in `failing-rank`: a state it cannot take.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Strict {
    step: String,
}

const SHAPES: [(&str, &[usize]); 3] = [
    ("backbone.w", &[64, 64]),
    ("backbone.b", &[64]),
    ("head.w", &[10, 64]),
];

fn zero_model() -> ckpt::Result<Shared<StateDictModel>> {
    let mut state = StateDict::new();
    for (name, shape) in SHAPES {
        let n: usize = shape.iter().product();
        state.insert(name, Tensor::from_slice(&vec![0f32; n], shape)?);
    }
    Ok(shared(StateDictModel::new(state)))
}

/// The weights after `iteration` steps of a pretend training run.
fn trained_weights(model: &Shared<StateDictModel>, iteration: u64) -> ckpt::Result<()> {
    let mut model = model.lock().map_err(|_| ckpt::Error::invalid("poisoned"))?;
    for (k, (name, shape)) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.001 + k as f32) * (iteration + 1) as f32)
            .collect();
        model.set(name, Tensor::from_slice(&values, shape)?);
    }
    Ok(())
}

/// FNV-1a over the model's bytes, in name order.
fn checksum(model: &Shared<StateDictModel>) -> ckpt::Result<u64> {
    let model = model.lock().map_err(|_| ckpt::Error::invalid("poisoned"))?;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (name, _) in SHAPES {
        let tensor = model
            .get(name)
            .ok_or_else(|| ckpt::Error::key(name, "missing"))?;
        for byte in tensor.try_contiguous_bytes()?.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}

struct Rank {
    comm: Arc<MpiCommunicator>,
    model: Shared<StateDictModel>,
    optimizer: Shared<Serde<Optimizer>>,
    checkpointer: DetectionCheckpointer,
}

fn rank_dir(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("rank{rank}"))
}

/// Rank R's model, optimizer and checkpointer saving into `DIR/rankR`; with `strict_rank2`
/// rank 2 registers an optimizer that cannot take the saved state.
fn setup(comm: Arc<MpiCommunicator>, dir: &Path, strict_rank2: bool) -> ckpt::Result<Rank> {
    let model = zero_model()?;
    let optimizer = shared(Serde(Optimizer::default()));
    let mut checkpointer = DetectionCheckpointer::new(model.clone(), rank_dir(dir, comm.rank()))
        .with_shared_communicator(comm.clone())
        .with_resolver(Resolver::local_only());
    if comm.rank() == 2 && strict_rank2 {
        checkpointer.add_checkpointable("optimizer", shared(Serde(Strict::default())))?;
    } else {
        checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    }
    Ok(Rank {
        comm,
        model,
        optimizer,
        checkpointer,
    })
}

impl Rank {
    fn report(&self, extra: &Dict) -> ckpt::Result<String> {
        let optimizer = self
            .optimizer
            .lock()
            .map_err(|_| ckpt::Error::invalid("poisoned"))?;
        Ok(format!(
            "rank {} state weights={:016x} step={} lr={} momentum={:?} iteration={:?}",
            self.comm.rank(),
            checksum(&self.model)?,
            optimizer.step,
            optimizer.lr,
            optimizer.momentum,
            extra.get("iteration").and_then(Value::as_int),
        ))
    }
}

/// Broadcasts, gathers and barriers with tiny chunks; every rank checks what it got.
fn chunks(comm: &MpiCommunicator) -> ckpt::Result<String> {
    let pattern = |len: usize, seed: usize| -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
    };
    let len = 3 * comm.chunk_size() + 17;
    let mut buffer = if comm.rank() == 0 {
        pattern(len, 7)
    } else {
        vec![9; 5]
    };
    comm.broadcast(&mut buffer)?;
    if buffer != pattern(len, 7) {
        return Err(ckpt::Error::invalid("broadcast: wrong bytes"));
    }
    let mut empty = if comm.rank() == 0 {
        Vec::new()
    } else {
        vec![1]
    };
    comm.broadcast(&mut empty)?;
    if !empty.is_empty() {
        return Err(ckpt::Error::invalid("broadcast of nothing: got bytes"));
    }
    let source = pattern(len + 5, 3);
    let mut target = vec![0u8; len + 5];
    if comm.rank() == 0 {
        comm.broadcast_slice(SlicePart::Send(&source))?;
    } else {
        comm.broadcast_slice(SlicePart::Receive(&mut target))?;
        if target != source {
            return Err(ckpt::Error::invalid("broadcast_slice: wrong bytes"));
        }
    }
    let gathered = comm.all_gather(&pattern(comm.rank() * 3, comm.rank()))?;
    for (rank, value) in gathered.iter().enumerate() {
        if *value != pattern(rank * 3, rank) {
            return Err(ckpt::Error::invalid(format!(
                "all_gather: wrong value of rank {rank}"
            )));
        }
    }
    comm.barrier()?;
    Ok(format!(
        "rank {} chunks ok: {} bytes in chunks of {}",
        comm.rank(),
        len,
        comm.chunk_size()
    ))
}

/// Trains for 6 pretend iterations with a checkpoint every 2, keeping 2.
fn save(rank: Rank, in_background: bool) -> ckpt::Result<String> {
    let Rank {
        comm,
        model,
        optimizer,
        checkpointer,
    } = rank;
    let mut periodic = PeriodicCheckpointer::builder(checkpointer.into_checkpointer())
        .period(2)
        .max_iter(6)
        .max_to_keep(2)
        .async_save(in_background)
        .build()?;
    for iteration in 0..6 {
        trained_weights(&model, iteration)?;
        {
            let mut opt = optimizer
                .lock()
                .map_err(|_| ckpt::Error::invalid("poisoned"))?;
            opt.step = iteration + 1;
            opt.lr = 0.1 / (iteration + 1) as f64;
            opt.momentum = vec![iteration as f64; 3];
        }
        periodic.step(iteration, Dict::new())?;
    }
    // Rank 0's last save is durable and tagged, old files deleted; the others had none.
    periodic.flush()?;
    comm.barrier()?;
    Ok(format!(
        "rank {} saved weights={:016x}",
        comm.rank(),
        checksum(&model)?
    ))
}

/// The chunk size a check asks for: `chunks CHUNK`, `resume DIR CHUNK`.
fn chunk_size(command: &str, args: &[String]) -> ckpt::Result<Option<usize>> {
    let arg = match command {
        "chunks" => args.first(),
        "resume" => args.get(1),
        _ => None,
    };
    arg.map(|a| {
        a.parse().map_err(|_| {
            ckpt::Error::invalid(format!("{command}: the chunk size '{a}' is no number"))
        })
    })
    .transpose()
}

fn communicator(command: &str, args: &[String]) -> ckpt::Result<MpiCommunicator> {
    let comm = MpiCommunicator::world()?.with_exit_grace(Duration::from_secs(3));
    match chunk_size(command, args)? {
        Some(chunk) => comm.with_chunk_size(chunk),
        None => Ok(comm),
    }
}

fn run(comm: &Arc<MpiCommunicator>, command: &str, args: &[String]) -> ckpt::Result<String> {
    let dir = || -> ckpt::Result<&Path> {
        args.first()
            .map(Path::new)
            .ok_or_else(|| ckpt::Error::invalid(format!("{command}: missing the directory")))
    };
    match command {
        "world" => Ok(format!("rank {} of {}", comm.rank(), comm.world_size())),
        "chunks" => chunks(comm),
        "save" => save(setup(comm.clone(), dir()?, false)?, false),
        "save-async" => save(setup(comm.clone(), dir()?, false)?, true),
        "resume" => {
            let rank = setup(comm.clone(), dir()?, false)?;
            let extra = rank.checkpointer.resume_or_load(None, true)?;
            rank.report(&extra)
        }
        "load" | "failing-rank" => {
            let rank = setup(comm.clone(), dir()?, command == "failing-rank")?;
            let path = rank_dir(dir()?, rank.comm.rank()).join("model_final.pth");
            let extra = rank
                .checkpointer
                .load(&path.display().to_string(), Checkpointables::All)?;
            rank.report(&extra)
        }
        "abort" => {
            if comm.rank() == 2 {
                let error = ckpt::Error::invalid("the data loader ran dry");
                comm.abort(3, &error);
            }
            comm.barrier()?;
            Ok(format!("rank {} passed the barrier", comm.rank()))
        }
        "return" => {
            if comm.rank() == 2 {
                return Err(ckpt::Error::invalid("the data loader ran dry"));
            }
            comm.barrier()?;
            Ok(format!("rank {} passed the barrier", comm.rank()))
        }
        "panic" => {
            if comm.rank() == 1 {
                panic!("rank 1 divides by zero");
            }
            comm.barrier()?;
            Ok(format!("rank {} passed the barrier", comm.rank()))
        }
        other => Err(ckpt::Error::invalid(format!("unknown check '{other}'"))),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!(
            "usage: mpi_checks world|chunks|save|resume|load|failing-rank|abort|return|panic ..."
        );
        return ExitCode::from(2);
    };
    let comm = match communicator(command, rest) {
        Ok(comm) => Arc::new(comm),
        Err(e) => {
            println!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(&comm, command, rest);
    match &outcome {
        Ok(line) => println!("{line}"),
        Err(e) => println!("rank {} error: {e}", comm.rank()),
    }
    match comm.finish(outcome) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

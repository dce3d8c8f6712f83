//! One measurement of resuming a checkpoint on the ranks of an MPI job, for the benchmark
//! (`ckpt-bench`, workload `mpi`). Every rank prints one JSON line: its time, its RSS before
//! the operation and its peak RSS during it.
//!
//! ```text
//! mpirun -np 4 resume_bench gen RESUME_DIR [MIB] [TENSORS]    # a world of one writes the checkpoint
//! mpirun -np 4 resume_bench MODE RESUME_DIR SCRATCH_DIR
//! ```
//!
//! `RESUME_DIR` holds a checkpoint and its `last_checkpoint` tag. Modes:
//! - `ckpt-rank0`: only rank 0 resumes from `RESUME_DIR`; the others' directories
//!   (`SCRATCH_DIR/rankR`) are empty, so rank 0 sends them the file;
//! - `ckpt-all`: every rank resumes from `RESUME_DIR`, each reading the file itself;
//! - `ckpt-stream`: the transfer alone of `ckpt-rank0`: rank 0 sends the file from a memory
//!   map with `broadcast_slice`, in the same 64 MiB pieces, into one buffer per other rank
//!   (no parsing, no loading into the model);
//! - `raw-bcast`: MPI's own broadcast of as many bytes, from memory rank 0 already holds into
//!   memory the others allocate: the limit.
//!
//! Before the timer every rank builds its model (the checkpoint's names, shapes and dtypes,
//! every byte written, as a model in training is), so the RSS before includes the model, and
//! the added peak is what resuming needed beyond it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ckpt::dist::{Communicator as _, SlicePart, SLICE_PIECE};
use ckpt::{
    shared, Checkpointer, DetectionCheckpointer, Dict, Shared, StateDict, StateDictModel, Tensor,
    Value,
};
use ckpt_mpi::mpi::collective::Root;
use ckpt_mpi::mpi::topology::{Communicator as _, SimpleCommunicator};
use ckpt_mpi::mpi::Threading;
use ckpt_mpi::MpiCommunicator;

type BoxError = Box<dyn std::error::Error>;

/// (`VmRSS`, `VmHWM`) in bytes.
fn rss_and_peak() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS to the current RSS; false where the kernel does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The checkpoint file `last_checkpoint` in `dir` names.
fn tagged_file(dir: &Path) -> Result<PathBuf, BoxError> {
    let name = std::fs::read_to_string(dir.join("last_checkpoint"))?;
    Ok(dir.join(name.trim()))
}

/// A model with the checkpoint's names, shapes and dtypes, every byte written.
fn resident_model(file: &Path) -> Result<Shared<StateDictModel>, BoxError> {
    let checkpoint = ckpt::format::load(file)?;
    let entries = checkpoint
        .get("model")
        .and_then(Value::as_dict)
        .ok_or("the checkpoint has no model dict")?;
    let mut state = StateDict::new();
    for (key, value) in entries.iter() {
        let tensor = value.as_tensor().ok_or("a model entry that is no tensor")?;
        let bytes = vec![1u8; tensor.nbytes()];
        state.insert(
            key.to_string(),
            Tensor::from_bytes(tensor.dtype(), tensor.shape(), bytes)?,
        );
    }
    Ok(shared(StateDictModel::new(state)))
}

/// Writes a checkpoint of `mib` MiB of float32 in `tensors` tensors into `dir`.
fn generate(dir: &Path, mib: usize, tensors: usize) -> Result<(), BoxError> {
    let per_tensor = (mib << 20) / 4 / tensors;
    let mut state = StateDict::new();
    for i in 0..tensors {
        let values: Vec<f32> = (0..per_tensor).map(|v| (v % 1000) as f32 * 0.5).collect();
        state.insert(
            format!("layer{i}.weight"),
            Tensor::from_slice(&values, &[per_tensor])?,
        );
    }
    let checkpointer = Checkpointer::new(shared(StateDictModel::new(state)), dir);
    checkpointer.save("model_big", Dict::new())?;
    Ok(())
}

struct Measured {
    seconds: f64,
    rss_before: u64,
    peak_rss: u64,
    peak_reset: bool,
    bytes: u64,
}

/// Times `op` between two barriers, with the peak RSS reset before it.
fn measure(
    comm: &MpiCommunicator,
    bytes: u64,
    op: impl FnOnce() -> Result<(), BoxError>,
) -> Result<Measured, BoxError> {
    comm.barrier()?;
    let peak_reset = reset_peak();
    let (rss_before, _) = rss_and_peak();
    let start = Instant::now();
    op()?;
    comm.barrier()?;
    let seconds = start.elapsed().as_secs_f64();
    let (_, peak_rss) = rss_and_peak();
    Ok(Measured {
        seconds,
        rss_before,
        peak_rss,
        peak_reset,
        bytes,
    })
}

fn resume(
    comm: &Arc<MpiCommunicator>,
    mode: &str,
    resume_dir: &Path,
    scratch: &Path,
) -> Result<Measured, BoxError> {
    let file = tagged_file(resume_dir)?;
    let bytes = std::fs::metadata(&file)?.len();
    let model = resident_model(&file)?;
    let save_dir = if mode == "ckpt-rank0" && comm.rank() != 0 {
        let dir = scratch.join(format!("rank{}", comm.rank()));
        std::fs::create_dir_all(&dir)?;
        dir
    } else {
        resume_dir.to_path_buf()
    };
    let checkpointer =
        DetectionCheckpointer::new(model.clone(), save_dir).with_shared_communicator(comm.clone());
    measure(comm, bytes, || {
        checkpointer.resume_or_load(None, true)?;
        Ok(())
    })
}

fn stream(comm: &MpiCommunicator, resume_dir: &Path) -> Result<Measured, BoxError> {
    let file = tagged_file(resume_dir)?;
    let bytes = std::fs::metadata(&file)?.len();
    let len = usize::try_from(bytes)?;
    let map = if comm.rank() == 0 {
        // SAFETY: the benchmark's own input file, not changed while it runs.
        Some(unsafe { memmap2::Mmap::map(&std::fs::File::open(&file)?)? })
    } else {
        None
    };
    measure(comm, bytes, || {
        match &map {
            Some(map) => {
                for piece in map.chunks(SLICE_PIECE) {
                    comm.broadcast_slice(SlicePart::Send(piece))?;
                }
            }
            None => {
                let mut buffer = memmap2::MmapMut::map_anon(len.max(1))?;
                for piece in buffer[..len].chunks_mut(SLICE_PIECE) {
                    comm.broadcast_slice(SlicePart::Receive(piece))?;
                }
            }
        }
        Ok(())
    })
}

fn raw_broadcast(
    comm: &MpiCommunicator,
    world: &SimpleCommunicator,
    resume_dir: &Path,
) -> Result<Measured, BoxError> {
    let file = tagged_file(resume_dir)?;
    let bytes = std::fs::metadata(&file)?.len();
    let len = usize::try_from(bytes)?;
    let mut held = if comm.rank() == 0 {
        std::fs::read(&file)?
    } else {
        Vec::new()
    };
    let root = world.process_at_rank(0);
    measure(comm, bytes, || {
        if comm.rank() != 0 {
            held = vec![0u8; len];
        }
        for chunk in held.chunks_mut(i32::MAX as usize) {
            root.broadcast_into(chunk);
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("gen") {
        let number =
            |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
        let Some(dir) = args.get(1) else {
            eprintln!("usage: resume_bench gen RESUME_DIR [MIB] [TENSORS]");
            return ExitCode::from(2);
        };
        return match generate(Path::new(dir), number(2, 1024), number(3, 320)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("resume_bench gen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let [mode, resume_dir, scratch] = args.as_slice() else {
        eprintln!(
            "usage: resume_bench ckpt-rank0|ckpt-all|ckpt-stream|raw-bcast RESUME_DIR SCRATCH_DIR"
        );
        return ExitCode::from(2);
    };
    let Some((universe, _)) = ckpt_mpi::mpi::initialize_with_threading(Threading::Multiple) else {
        eprintln!("resume_bench: MPI was already initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let comm = match MpiCommunicator::new(&world) {
        Ok(comm) => Arc::new(comm),
        Err(e) => {
            eprintln!("resume_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let measured = match mode.as_str() {
        "ckpt-rank0" | "ckpt-all" => resume(&comm, mode, Path::new(resume_dir), Path::new(scratch)),
        "ckpt-stream" => stream(&comm, Path::new(resume_dir)),
        "raw-bcast" => raw_broadcast(&comm, &world, Path::new(resume_dir)),
        other => Err(format!("unknown mode {other}").into()),
    };
    let outcome = comm.finish(measured.map_err(|e| e.to_string()));
    let code = match outcome {
        Ok(m) => {
            println!(
                "{{\"rank\":{},\"seconds\":{},\"rss_before\":{},\"peak_rss\":{},\"peak_reset\":{},\"bytes\":{}}}",
                comm.rank(),
                m.seconds,
                m.rss_before,
                m.peak_rss,
                m.peak_reset,
                m.bytes
            );
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    };
    drop(comm);
    code
}

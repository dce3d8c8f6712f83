//! Whole-file conversion: `ckpt convert` of a workload's torch file to a torch file and to
//! safetensors, durable, on tmpfs and on disk, against torch's `torch.load` + save of the
//! same file and against the machine's own copy of the same bytes (`cp` + fsync).
//!
//! `ckpt convert` runs as its own process (the `ckpt` binary next to `ckpt-bench`, which
//! `scripts/bench.sh` builds), spawned by a small child of the benchmark so that its peak
//! memory (`ru_maxrss`) is its own: Linux counts in a child's peak the memory of the process
//! it was spawned from. Its "added RSS" is therefore the whole process's peak. Without the
//! binary (e.g. a `cargo test` of this crate alone), the child makes the library calls of
//! `ckpt convert` itself and says so in the row's label.
//!
//! The tmpfs rows read a copy of the input in [`tmpfs_dir`] and write there; the disk rows
//! read the input in the benchmark directory (warm in the page cache) and write to its
//! `out` directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ckpt::format::{
    flatten_tensors, load_with, save_safetensors_with, save_torch, LoadOptions, SafetensorsOptions,
    SaveOptions, SourcePages,
};

use crate::driver::{Case, Kind, Runner};
use crate::measure::{measure, Sample};
use crate::ops::{remove, Paths};

type BoxError = Box<dyn std::error::Error>;

/// Where the tmpfs rows of the benchmark in `dir` read and write (inputs copied once per
/// run, outputs deleted after every measurement): a directory of its own per benchmark
/// directory, so that two runs at once do not share it. `bench/torch_contender.py` derives
/// the same name.
pub fn tmpfs_dir(dir: &Path) -> PathBuf {
    let flat = dir.to_string_lossy().replace('/', "_");
    PathBuf::from(format!("/dev/shm/ckpt-bench-convert{flat}"))
}

/// The `ckpt` binary next to this executable, when it was built.
pub fn ckpt_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let ckpt = exe.with_file_name(format!("ckpt{}", std::env::consts::EXE_SUFFIX));
    ckpt.is_file().then_some(ckpt)
}

/// The case argument: which output format and where.
fn encode(safetensors: bool, tmpfs: bool) -> u64 {
    u64::from(tmpfs) | u64::from(safetensors) << 1
}

fn decode(arg: u64) -> (bool, bool) {
    (arg & 2 != 0, arg & 1 != 0)
}

/// The conversion rows of `workload` (`big` or `small`), `bytes` of tensor data.
pub fn cases(workload: &'static str, bytes: u64, dir: &Path) -> Vec<Case> {
    let ckpt_label = if ckpt_binary().is_some() {
        "ckpt convert IN OUT (the command)"
    } else {
        "ckpt convert's library calls (no `ckpt` binary next to ckpt-bench)"
    };
    let mut cases = Vec::new();
    for safetensors in [false, true] {
        for tmpfs in [true, false] {
            let kind = Kind::Convert { safetensors, tmpfs };
            let arg = encode(safetensors, tmpfs);
            let torch = if safetensors {
                "`torch.load(weights_only=True)` + safetensors `save_file` + fsync"
            } else {
                "`torch.load(weights_only=True)` + `torch.save` + fsync"
            };
            let mut limit = Case::new(
                workload,
                kind,
                "cp",
                "limit: `cp` of the file + fsync, same place",
                Runner::Rust("copy-limit"),
            );
            limit.limit = true;
            let mut row = vec![
                Case::new(
                    workload,
                    kind,
                    "ckpt",
                    ckpt_label,
                    Runner::Rust("ckpt-convert"),
                ),
                Case::new(
                    workload,
                    kind,
                    "torch",
                    torch,
                    Runner::Python("torch-convert"),
                ),
                limit,
            ];
            for case in &mut row {
                case.arg = arg;
                case.bytes = bytes;
                if !tmpfs {
                    case.warm = Some(dir.join(format!("{workload}.pth")));
                }
            }
            cases.extend(row);
        }
    }
    cases
}

/// Copies the inputs of `workloads` to [`tmpfs_dir`].
pub fn prepare_tmpfs(dir: &Path, workloads: &[&str]) -> Result<(), BoxError> {
    let tmpfs = tmpfs_dir(dir);
    fs::create_dir_all(tmpfs.join("out"))?;
    for workload in workloads {
        let name = format!("{workload}.pth");
        fs::copy(dir.join(&name), tmpfs.join(&name))?;
    }
    Ok(())
}

/// Deletes what a tmpfs row wrote.
pub fn clear_tmpfs_outputs(dir: &Path) -> Result<(), BoxError> {
    let out = tmpfs_dir(dir).join("out");
    if out.exists() {
        fs::remove_dir_all(&out)?;
        fs::create_dir_all(&out)?;
    }
    Ok(())
}

/// Deletes [`tmpfs_dir`].
pub fn remove_tmpfs(dir: &Path) {
    let _ = fs::remove_dir_all(tmpfs_dir(dir));
}

/// The input and the output of a conversion by `contender`.
fn files(paths: &Paths, workload: &str, contender: &str, arg: u64) -> (PathBuf, PathBuf) {
    let (safetensors, tmpfs) = decode(arg);
    let ext = if safetensors { "safetensors" } else { "pth" };
    let base = if tmpfs {
        tmpfs_dir(&paths.dir)
    } else {
        paths.dir.clone()
    };
    (
        base.join(format!("{workload}.pth")),
        base.join("out")
            .join(format!("{contender}-{workload}.{ext}")),
    )
}

/// Runs `command` to completion and returns its wall-clock time and peak memory.
pub(crate) fn timed_child(command: &mut Command) -> Result<Sample, BoxError> {
    let start = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(Sample {
        seconds,
        peak_rss: children_peak_rss(),
        peak_reset: true,
        ..Sample::default()
    })
}

/// The largest peak resident memory of the children this process has waited for.
fn children_peak_rss() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct, and getrusage
    // only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    // Linux reports KiB.
    usage.ru_maxrss.max(0) as u64 * 1024
}

/// `ckpt convert` of `workload` as `arg` says (see [`cases`]).
pub fn ckpt_convert(paths: &Paths, workload: &str, arg: u64) -> Result<Sample, BoxError> {
    let (input, output) = files(paths, workload, "ckpt", arg);
    remove(&output)?;
    let sample = match ckpt_binary() {
        Some(ckpt) => timed_child(
            Command::new(ckpt)
                .arg("convert")
                .arg(&input)
                .arg(&output)
                .env_remove("RUST_LOG"),
        )?,
        None => {
            let (sample, result) = measure(|| library_convert(&input, &output));
            result?;
            sample
        }
    };
    fs::remove_file(&output)?;
    Ok(sample)
}

/// What `ckpt convert IN OUT` does for a plain state dict.
fn library_convert(input: &Path, output: &Path) -> Result<(), BoxError> {
    let options = LoadOptions::default().with_source_pages(SourcePages::Release);
    let value = load_with(input, &options)?.value;
    if output.extension().is_some_and(|e| e == "safetensors") {
        let (tensors, _) = flatten_tensors(&value);
        let options = SafetensorsOptions::default().with_source_pages(SourcePages::Release);
        save_safetensors_with(output, &tensors, None, &options)?;
    } else {
        let options = SaveOptions::default().with_source_pages(SourcePages::Release);
        save_torch(output, &value, &options)?;
    }
    Ok(())
}

/// The machine's limit: `cp` of the input file to the output's place, then fsync of the
/// copy (what a durable conversion at least costs: the same bytes, read and written).
pub fn copy_limit(paths: &Paths, workload: &str, arg: u64) -> Result<Sample, BoxError> {
    let (input, output) = files(paths, workload, "cp", arg);
    remove(&output)?;
    let start = Instant::now();
    let mut sample = timed_child(
        Command::new("cp")
            .arg("--reflink=never")
            .arg(&input)
            .arg(&output),
    )?;
    fs::File::open(&output)?.sync_all()?;
    sample.seconds = start.elapsed().as_secs_f64();
    fs::remove_file(&output)?;
    Ok(sample)
}

//! One benchmark run: write the workloads once, then run every contender on the same files,
//! alternating (in a new order each repetition), several repetitions, each measurement in
//! a process of its own.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::measure::Sample;
use crate::python::PythonServer;
use crate::spec::{total_bytes, Spec};

type BoxError = Box<dyn std::error::Error>;

/// How the run is set up.
pub struct Options {
    pub quick: bool,
    pub reps: usize,
    pub dir: PathBuf,
    /// Python with torch, safetensors and fvcore; `None` runs the Rust contenders only.
    pub python: Option<PathBuf>,
    pub script: PathBuf,
    /// The workloads to run (`big`, `small`, `detectron`, `matching`).
    pub workloads: Vec<String>,
    /// Reuse input files already written for the same spec.
    pub keep_files: bool,
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Save,
    SaveDurable,
    LoadEager,
    LoadLazy,
    Resume,
    ResumeModel,
    Match,
    /// A whole-file conversion of the workload's torch file (see [`crate::convert`]).
    Convert {
        safetensors: bool,
        tmpfs: bool,
    },
    ResumeRanks,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Save => "save, page cache (no fsync)",
            Kind::SaveDurable => "save, durable (fsync)",
            Kind::LoadEager => "load, eager + touch every byte",
            Kind::LoadLazy => "load, lazy (mmap) + touch every byte",
            Kind::Resume => "resume (load into model + optimizer)",
            Kind::ResumeModel => "resume (load into a model)",
            Kind::Match => "name matching",
            Kind::Convert {
                safetensors: false,
                tmpfs: true,
            } => "convert → torch file, durable, tmpfs (/dev/shm)",
            Kind::Convert {
                safetensors: false,
                tmpfs: false,
            } => "convert → torch file, durable, same directory",
            Kind::Convert {
                safetensors: true,
                tmpfs: true,
            } => "convert → safetensors, durable, tmpfs (/dev/shm)",
            Kind::Convert {
                safetensors: true,
                tmpfs: false,
            } => "convert → safetensors, durable, same directory",
            Kind::ResumeRanks => "resume on 4 MPI ranks",
        }
    }
}

/// Who runs a case.
#[derive(Debug, Clone)]
pub enum Runner {
    /// `ckpt-bench child --op <op>`.
    Rust(&'static str),
    /// `torch_contender.py`, operation `<op>`.
    Python(&'static str),
    /// `dd if=/dev/zero` of the workload's size into the benchmark directory or tmpfs.
    Dd { fsync: bool, tmpfs: bool },
    /// `mpirun -np 4 resume_bench <mode>` (see [`crate::mpi`]).
    Mpi(&'static str),
}

/// One row of the results: a contender doing one kind of operation on one workload.
#[derive(Debug, Clone)]
pub struct Case {
    pub workload: &'static str,
    pub kind: Kind,
    /// Short identity used by the target checks (`ckpt`, `torch`, `dd`, ...).
    pub id: &'static str,
    /// What the row shows.
    pub label: String,
    pub runner: Runner,
    /// A machine limit rather than a contender.
    pub limit: bool,
    /// File read into the page cache before each run.
    pub warm: Option<PathBuf>,
    pub arg: u64,
    /// Bytes of tensor data the operation moves (0 when it is not about bytes).
    pub bytes: u64,
    pub samples: Vec<Sample>,
}

impl Case {
    pub(crate) fn new(
        workload: &'static str,
        kind: Kind,
        id: &'static str,
        label: &str,
        runner: Runner,
    ) -> Case {
        Case {
            workload,
            kind,
            id,
            label: label.to_string(),
            limit: matches!(runner, Runner::Dd { .. }) || id == "memcpy",
            runner,
            warm: None,
            arg: 0,
            bytes: 0,
            samples: Vec::new(),
        }
    }

    pub(crate) fn warm(mut self, path: PathBuf) -> Case {
        self.warm = Some(path);
        self
    }

    fn arg(mut self, arg: u64) -> Case {
        self.arg = arg;
        self
    }
}

/// Everything a report needs.
pub struct Outcome {
    pub spec: Spec,
    pub cases: Vec<Case>,
    pub torch_version: Option<String>,
    pub reps: usize,
    pub dir: PathBuf,
    pub seconds: f64,
}

struct Context<'a> {
    exe: PathBuf,
    dir: &'a Path,
    python: Option<PythonServer>,
    /// ckpt-mpi's `resume_bench`, when it and `mpirun` are there.
    mpi: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(options: &Options) -> Result<Outcome, BoxError> {
    let started = Instant::now();
    let spec = Spec::new(options.quick);
    fs::create_dir_all(options.dir.join("out"))?;
    let dir = fs::canonicalize(&options.dir)?;
    let spec_path = dir.join("spec.json");
    let spec_json = serde_json::to_string(&spec)?;
    let reuse =
        options.keep_files && fs::read_to_string(&spec_path).is_ok_and(|old| old == spec_json);
    fs::write(&spec_path, &spec_json)?;

    let python = match &options.python {
        Some(python) => {
            let server = PythonServer::start(python, &options.script, &dir.join("python.log"))?;
            eprintln!("python contenders: torch {}", server.torch_version);
            Some(server)
        }
        None => None,
    };
    let exe = std::env::current_exe()?;
    let wanted = |w: &str| options.workloads.iter().any(|x| x == w);
    let mpi = if wanted("mpi") {
        let program = crate::mpi::program(&exe);
        if program.is_none() {
            eprintln!(
                "warning: no mpirun, or ckpt-mpi's resume_bench not built beside ckpt-bench \
                 (cargo build --release -p ckpt-mpi --example resume_bench): skipping the mpi workload"
            );
        }
        program
    } else {
        None
    };
    let mut ctx = Context {
        exe,
        dir: &dir,
        python,
        mpi,
    };

    for workload in ["big", "small", "detectron"] {
        // The mpi workload resumes the big workload's checkpoint.
        let needed = wanted(workload) || (workload == "big" && ctx.mpi.is_some());
        if needed && !(reuse && inputs_exist(&dir, workload)) {
            eprintln!("writing the {workload} workload's input files ...");
            generate(&mut ctx, workload)?;
        }
    }

    let converted: Vec<&str> = ["big", "small"].into_iter().filter(|w| wanted(w)).collect();
    crate::convert::prepare_tmpfs(&dir, &converted)?;

    let mut cases = Vec::new();
    for workload in ["big", "small", "detectron", "matching", "mpi"] {
        if !wanted(workload) || (workload == "mpi" && ctx.mpi.is_none()) {
            continue;
        }
        let mut group = if workload == "mpi" {
            let file = dir.join("big-resume").join("model_big.pth");
            let bytes = fs::metadata(&file)?.len();
            crate::mpi::cases(bytes)
                .into_iter()
                .map(|case| case.warm(file.clone()))
                .collect()
        } else {
            cases_for(workload, &spec, &dir, ctx.python.is_some())
        };
        let interactive = std::io::stderr().is_terminal();
        for rep in 0..options.reps {
            if !interactive {
                eprintln!("{workload}: repetition {}/{}", rep + 1, options.reps);
            }
            // A new order each repetition, so no contender always runs first, last, or after
            // the same other one (the machine's state after a run affects the next).
            for k in run_order(group.len(), rep) {
                let case = &mut group[k];
                if interactive {
                    eprint!(
                        "\r{workload}: repetition {}/{}, {:<70}",
                        rep + 1,
                        options.reps,
                        case.label
                    );
                }
                let sample = run_case(&mut ctx, case)?;
                case.samples.push(sample);
                // Every run starts with the same free memory: no earlier output stays in the
                // page cache for the next save to reclaim.
                clear_outputs(&dir)?;
                crate::convert::clear_tmpfs_outputs(&dir)?;
            }
        }
        if interactive {
            eprintln!();
        }
        cases.extend(group);
    }
    let _ = fs::remove_dir_all(dir.join("out"));
    crate::convert::remove_tmpfs(&dir);
    let torch_version = ctx.python.as_ref().map(|p| p.torch_version.clone());
    Ok(Outcome {
        spec,
        cases,
        torch_version,
        reps: options.reps,
        dir,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A permutation of `0..n` that differs between repetitions and between runs alike
/// (a seeded Fisher-Yates shuffle).
fn run_order(n: usize, rep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = (rep as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

fn clear_outputs(dir: &Path) -> Result<(), BoxError> {
    let out = dir.join("out");
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(&out)?;
    Ok(())
}

fn inputs_exist(dir: &Path, workload: &str) -> bool {
    match workload {
        "detectron" => dir.join("detectron").join("last_checkpoint").exists(),
        _ => {
            dir.join(format!("{workload}.pth")).exists()
                && dir.join(format!("{workload}.safetensors")).exists()
                && (workload != "big" || dir.join("big-resume").join("last_checkpoint").exists())
        }
    }
}

/// Writes the input files of `workload`: with torch (`torch.save`, `save_file`, fvcore's
/// Checkpointer) when Python is there, so ckpt reads files torch wrote; else with ckpt.
fn generate(ctx: &mut Context, workload: &'static str) -> Result<(), BoxError> {
    if workload == "detectron" {
        let _ = fs::remove_dir_all(ctx.dir.join("detectron"));
    }
    if workload == "big" {
        let _ = fs::remove_dir_all(ctx.dir.join("big-resume"));
    }
    match &mut ctx.python {
        Some(python) => {
            python.run("gen", workload, ctx.dir, 0)?;
        }
        None => {
            rust_child(&ctx.exe, ctx.dir, "gen", workload, 0)?;
        }
    }
    Ok(())
}

/// The rows of `workload`.
fn cases_for(workload: &'static str, spec: &Spec, dir: &Path, python: bool) -> Vec<Case> {
    use Kind::*;
    use Runner::{Dd, Python, Rust};
    let pth = dir.join(format!("{workload}.pth"));
    let st = dir.join(format!("{workload}.safetensors"));
    let mut cases = match workload {
        "big" | "small" => {
            let bytes = total_bytes(if workload == "big" {
                &spec.big
            } else {
                &spec.small
            });
            let mut v = vec![
                Case::new(
                    workload,
                    Save,
                    "ckpt",
                    "ckpt `write_torch` → BufWriter<File>",
                    Rust("ckpt-save"),
                ),
                Case::new(
                    workload,
                    Save,
                    "torch",
                    "`torch.save(state, path)`",
                    Python("torch-save"),
                ),
                Case::new(
                    workload,
                    Save,
                    "st-py",
                    "safetensors `save_file`",
                    Python("st-save"),
                ),
                Case::new(
                    workload,
                    Save,
                    "st-rs",
                    "safetensors crate `serialize_to_file`",
                    Rust("st-rs-save"),
                ),
                Case::new(
                    workload,
                    Save,
                    "dd",
                    "limit: `dd` to the same directory",
                    Dd {
                        fsync: false,
                        tmpfs: false,
                    },
                ),
                Case::new(
                    workload,
                    Save,
                    "tmpfs",
                    "limit: `dd` to tmpfs (/dev/shm)",
                    Dd {
                        fsync: false,
                        tmpfs: true,
                    },
                ),
                Case::new(
                    workload,
                    SaveDurable,
                    "ckpt",
                    "ckpt `save_torch` (atomic, fsync)",
                    Rust("ckpt-save-durable"),
                ),
                Case::new(
                    workload,
                    SaveDurable,
                    "torch",
                    "`torch.save` + fsync file and dir",
                    Python("torch-save-durable"),
                ),
                Case::new(
                    workload,
                    SaveDurable,
                    "dd",
                    "limit: `dd conv=fsync`, same directory",
                    Dd {
                        fsync: true,
                        tmpfs: false,
                    },
                ),
                Case::new(
                    workload,
                    LoadEager,
                    "ckpt",
                    "ckpt `load_with(mmap: false)`",
                    Rust("ckpt-load"),
                )
                .warm(pth.clone()),
                Case::new(
                    workload,
                    LoadEager,
                    "torch",
                    "`torch.load(weights_only=True)`",
                    Python("torch-load"),
                )
                .warm(pth.clone()),
                Case::new(
                    workload,
                    LoadEager,
                    "st-rs",
                    "safetensors crate, `fs::read` + `deserialize`",
                    Rust("st-rs-load"),
                )
                .warm(st.clone()),
                Case::new(
                    workload,
                    LoadEager,
                    "memcpy",
                    "limit: memcpy of the same size",
                    Rust("memcpy"),
                )
                .arg(bytes),
                Case::new(
                    workload,
                    LoadLazy,
                    "ckpt",
                    "ckpt `load_with(mmap: true)`",
                    Rust("ckpt-load-lazy"),
                )
                .warm(pth.clone()),
                Case::new(
                    workload,
                    LoadLazy,
                    "torch",
                    "`torch.load(weights_only=True, mmap=True)`",
                    Python("torch-load-mmap"),
                )
                .warm(pth.clone()),
                Case::new(
                    workload,
                    LoadLazy,
                    "st-py",
                    "safetensors `load_file` (mmap backend)",
                    Python("st-load"),
                )
                .warm(st.clone()),
                Case::new(
                    workload,
                    LoadLazy,
                    "st-rs",
                    "safetensors crate, mmap + `deserialize`",
                    Rust("st-rs-load-lazy"),
                )
                .warm(st),
            ];
            if workload == "big" {
                let resumed = dir.join("big-resume").join("model_big.pth");
                v.push(
                    Case::new(
                        workload,
                        ResumeModel,
                        "ckpt",
                        "ckpt `Checkpointer::resume_or_load` into `StateDictModel` (crc32s checked) + touch",
                        Rust("ckpt-big-resume"),
                    )
                    .warm(resumed.clone()),
                );
                v.push(
                    Case::new(
                        workload,
                        ResumeModel,
                        "ckpt-unverified",
                        "... without checking the crc32s (`verify_on_resume(false)`)",
                        Rust("ckpt-big-resume-unverified"),
                    )
                    .warm(resumed.clone()),
                );
                v.push(
                    Case::new(
                        workload,
                        ResumeModel,
                        "ckpt-lazy-zeros",
                        "... into a model of `Tensor::zeros` (pages provided by the load)",
                        Rust("ckpt-big-resume-lazy-zeros"),
                    )
                    .warm(resumed),
                );
            }
            for case in &mut v {
                case.bytes = bytes;
                if matches!(case.runner, Dd { .. }) {
                    case.arg = bytes;
                }
            }
            v.extend(crate::convert::cases(workload, bytes, dir));
            v
        }
        "detectron" => {
            let d = &spec.detectron;
            let model = total_bytes(d.model.iter().map(|t| &t.tensor));
            let momentum = total_bytes(
                d.model
                    .iter()
                    .filter(|t| !t.buffer && t.trainable)
                    .map(|t| &t.tensor),
            );
            let file = dir.join("detectron").join(format!("{}.pth", d.name));
            let mut v = vec![
                Case::new(
                    workload,
                    Save,
                    "ckpt",
                    "ckpt: the checkpoint dict by `write_torch` → BufWriter<File>",
                    Rust("ckpt-checkpoint-write"),
                ),
                Case::new(
                    workload,
                    Save,
                    "fvcore",
                    "fvcore `Checkpointer.save` (torch.save into an open file)",
                    Python("fvcore-save"),
                ),
                Case::new(
                    workload,
                    Save,
                    "dd",
                    "limit: `dd` to the same directory",
                    Dd {
                        fsync: false,
                        tmpfs: false,
                    },
                ),
                Case::new(
                    workload,
                    SaveDurable,
                    "ckpt",
                    "ckpt `Checkpointer::save` (atomic, fsync)",
                    Rust("ckpt-checkpointer-save"),
                ),
                Case::new(
                    workload,
                    SaveDurable,
                    "dd",
                    "limit: `dd conv=fsync`, same directory",
                    Dd {
                        fsync: true,
                        tmpfs: false,
                    },
                ),
                Case::new(
                    workload,
                    Resume,
                    "ckpt",
                    "ckpt `Checkpointer::resume_or_load` + touch",
                    Rust("ckpt-checkpointer-resume"),
                )
                .warm(file.clone()),
                Case::new(
                    workload,
                    Resume,
                    "fvcore",
                    "fvcore `Checkpointer.resume_or_load`",
                    Python("fvcore-resume"),
                )
                .warm(file),
            ];
            for case in &mut v {
                case.bytes = model + momentum;
                if matches!(case.runner, Dd { .. }) {
                    case.arg = model + momentum;
                }
            }
            v
        }
        _ => {
            let m = &spec.matching;
            let mut v = vec![Case::new(
                workload,
                Match,
                "ckpt",
                &format!("ckpt `align_and_update_state_dicts`, {} keys", m.keys),
                Rust("ckpt-match"),
            )
            .arg(m.keys as u64)];
            for &n in &m.python_keys {
                v.push(
                    Case::new(
                        workload,
                        Match,
                        "ckpt-n",
                        &format!("ckpt, {n} keys"),
                        Rust("ckpt-match"),
                    )
                    .arg(n as u64),
                );
                v.push(
                    Case::new(
                        workload,
                        Match,
                        "python-n",
                        &format!("detectron2's quadratic rule (Python), {n} keys"),
                        Python("py-match"),
                    )
                    .arg(n as u64),
                );
            }
            v
        }
    };
    if !python {
        cases.retain(|c| !matches!(c.runner, Python(_)));
    }
    cases
}

fn run_case(ctx: &mut Context, case: &Case) -> Result<Sample, BoxError> {
    // Start every run with no dirty pages from the previous one being written back.
    Command::new("sync").status()?;
    if let Some(path) = &case.warm {
        warm(path)?;
    }
    match &case.runner {
        Runner::Rust(op) => rust_child(&ctx.exe, ctx.dir, op, case.workload, case.arg),
        Runner::Python(op) => {
            let python = ctx.python.as_mut().ok_or("a Python case without Python")?;
            python.run(op, case.workload, ctx.dir, case.arg)
        }
        Runner::Dd { fsync, tmpfs } => dd(ctx.dir, case.arg, *fsync, *tmpfs),
        Runner::Mpi(mode) => {
            let program = ctx.mpi.as_ref().ok_or("an mpi case without resume_bench")?;
            crate::mpi::run(program, mode, ctx.dir)
        }
    }
}

/// Reads `path` once so that it is in the page cache.
fn warm(path: &Path) -> Result<(), BoxError> {
    let mut file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())?;
    Ok(())
}

/// Runs `ckpt-bench child` for one Rust operation.
fn rust_child(
    exe: &Path,
    dir: &Path,
    op: &str,
    workload: &str,
    arg: u64,
) -> Result<Sample, BoxError> {
    let output = Command::new(exe)
        .args([
            "child",
            "--op",
            op,
            "--workload",
            workload,
            "--arg",
            &arg.to_string(),
            "--dir",
        ])
        .arg(dir)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "ckpt-bench child {op} on {workload} failed ({})",
            output.status
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .ok_or("the Rust child printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// `dd if=/dev/zero` of `bytes` bytes, timed from the outside (the process start is in it:
/// about a millisecond).
fn dd(dir: &Path, bytes: u64, fsync: bool, tmpfs: bool) -> Result<Sample, BoxError> {
    let target = if tmpfs {
        PathBuf::from(format!("/dev/shm/ckpt-bench-dd-{}", std::process::id()))
    } else {
        dir.join("out").join("dd.bin")
    };
    let _ = fs::remove_file(&target);
    let mut command = Command::new("dd");
    command
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=4M", "iflag=count_bytes", "status=none"])
        .arg(format!("count={bytes}"));
    if fsync {
        command.arg("conv=fsync");
    }
    let start = Instant::now();
    let status = command.status()?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = fs::remove_file(&target);
    if !status.success() {
        return Err(format!("dd failed ({status})").into());
    }
    Ok(Sample {
        seconds,
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::run_order;

    #[test]
    fn every_repetition_runs_every_case_once_in_a_new_order() {
        let orders: Vec<Vec<usize>> = (0..5).map(|rep| run_order(17, rep)).collect();
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..17).collect::<Vec<_>>());
        }
        assert!(orders.windows(2).all(|w| w[0] != w[1]));
    }
}

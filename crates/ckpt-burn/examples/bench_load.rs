//! Time and peak memory to load a torch file into a burn module: through ckpt
//! ([`ckpt_burn::BurnModel`]) against burn-store's `PytorchStore`, on the same files.
//!
//! ```text
//! cargo run --release -p ckpt-burn --example bench_load -- DIR [--limit SECONDS]
//! ```
//!
//! Writes two torch files into `DIR` (kept for reruns): `big.pth`, about 1 GiB of float32
//! weights in 64 `Linear(2048, 2048)` layers, and `many.pth`, 50,000 small tensors (25,000
//! `Linear(4, 4)` weights and biases), each with a checksum of its weights (`*.pth.fnv`).
//!
//! Each load runs in its own process (this program started again): it builds the same fresh
//! module for both loaders, then times the load until the weights are inside that module
//! (wall time, and CPU time, which a busy machine disturbs less), and reads its own peak
//! resident set size (`ru_maxrss`) right then. Afterwards it
//! checksums the module's weights; the table says whether they are the saved ones, so both
//! loaders are checked to produce the same values. The files are written by a process of
//! their own too, so that this process stays small: Linux counts in a child's `ru_maxrss`
//! the peak of the process that spawned it.
//!
//! A load still running after `--limit` seconds (default 600) is killed and reported as
//! `> LIMIT`, with the memory it had reached.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;
use burn_store::{ModuleSnapshot, PytorchStore};
use ckpt::format::SaveOptions;
use ckpt::Model;
use ckpt_burn::BurnModel;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A stack of linear layers (the module both loaders fill).
#[derive(Module, Debug)]
struct Stack {
    layers: Vec<Linear>,
}

/// The two benchmark files: name, layers, width, bias.
const FILES: [(&str, usize, usize, bool); 2] =
    [("big", 64, 2048, false), ("many", 25_000, 4, true)];

/// The loaders compared.
const LOADERS: [&str; 2] = ["ckpt", "burn-store"];

/// Seconds a load may take before it is killed, unless `--limit` says otherwise.
const DEFAULT_LIMIT: u64 = 600;

/// A fresh module with the layout of file `name` (randomly initialised, as a user's would be).
fn stack(name: &str) -> BoxResult<Stack> {
    let (_, layers, width, bias) = FILES
        .iter()
        .find(|f| f.0 == name)
        .ok_or_else(|| format!("unknown file {name}"))?;
    let device = Device::default();
    Ok(Stack {
        layers: (0..*layers)
            .map(|_| {
                LinearConfig::new(*width, *width)
                    .with_bias(*bias)
                    .init(&device)
            })
            .collect(),
    })
}

/// FNV-1a over the bits of every weight of `stack`, 8 bytes at a time, in burn's layout.
fn checksum(stack: &Stack) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut add = |data: burn::tensor::TensorData| {
        for word in data.as_bytes().chunks(8) {
            let mut bytes = [0u8; 8];
            bytes[..word.len()].copy_from_slice(word);
            hash = (hash ^ u64::from_le_bytes(bytes)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for layer in &stack.layers {
        add(layer.weight.val().into_data());
        if let Some(bias) = &layer.bias {
            add(bias.val().into_data());
        }
    }
    hash
}

fn sum_path(path: &Path) -> PathBuf {
    path.with_extension("pth.fnv")
}

/// Writes file `name` (a fresh module under torch's names and layout) and its checksum.
fn generate(name: &str, path: &Path) -> BoxResult<()> {
    let module = stack(name)?;
    let sum = checksum(&module);
    let sd = BurnModel::new(module).state_dict()?;
    ckpt::format::save_torch(path, &sd.to_value(), &SaveOptions::default())?;
    std::fs::write(sum_path(path), format!("{sum:016x}\n"))?;
    Ok(())
}

/// Loads `path` into a fresh module with `loader`; prints the load's wall and CPU seconds,
/// the peak RSS (KiB) when it ended, and the checksum of the module's weights after it.
fn load(loader: &str, name: &str, path: &Path) -> BoxResult<()> {
    let module = stack(name)?;
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let module = match loader {
        "ckpt" => {
            let mut model = BurnModel::new(module);
            let sd = ckpt::StateDict::from_value(&ckpt::format::load(path)?)?;
            let loaded = model.load_state_dict(sd)?;
            if !loaded.missing_keys.is_empty() || !loaded.unexpected_keys.is_empty() {
                return Err(format!("ckpt: incomplete load: {loaded:?}").into());
            }
            model.into_module()
        }
        "burn-store" => {
            let mut module = module;
            let mut store = PytorchStore::from_file(path);
            let result = module.load_from(&mut store)?;
            if !result.missing.is_empty() || !result.unused.is_empty() || !result.errors.is_empty()
            {
                return Err(format!("burn-store: incomplete load: {result}").into());
            }
            module
        }
        other => return Err(format!("unknown loader {other}").into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let peak_kib = own_usage().ru_maxrss;
    println!("{seconds} {cpu} {peak_kib} {:016x}", checksum(&module));
    Ok(())
}

/// This process's resource usage so far.
fn own_usage() -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage; on failure it stays zero.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage
}

/// The CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let usage = own_usage();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// How one load went.
enum Measured {
    /// Load seconds (wall, CPU), peak RSS in MiB, and the checksum of the loaded weights.
    Done(f64, f64, f64, String),
    /// Killed after the limit, with the peak RSS (MiB) it had reached.
    TimedOut(f64),
}

/// Runs this program with `args` in a child process, killing it after `limit`; returns its
/// stdout, or `None` when it was killed, with the child's peak RSS in MiB.
fn child(args: &[&str], path: &Path, limit: Duration) -> BoxResult<(Option<String>, f64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // Read on threads so that a chatty child cannot block on a full pipe.
    let reader = read_all(child.stdout.take().ok_or("no stdout")?);
    let errors = read_all(child.stderr.take().ok_or("no stderr")?);
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: pid is our child, not yet reaped; status and usage point to live locals.
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if waited == pid {
            break;
        }
        if waited < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if !killed && start.elapsed() > limit {
            // SAFETY: pid is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.join().map_err(|_| "reader thread panicked")??;
    let errors = errors.join().map_err(|_| "reader thread panicked")??;
    let rss = usage.ru_maxrss as f64 / 1024.0;
    if killed {
        return Ok((None, rss));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let why = errors.lines().last().unwrap_or("no error message");
        return Err(format!("{why} (status {status:#x})").into());
    }
    Ok((Some(out), rss))
}

/// A thread that reads `pipe` to its end.
fn read_all(
    mut pipe: impl Read + Send + 'static,
) -> std::thread::JoinHandle<std::io::Result<String>> {
    std::thread::spawn(move || {
        let mut out = String::new();
        pipe.read_to_string(&mut out).map(|_| out)
    })
}

/// One load of `path` by `loader` in its own process.
fn measure(loader: &str, name: &str, path: &Path, limit: Duration) -> BoxResult<Measured> {
    let (out, killed_rss) = child(&["--load", loader, name], path, limit)?;
    let Some(out) = out else {
        return Ok(Measured::TimedOut(killed_rss));
    };
    let fields: Vec<&str> = out.split_whitespace().collect();
    let [seconds, cpu, peak_kib, sum] = fields.as_slice() else {
        return Err(format!("unexpected output of the load: {out:?}").into());
    };
    let peak_mib = peak_kib.parse::<f64>()? / 1024.0;
    Ok(Measured::Done(
        seconds.parse()?,
        cpu.parse()?,
        peak_mib,
        sum.to_string(),
    ))
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--load") => {
            let [_, loader, name, path] = args.as_slice() else {
                return Err("usage: --load LOADER NAME PATH".into());
            };
            return load(loader, name, Path::new(path));
        }
        Some("--generate") => {
            let [_, name, path] = args.as_slice() else {
                return Err("usage: --generate NAME PATH".into());
            };
            return generate(name, Path::new(path));
        }
        _ => {}
    }
    let usage = "usage: bench_load DIR [--limit SECONDS]";
    let (dir, limit) = match args.as_slice() {
        [dir] => (dir, DEFAULT_LIMIT),
        [dir, flag, seconds] if flag == "--limit" => (dir, seconds.parse().map_err(|_| usage)?),
        _ => return Err(usage.into()),
    };
    let dir = PathBuf::from(dir);
    let limit = Duration::from_secs(limit);
    std::fs::create_dir_all(&dir)?;
    for (name, ..) in FILES {
        let path = dir.join(format!("{name}.pth"));
        if !path.exists() || !sum_path(&path).exists() {
            eprintln!("writing {}", path.display());
            child(&["--generate", name], &path, Duration::MAX)?;
        }
    }

    println!("| file | loader | load time (s) | CPU time (s) | peak RSS (MiB) | weights = saved |");
    println!("|---|---|---|---|---|---|");
    let mut mismatch = false;
    for (name, ..) in FILES {
        let path = dir.join(format!("{name}.pth"));
        let saved = std::fs::read_to_string(sum_path(&path))?.trim().to_string();
        for loader in LOADERS {
            match measure(loader, name, &path, limit) {
                Ok(Measured::Done(seconds, cpu, rss, sum)) => {
                    let same = if sum == saved { "yes" } else { "NO" };
                    mismatch |= sum != saved;
                    println!(
                        "| {name}.pth | {loader} | {seconds:.3} | {cpu:.3} | {rss:.0} | {same} |"
                    )
                }
                Ok(Measured::TimedOut(rss)) => println!(
                    "| {name}.pth | {loader} | > {} (killed) | | ≥ {rss:.0} | — |",
                    limit.as_secs()
                ),
                Err(e) => println!("| {name}.pth | {loader} | failed: {e} | | | |"),
            }
        }
    }
    if mismatch {
        return Err("a load did not give the saved weights".into());
    }
    Ok(())
}

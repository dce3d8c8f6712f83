//! Time and peak memory to load a torch file into a burn module: through ckpt
//! ([`ckpt_burn::BurnModel`]) against burn-store's `PytorchStore`, on the same files.
//!
//! ```text
//! cargo run --release -p ckpt-burn --example bench_load -- DIR
//! ```
//!
//! Writes two torch files into `DIR` (kept for reruns): `big.pth`, about 1 GiB of float32
//! weights in 64 `Linear(2048, 2048)` layers, and `many.pth`, 50,000 small tensors (25,000
//! `Linear(4, 4)` weights and biases). Each load runs in its own process (this program
//! started again), so each peak resident set size (`wait4`'s `ru_maxrss`) is that load's
//! alone; the table gives the wall time of the load and the child's peak memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

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

fn stack(layers: usize, width: usize, bias: bool) -> Stack {
    let device = Device::default();
    Stack {
        layers: (0..layers)
            .map(|_| {
                LinearConfig::new(width, width)
                    .with_bias(bias)
                    .init(&device)
            })
            .collect(),
    }
}

fn spec(name: &str) -> BoxResult<(usize, usize, bool)> {
    FILES
        .iter()
        .find(|f| f.0 == name)
        .map(|f| (f.1, f.2, f.3))
        .ok_or_else(|| format!("unknown file {name}").into())
}

fn generate(dir: &Path) -> BoxResult<()> {
    std::fs::create_dir_all(dir)?;
    for (name, layers, width, bias) in FILES {
        let path = dir.join(format!("{name}.pth"));
        if path.exists() {
            continue;
        }
        eprintln!("writing {}", path.display());
        let sd = BurnModel::new(stack(layers, width, bias)).state_dict()?;
        ckpt::format::save_torch(&path, &sd.to_value(), &SaveOptions::default())?;
    }
    Ok(())
}

/// Loads `path` into a fresh module with `loader`; prints the load's seconds.
fn load(loader: &str, name: &str, path: &Path) -> BoxResult<()> {
    let (layers, width, bias) = spec(name)?;
    let module = stack(layers, width, bias);
    let start = Instant::now();
    match loader {
        "ckpt" => {
            let mut model = BurnModel::new(module);
            let sd = ckpt::StateDict::from_value(&ckpt::format::load(path)?)?;
            let loaded = model.load_state_dict(sd)?;
            if !loaded.missing_keys.is_empty() {
                return Err(format!("missing {:?}", loaded.missing_keys).into());
            }
        }
        "burn-store" => {
            let mut module = module;
            let mut store = PytorchStore::from_file(path);
            let result = module.load_from(&mut store)?;
            if !result.missing.is_empty() {
                return Err(format!("missing {:?}", result.missing).into());
            }
        }
        other => return Err(format!("unknown loader {other}").into()),
    }
    println!("{}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Runs one load in a child process: (seconds, peak RSS in MiB).
fn measure(loader: &str, name: &str, path: &Path) -> BoxResult<(f64, f64)> {
    let child = Command::new(std::env::current_exe()?)
        .args(["--load", loader, name])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage point to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{loader} failed to load {}", path.display()).into());
    }
    let mut out = String::new();
    use std::io::Read;
    child.stdout.ok_or("no stdout")?.read_to_string(&mut out)?;
    let seconds: f64 = out.trim().parse()?;
    Ok((seconds, usage.ru_maxrss as f64 / 1024.0))
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--load") {
        let [_, loader, name, path] = args.as_slice() else {
            return Err("usage: --load LOADER NAME PATH".into());
        };
        return load(loader, name, Path::new(path));
    }
    let dir = PathBuf::from(args.first().ok_or("usage: bench_load DIR")?);
    generate(&dir)?;
    println!("| file | loader | load time (s) | peak RSS (MiB) |");
    println!("|---|---|---|---|");
    for (name, ..) in FILES {
        let path = dir.join(format!("{name}.pth"));
        for loader in ["ckpt", "burn-store"] {
            match measure(loader, name, &path) {
                Ok((seconds, rss)) => {
                    println!("| {name}.pth | {loader} | {seconds:.3} | {rss:.0} |")
                }
                Err(e) => println!("| {name}.pth | {loader} | failed: {e} | |"),
            }
        }
    }
    Ok(())
}

//! The child processes of the integration tests (`tests/it`), which start this binary
//! through `CARGO_BIN_EXE_ckpt-test-child` (see the `[[bin]]` entry in Cargo.toml):
//!
//! - `save-loop DIR`: resumes from the checkpoints in `DIR`, then saves one every iteration
//!   until it is killed (the crash-safety test kills it at random instants).
//! - `async-save-killed DIR`: saves iteration 0, then starts a background save of iteration
//!   1 whose write stalls halfway; prints `returned` once the save call has returned and
//!   `writing` from inside the write, then waits to be killed.
//! - `async-save-memory DIR`: 200 background saves with copied snapshots; prints the state's
//!   size and the resident memory after 20 and after 200 saves.
//! - `retain DIR FROM TO`: trains iterations `FROM..TO` with a checkpoint every 10, under
//!   composed retention policies (newest 2, best 1 by `loss`, every 50 iterations, one per
//!   100 s of a simulated clock at 7 s per iteration), recording each checkpoint's loss.
//! - `upload-and-hang URL NAME` (with the `s3` feature): starts writing `NAME` to the object
//!   store prefix `URL` in 5 MiB parts, prints `uploading` once two parts are sent, and waits
//!   to be killed (the abandoned-upload test).
//! - `cache-dir`: prints the default download cache directory, as this process's environment
//!   (`CKPT_CACHE_DIR`) makes it.
//! - `hold-writer DIR`: saves one checkpoint into `DIR`, prints `saved`, then keeps its
//!   checkpointer (and the directory's writer lock) until it is killed.
//! - `stuck-save DIR`: starts an atomic save of `DIR/stuck.pth`, writes a few bytes, prints
//!   `writing`, and never finishes (the test kills it, leaving the temporary file).
//!
//! The crash-safety test also includes this file as a module, for [`filled_state`].

use std::process::ExitCode;

use std::io::Write;

use ckpt::store::{Entry, LocalDir, Location, PendingWrite, Store, WriterLock};
use ckpt::{
    shared, Checkpointer, Dict, PeriodicCheckpointer, SnapshotMode, StateDict, StateDictModel,
    Tensor, Value,
};

/// Elements of the big tensor: enough that a save takes a while, so kills land inside writes.
pub const ELEMENTS: usize = 1 << 18;

/// A model whose every value is `value` (the iteration that saved it).
pub fn filled_state(value: f32) -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        "big.weight",
        Tensor::from_slice(&vec![value; ELEMENTS], &[ELEMENTS]).unwrap(),
    );
    sd.insert("small.bias", Tensor::from_slice(&[value; 3], &[3]).unwrap());
    sd
}

/// Resumes from `dir`, then saves every iteration (keeping 3) until killed.
fn save_loop(dir: &str) -> ckpt::Result<()> {
    let model = shared(StateDictModel::new(filled_state(-1.0)));
    let checkpointer = Checkpointer::new(model.clone(), dir);
    let start = checkpointer
        .resume_or_load(None, true)?
        .get("iteration")
        .and_then(|v| v.as_int())
        .map_or(0, |i| i + 1);
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_to_keep(3)
        .build()?;
    for iteration in start.. {
        *model.lock().unwrap() = StateDictModel::new(filled_state(iteration as f32));
        periodic.step(iteration as u64, Dict::new())?;
    }
    Ok(())
}

/// A directory whose writes of checkpoint files stall for good after some bytes.
#[derive(Debug)]
struct StallingDir(LocalDir);

/// Passes bytes on until `left` is spent, then says so and never returns.
struct Stall<'a> {
    inner: &'a mut dyn Write,
    left: usize,
}

impl Write for Stall<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() >= self.left {
            self.inner.write_all(&bytes[..self.left])?;
            self.inner.flush()?;
            println!("writing");
            loop {
                std::thread::park();
            }
        }
        self.left -= bytes.len();
        self.inner.write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Store for StallingDir {
    fn location(&self, name: &str) -> Location {
        self.0.location(name)
    }
    fn create(&self, name: &str) -> ckpt::Result<Box<dyn PendingWrite + '_>> {
        self.0.create(name)
    }
    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> ckpt::Result<()>,
    ) -> ckpt::Result<()> {
        if !name.ends_with(".pth") {
            return self.0.write(name, write);
        }
        self.0.write(name, &mut |w| {
            write(&mut Stall {
                inner: w,
                left: ELEMENTS * 2,
            })
        })
    }
    fn read_small(&self, name: &str) -> ckpt::Result<Option<Vec<u8>>> {
        self.0.read_small(name)
    }
    fn exists(&self, name: &str) -> ckpt::Result<bool> {
        self.0.exists(name)
    }
    fn list_entries(&self) -> ckpt::Result<Vec<Entry>> {
        self.0.list_entries()
    }
    fn lock_writer(&self) -> ckpt::Result<WriterLock> {
        self.0.lock_writer()
    }
    fn remove(&self, name: &str) -> ckpt::Result<()> {
        self.0.remove(name)
    }
    fn remove_stale_temporaries(&self) -> ckpt::Result<()> {
        self.0.remove_stale_temporaries()
    }
}

fn at_iteration(iteration: i64) -> Dict {
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(iteration));
    extra
}

/// Saves iteration 0, then iteration 1 in the background into a write that stalls.
#[allow(dead_code)]
fn async_save_killed(dir: &str) -> ckpt::Result<()> {
    Checkpointer::new(shared(StateDictModel::new(filled_state(0.0))), dir)
        .save("model_0000000", at_iteration(0))?;
    let model = shared(StateDictModel::new(filled_state(1.0)));
    let checkpointer =
        Checkpointer::with_store(model, std::sync::Arc::new(StallingDir(LocalDir::new(dir))))
            .with_async_save(true);
    checkpointer.save("model_0000001", at_iteration(1))?;
    println!("returned");
    loop {
        std::thread::park();
    }
}

/// The resident memory of this process, in bytes.
#[allow(dead_code)]
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// 200 background saves of a model updated copy-on-write, every tensor copied into staging.
#[allow(dead_code)]
fn async_save_memory(dir: &str) -> ckpt::Result<()> {
    const TENSORS: usize = 4;
    const ELEMENTS: usize = 1 << 17;
    let state = |value: f32| {
        let mut sd = StateDict::new();
        for i in 0..TENSORS {
            sd.insert(
                format!("layer{i}.weight"),
                Tensor::from_slice(&vec![value; ELEMENTS], &[ELEMENTS]).unwrap(),
            );
        }
        sd
    };
    println!("state {}", TENSORS * ELEMENTS * 4);
    let model = shared(StateDictModel::new(state(0.0)));
    let checkpointer = Checkpointer::new(model.clone(), dir).with_snapshot_mode(SnapshotMode::Copy);
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_to_keep(2)
        .async_save(true)
        .build()?;
    for iteration in 0..200u64 {
        *model.lock().unwrap() = StateDictModel::new(state(iteration as f32));
        periodic.step(iteration, Dict::new())?;
        if iteration == 19 || iteration == 199 {
            periodic.flush()?;
            println!("rss_after_{} {}", iteration + 1, resident_bytes());
        }
    }
    Ok(())
}

/// Writes two parts of `name` under `url` and hangs with the upload open.
#[cfg(feature = "s3")]
fn upload_and_hang(url: &str, name: &str) -> ckpt::Result<()> {
    use ckpt::store::{ObjectStoreDir, Store};
    use std::io::Write;
    let store = ObjectStoreDir::builder(url).part_size(5 << 20).build()?;
    let mut pending = store.create(name)?;
    let part = vec![7u8; 5 << 20];
    for _ in 0..3 {
        pending
            .write_all(&part)
            .map_err(|e| ckpt::Error::io(name, e))?;
    }
    println!("uploading");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Saves once into `dir`, then holds the checkpointer until killed.
#[allow(dead_code)] // unused where the crash-safety test includes this file
fn hold_writer(dir: &str) -> ckpt::Result<()> {
    let checkpointer = Checkpointer::new(shared(StateDictModel::new(filled_state(1.0))), dir);
    checkpointer.save("model_0000000", Dict::new())?;
    println!("saved");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = &checkpointer;
    }
}

/// Starts writing `dir/stuck.pth` and never finishes.
#[allow(dead_code)] // unused where the crash-safety test includes this file
fn stuck_save(dir: &str) -> ckpt::Result<()> {
    let path = std::path::Path::new(dir).join("stuck.pth");
    ckpt::store::atomic_write(&path, |w| {
        w.write_all(b"PK\x03\x04 half a checkpoint")
            .and_then(|()| w.flush())
            .map_err(|e| ckpt::Error::io(&path, e))?;
        println!("writing");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    })
}

/// The loss evaluated on the checkpoint of `iteration`: best at iteration 59.
#[allow(dead_code)] // unused where the crash-safety test includes this file
fn retain_loss(iteration: u64) -> f64 {
    ((iteration / 10) as f64 - 5.0).abs() + 0.5
}

/// One run of the retention test; see the module documentation.
#[allow(dead_code)] // unused where the crash-safety test includes this file
fn retain(dir: &str, from: u64, to: u64) -> ckpt::Result<()> {
    use ckpt::retention::{Mode, Policy};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let checkpointer = Checkpointer::new(shared(StateDictModel::new(filled_state(0.0))), dir);
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(10)
        .max_to_keep(2)
        .keep(Policy::Best {
            metric: "loss".into(),
            mode: Mode::Min,
            k: 1,
        })
        .keep(Policy::EveryIterations(50))
        .keep(Policy::OnePerInterval { seconds: 100 })
        .clock(move || UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst)))
        .build()?;
    for iteration in from..to {
        now.store(iteration * 7, Ordering::SeqCst);
        periodic.step(iteration, Dict::new())?;
        if (iteration + 1) % 10 == 0 {
            periodic.record_metric(iteration, "loss", retain_loss(iteration))?;
        }
    }
    Ok(())
}

#[allow(dead_code)] // unused where the crash-safety test includes this file
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["save-loop", dir] => save_loop(dir),
        ["async-save-killed", dir] => async_save_killed(dir),
        ["async-save-memory", dir] => async_save_memory(dir),
        ["retain", dir, from, to] => match (from.parse(), to.parse()) {
            (Ok(from), Ok(to)) => retain(dir, from, to),
            _ => {
                eprintln!("retain: FROM and TO are iterations");
                return ExitCode::from(2);
            }
        },
        #[cfg(feature = "s3")]
        ["upload-and-hang", url, name] => upload_and_hang(url, name),
        ["hold-writer", dir] => hold_writer(dir),
        ["stuck-save", dir] => stuck_save(dir),
        ["cache-dir"] => {
            println!("{}", ckpt::resolve::default_cache_dir().display());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: ckpt-test-child save-loop DIR | async-save-killed DIR | async-save-memory DIR | retain DIR FROM TO | upload-and-hang URL NAME | hold-writer DIR | stuck-save DIR | cache-dir"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ckpt-test-child: {e}");
            ExitCode::FAILURE
        }
    }
}

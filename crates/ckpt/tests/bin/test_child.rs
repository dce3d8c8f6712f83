//! The child processes of the integration tests (`tests/it`), which start this binary
//! through `CARGO_BIN_EXE_ckpt-test-child` (see the `[[bin]]` entry in Cargo.toml):
//!
//! - `save-loop DIR`: resumes from the checkpoints in `DIR`, then saves one every iteration
//!   until it is killed (the crash-safety test kills it at random instants).
//! - `cache-dir`: prints the default download cache directory, as this process's environment
//!   (`CKPT_CACHE_DIR`) makes it.
//! - `hold-writer DIR`: saves one checkpoint into `DIR`, prints `saved`, then keeps its
//!   checkpointer (and the directory's writer lock) until it is killed.
//! - `stuck-save DIR`: starts an atomic save of `DIR/stuck.pth`, writes a few bytes, prints
//!   `writing`, and never finishes (the test kills it, leaving the temporary file).
//!
//! The crash-safety test also includes this file as a module, for [`filled_state`].

use std::process::ExitCode;

use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer, StateDict, StateDictModel, Tensor};

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

#[allow(dead_code)] // unused where the crash-safety test includes this file
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["save-loop", dir] => save_loop(dir),
        ["hold-writer", dir] => hold_writer(dir),
        ["stuck-save", dir] => stuck_save(dir),
        ["cache-dir"] => {
            println!("{}", ckpt::resolve::default_cache_dir().display());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: ckpt-test-child save-loop DIR | hold-writer DIR | stuck-save DIR | cache-dir"
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

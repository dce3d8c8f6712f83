//! Crash safety: a saving process killed with SIGKILL at random instants never leaves a torn
//! checkpoint or tag; a failing write (a full disk) returns an error and changes nothing;
//! temporary files of dead writers are removed by the next save and never listed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ckpt::store::{LocalDir, Store, TEMP_PREFIX};
use ckpt::{shared, Checkpointer, Dict, Error, Result, StateDictModel, Value};

use crate::support::rng::Rng;
use crate::support::*;

// The binary the test kills; it also has the state it saves.
#[path = "../bin/test_child.rs"]
mod test_child;

use test_child::filled_state;

/// Every tensor of a checkpoint holds its own `iteration`, so a torn or mixed file shows.
fn check_consistent(path: &Path) -> i64 {
    let value = ckpt::format::load(path)
        .unwrap_or_else(|e| panic!("torn checkpoint {}: {e}", path.display()));
    let iteration = value
        .get("iteration")
        .and_then(Value::as_int)
        .expect("iteration saved");
    let model = value
        .get("model")
        .and_then(Value::as_dict)
        .expect("model saved");
    for (name, tensor) in model.iter() {
        let values = tensor.as_tensor().unwrap().to_vec::<f32>().unwrap();
        assert!(
            values.iter().all(|v| *v == iteration as f32),
            "{name} in {} mixes iterations",
            path.display()
        );
    }
    iteration
}

#[test]
fn resume_after_sigkill_keeps_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed);
    let mut last_seen = -1i64;
    let mut kills = 0;
    let mut interrupted_writes = 0;
    while kills < 60 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
            .arg("save-loop")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + rng.below(250) as u64));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        kills += 1;
        let has_temp = fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        });
        interrupted_writes += usize::from(has_temp);

        let fresh = shared(StateDictModel::new(filled_state(-1.0)));
        let checkpointer = Checkpointer::new(fresh.clone(), dir.path());
        if !checkpointer.has_checkpoint().unwrap() {
            continue; // killed before its first save completed
        }
        let left = checkpointer
            .resume_or_load(None, true)
            .unwrap_or_else(|e| panic!("after kill {kills} (seed {seed}): {e}"));
        let iteration = left.get("iteration").and_then(Value::as_int).unwrap();
        let restored = fresh.lock().unwrap().tensors().clone();
        assert!(
            same_state(&restored, &filled_state(iteration as f32)),
            "model of iteration {iteration} restored wrongly"
        );
        assert!(
            iteration >= last_seen,
            "went back from {last_seen} to {iteration}"
        );
        last_seen = iteration;
        for file in checkpointer.get_all_checkpoint_files().unwrap() {
            check_consistent(&file);
        }
    }
    assert!(last_seen >= 0, "no save ever completed (seed {seed})");
    eprintln!(
        "{kills} kills, {interrupted_writes} of them inside a write, last iteration {last_seen}"
    );

    // The next save removes what killed writers left behind.
    let checkpointer = Checkpointer::new(model(0.0), dir.path());
    checkpointer.save("after", Dict::new()).unwrap();
    let leftovers: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A directory on a disk that fills up: writes of the chosen names fail after `limit` bytes.
#[derive(Debug)]
struct FullDisk {
    inner: LocalDir,
    limit: AtomicU64,
    only: Option<&'static str>,
}

struct Limited<'a> {
    inner: &'a mut dyn Write,
    left: u64,
}

impl Write for Limited<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.len() as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ));
        }
        self.left -= bytes.len() as u64;
        self.inner.write(bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Store for FullDisk {
    fn location(&self, name: &str) -> PathBuf {
        self.inner.location(name)
    }
    fn write(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        if self.only.is_some_and(|only| only != name) {
            return self.inner.write(name, write);
        }
        let left = self.limit.load(Ordering::SeqCst);
        self.inner.write(name, &mut |w| {
            let mut limited = Limited { inner: w, left };
            write(&mut limited)?;
            limited
                .flush()
                .map_err(|e| Error::io(self.location(name), e))
        })
    }
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.read_small(name)
    }
    fn exists(&self, name: &str) -> Result<bool> {
        self.inner.exists(name)
    }
    fn list(&self) -> Result<Vec<String>> {
        self.inner.list()
    }
    fn remove(&self, name: &str) -> Result<()> {
        self.inner.remove(name)
    }
    fn remove_stale_temporaries(&self) -> Result<()> {
        self.inner.remove_stale_temporaries()
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FullDisk {
        inner: LocalDir::new(dir.path()),
        limit: AtomicU64::new(u64::MAX),
        only: None,
    });
    let trained = model(1.0);
    let checkpointer = Checkpointer::with_store(trained.clone(), store.clone());
    checkpointer.save("model_0000009", Dict::new()).unwrap();
    let before = fs::read(dir.path().join("model_0000009.pth")).unwrap();

    *trained.lock().unwrap() = StateDictModel::new(model_state(2.0));
    store.limit.store(100, Ordering::SeqCst);
    let err = checkpointer.save("model_0000019", Dict::new()).unwrap_err();
    assert!(
        matches!(&err, ckpt::Error::Io { path, source }
            if path.ends_with("model_0000019.pth") && source.to_string().contains("No space left")),
        "{err:?}"
    );
    assert_eq!(
        dir_names(dir.path()),
        vec!["last_checkpoint", "model_0000009.pth"]
    );
    assert_eq!(
        fs::read(dir.path().join("model_0000009.pth")).unwrap(),
        before
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_0000009.pth"
    );

    let fresh = model(0.0);
    Checkpointer::new(fresh.clone(), dir.path())
        .resume_or_load(None, true)
        .unwrap();
    assert!(same_state(&state_of(&fresh), &model_state(1.0)));
}

#[test]
fn a_failing_tag_write_keeps_the_previous_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FullDisk {
        inner: LocalDir::new(dir.path()),
        limit: AtomicU64::new(u64::MAX),
        only: Some("last_checkpoint"),
    });
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone());
    checkpointer.save("first", Dict::new()).unwrap();
    store.limit.store(3, Ordering::SeqCst);
    let err = checkpointer.save("second", Dict::new()).unwrap_err();
    // The checkpoint is there; what failed is naming it.
    let ckpt::Error::NotTagged { checkpoint, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(checkpoint, &dir.path().join("second.pth"));
    assert!(
        matches!(source.root(), ckpt::Error::Io { path, .. } if path.ends_with("last_checkpoint")),
        "{err:?}"
    );
    let message = err.report().to_string();
    assert!(
        message.contains("second.pth was written, but last_checkpoint was not updated")
            && message.matches("No space left on device").count() == 1,
        "{message}"
    );
    assert!(dir.path().join("second.pth").is_file());
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "first.pth"
    );
    assert!(!dir_names(dir.path())
        .iter()
        .any(|n| n.starts_with(TEMP_PREFIX)));
}

#[test]
fn a_periodic_save_whose_tag_write_fails_still_counts_for_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FullDisk {
        inner: LocalDir::new(dir.path()),
        limit: AtomicU64::new(u64::MAX),
        only: Some("last_checkpoint"),
    });
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone());
    let mut periodic = ckpt::PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_to_keep(2)
        .build()
        .unwrap();
    periodic.step(0, Dict::new()).unwrap();
    periodic.step(1, Dict::new()).unwrap();
    store.limit.store(3, Ordering::SeqCst);
    let err = periodic.step(2, Dict::new()).unwrap_err();
    assert!(matches!(err, ckpt::Error::NotTagged { .. }), "{err:?}");
    store.limit.store(u64::MAX, Ordering::SeqCst);
    periodic.step(3, Dict::new()).unwrap();
    // The untagged file was counted: it is the second newest, and the older ones went.
    assert_eq!(
        dir_names(dir.path()),
        vec!["last_checkpoint", "model_0000002.pth", "model_0000003.pth"]
    );
}

// Liveness of another writer is only checked on Linux; elsewhere its files are kept.
#[cfg(target_os = "linux")]
#[test]
fn temporaries_of_dead_writers_are_removed_by_the_next_save_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    // A writer that was killed: its pid no longer exists.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    // Written on this host (temporary names carry `<pid>@<host>`).
    let owner = ckpt::store::temp_owner();
    let (_, host) = owner.split_once('@').unwrap();
    let stale = dir
        .path()
        .join(format!("{TEMP_PREFIX}{pid}@{host}-7-model_0000009.pth"));
    fs::write(&stale, b"PK\x03\x04 half a checkpoint").unwrap();

    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    assert!(checkpointer.get_all_checkpoint_files().unwrap().is_empty());
    checkpointer.save("model_0000019", Dict::new()).unwrap();
    assert!(!stale.exists());
    assert_eq!(
        dir_names(dir.path()),
        vec!["last_checkpoint", "model_0000019.pth"]
    );
}

#[test]
fn an_oversized_last_checkpoint_is_an_error_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    // Not a tag a checkpointer wrote: 2 MiB of name.
    fs::write(dir.path().join("last_checkpoint"), vec![b'x'; 2 << 20]).unwrap();
    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    let err = checkpointer
        .resume_or_load(None, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("larger than"),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(
        err.len() < 1000,
        "the error repeats the file: {} bytes",
        err.len()
    );
}

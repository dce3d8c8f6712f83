//! Background saves: the call returns once the state is snapshotted and before the file
//! exists; a later load sees the file whole; a failed write is returned by the next call and
//! leaves the previous checkpoint, its tag and retention as they were; a SIGKILL during the
//! background write leaves the previous checkpoint intact; hundreds of saves keep memory flat.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use ckpt::store::{Entry, LocalDir, Location, PendingWrite, Store, WriterLock, TEMP_PREFIX};
use ckpt::{
    shared, Checkpointer, Dict, Error, PeriodicCheckpointer, Result, SnapshotMode, StateDictModel,
    Value,
};

use crate::support::*;

/// A directory whose writes of checkpoint files wait until the test opens the gate, and
/// fail while `fail` names them. Every write and tag read is logged in order.
#[derive(Debug, Default)]
struct GatedDir {
    inner: Option<LocalDir>,
    open: Mutex<bool>,
    opened: Condvar,
    fail: Mutex<Option<String>>,
    events: Mutex<Vec<String>>,
    /// The niceness of the thread that wrote the last checkpoint file.
    writer_niceness: Mutex<Option<i32>>,
}

impl GatedDir {
    fn new(dir: &Path, open: bool) -> Arc<GatedDir> {
        Arc::new(GatedDir {
            inner: Some(LocalDir::new(dir)),
            open: Mutex::new(open),
            ..GatedDir::default()
        })
    }

    fn dir(&self) -> &LocalDir {
        self.inner.as_ref().unwrap()
    }

    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn close_gate(&self) {
        *self.open.lock().unwrap() = false;
    }

    fn fail_writes_of(&self, name: Option<&str>) {
        *self.fail.lock().unwrap() = name.map(str::to_string);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Store for GatedDir {
    fn location(&self, name: &str) -> Location {
        self.dir().location(name)
    }
    fn create(&self, name: &str) -> Result<Box<dyn PendingWrite + '_>> {
        self.dir().create(name)
    }
    fn write(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        if name.ends_with(".pth") {
            *self.writer_niceness.lock().unwrap() = niceness();
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        if self.fail.lock().unwrap().as_deref() == Some(name) {
            return self.dir().write(name, &mut |w| {
                write(w)?;
                Err(Error::io(
                    self.location(name).to_path_buf(),
                    std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"),
                ))
            });
        }
        self.dir().write(name, write)?;
        self.events.lock().unwrap().push(format!("wrote {name}"));
        Ok(())
    }
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.events.lock().unwrap().push(format!("read {name}"));
        self.dir().read_small(name)
    }
    fn exists(&self, name: &str) -> Result<bool> {
        self.dir().exists(name)
    }
    fn list_entries(&self) -> Result<Vec<Entry>> {
        self.dir().list_entries()
    }
    fn lock_writer(&self) -> Result<WriterLock> {
        self.dir().lock_writer()
    }
    fn remove(&self, name: &str) -> Result<()> {
        self.dir().remove(name)
    }
    fn remove_stale_temporaries(&self) -> Result<()> {
        self.dir().remove_stale_temporaries()
    }
}

/// The niceness of the calling thread, where threads have their own.
fn niceness() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority reads the calling thread's niceness and touches no memory.
        Some(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
    }
    #[cfg(not(target_os = "linux"))]
    None
}

fn iteration(iteration: i64) -> Dict {
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(iteration));
    extra
}

#[test]
fn the_call_returns_after_the_snapshot_and_before_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), false);
    let trained = model(1.0);
    let checkpointer = Checkpointer::with_store(trained.clone(), store.clone());
    let handle = checkpointer
        .save_async("model_0000009", iteration(9))
        .unwrap();
    // The write is held at the gate: the call has returned with nothing on disk.
    assert!(!handle.is_finished());
    assert!(!dir.path().join("model_0000009.pth").exists());
    assert!(!dir.path().join("last_checkpoint").exists());

    // Training goes on: the snapshot is what was saved, not what the model is now.
    *trained.lock().unwrap() = StateDictModel::new(model_state(2.0));
    store.open_gate();
    handle.wait().unwrap();
    assert_eq!(
        handle.location().as_path(),
        Some(dir.path().join("model_0000009.pth").as_path())
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
fn the_builder_option_makes_save_return_before_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), false);
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone()).with_async_save(true);
    assert!(checkpointer.saves_asynchronously());
    checkpointer.save("model_final", Dict::new()).unwrap();
    assert!(!dir.path().join("model_final.pth").exists());
    store.open_gate();
    checkpointer.flush().unwrap();
    assert!(dir.path().join("model_final.pth").exists());
    assert_eq!(
        store.events(),
        ["wrote model_final.pth", "wrote last_checkpoint"]
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_writer_thread_yields_the_cpu_to_training() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), true);
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone());
    checkpointer.save("sync", Dict::new()).unwrap();
    let ours = store.writer_niceness.lock().unwrap().unwrap();
    checkpointer
        .save_async("async", Dict::new())
        .unwrap()
        .wait()
        .unwrap();
    let writer = store.writer_niceness.lock().unwrap().unwrap();
    assert_eq!(writer, (ours + 10).min(19), "ours {ours}, writer {writer}");
}

#[test]
fn a_load_after_an_async_save_waits_for_it_and_sees_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), false);
    let trained = model(3.0);
    let checkpointer = Checkpointer::with_store(trained.clone(), store.clone());
    let _handle = checkpointer
        .save_async("model_0000003", iteration(3))
        .unwrap();
    *trained.lock().unwrap() = StateDictModel::new(model_state(-1.0));

    let opener = {
        let store = store.clone();
        std::thread::spawn(move || store.open_gate())
    };
    // Resuming waits for the save in flight before it reads the tag.
    let extra = checkpointer.resume_or_load(None, true).unwrap();
    opener.join().unwrap();
    assert_eq!(extra.get("iteration").and_then(Value::as_int), Some(3));
    assert!(same_state(&state_of(&trained), &model_state(3.0)));
    let events = store.events();
    let tag_written = events.iter().position(|e| e == "wrote last_checkpoint");
    let tag_read = events.iter().position(|e| e == "read last_checkpoint");
    assert!(tag_written < tag_read, "{events:?}");
}

#[test]
fn a_failed_write_surfaces_on_the_next_call_and_keeps_checkpoint_tag_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), true);
    let trained = model(0.0);
    let checkpointer = Checkpointer::with_store(trained.clone(), store.clone());
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_to_keep(2)
        .async_save(true)
        .build()
        .unwrap();
    for i in 0..3 {
        *trained.lock().unwrap() = StateDictModel::new(model_state(i as f32));
        periodic.step(i, Dict::new()).unwrap();
    }
    periodic.flush().unwrap();
    let kept = ["model_0000001.pth", "model_0000002.pth"];
    assert_eq!(periodic.recent_checkpoints().collect::<Vec<_>>(), kept);
    let before = fs::read(dir.path().join("model_0000002.pth")).unwrap();

    store.fail_writes_of(Some("model_0000003.pth"));
    periodic.step(3, Dict::new()).unwrap(); // returns after the snapshot
    let err = periodic.step(4, Dict::new()).unwrap_err();
    assert!(
        matches!(err.root(), Error::Io { path, source }
            if path.ends_with("model_0000003.pth") && source.to_string().contains("No space")),
        "{err:?}"
    );
    // Nothing of the failed save is visible, and retention deleted nothing for it.
    assert_eq!(
        dir_names(dir.path()),
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000001.pth",
            "model_0000002.pth"
        ]
    );
    assert_eq!(
        fs::read(dir.path().join("model_0000002.pth")).unwrap(),
        before
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_0000002.pth"
    );
    assert_eq!(periodic.recent_checkpoints().collect::<Vec<_>>(), kept);
    // The error was returned once; the checkpointer goes on.
    periodic.checkpointer().flush().unwrap();

    store.fail_writes_of(None);
    periodic.step(4, Dict::new()).unwrap();
    periodic.flush().unwrap();
    assert_eq!(
        periodic.recent_checkpoints().collect::<Vec<_>>(),
        ["model_0000002.pth", "model_0000004.pth"]
    );
    assert_eq!(
        dir_names(dir.path()),
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000002.pth",
            "model_0000004.pth"
        ]
    );
}

#[test]
fn an_error_goes_to_the_handle_or_the_next_call_and_is_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), true);
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone());
    checkpointer.save("good", Dict::new()).unwrap();

    // Not waited on: the next save returns the error and does not save.
    store.fail_writes_of(Some("bad.pth"));
    let handle = checkpointer.save_async("bad", Dict::new()).unwrap();
    let err = checkpointer.save("next", Dict::new()).unwrap_err();
    assert!(
        err.to_string().contains("bad.pth") || err.path().is_some_and(|p| p.ends_with("bad.pth")),
        "{err:?}"
    );
    assert!(!dir.path().join("next.pth").exists());
    // The handle still tells what happened to its save.
    let restated = handle.wait().unwrap_err();
    assert!(restated.to_string().contains("bad.pth"), "{restated}");
    assert_eq!(
        checkpointer.last_checkpoint_name().unwrap().as_deref(),
        Some("good.pth")
    );

    // Waited on: the error is the handle's, and the next call goes on.
    store.fail_writes_of(Some("bad.pth"));
    let handle = checkpointer.save_async("bad", Dict::new()).unwrap();
    assert!(handle.wait().is_err());
    checkpointer.save("next", Dict::new()).unwrap();
    assert_eq!(
        checkpointer.last_checkpoint_name().unwrap().as_deref(),
        Some("next.pth")
    );
}

#[test]
fn dropping_the_checkpointer_waits_for_the_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), false);
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone()).with_async_save(true);
    checkpointer.save("model_final", Dict::new()).unwrap();
    let opener = {
        let store = store.clone();
        std::thread::spawn(move || store.open_gate())
    };
    drop(checkpointer);
    opener.join().unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_final.pth"
    );
}

#[test]
fn dropping_the_periodic_checkpointer_finishes_the_save_and_applies_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = GatedDir::new(dir.path(), true);
    let checkpointer = Checkpointer::with_store(model(1.0), store.clone());
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .max_to_keep(2)
        .async_save(true)
        .build()
        .unwrap();
    for i in 0..2 {
        periodic.step(i, Dict::new()).unwrap();
    }
    periodic.flush().unwrap();
    // The third save is still writing when the program drops the schedule without a flush.
    store.close_gate();
    periodic.step(2, Dict::new()).unwrap();
    let opener = {
        let store = store.clone();
        std::thread::spawn(move || store.open_gate())
    };
    drop(periodic);
    opener.join().unwrap();
    assert_eq!(
        dir_names(dir.path()),
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000001.pth",
            "model_0000002.pth"
        ]
    );
}

#[test]
fn copied_snapshots_and_mapped_tensors_save_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.pth");
    let sync_dir = dir.path().join("sync");
    Checkpointer::new(model(4.0), &sync_dir)
        .save("model", Dict::new())
        .unwrap();
    fs::copy(sync_dir.join("model.pth"), &source).unwrap();
    // A model made of views of a memory map of a file: the snapshot copies them.
    let mapped = ckpt::format::load(&source).unwrap();
    let state = ckpt::StateDict::from_value(mapped.get("model").unwrap()).unwrap();
    assert!(state.iter().any(|(_, t)| t.storage().is_mapped()));
    for mode in [SnapshotMode::Share, SnapshotMode::Copy] {
        let out = dir.path().join(format!("{mode:?}"));
        let checkpointer = Checkpointer::new(shared(StateDictModel::new(state.clone())), &out)
            .with_snapshot_mode(mode);
        for _ in 0..3 {
            checkpointer
                .save_async("model", Dict::new())
                .unwrap()
                .wait()
                .unwrap();
        }
        assert_eq!(
            fs::read(out.join("model.pth")).unwrap(),
            fs::read(sync_dir.join("model.pth")).unwrap(),
            "{mode:?}"
        );
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

/// Starts `ckpt-test-child` with `args` and returns it with its stdout lines.
fn child(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[test]
fn a_sigkill_during_a_background_write_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let (mut process, mut lines) = child(&["async-save-killed", path]);
    // The child says when its save call has returned and its writer is inside the write.
    let mut said = Vec::new();
    while said.len() < 2 {
        let line = lines.next().expect("child output").unwrap();
        said.push(line);
    }
    said.sort();
    assert_eq!(said, ["returned", "writing"]);
    process.kill().unwrap();
    process.wait().unwrap();

    let names = dir_names(dir.path());
    assert!(
        names.iter().any(|n| n.starts_with(TEMP_PREFIX)),
        "killed inside the write: {names:?}"
    );
    assert!(!names.iter().any(|n| n == "model_0000001.pth"), "{names:?}");
    let fresh = shared(StateDictModel::new(crash_safety_state(-1.0)));
    let checkpointer = Checkpointer::new(fresh.clone(), dir.path());
    let extra = checkpointer.resume_or_load(None, true).unwrap();
    assert_eq!(extra.get("iteration").and_then(Value::as_int), Some(0));
    let restored = fresh.lock().unwrap().tensors().clone();
    assert!(same_state(&restored, &crash_safety_state(0.0)));
}

/// The state the child process saves.
fn crash_safety_state(value: f32) -> ckpt::StateDict {
    crate::crash_safety::test_child::filled_state(value)
}

#[test]
fn two_hundred_async_saves_keep_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let (mut process, lines) = child(&["async-save-memory", dir.path().to_str().unwrap()]);
    let report: Vec<(String, u64)> = lines
        .map(|l| l.unwrap())
        .filter_map(|l| {
            let (what, bytes) = l.split_once(' ')?;
            Some((what.to_string(), bytes.parse().ok()?))
        })
        .collect();
    assert!(process.wait().unwrap().success());
    let get = |what: &str| {
        report
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("{what} not reported: {report:?}"))
    };
    let state = get("state");
    let warm = get("rss_after_20");
    let end = get("rss_after_200");
    // A snapshot copy leaked per save would add 180 states; reuse adds nothing.
    assert!(
        end <= warm + state,
        "memory grew from {warm} to {end} bytes over 180 saves of {state} bytes"
    );
}

//! Who may write a save directory, told by locks rather than pids: a second process saving
//! into a directory another process saves into fails with a clear error (readers never need
//! the lock), a killed writer's lock goes with it, and the temporary file of a killed save
//! is removed whatever pid its name carries, while a live writer's is kept whatever its name.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ckpt::store::{temp_owner, TEMP_PREFIX};
use ckpt::{Checkpointer, Dict, Error};

use crate::support::model;

/// Starts `ckpt-test-child COMMAND DIR` and waits for it to print `ready`.
fn child(command: &str, dir: &Path, ready: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
        .args([command.as_ref(), dir.as_os_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), ready, "the child did not get ready");
    child
}

/// Kills `child` with SIGKILL (no chance to clean up) and reaps it.
fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn a_second_process_saving_into_the_directory_fails_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = child("hold-writer", dir.path(), "saved");
    let pid = first.id();

    let second = Checkpointer::new(model(2.0), dir.path());
    let err = second.save("model_0000001", Dict::new()).unwrap_err();
    assert!(
        matches!(&err, Error::WriterBusy { dir: d, holder }
            if d == dir.path()
                && holder.split_whitespace().nth(1) == Some(pid.to_string().as_str())),
        "{err:?}"
    );
    let message = err.report().to_string();
    assert!(message.contains("locked by another writer"), "{message}");
    // Nothing of the refused save reached the directory.
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_0000000.pth"
    );
    assert!(!dir.path().join("model_0000001.pth").exists());

    // Readers need no lock.
    let reader = Checkpointer::new(model(0.0), dir.path());
    let report = reader.resume_or_load_with_report(None, true).unwrap();
    assert_eq!(report.path, Some(dir.path().join("model_0000000.pth")));

    // The kernel drops a killed writer's lock: the next writer goes ahead.
    kill(first);
    second.save("model_0000001", Dict::new()).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_0000001.pth"
    );
}

#[test]
fn checkpointers_of_one_process_share_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let periodic = Checkpointer::new(model(1.0), dir.path());
    let other = Checkpointer::new(model(2.0), dir.path());
    periodic.save("model_0000009", Dict::new()).unwrap();
    other.save("model_final", Dict::new()).unwrap();
    periodic.save("model_0000019", Dict::new()).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("last_checkpoint")).unwrap(),
        "model_0000019.pth"
    );
    // The lock file is no checkpoint.
    let names: Vec<String> = periodic
        .get_all_checkpoint_files()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["model_0000009.pth", "model_0000019.pth", "model_final.pth"]
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_saves_temporary_is_removed_whatever_its_pid_and_a_live_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let writer = child("stuck-save", dir.path(), "writing");
    let [temp] = temporaries(dir.path()).try_into().unwrap();
    let owner = temp_owner();
    let (_, host) = owner.split_once('@').unwrap();

    // A live writer's file is kept, even under the name of a pid that does not exist (a
    // pid says nothing; the writer's lock does).
    let renamed = dir
        .path()
        .join(format!("{TEMP_PREFIX}4294967295@{host}-1-stuck.pth"));
    fs::rename(&temp, &renamed).unwrap();
    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    checkpointer.save("model_0000009", Dict::new()).unwrap();
    assert!(renamed.exists(), "a save in progress was deleted");

    // Killed mid-save, then named as a trainer restarted with the same pid would name its
    // own files (PID 1 of a restarted container): removed all the same.
    kill(writer);
    let same_pid = dir.path().join(format!("{TEMP_PREFIX}{owner}-1-stuck.pth"));
    fs::rename(&renamed, &same_pid).unwrap();
    checkpointer.save("model_0000019", Dict::new()).unwrap();
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
}

#[test]
fn a_new_save_directory_is_created_with_its_parents() {
    let dir = tempfile::tempdir().unwrap();
    let save_dir = dir.path().join("runs").join("r50").join("output");
    Checkpointer::new(model(1.0), &save_dir)
        .save("model_0000009", Dict::new())
        .unwrap();
    assert!(save_dir.join("model_0000009.pth").is_file());
}

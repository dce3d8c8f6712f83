//! Resuming from the checkpoint `last_checkpoint` names, checked on the way in, and falling
//! back to the newest intact checkpoint of the save directory when it cannot be read.
//!
//! A training job that finds its last checkpoint corrupt (a disk error, a copy cut short)
//! should neither die nor start from scratch: the checkpoint before it is one period older,
//! not the whole run. What it passes over is said loudly (a warning printed even without a
//! logger) and kept in [`LoadReport::skipped`].

use std::cmp::Reverse;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::checkpointer::{Checkpointables, Checkpointer, LAST_CHECKPOINT};
use crate::error::{Error, Result, TagProblem};
use crate::format::LoadOptions;
use crate::incompatible::{warn_unmissable, LoadReport, SkippedCheckpoint};
use crate::store::Store;

/// Resumes `checkpointer` from `tagged` (the name in `last_checkpoint`), falling back to
/// older checkpoints when it cannot be read and the checkpointer allows it.
pub(crate) fn resume(checkpointer: &Checkpointer, tagged: &str) -> Result<LoadReport> {
    let store = checkpointer
        .store()
        .ok_or_else(|| Error::invalid("this checkpointer has no save directory"))?;
    let error = match load(checkpointer, store.as_ref(), tagged) {
        Ok(report) => return Ok(report),
        Err(e) if checkpointer.falls_back_on_resume() && is_unreadable(&e) => e,
        Err(e) => return Err(e),
    };
    let mut skipped = vec![SkippedCheckpoint::new(
        store.location(tagged),
        error.report().to_string(),
    )];
    warn_unmissable(&format!(
        "Cannot resume from {}, which last_checkpoint names: {}; looking for an older intact checkpoint",
        store.location(tagged).display(),
        error.report()
    ));
    for candidate in older_checkpoints(store.as_ref(), tagged)? {
        let location = store.location(&candidate);
        match load(checkpointer, store.as_ref(), &candidate) {
            Ok(mut report) => {
                warn_unmissable(&format!(
                    "Resumed from {} instead of {} (skipped {} unreadable checkpoint{})",
                    location.display(),
                    store.location(tagged).display(),
                    skipped.len(),
                    if skipped.len() == 1 { "" } else { "s" }
                ));
                report.skipped = skipped;
                return Ok(report);
            }
            Err(e) if is_unreadable(&e) => {
                warn_unmissable(&format!(
                    "Skipping {} too: {}",
                    location.display(),
                    e.report()
                ));
                skipped.push(SkippedCheckpoint::new(location, e.report().to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    warn_unmissable(&format!(
        "No intact checkpoint in {}: refusing to start from scratch",
        store.location("").display()
    ));
    Err(error)
}

/// Loads checkpoint `name` of `store` with every checkpointable, checking its checksums
/// when the checkpointer asks for it.
fn load(checkpointer: &Checkpointer, store: &dyn Store, name: &str) -> Result<LoadReport> {
    if !store.exists(name)? {
        return Err(Error::BadTag {
            tag: store.location(LAST_CHECKPOINT),
            problem: TagProblem::MissingFile {
                name: name.to_string(),
            },
        });
    }
    let options =
        LoadOptions::default().with_verify_crc32_on_copy(checkpointer.verifies_on_resume());
    checkpointer.load_file(&store.location(name), Checkpointables::All, &options)
}

/// Whether `error` says the checkpoint file cannot be read (missing, damaged, not a
/// checkpoint) rather than that it does not fit the model or a checkpointable: only the
/// former is a reason to try an older file; the latter would fail on every file and is the
/// program's to fix.
fn is_unreadable(error: &Error) -> bool {
    matches!(
        error.root(),
        Error::Io { .. }
            | Error::Truncated { .. }
            | Error::UnknownFormat { .. }
            | Error::Pickle { .. }
            | Error::Format { .. }
            | Error::Checksum { .. }
            | Error::Unsupported { .. }
            | Error::BadTag {
                problem: TagProblem::MissingFile { .. },
                ..
            }
    )
}

/// The other checkpoints (`*.pth`) of the store, newest first: by modification time where
/// the store is a local directory, then by name (periodic names sort by iteration).
fn older_checkpoints(store: &dyn Store, tagged: &str) -> Result<Vec<String>> {
    let mut names: Vec<(Option<SystemTime>, String)> = store
        .list()?
        .into_iter()
        .filter(|name| name.ends_with(".pth") && name != tagged)
        .map(|name| (modified(store.location(&name)), name))
        .collect();
    names.sort_by(|a, b| (Reverse(&a.0), Reverse(&a.1)).cmp(&(Reverse(&b.0), Reverse(&b.1))));
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// When the file at `location` was last written, if it is a local file.
fn modified(location: PathBuf) -> Option<SystemTime> {
    std::fs::metadata(location).and_then(|m| m.modified()).ok()
}

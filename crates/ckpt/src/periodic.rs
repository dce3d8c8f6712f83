//! [`PeriodicCheckpointer`]: saves every `period` iterations and at the end of training, as
//! fvcore's `PeriodicCheckpointer` does, and keeps at most
//! `max_to_keep` periodic files.
//!
//! Better than Python: retention survives restarts. The periodic files of an earlier run
//! (`<prefix>_NNNNNNN.pth` in the save directory) count against `max_to_keep` too, oldest
//! first. Only such files are ever deleted; never the `_final` file, never the file
//! `last_checkpoint` names, never a file of another name.

use std::collections::VecDeque;

use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::store::check_basename;
use crate::value::{Dict, Value};

/// Saves a checkpoint every `period` iterations and at `max_iter - 1`, keeping the last
/// `max_to_keep` periodic files; built by [`PeriodicCheckpointer::builder`].
///
/// Better than Python: retention survives restarts. The periodic files of an earlier run
/// (`<prefix>_NNNNNNN.pth` in the save directory) count against `max_to_keep` too, oldest
/// first. Only such files are ever deleted; never the `_final` file, never the file
/// `last_checkpoint` names, never a file of another name.
///
/// ```no_run
/// use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = Checkpointer::new(model, "output");
/// let mut periodic = PeriodicCheckpointer::builder(checkpointer)
///     .period(10)
///     .max_iter(100)
///     .max_to_keep(3)
///     .build()?;
/// let start = periodic.checkpointer().resume_or_load(None, true)?;
/// for iteration in 0..100 {
///     // ... train ...
///     periodic.step(iteration, Dict::new())?; // model_0000009.pth, ..., model_final.pth
/// }
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug)]
pub struct PeriodicCheckpointer {
    checkpointer: Checkpointer,
    period: u64,
    max_iter: Option<u64>,
    max_to_keep: Option<usize>,
    file_prefix: String,
    /// Basenames of the periodic files kept, oldest first.
    recent: VecDeque<String>,
}

/// The settings of a [`PeriodicCheckpointer`], as Python's constructor arguments
/// (`PeriodicCheckpointer(checkpointer, period, max_iter=None, max_to_keep=None,
/// file_prefix="model")`).
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PeriodicCheckpointerBuilder {
    checkpointer: Checkpointer,
    period: Option<u64>,
    max_iter: Option<u64>,
    max_to_keep: Option<usize>,
    file_prefix: String,
}

impl PeriodicCheckpointerBuilder {
    /// Saves `<file_prefix>_<iteration:07>.pth` when `(iteration + 1) % period == 0`.
    /// Required; must be > 0.
    pub fn period(mut self, period: u64) -> Self {
        self.period = Some(period);
        self
    }

    /// Also saves `<file_prefix>_final.pth` at iteration `max_iter - 1` (`None`, the
    /// default: no final save).
    pub fn max_iter(mut self, max_iter: impl Into<Option<u64>>) -> Self {
        self.max_iter = max_iter.into();
        self
    }

    /// Keeps at most this many periodic files, deleting the oldest (`None`, the default:
    /// all); must be > 0.
    pub fn max_to_keep(mut self, max_to_keep: impl Into<Option<usize>>) -> Self {
        self.max_to_keep = max_to_keep.into();
        self
    }

    /// The start of the file names (`model` by default); a plain file name.
    pub fn file_prefix(mut self, file_prefix: impl Into<String>) -> Self {
        self.file_prefix = file_prefix.into();
        self
    }

    /// The periodic checkpointer. Fails when `period` is missing or 0, `max_to_keep` is 0,
    /// `file_prefix` is not a plain file name, or the save directory cannot be listed.
    ///
    /// The periodic files already in the save directory are taken as the oldest ones kept,
    /// by iteration; nothing is deleted before the next periodic save.
    pub fn build(self) -> Result<PeriodicCheckpointer> {
        let PeriodicCheckpointerBuilder {
            checkpointer,
            period,
            max_iter,
            max_to_keep,
            file_prefix,
        } = self;
        let period = match period {
            Some(0) => return Err(Error::invalid("period must be > 0")),
            Some(period) => period,
            None => return Err(Error::invalid("a PeriodicCheckpointer needs a period")),
        };
        let file_prefix = file_prefix.as_str();
        if max_to_keep == Some(0) {
            return Err(Error::invalid("max_to_keep must be > 0"));
        }
        check_basename(file_prefix)?;
        let mut found: Vec<(u64, String)> = match checkpointer.store() {
            Some(store) => store
                .list()?
                .into_iter()
                .filter_map(|name| periodic_iteration(&name, file_prefix).map(|i| (i, name)))
                .collect(),
            None => Vec::new(),
        };
        found.sort();
        Ok(PeriodicCheckpointer {
            checkpointer,
            period,
            max_iter,
            max_to_keep,
            file_prefix: file_prefix.to_string(),
            recent: found.into_iter().map(|(_, name)| name).collect(),
        })
    }
}

impl PeriodicCheckpointer {
    /// A builder of a periodic checkpointer saving with `checkpointer`; see
    /// [`PeriodicCheckpointerBuilder`] for the settings and their defaults.
    pub fn builder(checkpointer: Checkpointer) -> PeriodicCheckpointerBuilder {
        PeriodicCheckpointerBuilder {
            checkpointer,
            period: None,
            max_iter: None,
            max_to_keep: None,
            file_prefix: "model".to_string(),
        }
    }

    /// The checkpointer that saves (also used to resume).
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// The checkpointer that saves, to register checkpointables.
    pub fn checkpointer_mut(&mut self) -> &mut Checkpointer {
        &mut self.checkpointer
    }

    /// The checkpointer that saves, giving up the schedule.
    pub fn into_checkpointer(self) -> Checkpointer {
        self.checkpointer
    }

    /// Does what the schedule says at `iteration` (0-based, up to `max_iter - 1`). The saved
    /// extras are `{"iteration": iteration}` updated with `extra`.
    pub fn step(&mut self, iteration: u64, extra: Dict) -> Result<()> {
        let as_int = i64::try_from(iteration)
            .map_err(|_| Error::invalid(format!("iteration {iteration} is too large")))?;
        let mut state = Dict::new();
        state.insert("iteration", Value::Int(as_int));
        for (key, value) in extra.items {
            state.items.insert(key, value);
        }

        // `is_multiple_of` needs Rust 1.87; the workspace's minimum is 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        let due = (iteration + 1) % self.period == 0;
        if due {
            let name = format!("{}_{iteration:07}", self.file_prefix);
            let saved = self.checkpointer.save(&name, state.clone());
            // Written but not tagged (a full disk): the file is there all the same, and
            // retention must count it, or it would never be deleted.
            let written = saved.is_ok() || matches!(saved, Err(Error::NotTagged { .. }));
            if written && self.checkpointer.saves_to_disk() {
                self.remember(format!("{name}.pth"))?;
            }
            saved?;
        }
        if let Some(max_iter) = self.max_iter {
            if iteration.saturating_add(1) >= max_iter {
                self.checkpointer
                    .save(&format!("{}_final", self.file_prefix), state)?;
            }
        }
        Ok(())
    }

    /// A save outside the schedule (same as [`Checkpointer::save`]).
    pub fn save(&self, name: &str, extra: Dict) -> Result<()> {
        self.checkpointer.save(name, extra)
    }

    /// The periodic files kept, oldest first.
    pub fn recent_checkpoints(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(String::as_str)
    }

    /// Records a periodic file just saved and deletes the oldest beyond `max_to_keep`.
    fn remember(&mut self, basename: String) -> Result<()> {
        // A file saved again (training resumed from an older checkpoint) is new again.
        self.recent.retain(|name| *name != basename);
        self.recent.push_back(basename);
        let Some(max_to_keep) = self.max_to_keep else {
            return Ok(());
        };
        if self.recent.len() <= max_to_keep {
            return Ok(());
        }
        let protected = match self.checkpointer.last_checkpoint_name() {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!("Not deleting old checkpoints: {}", e.report());
                return Ok(());
            }
        };
        let Some(store) = self.checkpointer.store().cloned() else {
            return Ok(());
        };
        let final_name = format!("{}_final.pth", self.file_prefix);
        while self.recent.len() > max_to_keep {
            let Some(oldest) = self.recent.pop_front() else {
                break;
            };
            if oldest.ends_with(&final_name) || protected.as_deref() == Some(oldest.as_str()) {
                continue;
            }
            tracing::debug!(
                "Deleting old checkpoint {}",
                store.location(&oldest).display()
            );
            store.remove(&oldest)?;
        }
        Ok(())
    }
}

/// The iteration of a periodic file `<prefix>_<at least 7 digits>.pth`.
fn periodic_iteration(name: &str, prefix: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_suffix(".pth")?;
    if digits.len() < 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `{:07}` never pads beyond 7 digits: a longer number with a leading zero is not ours.
    if digits.len() > 7 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_periodic_names_are_recognised() {
        assert_eq!(periodic_iteration("model_0000009.pth", "model"), Some(9));
        assert_eq!(
            periodic_iteration("model_12345678.pth", "model"),
            Some(12345678)
        );
        assert_eq!(periodic_iteration("model_final.pth", "model"), None);
        assert_eq!(periodic_iteration("model_000009.pth", "model"), None);
        assert_eq!(periodic_iteration("model_00000009.pth", "model"), None);
        assert_eq!(periodic_iteration("other_0000009.pth", "model"), None);
        assert_eq!(periodic_iteration("model_x_0000009.pth", "model"), None);
        assert_eq!(periodic_iteration("model_0000009.pth.bak", "model"), None);
    }
}

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

/// Saves a checkpoint every `period` iterations and at `max_iter - 1`.
///
/// ```no_run
/// use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = Checkpointer::new(model, "output");
/// let mut periodic = PeriodicCheckpointer::new(checkpointer, 10, Some(100), Some(3), "model")?;
/// for iteration in 0..100 {
///     // ... train ...
///     periodic.step(iteration, Dict::new())?; // model_0000009.pth, ..., model_final.pth
/// }
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug)]
pub struct PeriodicCheckpointer {
    /// The checkpointer that saves (also used to resume).
    pub checkpointer: Checkpointer,
    period: u64,
    max_iter: Option<u64>,
    max_to_keep: Option<usize>,
    file_prefix: String,
    /// Basenames of the periodic files kept, oldest first.
    recent: VecDeque<String>,
}

impl PeriodicCheckpointer {
    /// Saves `<file_prefix>_<iteration:07>.pth` when `(iteration + 1) % period == 0` and
    /// `<file_prefix>_final.pth` at `max_iter - 1`. `period` and `max_to_keep` must be > 0
    /// and `file_prefix` a plain file name.
    ///
    /// The periodic files already in the save directory are taken as the oldest ones kept,
    /// by iteration; nothing is deleted before the next periodic save.
    pub fn new(
        checkpointer: Checkpointer,
        period: u64,
        max_iter: Option<u64>,
        max_to_keep: Option<usize>,
        file_prefix: &str,
    ) -> Result<PeriodicCheckpointer> {
        if period == 0 {
            return Err(Error::invalid("period must be > 0"));
        }
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
            self.checkpointer.save(&name, state.clone())?;
            if self.checkpointer.saves_to_disk() {
                self.remember(format!("{name}.pth"))?;
            }
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
                tracing::warn!("Not deleting old checkpoints: {e}");
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

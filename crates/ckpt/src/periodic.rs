//! [`PeriodicCheckpointer`]: saves every `period` iterations and at the end of training, as
//! fvcore's `PeriodicCheckpointer` does, and keeps at most
//! `max_to_keep` periodic files, or those that composable retention policies keep.
//!
//! Better than Python: retention survives restarts. The periodic files of an earlier run
//! (`<prefix>_NNNNNNN.pth` in the save directory) count against `max_to_keep` too, oldest
//! first. Only such files are ever deleted; never the `_final` file, never the file
//! `last_checkpoint` names, never a file of another name. With retention on, the iteration,
//! save time and metrics of each periodic file are kept in the retention state file
//! ([`crate::retention::STATE_FILE`]) of the save directory.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::background::SaveHandle;
use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::retention::{verdicts, Checkpoint, Policy, RetentionState};
use crate::store::{check_basename, Store};
use crate::value::{Dict, Value};

/// Saves a checkpoint every `period` iterations and at `max_iter - 1`, keeping the last
/// `max_to_keep` periodic files; built by [`PeriodicCheckpointer::builder`].
///
/// Better than Python: retention survives restarts. The periodic files of an earlier run
/// (`<prefix>_NNNNNNN.pth` in the save directory) count against `max_to_keep` too, oldest
/// first. Only such files are ever deleted; never the `_final` file, never the file
/// `last_checkpoint` names, never a file of another name.
///
/// Retention policies compose ([`PeriodicCheckpointerBuilder::keep`]): keep the newest N
/// (`max_to_keep`), the best K by a metric ([`PeriodicCheckpointer::record_metric`]), every
/// M iterations, one per time interval; a periodic file is deleted only when no policy keeps
/// it. Their state lives in the save directory, so a restarted run and `ckpt ls` know it.
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
    /// Always `Some` but inside [`PeriodicCheckpointer::into_checkpointer`], which takes it
    /// out (the type settles its save in flight on drop, so the field cannot be moved).
    checkpointer: Option<Checkpointer>,
    period: u64,
    max_iter: Option<u64>,
    /// The retention policies; none: every periodic file is kept.
    policies: Vec<Policy>,
    file_prefix: String,
    /// Basenames of the periodic files kept, oldest first.
    recent: VecDeque<String>,
    /// A periodic save running in the background: its handle, file, iteration and save
    /// time. Retention counts it only once it and its tag are durable.
    in_flight: Option<InFlight>,
    clock: Clock,
}

/// A periodic save running in the background.
#[derive(Debug)]
struct InFlight {
    handle: SaveHandle,
    basename: String,
    iteration: u64,
    time: f64,
}

/// Where save times come from: the system clock, or a simulated one.
#[derive(Clone)]
struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

impl Clock {
    /// Seconds since the Unix epoch (0 for a clock set before it).
    fn now(&self) -> f64 {
        (self.0)()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
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
    policies: Vec<Policy>,
    file_prefix: String,
    async_save: Option<bool>,
    clock: Clock,
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

    /// Saves in the background ([`Checkpointer::with_async_save`]; by default, as the
    /// checkpointer was built). A due [`PeriodicCheckpointer::step`] then returns once the
    /// state is snapshotted; old periodic files are deleted only once the new one and its
    /// tag are durable, by the next step that saves or by [`PeriodicCheckpointer::flush`].
    pub fn async_save(mut self, async_save: bool) -> Self {
        self.async_save = Some(async_save);
        self
    }

    /// Adds a retention policy (composes with `max_to_keep` and the other policies: a
    /// periodic file is deleted only when none keeps it).
    pub fn keep(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The clock that dates each save for [`Policy::OnePerInterval`] (the system clock by
    /// default); a simulated clock for tests and replays.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Clock(Arc::new(clock));
        self
    }

    /// The start of the file names (`model` by default); a plain file name.
    pub fn file_prefix(mut self, file_prefix: impl Into<String>) -> Self {
        self.file_prefix = file_prefix.into();
        self
    }

    /// The periodic checkpointer. Fails when `period` is missing or 0, `max_to_keep` is 0,
    /// a policy has a count or interval of 0, `file_prefix` is not a plain file name, the
    /// save directory cannot be listed, or (with retention on) its retention state file
    /// cannot be read.
    ///
    /// The periodic files already in the save directory are taken as the oldest ones kept,
    /// by iteration, after those the retention state records; nothing is deleted before
    /// the next periodic save.
    pub fn build(self) -> Result<PeriodicCheckpointer> {
        let PeriodicCheckpointerBuilder {
            checkpointer,
            period,
            max_iter,
            max_to_keep,
            mut policies,
            file_prefix,
            async_save,
            clock,
        } = self;
        let checkpointer = match async_save {
            Some(on) => checkpointer.with_async_save(on),
            None => checkpointer,
        };
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
        if let Some(n) = max_to_keep {
            policies.insert(0, Policy::Newest(n));
        }
        for policy in &policies {
            policy.validate()?;
        }
        let (listed, state) = match checkpointer.store() {
            Some(store) => {
                let state = if policies.is_empty() {
                    RetentionState::default()
                } else {
                    RetentionState::load(store.as_ref())?
                };
                (store.list()?, state)
            }
            None => (Vec::new(), RetentionState::default()),
        };
        let recorded: HashSet<&str> = state.checkpoints.iter().map(|c| c.file.as_str()).collect();
        let mut found: Vec<(u64, String)> = listed
            .iter()
            .filter(|name| !recorded.contains(name.as_str()))
            .filter_map(|name| periodic_iteration(name, file_prefix).map(|i| (i, name.clone())))
            .collect();
        found.sort();
        let listed: HashSet<String> = listed.into_iter().collect();
        // Files of an earlier run without state come first; recorded files whose file is
        // gone (deleted by hand, or before a crash let the state be written) are forgotten.
        let recent = found
            .into_iter()
            .map(|(_, name)| name)
            .chain(
                state
                    .checkpoints
                    .into_iter()
                    .map(|c| c.file)
                    .filter(|file| listed.contains(file)),
            )
            .collect();
        Ok(PeriodicCheckpointer {
            checkpointer: Some(checkpointer),
            period,
            max_iter,
            policies,
            file_prefix: file_prefix.to_string(),
            recent,
            in_flight: None,
            clock,
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
            policies: Vec::new(),
            file_prefix: "model".to_string(),
            async_save: None,
            clock: Clock(Arc::new(SystemTime::now)),
        }
    }

    /// The checkpointer that saves (also used to resume).
    pub fn checkpointer(&self) -> &Checkpointer {
        self.checkpointer.as_ref().expect(TAKEN)
    }

    /// The checkpointer that saves, to register checkpointables.
    pub fn checkpointer_mut(&mut self) -> &mut Checkpointer {
        self.checkpointer.as_mut().expect(TAKEN)
    }

    /// The checkpointer that saves, giving up the schedule. A periodic save still in flight
    /// is waited for and counted for retention first, as on drop (an error is logged; call
    /// [`PeriodicCheckpointer::flush`] first to get it).
    pub fn into_checkpointer(mut self) -> Checkpointer {
        self.settle_on_drop();
        self.checkpointer.take().expect(TAKEN)
    }

    /// Does what the schedule says at `iteration` (0-based, up to `max_iter - 1`). The saved
    /// extras are `{"iteration": iteration}` updated with `extra`.
    ///
    /// Saving in the background ([`PeriodicCheckpointerBuilder::async_save`]), a step that
    /// saves waits for the previous save first; any step returns the error of a background
    /// save that has failed (once), and a failed save deletes nothing.
    pub fn step(&mut self, iteration: u64, extra: Dict) -> Result<()> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|pending| pending.handle.is_finished())
        {
            self.settle()?;
        }
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
            self.settle()?;
            let time = self.clock.now();
            if self.checkpointer().saves_asynchronously() {
                let handle = self.checkpointer().save_async(&name, state.clone())?;
                if self.checkpointer().saves_to_disk() {
                    self.in_flight = Some(InFlight {
                        handle,
                        basename: format!("{name}.pth"),
                        iteration,
                        time,
                    });
                }
            } else {
                let saved = self.checkpointer().save(&name, state.clone());
                // Written but not tagged (a full disk): the file is there all the same, and
                // retention must count it, or it would never be deleted.
                let written = saved.is_ok() || matches!(saved, Err(Error::NotTagged { .. }));
                if written && self.checkpointer().saves_to_disk() {
                    self.remember(format!("{name}.pth"), iteration, time)?;
                }
                saved?;
            }
        }
        if let Some(max_iter) = self.max_iter {
            if iteration.saturating_add(1) >= max_iter {
                self.settle()?;
                self.checkpointer()
                    .save(&format!("{}_final", self.file_prefix), state)?;
            }
        }
        Ok(())
    }

    /// Waits for a background save in flight, returns its error if no call returned it
    /// yet, and applies retention once the new file and its tag are durable. Call at the end
    /// of training to see the error; dropping does the same but can only log it.
    pub fn flush(&mut self) -> Result<()> {
        self.settle()?;
        self.checkpointer().flush()
    }

    /// Waits for the periodic save in flight; counts its file for retention when it
    /// succeeded (deleting the oldest beyond `max_to_keep`), returns its error otherwise.
    fn settle(&mut self) -> Result<()> {
        let Some(pending) = self.in_flight.take() else {
            return Ok(());
        };
        let saved = pending.handle.wait();
        // Written but not tagged: counted for retention, as a synchronous save is.
        if saved.is_ok() || matches!(saved, Err(Error::NotTagged { .. })) {
            self.remember(pending.basename, pending.iteration, pending.time)?;
        }
        saved
    }

    /// [`PeriodicCheckpointer::settle`] where no caller can receive the error: logged.
    fn settle_on_drop(&mut self) {
        if self.checkpointer.is_none() {
            return;
        }
        if let Err(e) = self.settle() {
            tracing::error!("The last periodic save failed: {}", e.report());
        }
    }

    /// A save outside the schedule (same as [`Checkpointer::save`]).
    pub fn save(&self, name: &str, extra: Dict) -> Result<()> {
        self.checkpointer().save(name, extra)
    }

    /// The periodic files kept, oldest first.
    pub fn recent_checkpoints(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(String::as_str)
    }

    /// The retention policies in force (`max_to_keep` first, as [`Policy::Newest`]).
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Records `value` of `metric` for the periodic checkpoint saved at `iteration` (for
    /// [`Policy::Best`]), then applies retention; `false` when no periodic checkpoint of
    /// that iteration is known (or retention is off). Record a checkpoint's metric before
    /// the next periodic save: until then the tag keeps it, after that only a policy does.
    pub fn record_metric(&mut self, iteration: u64, metric: &str, value: f64) -> Result<bool> {
        // The checkpoint of `iteration` may still be written in the background.
        if self
            .in_flight
            .as_ref()
            .is_some_and(|pending| pending.iteration == iteration)
        {
            self.settle()?;
        }
        let Some(store) = self.retention_store() else {
            return Ok(false);
        };
        let mut state = self.load_state(store.as_ref())?;
        if !state.record_metric(iteration, metric, value) {
            return Ok(false);
        }
        self.apply(store.as_ref(), state)?;
        Ok(true)
    }

    /// The store retention manages: none when retention is off or this process does not
    /// save (a rank other than 0).
    fn retention_store(&self) -> Option<Arc<dyn Store>> {
        if self.policies.is_empty() || !self.checkpointer().saves_to_disk() {
            return None;
        }
        self.checkpointer().store().cloned()
    }

    /// The state file, with the periodic files this checkpointer knows that it does not
    /// record (found on disk at build, iteration from the name, no save time) put first.
    fn load_state(&self, store: &dyn Store) -> Result<RetentionState> {
        let mut state = RetentionState::load(store)?;
        let recorded: HashSet<&str> = state.checkpoints.iter().map(|c| c.file.as_str()).collect();
        let unrecorded: Vec<Checkpoint> = self
            .recent
            .iter()
            .filter(|name| !recorded.contains(name.as_str()))
            .filter_map(|name| {
                Some(Checkpoint {
                    file: name.clone(),
                    iteration: periodic_iteration(name, &self.file_prefix)?,
                    time: None,
                    metrics: Default::default(),
                })
            })
            .collect();
        state.checkpoints.splice(0..0, unrecorded);
        state.policies = self.policies.clone();
        Ok(state)
    }

    /// Records a periodic file just saved and deletes those no policy keeps.
    fn remember(&mut self, basename: String, iteration: u64, time: f64) -> Result<()> {
        // A file saved again (training resumed from an older checkpoint) is new again.
        self.recent.retain(|name| *name != basename);
        self.recent.push_back(basename.clone());
        let Some(store) = self.retention_store() else {
            return Ok(());
        };
        let mut state = self.load_state(store.as_ref())?;
        state.record(Checkpoint::new(basename, iteration, time));
        self.apply(store.as_ref(), state)
    }

    /// Deletes the recorded files no policy keeps, then writes the state of the others.
    fn apply(&mut self, store: &dyn Store, mut state: RetentionState) -> Result<()> {
        let protected = match self.checkpointer().last_checkpoint_name() {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!("Not deleting old checkpoints: {}", e.report());
                return self.write_state(store, state);
            }
        };
        let final_name = format!("{}_final.pth", self.file_prefix);
        let verdicts = verdicts(&self.policies, &state.checkpoints, protected.as_deref());
        let mut deleted = HashSet::new();
        for verdict in verdicts {
            if !verdict.delete() || verdict.file.ends_with(&final_name) {
                continue;
            }
            tracing::debug!(
                "Deleting old checkpoint {}",
                store.location(&verdict.file).display()
            );
            store.remove(&verdict.file)?;
            deleted.insert(verdict.file);
        }
        state.checkpoints.retain(|c| !deleted.contains(&c.file));
        self.write_state(store, state)
    }

    /// Writes `state` and takes its checkpoints as the periodic files kept.
    fn write_state(&mut self, store: &dyn Store, state: RetentionState) -> Result<()> {
        state.save(store)?;
        self.recent = state.checkpoints.into_iter().map(|c| c.file).collect();
        Ok(())
    }
}

/// Why [`PeriodicCheckpointer::checkpointer`] cannot be missing.
const TAKEN: &str = "the checkpointer is only taken by into_checkpointer, which consumes self";

/// A save in flight is finished and counted for retention when the schedule goes away: a
/// program that ends without [`PeriodicCheckpointer::flush`] keeps `max_to_keep` files, not
/// one more.
impl Drop for PeriodicCheckpointer {
    fn drop(&mut self) {
        self.settle_on_drop();
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

//! [`BestCheckpointer`]: saves `model_best.pth` when an evaluation metric improves, as
//! detectron2's `BestCheckpointer` hook does (same schedule, comparison and log lines), and
//! keeps the best value and its iteration in the retention state file so that a restarted
//! run knows the best so far.

use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::retention::{BestRecord, Mode, RetentionState};
use crate::store::check_basename;
use crate::value::{Dict, Value};

/// Saves `<file_prefix>.pth` (`model_best.pth`) each time the latest value of a metric is
/// strictly better than the best so far; built by [`BestCheckpointer::builder`].
///
/// Like detectron2's hook it runs after the evaluation that produces the metric, every
/// `eval_period` iterations and after the last one, and is handed the latest value of the
/// metric with the iteration it was computed at (`None` when there is none yet). A NaN or
/// infinite first value is not taken as the best. Better than Python: the best value and
/// iteration are kept in the save directory's retention state file, so a restarted run
/// does not overwrite a better `model_best.pth` with the first value it sees.
///
/// ```no_run
/// use ckpt::retention::Mode;
/// use ckpt::{shared, BestCheckpointer, Checkpointer, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let mut best = BestCheckpointer::builder(Checkpointer::new(model, "output"))
///     .eval_period(100)
///     .max_iter(1000)
///     .metric("bbox/AP50")
///     .mode(Mode::Max)
///     .build()?;
/// let mut latest: Option<(f64, u64)> = None;
/// for iteration in 0..1000u64 {
///     // ... train; evaluate every 100 iterations:
///     if (iteration + 1) % 100 == 0 {
///         latest = Some((0.5, iteration));
///     }
///     best.after_step(iteration, latest)?;
/// }
/// best.after_train(999, latest)?;
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug)]
pub struct BestCheckpointer {
    checkpointer: Checkpointer,
    eval_period: u64,
    max_iter: u64,
    metric: String,
    mode: Mode,
    file_prefix: String,
    best: Option<(f64, u64)>,
}

/// The settings of a [`BestCheckpointer`], as detectron2's constructor arguments
/// (`BestCheckpointer(eval_period, checkpointer, val_metric, mode="max",
/// file_prefix="model_best")`) plus the trainer's `max_iter`.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BestCheckpointerBuilder {
    checkpointer: Checkpointer,
    eval_period: u64,
    max_iter: Option<u64>,
    metric: Option<String>,
    mode: Mode,
    file_prefix: String,
}

/// What one check of the metric did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BestOutcome {
    /// The metric is not there: nothing saved.
    Missing,
    /// The first finite value: saved as the first best.
    First,
    /// Better than the best so far: saved.
    Improved,
    /// Not better (or NaN): nothing saved.
    NotBetter,
}

impl BestCheckpointerBuilder {
    /// Checks every `eval_period` iterations (when `(iteration + 1) % eval_period == 0`,
    /// except at the last iteration, which [`BestCheckpointer::after_train`] checks); 0
    /// (the default) checks only after training.
    pub fn eval_period(mut self, eval_period: u64) -> Self {
        self.eval_period = eval_period;
        self
    }

    /// The number of training iterations (the trainer's `max_iter`). Required.
    pub fn max_iter(mut self, max_iter: u64) -> Self {
        self.max_iter = Some(max_iter);
        self
    }

    /// The metric to track, e.g. `bbox/AP50`. Required.
    pub fn metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = Some(metric.into());
        self
    }

    /// Whether the metric is maximised (the default) or minimised.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The file name without `.pth` (`model_best` by default); a plain file name.
    pub fn file_prefix(mut self, file_prefix: impl Into<String>) -> Self {
        self.file_prefix = file_prefix.into();
        self
    }

    /// The best checkpointer. Fails when `max_iter` or the metric is missing, the prefix is
    /// not a plain file name, or the retention state file of the save directory cannot be
    /// read. The best so far is taken from that file when it records one for the same
    /// metric and mode and `<file_prefix>.pth` exists.
    pub fn build(self) -> Result<BestCheckpointer> {
        let max_iter = self
            .max_iter
            .ok_or_else(|| Error::invalid("a BestCheckpointer needs max_iter"))?;
        let metric = match self.metric {
            Some(metric) if !metric.is_empty() => metric,
            _ => return Err(Error::invalid("a BestCheckpointer needs a metric name")),
        };
        check_basename(&self.file_prefix)?;
        let mut best = None;
        let file = format!("{}.pth", self.file_prefix);
        if let Some(store) = self.checkpointer.store() {
            let state = RetentionState::load(store.as_ref())?;
            if let Some(record) = state.best.get(&file) {
                if record.metric == metric && record.mode == self.mode && store.exists(&file)? {
                    tracing::info!(
                        "Best {} so far is {:.5} @ iteration {} ({})",
                        metric,
                        record.value,
                        record.iteration,
                        store.location(&file).display()
                    );
                    best = Some((record.value, record.iteration));
                }
            }
        }
        Ok(BestCheckpointer {
            checkpointer: self.checkpointer,
            eval_period: self.eval_period,
            max_iter,
            metric,
            mode: self.mode,
            file_prefix: self.file_prefix,
            best,
        })
    }
}

impl BestCheckpointer {
    /// A builder of a best checkpointer saving with `checkpointer`; see
    /// [`BestCheckpointerBuilder`] for the settings and their defaults.
    pub fn builder(checkpointer: Checkpointer) -> BestCheckpointerBuilder {
        BestCheckpointerBuilder {
            checkpointer,
            eval_period: 0,
            max_iter: None,
            metric: None,
            mode: Mode::Max,
            file_prefix: "model_best".to_string(),
        }
    }

    /// The checkpointer that saves.
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// The best value so far and the iteration it was computed at.
    pub fn best(&self) -> Option<(f64, u64)> {
        self.best
    }

    /// After training iteration `iteration`: checks `latest` (the metric's latest value and
    /// its iteration) when an evaluation ran, as detectron2's `after_step` does. `None`
    /// when nothing was checked.
    pub fn after_step(
        &mut self,
        iteration: u64,
        latest: Option<(f64, u64)>,
    ) -> Result<Option<BestOutcome>> {
        let next = iteration.saturating_add(1);
        // `is_multiple_of` needs Rust 1.87; the workspace's minimum is 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        let due = self.eval_period > 0 && next % self.eval_period == 0 && next != self.max_iter;
        if !due {
            return Ok(None);
        }
        self.check(latest).map(Some)
    }

    /// After training stopped at `iteration`: checks `latest` if training reached its end.
    pub fn after_train(
        &mut self,
        iteration: u64,
        latest: Option<(f64, u64)>,
    ) -> Result<Option<BestOutcome>> {
        if iteration.saturating_add(1) < self.max_iter {
            return Ok(None);
        }
        self.check(latest).map(Some)
    }

    /// Compares `latest` with the best so far and saves when it is better (detectron2's
    /// `_best_checking`, with its log lines).
    pub fn check(&mut self, latest: Option<(f64, u64)>) -> Result<BestOutcome> {
        let Some((value, iteration)) = latest else {
            // detectron2's wording, missing space included, so log scrapers keep working.
            tracing::warn!(
                "Given val metric {} does not seem to be computed/stored.Will not be \
                 checkpointing based on it.",
                self.metric
            );
            return Ok(BestOutcome::Missing);
        };
        let Some((best, best_iter)) = self.best else {
            if !value.is_finite() {
                return Ok(BestOutcome::NotBetter);
            }
            self.save(value, iteration)?;
            tracing::info!("Saved first model at {value:.5} @ {iteration} steps");
            return Ok(BestOutcome::First);
        };
        if self.mode.improves(value, best) {
            // As in detectron2, an infinite value is saved but not taken as the best.
            self.save(value, iteration)?;
            tracing::info!(
                "Saved best model as latest eval score for {} is {}, better than last best \
                 score {} @ iteration {}.",
                self.metric,
                python_5f(value),
                python_5f(best),
                best_iter
            );
            return Ok(BestOutcome::Improved);
        }
        tracing::info!(
            "Not saving as latest eval score for {} is {}, not better than best score {} @ \
             iteration {}.",
            self.metric,
            python_5f(value),
            python_5f(best),
            best_iter
        );
        Ok(BestOutcome::NotBetter)
    }

    /// Saves `<file_prefix>.pth` with `{"iteration": iteration}`, then records the new best
    /// (a finite value only) in the retention state file.
    fn save(&mut self, value: f64, iteration: u64) -> Result<()> {
        let as_int = i64::try_from(iteration)
            .map_err(|_| Error::invalid(format!("iteration {iteration} is too large")))?;
        let mut extra = Dict::new();
        extra.insert("iteration", Value::Int(as_int));
        self.checkpointer.save(&self.file_prefix, extra)?;
        if !value.is_finite() {
            return Ok(());
        }
        self.best = Some((value, iteration));
        if !self.checkpointer.saves_to_disk() {
            return Ok(());
        }
        let Some(store) = self.checkpointer.store() else {
            return Ok(());
        };
        let mut state = RetentionState::load(store.as_ref())?;
        state.best.insert(
            format!("{}.pth", self.file_prefix),
            BestRecord {
                metric: self.metric.clone(),
                mode: self.mode,
                value,
                iteration,
            },
        );
        state.save(store.as_ref())
    }
}

/// A float as Python's `f"{x:0.5f}"` writes it (`nan` and `inf` in lower case).
fn python_5f(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x:.5}")
    }
}

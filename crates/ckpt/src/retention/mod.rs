//! Which checkpoints of a save directory to keep: retention [`Policy`]s that compose (a file
//! is deleted only when no policy keeps it, and never the one `last_checkpoint` names), and
//! the [`RetentionState`] file that records, for each checkpoint, its iteration, save time
//! and metrics, so that retention survives restarts and `ckpt ls` can say why a file is kept.
//!
//! ```
//! use ckpt::retention::{Checkpoint, Mode, Policy, verdicts};
//! let policies = [
//!     Policy::Newest(1),
//!     Policy::Best { metric: "bbox/AP".into(), mode: Mode::Max, k: 1 },
//! ];
//! let mut old = Checkpoint::new("model_0000009.pth", 9, 100.0);
//! old.metrics.insert("bbox/AP".into(), 40.0);
//! let mut mid = Checkpoint::new("model_0000019.pth", 19, 200.0);
//! mid.metrics.insert("bbox/AP".into(), 35.0);
//! let new = Checkpoint::new("model_0000029.pth", 29, 300.0);
//! let kept = verdicts(&policies, &[old, mid, new], None);
//! assert_eq!(kept[0].reasons, [Policy::Best { metric: "bbox/AP".into(), mode: Mode::Max, k: 1 }.into()]);
//! assert!(kept[1].reasons.is_empty()); // neither newest nor best: deleted
//! assert_eq!(kept[2].reasons, [Policy::Newest(1).into()]);
//! ```

mod state;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use state::{BestRecord, RetentionState, STATE_FILE};

use crate::error::{Error, Result};

/// Whether a larger metric is better (`Max`, e.g. an AP) or a smaller one (`Min`, a loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Larger is better.
    Max,
    /// Smaller is better.
    Min,
}

impl Mode {
    /// Whether `candidate` is strictly better than `best` (detectron2's `operator.gt` /
    /// `operator.lt`: equal is not better, and NaN is never better).
    pub fn improves(self, candidate: f64, best: f64) -> bool {
        match self {
            Mode::Max => candidate > best,
            Mode::Min => candidate < best,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Mode> {
        match text {
            "max" => Ok(Mode::Max),
            "min" => Ok(Mode::Min),
            other => Err(Error::invalid(format!(
                "Mode \"{other}\" is unknown. It should be one of {{\"max\", \"min\"}}."
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Max => "max",
            Mode::Min => "min",
        })
    }
}

/// One rule that keeps checkpoints. Policies compose: a checkpoint is kept when any policy
/// keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The `n` most recently saved checkpoints (`max_to_keep`). A checkpoint saved again
    /// (training resumed from an older one) is recent again.
    Newest(usize),
    /// The `k` checkpoints with the best value of `metric`; checkpoints without a finite
    /// value of it are not kept by this policy. Between equal values the earlier save wins,
    /// as a later equal value is not an improvement.
    Best {
        /// The metric name, as given to
        /// [`PeriodicCheckpointer::record_metric`](crate::PeriodicCheckpointer::record_metric).
        metric: String,
        /// Whether larger or smaller is better.
        mode: Mode,
        /// How many to keep.
        k: usize,
    },
    /// Every checkpoint saved after a multiple of `m` iterations: `iteration + 1` divisible
    /// by `m`, the count `period` uses (`model_0000999.pth` for `m` = 1000).
    EveryIterations(u64),
    /// One checkpoint per interval of `seconds` of wall-clock time: the oldest one, then each
    /// one saved at least `seconds` after the previous one this policy keeps. Checkpoints of
    /// unknown save time (found on disk from a run that recorded none) are not kept by it.
    OnePerInterval {
        /// The interval.
        seconds: u64,
    },
}

impl Policy {
    /// Checks the parameters: counts and intervals must be > 0, a metric name not empty.
    pub fn validate(&self) -> Result<()> {
        let bad = match self {
            Policy::Newest(0) => "keep newest N needs N > 0",
            Policy::Best { k: 0, .. } => "keep best K needs K > 0",
            Policy::Best { metric, .. } if metric.is_empty() => "keep best K needs a metric name",
            Policy::EveryIterations(0) => "keep every M iterations needs M > 0",
            Policy::OnePerInterval { seconds: 0 } => "keep one per interval needs an interval > 0",
            _ => return Ok(()),
        };
        Err(Error::invalid(bad))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Newest(n) => write!(f, "newest {n}"),
            Policy::Best { metric, mode, k } => write!(f, "best {k} by {metric} ({mode})"),
            Policy::EveryIterations(m) => write!(f, "every {m} iterations"),
            Policy::OnePerInterval { seconds } => write!(f, "one per {seconds}s"),
        }
    }
}

/// Why a checkpoint is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// `last_checkpoint` names it: never deleted.
    Tagged,
    /// A policy keeps it.
    Policy(Policy),
    /// There is no policy: retention is off and keeps everything.
    NoPolicy,
}

impl From<Policy> for Reason {
    fn from(policy: Policy) -> Reason {
        Reason::Policy(policy)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Tagged => f.write_str("last_checkpoint"),
            Reason::Policy(policy) => policy.fmt(f),
            Reason::NoPolicy => f.write_str("no retention policy"),
        }
    }
}

/// What retention knows of one checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The basename in the save directory.
    pub file: String,
    /// The iteration it was saved at.
    pub iteration: u64,
    /// When it was saved, in seconds since the Unix epoch; `None` when unknown (a file found
    /// on disk from a run that kept no state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// The metrics recorded for it (finite values only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl Checkpoint {
    /// A checkpoint saved at `time` (seconds since the Unix epoch), without metrics.
    pub fn new(file: impl Into<String>, iteration: u64, time: f64) -> Checkpoint {
        Checkpoint {
            file: file.into(),
            iteration,
            time: Some(time),
            metrics: BTreeMap::new(),
        }
    }
}

/// The verdict on one checkpoint: why it is kept (empty: it is to be deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The basename.
    pub file: String,
    /// Every reason it is kept, the tag first, then the policies in their order.
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// Whether no policy keeps it and the tag does not name it.
    pub fn delete(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The verdict on each of `checkpoints` (oldest save first), in the same order, under
/// `policies`; `tagged` is the basename `last_checkpoint` names, which is always kept. With
/// no policy at all, every checkpoint is kept (retention is off).
pub fn verdicts(
    policies: &[Policy],
    checkpoints: &[Checkpoint],
    tagged: Option<&str>,
) -> Vec<Verdict> {
    let mut reasons: Vec<Vec<Reason>> = checkpoints
        .iter()
        .map(|c| {
            if tagged == Some(c.file.as_str()) {
                vec![Reason::Tagged]
            } else {
                Vec::new()
            }
        })
        .collect();
    for policy in policies {
        for index in kept_by(policy, checkpoints) {
            reasons[index].push(Reason::Policy(policy.clone()));
        }
    }
    if policies.is_empty() {
        for (r, c) in reasons.iter_mut().zip(checkpoints) {
            if r.is_empty() {
                tracing::trace!("No retention policy: keeping {}", c.file);
                r.push(Reason::NoPolicy);
            }
        }
    }
    checkpoints
        .iter()
        .zip(reasons)
        .map(|(c, reasons)| Verdict {
            file: c.file.clone(),
            reasons,
        })
        .collect()
}

/// The indices of the checkpoints `policy` keeps.
fn kept_by(policy: &Policy, checkpoints: &[Checkpoint]) -> Vec<usize> {
    match policy {
        Policy::Newest(n) => (checkpoints.len().saturating_sub(*n)..checkpoints.len()).collect(),
        Policy::Best { metric, mode, k } => {
            let mut scored: Vec<(usize, f64)> = checkpoints
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let value = *c.metrics.get(metric)?;
                    value.is_finite().then_some((i, value))
                })
                .collect();
            // Stable: between equal values the earlier save ranks first.
            scored.sort_by(|a, b| match mode {
                Mode::Max => b.1.total_cmp(&a.1),
                Mode::Min => a.1.total_cmp(&b.1),
            });
            scored.into_iter().take(*k).map(|(i, _)| i).collect()
        }
        Policy::EveryIterations(m) => checkpoints
            .iter()
            .enumerate()
            .filter(|(_, c)| c.iteration.checked_add(1).is_some_and(|done| done % m == 0))
            .map(|(i, _)| i)
            .collect(),
        Policy::OnePerInterval { seconds } => {
            let interval = *seconds as f64;
            let mut kept = Vec::new();
            let mut last: Option<f64> = None;
            for (i, c) in checkpoints.iter().enumerate() {
                let Some(time) = c.time else { continue };
                if last.is_none_or(|last| time >= last + interval) {
                    kept.push(i);
                    last = Some(time);
                }
            }
            kept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(iteration: u64, time: f64) -> Checkpoint {
        Checkpoint::new(format!("model_{iteration:07}.pth"), iteration, time)
    }

    fn kept(policies: &[Policy], cs: &[Checkpoint], tagged: Option<&str>) -> Vec<u64> {
        verdicts(policies, cs, tagged)
            .iter()
            .zip(cs)
            .filter(|(v, _)| !v.delete())
            .map(|(_, c)| c.iteration)
            .collect()
    }

    #[test]
    fn every_policy_keeps_its_own() {
        let cs: Vec<_> = (0..10).map(|i| at(i * 10 + 9, i as f64 * 25.0)).collect();
        assert_eq!(kept(&[Policy::Newest(2)], &cs, None), [89, 99]);
        assert_eq!(
            kept(&[Policy::EveryIterations(30)], &cs, None),
            [29, 59, 89]
        );
        // Times 0, 25, 50, ...: one per 60 s keeps 0, 75, 150, 225.
        let interval = Policy::OnePerInterval { seconds: 60 };
        assert_eq!(kept(&[interval], &cs, None), [9, 39, 69, 99]);
        assert_eq!(
            kept(&[Policy::Newest(1)], &cs, Some("model_0000019.pth")),
            [19, 99]
        );
    }

    #[test]
    fn best_ranks_finite_values_and_prefers_the_earlier_tie() {
        let mut cs: Vec<_> = (0..5).map(|i| at(i, i as f64)).collect();
        for (c, v) in cs.iter_mut().zip([1.0, 3.0, f64::NAN, 3.0, 2.0]) {
            c.metrics.insert("ap".into(), v);
        }
        let best = |mode, k| Policy::Best {
            metric: "ap".into(),
            mode,
            k,
        };
        assert_eq!(kept(&[best(Mode::Max, 1)], &cs, None), [1]);
        assert_eq!(kept(&[best(Mode::Max, 3)], &cs, None), [1, 3, 4]);
        assert_eq!(kept(&[best(Mode::Min, 2)], &cs, None), [0, 4]);
    }

    #[test]
    fn no_policy_keeps_everything_and_bad_parameters_are_refused() {
        let cs: Vec<_> = (0..3).map(|i| at(i, 0.0)).collect();
        assert_eq!(kept(&[], &cs, None), [0, 1, 2]);
        assert!(Policy::Newest(0).validate().is_err());
        assert!(Policy::OnePerInterval { seconds: 0 }.validate().is_err());
        assert!("mean".parse::<Mode>().is_err());
    }
}

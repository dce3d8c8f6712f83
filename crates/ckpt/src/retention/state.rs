//! The retention state file: a small JSON file in the save directory, written atomically
//! through the [`Store`] like the `last_checkpoint` tag, read back by a restarted run and by
//! `ckpt ls`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, Mode, Policy};
use crate::error::{Error, Result};
use crate::store::{Store, MAX_SMALL_FILE};

/// The basename of the retention state file in a save directory.
pub const STATE_FILE: &str = "ckpt_retention.json";

/// The version of the state file's layout this library writes and reads.
const VERSION: u32 = 1;

/// The best value of a metric a [`BestCheckpointer`](crate::BestCheckpointer) saved a file
/// for, so that a restarted run knows the best so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// The metric name.
    pub metric: String,
    /// Whether larger or smaller is better.
    pub mode: Mode,
    /// The best value.
    pub value: f64,
    /// The iteration the value was computed at (saved as the file's `iteration`).
    pub iteration: u64,
}

/// What the state file holds: the policies in force, the checkpoints retention manages
/// (oldest save first) and the best values of the best-checkpoint files.
///
/// ```
/// use ckpt::retention::{Checkpoint, Policy, RetentionState};
/// use ckpt::store::LocalDir;
/// let dir = tempfile::tempdir()?;
/// let store = LocalDir::new(dir.path());
/// let mut state = RetentionState::load(&store)?; // empty: no file yet
/// state.policies = vec![Policy::Newest(3)];
/// state.record(Checkpoint::new("model_0000009.pth", 9, 1.0));
/// state.save(&store)?;
/// assert_eq!(RetentionState::load(&store)?, state);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionState {
    /// The policies the last writer applied.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// The checkpoints retention may delete, oldest save first.
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    /// The best value behind each best-checkpoint file, by basename (`model_best.pth`).
    #[serde(default)]
    pub best: BTreeMap<String, BestRecord>,
}

/// The file as written: the state with a version, so that a later layout is refused, not
/// misread.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    state: RetentionState,
}

impl RetentionState {
    /// Reads the state file of `store`; an empty state when there is none. A file that is
    /// not a state file of this version is an error naming it: retention never deletes on
    /// the strength of a file it cannot read.
    pub fn load(store: &dyn Store) -> Result<RetentionState> {
        let Some(bytes) = store.read_small(STATE_FILE)? else {
            return Ok(RetentionState::default());
        };
        let location = store.location(STATE_FILE);
        let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
            Error::format_caused("not a ckpt retention state file", e)
                .in_file(&location.to_path_buf())
        })?;
        if on_disk.version != VERSION {
            return Err(Error::unsupported(format!(
                "retention state version {} (this ckpt reads version {VERSION})",
                on_disk.version
            ))
            .in_file(&location.to_path_buf()));
        }
        Ok(on_disk.state)
    }

    /// Writes the state file atomically. Fails, writing nothing, when the file would be
    /// larger than a small file a store reads back (64 KiB, some 700 checkpoints).
    pub fn save(&self, store: &dyn Store) -> Result<()> {
        let on_disk = OnDisk {
            version: VERSION,
            state: self.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&on_disk)
            .map_err(|e| Error::invalid(format!("cannot encode the retention state: {e}")))?;
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_SMALL_FILE {
            return Err(Error::invalid(format!(
                "{}: the retention state of {} checkpoints would take {} bytes, more than \
                 {MAX_SMALL_FILE}; keep fewer checkpoints",
                store.location(STATE_FILE).display(),
                self.checkpoints.len(),
                bytes.len()
            )));
        }
        store.write(STATE_FILE, &mut |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(Error::io_unnamed)
        })
    }

    /// Records `checkpoint` as the newest save; a checkpoint of the same file recorded
    /// before is replaced (training resumed from an older checkpoint saves it again).
    pub fn record(&mut self, checkpoint: Checkpoint) {
        self.checkpoints.retain(|c| c.file != checkpoint.file);
        self.checkpoints.push(checkpoint);
    }

    /// Records `value` of `metric` for the newest checkpoint of `iteration`; `false` when no
    /// checkpoint of that iteration is recorded. A non-finite value is not recorded (no
    /// policy ranks it) but still counts as found.
    pub fn record_metric(&mut self, iteration: u64, metric: &str, value: f64) -> bool {
        let Some(checkpoint) = self
            .checkpoints
            .iter_mut()
            .rev()
            .find(|c| c.iteration == iteration)
        else {
            return false;
        };
        if value.is_finite() {
            checkpoint.metrics.insert(metric.to_string(), value);
        } else {
            checkpoint.metrics.remove(metric);
        }
        true
    }
}

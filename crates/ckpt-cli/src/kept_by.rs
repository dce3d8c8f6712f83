//! Why `ckpt ls` says each file is kept: the retention state file a ckpt checkpointer leaves
//! in the save directory (its policies, the iteration, save time and metrics of each periodic
//! file, the best value behind each best file), judged as the checkpointer would at its
//! next save.

use std::path::Path;

use ckpt::retention::{verdicts, Policy, Reason, RetentionState};
use ckpt::store::LocalDir;

use crate::error::one_line;

/// What retention says of a save directory.
#[derive(Debug, Default)]
pub struct Retention {
    /// The policies in force, as words (`newest 3`), empty without a state file.
    pub policies: Vec<String>,
    /// Why the state file cannot be read, if it cannot.
    pub error: Option<String>,
    state: RetentionState,
}

impl Retention {
    /// Reads the state file of `dir` (an empty retention when there is none).
    pub fn read(dir: &Path) -> Retention {
        match RetentionState::load(&LocalDir::new(dir)) {
            Ok(state) => Retention {
                policies: state.policies.iter().map(ToString::to_string).collect(),
                error: None,
                state,
            },
            Err(e) => Retention {
                error: Some(one_line(&e.report().to_string())),
                ..Retention::default()
            },
        }
    }

    /// Why each of `files` is kept: `None` for a file retention does not manage (it never
    /// deletes it), an empty list for one no policy keeps (deleted at the next save).
    pub fn kept_by(&self, files: &[String], tag: Option<&str>) -> Vec<Option<Vec<String>>> {
        let verdicts = verdicts(&self.state.policies, &self.state.checkpoints, tag);
        files
            .iter()
            .map(|file| {
                if let Some(best) = self.state.best.get(file) {
                    return Some(vec![format!(
                        "best {} ({}): {} @ iteration {}",
                        best.metric, best.mode, best.value, best.iteration
                    )]);
                }
                let index = self
                    .state
                    .checkpoints
                    .iter()
                    .position(|c| c.file == *file)?;
                let checkpoint = &self.state.checkpoints[index];
                let reasons = verdicts[index]
                    .reasons
                    .iter()
                    .map(|reason| match reason {
                        Reason::Policy(Policy::Best { metric, .. }) => {
                            let value = checkpoint.metrics.get(metric).copied().unwrap_or(f64::NAN);
                            format!("{reason}: {value}")
                        }
                        other => other.to_string(),
                    })
                    .collect();
                Some(reasons)
            })
            .collect()
    }
}

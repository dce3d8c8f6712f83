//! The outcome of one save running in the background, shared by the writer thread (which
//! sets it), the checkpointer (which returns an error it has not reported yet with its next
//! call) and the [`SaveHandle`] the caller may hold.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::store::Location;

/// Where a background save is.
enum State {
    /// Still writing.
    Running,
    /// Written (or failed); an error is kept here until someone reports it.
    Finished(Result<()>),
    /// Failed, and the error was returned once already: what it said, for later askers.
    Reported(String),
}

/// One background save's outcome slot.
pub(crate) struct Pending {
    /// The checkpoint file being written, for messages.
    location: Location,
    state: Mutex<State>,
    finished: Condvar,
}

impl Pending {
    /// A save of `location` that has not finished.
    pub(crate) fn running(location: Location) -> Arc<Pending> {
        Arc::new(Pending {
            location,
            state: Mutex::new(State::Running),
            finished: Condvar::new(),
        })
    }

    /// A save that is already over (nothing to write, or written synchronously).
    pub(crate) fn finished(location: Location, result: Result<()>) -> Arc<Pending> {
        Arc::new(Pending {
            location,
            state: Mutex::new(State::Finished(result)),
            finished: Condvar::new(),
        })
    }

    /// The checkpoint file this save writes.
    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value, consistent at every instant: a panic elsewhere while
        // the lock was held leaves nothing half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome and wakes every waiter.
    pub(crate) fn finish(&self, result: Result<()>) {
        *self.lock() = State::Finished(result);
        self.finished.notify_all();
    }

    /// Whether the save is over.
    pub(crate) fn is_finished(&self) -> bool {
        !matches!(*self.lock(), State::Running)
    }

    /// Blocks until the save is over.
    fn wait_finished(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while matches!(*state, State::Running) {
            state = self.finished.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state
    }

    /// Waits for the save; returns its error unless it was returned already.
    pub(crate) fn take_unreported(&self) -> Result<()> {
        let mut state = self.wait_finished();
        take_error(&mut state)
    }

    /// Waits for the save; returns its error, or a restatement of it when it was returned
    /// already (the caller asked about this very save).
    pub(crate) fn outcome(&self) -> Result<()> {
        let mut state = self.wait_finished();
        if let State::Reported(message) = &*state {
            return Err(Error::invalid(format!(
                "the background save of {} failed (reported earlier): {message}",
                self.location.display()
            )));
        }
        take_error(&mut state)
    }

    /// Whether the save failed and nobody was told yet (checked when the checkpointer is
    /// dropped).
    pub(crate) fn unreported_error(&self) -> Option<String> {
        match &*self.lock() {
            State::Finished(Err(e)) => Some(e.report().to_string()),
            _ => None,
        }
    }
}

fn take_error(state: &mut State) -> Result<()> {
    match std::mem::replace(state, State::Finished(Ok(()))) {
        State::Finished(Err(e)) => {
            *state = State::Reported(e.report().to_string());
            Err(e)
        }
        State::Reported(message) => {
            *state = State::Reported(message);
            Ok(())
        }
        other => {
            *state = other;
            Ok(())
        }
    }
}

/// A save running in the background ([`Checkpointer::save_async`](crate::Checkpointer::save_async)):
/// the model's state was already snapshotted when it was returned; the file is being
/// written, made durable and tagged in `last_checkpoint`.
///
/// Dropping the handle does not cancel or detach anything: the checkpointer still waits for
/// the save before its next one, and returns its error from its next call if the handle did
/// not.
///
/// ```
/// use ckpt::{shared, Checkpointer, Dict, StateDict, StateDictModel, Tensor};
/// let dir = tempfile::tempdir()?;
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[0.5f32; 6], &[2, 3])?);
/// let model = shared(StateDictModel::new(sd));
/// let checkpointer = Checkpointer::new(model, dir.path());
/// let handle = checkpointer.save_async("model_0000009", Dict::new())?;
/// // ... training goes on while the file is written ...
/// handle.wait()?; // written, durable and tagged (or the error of the write)
/// assert!(dir.path().join("model_0000009.pth").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[must_use = "a save handle tells whether the save succeeded only when waited on"]
pub struct SaveHandle {
    pending: Arc<Pending>,
}

impl SaveHandle {
    pub(crate) fn new(pending: Arc<Pending>) -> SaveHandle {
        SaveHandle { pending }
    }

    /// Blocks until the save is written, durable and tagged; returns its error. An error
    /// already returned by a call of the checkpointer is returned again, restated.
    pub fn wait(&self) -> Result<()> {
        self.pending.outcome()
    }

    /// Whether the save is over (successfully or not); never blocks.
    pub fn is_finished(&self) -> bool {
        self.pending.is_finished()
    }

    /// The checkpoint file the save writes.
    pub fn location(&self) -> &Location {
        self.pending.location()
    }
}

impl std::fmt::Debug for SaveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveHandle")
            .field("location", &self.pending.location)
            .field("finished", &self.is_finished())
            .finish()
    }
}

//! Background saves: the training thread takes a snapshot of the state and goes on; one
//! writer thread per checkpointer writes the file, makes it durable and tags it.
//!
//! At most one save is in flight: the next save waits for the previous one first. Its
//! outcome is kept ([`pending`]) until someone asks: the checkpointer's next call returns an
//! error it has not reported yet, as does [`SaveHandle::wait`]; a failure is also logged when
//! it happens, and dropping the checkpointer waits for the write. The snapshot goes into
//! reused staging buffers, or shares memory that cannot change ([`staging`]). The writer runs
//! at a lower scheduling priority than the training threads, so that serializing a large
//! state does not slow training down where the CPU is busy.

mod pending;
mod staging;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::store::Location;
use crate::value::Value;

pub(crate) use pending::Pending;
pub use pending::SaveHandle;
pub use staging::SnapshotMode;
pub(crate) use staging::{Staged, Staging};

/// A write for the writer thread: it consumes (and so drops) the snapshot it writes, then
/// the staging buffers of `staged` go back to the staging area.
struct Job {
    write: Box<dyn FnOnce() -> Result<()> + Send>,
    staged: Staged,
    pending: Arc<Pending>,
}

/// The writer thread of one checkpointer (started by its first background save) and the
/// last save given to it.
#[derive(Default)]
pub(crate) struct BackgroundWriter {
    state: Mutex<WriterState>,
    staging: Arc<Mutex<Staging>>,
}

/// What [`BackgroundWriter::lock`] guards: holding it makes "wait for the previous save,
/// snapshot, hand over" one step, so two threads saving through one checkpointer never have
/// two saves in flight.
#[derive(Default)]
pub(crate) struct WriterState {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    last: Option<Arc<Pending>>,
}

impl std::fmt::Debug for BackgroundWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("BackgroundWriter")
            .field("running", &state.thread.is_some())
            .field(
                "in_flight",
                &state.last.as_ref().is_some_and(|p| !p.is_finished()),
            )
            .finish()
    }
}

impl BackgroundWriter {
    /// Exclusive use of the writer (see [`WriterState`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the save in flight, if any; returns its error unless it was reported.
    pub(crate) fn settle(&self) -> Result<()> {
        let last = self.lock().last.clone();
        match last {
            Some(pending) => pending.take_unreported(),
            None => Ok(()),
        }
    }

    /// Copies what `mode` says into the staging buffers (see [`Staging::stage`]). Call with
    /// the writer locked and settled, so that no write reads the buffers.
    pub(crate) fn stage(&self, value: &mut Value, mode: crate::SnapshotMode) -> Result<Staged> {
        self.staging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stage(value, mode)
    }
}

impl WriterState {
    /// Waits for the save in flight, if any; returns its error unless it was reported.
    pub(crate) fn settle(&self) -> Result<()> {
        match &self.last {
            Some(pending) => pending.take_unreported(),
            None => Ok(()),
        }
    }

    /// Hands `write` (of `location`) to the writer thread, starting it if needed. Call
    /// settled: the previous save is over.
    pub(crate) fn submit(
        &mut self,
        staging: &Arc<Mutex<Staging>>,
        location: Location,
        staged: Staged,
        write: Box<dyn FnOnce() -> Result<()> + Send>,
    ) -> Result<SaveHandle> {
        let pending = Pending::running(location);
        let job = Job {
            write,
            staged,
            pending: pending.clone(),
        };
        let sender = match &self.jobs {
            Some(sender) => sender.clone(),
            None => {
                let (sender, receiver) = mpsc::channel::<Job>();
                let staging = staging.clone();
                let thread = std::thread::Builder::new()
                    .name("ckpt-writer".to_string())
                    .spawn(move || run_writer(receiver, staging))
                    .map_err(|e| {
                        Error::invalid(format!("cannot start the checkpoint writer thread: {e}"))
                    })?;
                self.thread = Some(thread);
                self.jobs = Some(sender.clone());
                sender
            }
        };
        if let Err(mpsc::SendError(job)) = sender.send(job) {
            // The thread is gone (it never exits while the sender lives, short of an abort).
            let error = Error::invalid("the checkpoint writer thread has stopped");
            job.pending.finish(Err(error));
            self.jobs = None;
        }
        self.last = Some(pending.clone());
        Ok(SaveHandle::new(pending))
    }
}

impl BackgroundWriter {
    /// Writes `write` in the background; see [`WriterState::submit`].
    pub(crate) fn submit(
        &self,
        state: &mut WriterState,
        location: Location,
        staged: Staged,
        write: Box<dyn FnOnce() -> Result<()> + Send>,
    ) -> Result<SaveHandle> {
        state.submit(&self.staging, location, staged, write)
    }
}

/// How many steps of niceness the writer thread gives away: the training threads get the CPU
/// first, and the writer, mostly waiting on the disk, takes what is left.
#[cfg(target_os = "linux")]
const WRITER_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (its niceness; capped at the lowest).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: nice() only changes the scheduling priority of the calling thread (on Linux
        // a thread has its own niceness) and touches no memory; lowering it is always allowed.
        let result = unsafe { libc::nice(WRITER_NICENESS) };
        if result == -1 {
            tracing::debug!("could not lower the priority of the checkpoint writer thread");
        }
    }
}

fn run_writer(jobs: mpsc::Receiver<Job>, staging: Arc<Mutex<Staging>>) {
    lower_priority();
    for job in jobs {
        let Job {
            write,
            staged,
            pending,
        } = job;
        // A panic in a store is a bug; it fails this save and not the training program.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(write)).unwrap_or_else(|_| {
                Err(Error::invalid(
                    "the background save panicked (see the panic message above)",
                ))
            });
        if let Err(e) = &result {
            tracing::error!(
                "Background save of {} failed: {}",
                pending.location().display(),
                e.report()
            );
        }
        staging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reclaim(staged);
        pending.finish(result);
    }
}

impl Drop for BackgroundWriter {
    /// Waits for the save in flight: a program that ends normally never leaves one half
    /// done. An error nobody asked for is logged again.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.jobs = None; // the thread ends after the job it has
        if let Some(thread) = state.thread.take() {
            let _ = thread.join();
        }
        if let Some(message) = state.last.as_ref().and_then(|p| p.unreported_error()) {
            tracing::error!(
                "The last background save failed and no call returned the error: {message}"
            );
        }
    }
}

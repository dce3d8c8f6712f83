//! [`MpiCommunicator`]: ckpt's [`Communicator`] over an MPI communicator.

use std::fmt;
use std::os::raw::{c_int, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ckpt::dist::{Communicator, SlicePart};
use ckpt::{Error, Result};
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::traits::{AsRaw, Equivalence};
use mpi::Threading;

use crate::launcher::check_world_size_from_env;

/// The largest message a broadcast sends at once by default (64 MiB): MPI counts are
/// `i32`, so anything larger goes in several messages, and a rank that must receive into a
/// scratch buffer (see [`MpiCommunicator::broadcast`]) needs no more than this.
pub const DEFAULT_CHUNK: usize = 64 << 20;

/// How long [`MpiCommunicator::finish`] waits, on a rank that failed, for the others to
/// finish too before it ends the job (30 s).
pub const DEFAULT_EXIT_GRACE: Duration = Duration::from_secs(30);

/// ckpt's [`Communicator`] over an MPI communicator: the world of the job
/// ([`MpiCommunicator::world`]) or one the application already has
/// ([`MpiCommunicator::new`]). It makes `DetectionCheckpointer` load in step across the
/// processes of an `mpirun` job, with rank 0 alone saving.
///
/// ```no_run
/// use ckpt::{shared, DetectionCheckpointer, StateDict, StateDictModel};
/// use ckpt_mpi::MpiCommunicator;
///
/// let comm = MpiCommunicator::world()?; // a world of one without mpirun
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = DetectionCheckpointer::new(model, "output").with_communicator(comm);
/// // Every rank: rank 0 decides what to resume from and sends the file to ranks that
/// // cannot read it.
/// let extra = checkpointer.resume_or_load(None, true)?;
/// # Ok::<(), ckpt::Error>(())
/// ```
///
/// # Threads
///
/// MPI is initialised (or must have been, for [`MpiCommunicator::new`]) with at least
/// `MPI_THREAD_SERIALIZED`, and every MPI call this type makes holds one lock, so it may be
/// used from any thread: it is `Send + Sync`. Calls the application makes on its own
/// communicators from other threads at the same time need `MPI_THREAD_MULTIPLE`, which
/// [`MpiCommunicator::world`] asks for.
///
/// # When a rank fails
///
/// - Inside ckpt's collective steps (loading, resuming) every rank returns the same error,
///   naming the rank that failed and why (`rank 2 could not load the checkpoint: ...`): rank 0
///   lacking the file, rank 0 failing to send it, any rank failing to parse or load it.
/// - A rank that stops before a collective the others are in (an error of the application's
///   own) would leave them waiting. Pass every rank's outcome to
///   [`MpiCommunicator::finish`] before leaving: it prints `rank R failed: <error>`, and when
///   the other ranks do not all finish too within [`DEFAULT_EXIT_GRACE`] (they are waiting
///   for this one), ends the whole job through `MPI_Abort`, which makes `mpirun` stop every
///   rank. When every rank failed alike (an error of ckpt's collective steps), they all
///   finish normally, each with its message. [`MpiCommunicator::abort`] ends the job at
///   once; dropping this communicator while the thread panics does so itself.
/// - An error inside MPI itself ends the job (MPI's default error handler), with MPI's
///   message naming the rank.
pub struct MpiCommunicator {
    /// The communicator; every MPI call is made while holding this lock.
    comm: Mutex<SimpleCommunicator>,
    /// A second duplicate, for [`MpiCommunicator::finish`] alone, so that its barrier never
    /// matches a collective some rank is still waiting in.
    exit: Mutex<SimpleCommunicator>,
    exit_grace: Duration,
    rank: usize,
    size: usize,
    chunk: usize,
    /// Set by [`MpiCommunicator::world`]: MPI is finalised when this is dropped, after the
    /// communicator (fields drop in declaration order).
    universe: Option<Universe>,
}

// SAFETY: the MPI handle inside `SimpleCommunicator` is an opaque pointer into the MPI
// library (Open MPI) or an integer (MPICH); nothing in it is tied to the thread that created
// it. The constructors check that MPI runs at `MPI_THREAD_SERIALIZED` or above, which allows
// MPI calls from any thread as long as no two are concurrent, and every call this type makes
// holds `comm`'s lock. `Universe` holds only a buffer of plain bytes.
unsafe impl Send for MpiCommunicator {}
// SAFETY: as for `Send`: shared references reach the handle only through the lock.
unsafe impl Sync for MpiCommunicator {}

impl MpiCommunicator {
    /// Initialises MPI (asking for `MPI_THREAD_MULTIPLE`) and returns the communicator of
    /// every process of the job, which finalises MPI when dropped (drop it last, on the main
    /// thread). Without a launcher the process is a world of one.
    ///
    /// Fails when MPI is already initialised (use [`MpiCommunicator::new`] with the
    /// application's communicator), when MPI cannot run at `MPI_THREAD_SERIALIZED`, and when
    /// a launcher's environment announces more processes than MPI sees (a program started
    /// by another MPI's launcher).
    pub fn world() -> Result<MpiCommunicator> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| {
                Error::invalid(
                    "MPI is already initialised in this process: wrap the application's \
                     communicator with MpiCommunicator::new instead of calling world()",
                )
            })?;
        let mut comm = Self::wrap(&universe.world(), threading)?;
        comm.universe = Some(universe);
        Ok(comm)
    }

    /// ckpt's communicator over a duplicate of `comm` (ckpt's messages never mix with the
    /// application's), for applications that initialised MPI themselves, at
    /// `MPI_THREAD_SERIALIZED` or above (`mpi::initialize_with_threading`). Drop it before
    /// MPI is finalised.
    pub fn new(comm: &impl mpi::topology::Communicator) -> Result<MpiCommunicator> {
        if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
            return Err(Error::invalid(
                "MPI is not running: initialise it (mpi::initialize_with_threading) first",
            ));
        }
        Self::wrap(comm, mpi::environment::threading_support())
    }

    fn wrap(
        comm: &impl mpi::topology::Communicator,
        threading: Threading,
    ) -> Result<MpiCommunicator> {
        if threading < Threading::Serialized {
            return Err(Error::invalid(format!(
                "MPI runs at thread level {threading:?}, but ckpt's communicator may be used \
                 from any thread and needs Serialized or Multiple \
                 (mpi::initialize_with_threading(Threading::Multiple))"
            )));
        }
        check_world_size_from_env(SimpleCommunicator::world().size() as usize)?;
        let exit = comm.duplicate();
        let comm = comm.duplicate();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        Ok(MpiCommunicator {
            comm: Mutex::new(comm),
            exit: Mutex::new(exit),
            exit_grace: DEFAULT_EXIT_GRACE,
            rank,
            size,
            chunk: DEFAULT_CHUNK,
            universe: None,
        })
    }

    /// Sends broadcasts in messages of at most `bytes` (1 to `i32::MAX`; every rank must use
    /// the same size). Small sizes exercise the chunking in tests.
    pub fn with_chunk_size(mut self, bytes: usize) -> Result<MpiCommunicator> {
        if bytes == 0 || bytes > i32::MAX as usize {
            return Err(Error::invalid(format!(
                "chunk size {bytes}: expected 1 to {} bytes",
                i32::MAX
            )));
        }
        self.chunk = bytes;
        Ok(self)
    }

    /// Waits at most `grace` in [`MpiCommunicator::finish`] on a failed rank (every rank
    /// should use the same).
    pub fn with_exit_grace(mut self, grace: Duration) -> MpiCommunicator {
        self.exit_grace = grace;
        self
    }

    /// Ends this rank's part of the job so that no rank waits forever for it; call it on
    /// every rank with the rank's outcome, before dropping the communicator.
    ///
    /// `Ok` waits until every rank has called `finish` (as `MPI_Finalize` would) and returns
    /// the outcome. `Err` prints `rank R failed: <error>` to stderr, then waits for every
    /// rank to call `finish` for at most the exit grace ([`DEFAULT_EXIT_GRACE`]): when they
    /// all do (every rank failed alike, or the others were done) it returns the error; when
    /// they do not (they are waiting in a collective for this rank) it ends the whole job
    /// with `MPI_Abort` (exit code 1).
    pub fn finish<T, E: fmt::Display>(&self, outcome: Result<T, E>) -> Result<T, E> {
        let exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        let Err(error) = &outcome else {
            exit.barrier();
            return outcome;
        };
        say(&format!("rank {} failed: {error}", self.rank));
        let mut request = exit.immediate_barrier();
        let deadline = Instant::now() + self.exit_grace;
        loop {
            match request.test() {
                Ok(_) => return outcome,
                Err(pending) => request = pending,
            }
            if Instant::now() >= deadline {
                // rsmpi aborts on a pending request dropped; the job ends here anyway.
                std::mem::forget(request);
                drop(exit);
                self.abort(
                    1,
                    &format!(
                        "the other ranks did not finish within {:?} of its failure",
                        self.exit_grace
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The largest message a broadcast sends at once.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Ends the whole job: prints `rank R aborts the job: <reason>` to stderr and calls
    /// `MPI_Abort`, after which `mpirun` stops every rank and exits with `code`. For a rank
    /// that cannot go on while the others may be waiting for it in a collective.
    pub fn abort(&self, code: i32, reason: &dyn fmt::Display) -> ! {
        // Said once, where it is seen: the log when there is one, else stderr.
        if tracing::dispatcher::has_been_set() {
            tracing::error!("rank {} aborts the job: {reason}", self.rank);
        } else {
            say(&format!("rank {} aborts the job: {reason}", self.rank));
        }
        // A poisoned lock still holds a valid handle, and aborting must not wait.
        let comm = match self.comm.try_lock() {
            Ok(comm) => comm,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // Another thread is inside a collective: abort through the world.
                SimpleCommunicator::world().abort(code)
            }
        };
        comm.abort(code)
    }

    fn lock(&self) -> MutexGuard<'_, SimpleCommunicator> {
        // A thread that panicked while holding the lock left no MPI call half made (each
        // call is one C call), so the handle is still good.
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Broadcasts `bytes` from rank 0 in chunks; on the other ranks `bytes` is where they
    /// go, or `None` to receive into a bounded scratch buffer and drop them.
    fn broadcast_chunks(
        &self,
        comm: &SimpleCommunicator,
        len: usize,
        target: Option<&mut [u8]>,
    ) -> Result<()> {
        let root = comm.process_at_rank(0);
        match target {
            Some(target) => {
                for chunk in target.chunks_mut(self.chunk) {
                    root.broadcast_into(chunk);
                }
            }
            None => {
                let mut scratch = Vec::new();
                scratch
                    .try_reserve_exact(self.chunk.min(len))
                    .map_err(|_| no_memory(self.rank, self.chunk.min(len) as u64))?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(self.chunk);
                    scratch.resize(n, 0);
                    root.broadcast_into(&mut scratch[..]);
                    left -= n;
                }
            }
        }
        Ok(())
    }

    /// Sends `bytes` from rank 0 in chunks, reading them in place.
    fn send_chunks(&self, comm: &SimpleCommunicator, bytes: &[u8]) {
        for chunk in bytes.chunks(self.chunk) {
            // SAFETY: MPI_Bcast only reads the root's buffer; the pointer and count describe
            // `chunk` (at most `self.chunk` <= i32::MAX bytes), alive for the call, with MPI's
            // datatype for u8; the communicator is valid and the lock is held.
            unsafe {
                mpi::ffi::MPI_Bcast(
                    chunk.as_ptr() as *mut c_void,
                    chunk.len() as c_int,
                    u8::equivalent_datatype().as_raw(),
                    0,
                    comm.as_raw(),
                );
            }
        }
    }
}

fn no_memory(rank: usize, bytes: u64) -> Error {
    Error::invalid(format!(
        "rank {rank}: no memory for the {bytes} bytes rank 0 broadcast"
    ))
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        let comm = self.lock();
        let mut lens = vec![0u64; self.size];
        comm.all_gather_into(&(value.len() as u64), &mut lens[..]);
        // Every rank sees the same lengths, so every rank takes the same branch here.
        let total: u64 = lens.iter().sum();
        if total > i32::MAX as u64 {
            return Err(Error::invalid(format!(
                "all_gather: the ranks' values add up to {total} bytes, more than one MPI \
                 message holds (i32::MAX)"
            )));
        }
        let counts: Vec<i32> = lens.iter().map(|&n| n as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |start, &n| {
                let at = *start;
                *start += n;
                Some(at)
            })
            .collect();
        let mut all = vec![0u8; total as usize];
        {
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            comm.all_gather_varcount_into(value, &mut partition);
        }
        Ok(displs
            .iter()
            .zip(&counts)
            .map(|(&start, &n)| all[start as usize..(start + n) as usize].to_vec())
            .collect())
    }

    /// The length first, then the bytes in chunks of at most [`MpiCommunicator::chunk_size`]
    /// (any size, past MPI's `i32` counts), into a buffer each receiving rank allocates once.
    /// A rank without memory for it still takes part, through a scratch chunk, and returns an
    /// error.
    fn broadcast(&self, buffer: &mut Vec<u8>) -> Result<()> {
        let comm = self.lock();
        let root = comm.process_at_rank(0);
        let mut len = buffer.len() as u64;
        root.broadcast_into(&mut len);
        if self.rank == 0 {
            self.send_chunks(&comm, buffer);
            return Ok(());
        }
        buffer.clear();
        let fits = usize::try_from(len)
            .ok()
            .filter(|&n| buffer.try_reserve_exact(n).is_ok());
        match fits {
            Some(n) => {
                buffer.resize(n, 0);
                self.broadcast_chunks(&comm, n, Some(&mut buffer[..]))
            }
            None => {
                let n = usize::try_from(len).unwrap_or(usize::MAX);
                self.broadcast_chunks(&comm, n, None)?;
                Err(no_memory(self.rank, len))
            }
        }
    }

    /// Rank 0 sends straight from its slice (a memory map of a file, a tensor), the others
    /// receive straight into theirs: nothing is copied, in chunks of at most
    /// [`MpiCommunicator::chunk_size`].
    fn broadcast_slice(&self, part: SlicePart<'_>) -> Result<()> {
        let comm = self.lock();
        match part {
            SlicePart::Send(bytes) if self.rank == 0 => {
                self.send_chunks(&comm, bytes);
                Ok(())
            }
            SlicePart::Receive(target) if self.rank != 0 => {
                self.broadcast_chunks(&comm, target.len(), Some(target))
            }
            _ => Err(Error::invalid(format!(
                "broadcast_slice: rank {} passed the wrong side (rank 0 sends, the others receive)",
                self.rank
            ))),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.lock().barrier();
        Ok(())
    }
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        // Unwinding out of a panic would otherwise finalise MPI, which waits for every rank,
        // while the other ranks wait in a collective for this one: end the job instead.
        if std::thread::panicking() && self.size > 1 {
            self.abort(101, &"the thread panicked");
        }
    }
}

impl fmt::Debug for MpiCommunicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiCommunicator")
            .field("rank", &self.rank)
            .field("world_size", &self.size)
            .field("chunk_size", &self.chunk)
            .field("owns_mpi", &self.universe.is_some())
            .finish()
    }
}

/// Writes `line` to stderr in one write: the launcher forwards each rank's stream in the
/// pieces it reads, so a line written in parts (as `eprintln!` may) can interleave with
/// another rank's.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

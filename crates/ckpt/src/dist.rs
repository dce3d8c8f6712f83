//! The few collective operations a checkpointer needs when several processes train one model:
//! who am I, gather a small value from everyone, send bytes from the main process to all,
//! wait for everyone.
//!
//! [`Communicator`] is byte-oriented so that any backend (threads, processes over sockets,
//! MPI, NCCL) can implement it. [`SingleProcess`] is the default for ordinary training;
//! [`InProcessComm`] runs several ranks as threads of one process, for tests.
//!
//! Every rank must call the same collectives in the same order, as with
//! `torch.distributed`. The in-process implementation detects a rank calling a different
//! collective or leaving the group and returns an error on every rank instead of hanging.
//!
//! Large payloads (a whole checkpoint) go through [`Communicator::broadcast_slice`], which
//! receives into memory the caller allocated once and never needs a second copy of the
//! payload on any rank.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Collective operations across the ranks of a training job. Rank 0 is the main process.
pub trait Communicator: Send + Sync {
    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Every rank's `value`, indexed by rank.
    fn all_gather(&self, value: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Makes `buffer` on every rank equal to `buffer` on rank 0 (rank 0's is unchanged and
    /// not copied; the other ranks' previous contents are discarded).
    fn broadcast(&self, buffer: &mut Vec<u8>) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Copies rank 0's bytes into every other rank's slice of the same length (known to
    /// every rank beforehand, e.g. from an earlier [`Communicator::broadcast`]). Rank 0
    /// passes [`SlicePart::Send`], the others [`SlicePart::Receive`].
    ///
    /// The default sends pieces of at most [`SLICE_PIECE`] bytes through
    /// [`Communicator::broadcast`], so it needs that much memory beyond the slices; a
    /// backend that can receive in place (MPI) overrides it to copy nothing.
    fn broadcast_slice(&self, part: SlicePart<'_>) -> Result<()> {
        match part {
            SlicePart::Send(bytes) => {
                if !self.is_main_process() {
                    return Err(wrong_side(self.rank()));
                }
                for piece in bytes.chunks(SLICE_PIECE) {
                    self.broadcast(&mut piece.to_vec())?;
                }
            }
            SlicePart::Receive(target) => {
                if self.is_main_process() {
                    return Err(wrong_side(0));
                }
                let mut received = Vec::new();
                for piece in target.chunks_mut(SLICE_PIECE) {
                    self.broadcast(&mut received)?;
                    if received.len() != piece.len() {
                        return Err(Error::invalid(format!(
                            "broadcast_slice: rank 0 sent a piece of {} bytes where rank {} expected {}",
                            received.len(),
                            self.rank(),
                            piece.len()
                        )));
                    }
                    piece.copy_from_slice(&received);
                }
            }
        }
        Ok(())
    }

    /// Whether this is rank 0, the process that writes checkpoints.
    fn is_main_process(&self) -> bool {
        self.rank() == 0
    }
}

/// The largest piece the default [`Communicator::broadcast_slice`] sends at once (64 MiB).
pub const SLICE_PIECE: usize = 64 << 20;

/// One rank's side of a [`Communicator::broadcast_slice`].
#[derive(Debug)]
pub enum SlicePart<'a> {
    /// Rank 0: the bytes to send (only read).
    Send(&'a [u8]),
    /// Every other rank: where the bytes go, of the same length as rank 0's.
    Receive(&'a mut [u8]),
}

fn wrong_side(rank: usize) -> Error {
    let expected = if rank == 0 { "Send" } else { "Receive" };
    Error::invalid(format!(
        "broadcast_slice: rank {rank} must pass SlicePart::{expected}"
    ))
}

/// Gathers one flag per rank (e.g. "I can read the checkpoint file"), indexed by rank.
pub fn all_gather_flag(comm: &dyn Communicator, flag: bool) -> Result<Vec<bool>> {
    comm.all_gather(&[u8::from(flag)])?
        .into_iter()
        .enumerate()
        .map(|(rank, bytes)| match bytes.as_slice() {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(Error::invalid(format!(
                "all_gather_flag: rank {rank} sent {} bytes instead of one flag",
                other.len()
            ))),
        })
        .collect()
}

/// Every rank's outcome of a step it ran on its own (loading a checkpoint), so that the
/// ranks go on together or stop together: `Ok` on every rank when every rank succeeded,
/// otherwise the same error on every rank, naming each rank that failed and why (`what`
/// says what the step was, e.g. `"load model_final.pth"`).
pub fn agree<T>(comm: &dyn Communicator, what: &str, outcome: Result<T>) -> Result<T> {
    let mine = match &outcome {
        Ok(_) => vec![0],
        Err(e) => [&[1u8][..], e.report().to_string().as_bytes()].concat(),
    };
    let all = comm.all_gather(&mine)?;
    let failures: Vec<String> = all
        .iter()
        .enumerate()
        .filter_map(|(rank, status)| match status.split_first() {
            Some((0, _)) => None,
            Some((1, message)) => Some(format!(
                "rank {rank} could not {what}: {}",
                String::from_utf8_lossy(message)
            )),
            _ => Some(format!("rank {rank} sent a malformed outcome of '{what}'")),
        })
        .collect();
    if failures.is_empty() {
        return outcome;
    }
    if let Err(e) = &outcome {
        tracing::debug!("this rank's own failure: {e}");
    }
    Err(Error::invalid(failures.join("; ")))
}

/// The communicator of a job with one process: rank 0 of 1; every collective returns at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_gather(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![value.to_vec()])
    }

    fn broadcast(&self, _buffer: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// One rank of a group whose ranks are threads of one process; [`InProcessComm::group`]
/// creates the ranks. Dropping one (e.g. when its thread ends or panics) makes the other
/// ranks' pending and later collectives fail rather than wait forever.
pub struct InProcessComm {
    rank: usize,
    shared: Arc<Shared>,
    /// How many collectives this rank has entered: the sequence number of its next one.
    calls: Mutex<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    AllGather,
    Broadcast,
    Barrier,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::AllGather => "all_gather",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        })
    }
}

struct Shared {
    world_size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The collective in progress (entered by some ranks, not yet left by all).
    round: Option<Round>,
    /// Set once the ranks disagreed or one left: every collective fails from then on.
    broken: Option<String>,
}

struct Round {
    seq: u64,
    op: Op,
    /// The rank that opened the round, for messages.
    opened_by: usize,
    /// Contributions by rank (all_gather: every rank; broadcast: rank 0 only).
    parts: Vec<Option<Vec<u8>>>,
    arrived: usize,
    left: usize,
}

impl Round {
    fn complete(&self, world_size: usize) -> bool {
        self.arrived == world_size
    }
}

impl InProcessComm {
    /// Communicators for ranks `0..world_size`, in rank order, each to be moved into the
    /// thread that plays that rank.
    pub fn group(world_size: usize) -> Result<Vec<InProcessComm>> {
        if world_size == 0 {
            return Err(Error::invalid("a process group needs at least one rank"));
        }
        let shared = Arc::new(Shared {
            world_size,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        Ok((0..world_size)
            .map(|rank| InProcessComm {
                rank,
                shared: Arc::clone(&shared),
                calls: Mutex::new(0),
            })
            .collect())
    }

    /// Runs one collective: contribute `part`, wait for every rank, then `take` this rank's
    /// result. `take` returns `None` while this rank must keep waiting (rank 0 of a broadcast
    /// waits until every other rank has copied its buffer, so it can take it back uncopied).
    fn collective<T>(
        &self,
        op: Op,
        part: Option<Vec<u8>>,
        mut take: impl FnMut(&mut Round, usize) -> Option<T>,
    ) -> Result<T> {
        let world_size = self.shared.world_size;
        let seq = {
            let mut calls = self.calls.lock().map_err(|_| poisoned())?;
            let seq = *calls;
            *calls += 1;
            seq
        };
        let mut state = self.lock()?;
        // Wait until the previous collective has been left by every rank.
        loop {
            if let Some(reason) = &state.broken {
                return Err(group_error(self.rank, op, reason));
            }
            match &state.round {
                Some(round) if round.seq != seq => state = self.wait(state)?,
                _ => break,
            }
        }
        let round = state.round.get_or_insert_with(|| Round {
            seq,
            op,
            opened_by: self.rank,
            parts: vec![None; world_size],
            arrived: 0,
            left: 0,
        });
        if round.op != op {
            let reason = format!(
                "collective #{seq}: rank {} called {} but rank {} called {op}",
                round.opened_by, round.op, self.rank
            );
            let error = group_error(self.rank, op, &reason);
            state.broken = Some(reason);
            self.shared.changed.notify_all();
            return Err(error);
        }
        if let Some(slot) = round.parts.get_mut(self.rank) {
            *slot = part;
        }
        round.arrived += 1;
        if round.complete(world_size) {
            self.shared.changed.notify_all();
        }
        loop {
            // A complete round is finished even if the group broke afterwards.
            if let Some(round) = state.round.as_mut().filter(|r| r.complete(world_size)) {
                if let Some(result) = take(round, world_size) {
                    round.left += 1;
                    if round.left == world_size {
                        state.round = None;
                    }
                    self.shared.changed.notify_all();
                    return Ok(result);
                }
            } else if let Some(reason) = &state.broken {
                return Err(group_error(self.rank, op, reason));
            }
            state = self.wait(state)?;
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.shared.state.lock().map_err(|_| poisoned())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        self.shared.changed.wait(guard).map_err(|_| poisoned())
    }
}

fn poisoned() -> Error {
    Error::invalid("in-process group: a rank panicked inside a collective")
}

fn group_error(rank: usize, op: Op, reason: &str) -> Error {
    Error::invalid(format!(
        "rank {rank}: {op} failed: ranks disagree on the collective sequence ({reason})"
    ))
}

impl Communicator for InProcessComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world_size
    }

    fn all_gather(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.collective(Op::AllGather, Some(value.to_vec()), |round, _| {
            Some(
                round
                    .parts
                    .iter()
                    .map(|p| p.clone().unwrap_or_default())
                    .collect(),
            )
        })
    }

    fn broadcast(&self, buffer: &mut Vec<u8>) -> Result<()> {
        if self.rank == 0 {
            let part = std::mem::take(buffer);
            let taken = self.collective(Op::Broadcast, Some(part), |round, world_size| {
                // Everyone else has copied it: take the buffer back without a copy.
                (round.left + 1 == world_size).then(|| round.parts.first_mut()?.take())
            });
            *buffer = taken?.unwrap_or_default();
        } else {
            *buffer = self.collective(Op::Broadcast, None, |round, _| {
                Some(round.parts.first().cloned().flatten().unwrap_or_default())
            })?;
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.collective(Op::Barrier, None, |_, _| Some(()))
    }
}

impl Drop for InProcessComm {
    fn drop(&mut self) {
        // A poisoned lock means the group is already failing; nothing more to report.
        if let Ok(mut state) = self.shared.state.lock() {
            if state.broken.is_none() && self.shared.world_size > 1 {
                state.broken = Some(format!("rank {} left the group", self.rank));
            }
            self.shared.changed.notify_all();
        }
    }
}

impl fmt::Debug for InProcessComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessComm")
            .field("rank", &self.rank)
            .field("world_size", &self.shared.world_size)
            .finish()
    }
}

//! The staging area of background saves: the snapshot of a checkpoint dict that the writer
//! thread reads while training goes on.
//!
//! A tensor whose storage is memory of the process's own is kept by handle, with no copy:
//! a [`Storage`] can only be written through its last handle (`Arc::get_mut`), so while the
//! snapshot holds one, the model cannot change those bytes: an update either replaces the
//! tensor or, through its own last handle, finds the storage shared and copies it first.
//! A view of a memory-mapped file is copied: it depends on the file, which another program
//! may rewrite while the save runs. [`SnapshotMode::Copy`] copies every tensor.
//!
//! Copies go into buffers reused from save to save (one per distinct storage, in the order
//! the dict holds them), grown only when a storage grows: hundreds of saves cost no more
//! memory than one, and reused pages cost no page faults. They are freed with the
//! checkpointer.

use crate::detach::{collect_tensors, unique_storages};
use crate::error::Result;
use crate::parallel::map_weighted;
use crate::tensor::{Storage, Tensor};
use crate::value::Value;

/// How a background save snapshots the tensors it writes
/// ([`Checkpointer::with_snapshot_mode`](crate::Checkpointer::with_snapshot_mode)).
///
/// # Handing out immutable buffers
///
/// The default, [`SnapshotMode::Share`], copies nothing a model hands out in memory of its
/// own, because a [`crate::Tensor`] cannot be written while another handle on its storage
/// lives. A model implementation keeps that cheap by updating copy-on-write: keep the
/// parameters as [`crate::Tensor`]s, return clones of them from
/// [`Model::state_dict`](crate::Model::state_dict) (a reference count each), and on an update
/// build the new value and replace the tensor (as [`crate::StateDictModel::set`] does); while
/// a save holds the old storage, only the old bytes stay alive, nothing is copied on the
/// training thread. A model that converts from a framework's tensors
/// (`ckpt-candle`'s `VarMapModel`) already copies in `state_dict`; the snapshot then adds
/// nothing.
///
/// ```
/// use ckpt::{shared, Checkpointer, SnapshotMode, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = Checkpointer::new(model, "output")
///     .with_async_save(true)
///     .with_snapshot_mode(SnapshotMode::Copy); // the writer never shares the model's memory
/// assert!(checkpointer.saves_asynchronously());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotMode {
    /// Keep tensors in memory of the process's own by handle (no copy); copy views of a
    /// memory-mapped file into the staging buffers.
    #[default]
    Share,
    /// Copy every tensor into the staging buffers, so the save shares no memory with the
    /// model or the checkpointables.
    Copy,
}

/// Reusable buffers, one per distinct storage copied by a snapshot.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    slots: Vec<Vec<u8>>,
}

/// The storages a snapshot copied into staging buffers, slot by slot, to give back.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    storages: Vec<Storage>,
}

impl Staging {
    /// Bytes held by the staging buffers (their capacity).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum()
    }

    /// Replaces, in `value`, the storages `mode` says to copy by copies in staging buffers
    /// (a storage shared by several tensors is copied once and stays shared). Large amounts
    /// are copied on a few threads.
    pub(crate) fn stage(&mut self, value: &mut Value, mode: SnapshotMode) -> Result<Staged> {
        let mut tensors: Vec<&mut Tensor> = Vec::new();
        collect_tensors(value, &mut tensors);
        tensors.retain(|t| match mode {
            SnapshotMode::Share => t.storage().is_mapped(),
            SnapshotMode::Copy => true,
        });
        let (unique, slot_of) = unique_storages(&tensors);
        if self.slots.len() < unique.len() {
            self.slots.resize_with(unique.len(), Vec::new);
        }
        // Buffers beyond what this state needs (a model that lost tensors) are not kept.
        self.slots.truncate(unique.len());
        let jobs: Vec<(Storage, Vec<u8>)> = unique
            .into_iter()
            .zip(self.slots.iter_mut().map(std::mem::take))
            .collect();
        let copies = map_weighted(jobs, |(storage, _)| storage.len(), copy_into);
        let mut storages = Vec::with_capacity(copies.len());
        let mut failure = None;
        for copy in copies {
            match copy {
                Ok(storage) => storages.push(storage),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            // The copies made are freed (the tensors still hold the originals); the next
            // snapshot allocates its buffers again.
            return Err(e);
        }
        for t in tensors {
            if let Some(&slot) = slot_of.get(&t.storage().id()) {
                if let Some(copy) = storages.get(slot) {
                    t.replace_storage(copy.clone());
                }
            }
        }
        Ok(Staged { storages })
    }

    /// Takes back the buffers of a snapshot once nothing else holds them (the value written
    /// was dropped). A buffer still held elsewhere is left to its holder.
    pub(crate) fn reclaim(&mut self, staged: Staged) {
        for (slot, storage) in staged.storages.into_iter().enumerate() {
            if let (Ok(bytes), Some(place)) = (storage.try_into_vec(), self.slots.get_mut(slot)) {
                *place = bytes;
            }
        }
    }
}

/// Copies `storage` into `buffer` (reused: grown only when the storage is larger).
fn copy_into((storage, mut buffer): (Storage, Vec<u8>)) -> Result<Storage> {
    let len = storage.len();
    if buffer.len() != len {
        // Only bytes past the old length are zeroed first; the copy overwrites them all.
        buffer
            .try_reserve_exact(len.saturating_sub(buffer.len()))
            .map_err(|_| crate::error::Error::OutOfMemory { bytes: len as u64 })?;
        buffer.resize(len, 0);
    }
    storage.read_into(0, &mut buffer)?;
    Ok(Storage::from_vec(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Dict;

    fn state(value: f32) -> Value {
        let t = Tensor::from_slice(&[value; 1024], &[1024]).unwrap();
        let mut d = Dict::new();
        d.insert("a", Value::Tensor(t.clone()));
        d.insert("tied", Value::Tensor(t.view(&[4], &[1], 8).unwrap()));
        d.insert(
            "b",
            Value::Tensor(Tensor::from_slice(&[value; 16], &[16]).unwrap()),
        );
        Value::Dict(d)
    }

    #[test]
    fn copies_reuse_their_buffers_and_keep_sharing() {
        let mut staging = Staging::default();
        let mut first = state(1.0);
        let staged = staging.stage(&mut first, SnapshotMode::Copy).unwrap();
        let a = first.get("a").and_then(Value::as_tensor).unwrap().clone();
        let tied = first
            .get("tied")
            .and_then(Value::as_tensor)
            .unwrap()
            .clone();
        assert!(a.storage().same_as(tied.storage()));
        assert_eq!(tied.to_vec::<f32>().unwrap(), vec![1.0; 4]);
        let addr = a.storage().as_bytes().as_ptr();
        drop((first, a, tied));
        staging.reclaim(staged);
        let capacity = staging.capacity();
        assert_eq!(capacity, 4096 + 64);

        let mut second = state(2.0);
        let staged = staging.stage(&mut second, SnapshotMode::Copy).unwrap();
        let a = second.get("a").and_then(Value::as_tensor).unwrap();
        assert_eq!(a.storage().as_bytes().as_ptr(), addr, "buffer reused");
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![2.0; 1024]);
        drop(second);
        staging.reclaim(staged);
        assert_eq!(staging.capacity(), capacity);
    }

    #[test]
    fn memory_of_our_own_is_shared_in_share_mode() {
        let mut staging = Staging::default();
        let original = state(1.0);
        let mut snapshot = original.clone();
        let staged = staging.stage(&mut snapshot, SnapshotMode::Share).unwrap();
        let a = snapshot.get("a").and_then(Value::as_tensor).unwrap();
        let b = original.get("a").and_then(Value::as_tensor).unwrap();
        assert!(a.storage().same_as(b.storage()));
        assert!(staged.storages.is_empty());
    }
}

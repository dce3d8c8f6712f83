//! Loading tensors into a model's tensors as torch's `param.copy_(value)` does: every value
//! is copied once, from wherever it is (often a map of the checkpoint file), into memory the
//! model owns, converted to the dtype of the tensor it replaces.
//!
//! A model tensor that is the only handle on its own allocation, of the same shape and dtype,
//! takes the values in place, as torch writes into a parameter: no new memory, so the copy
//! runs at memory speed. Any other gets a new allocation: the model's tensor may be shared
//! (a snapshot for a rollback, a tied weight, a tensor the program kept), and what a handle
//! sees never changes under it. Large loads copy on a few threads.

use crate::cast::cast_bytes;
use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::fresh::populate_storage;
use crate::parallel::map_weighted;
use crate::tensor::Tensor;

/// One value to load: the incoming tensor and what it becomes.
pub(super) struct CopyIn<'a> {
    pub(super) name: &'a str,
    pub(super) incoming: &'a Tensor,
    pub(super) dtype: DType,
    /// The flag the result keeps (`None`: the incoming tensor's own).
    pub(super) requires_grad: Option<bool>,
}

/// Whether `incoming` can be kept as it is for `dtype`: a whole allocation of its own
/// (one the program made, or a state the model had) in that dtype. Storages never change, so
/// sharing it is safe, and cheaper than any copy.
pub(super) fn shareable(incoming: &Tensor, dtype: DType) -> bool {
    incoming.dtype() == dtype && incoming.is_whole_storage() && incoming.storage().owns_its_bytes()
}

/// Whether `current` can take `incoming` converted to `dtype` in place.
pub(super) fn fits_in_place(current: &Tensor, incoming: &Tensor, dtype: DType) -> bool {
    !shareable(incoming, dtype)
        && current.dtype() == dtype
        && current.shape() == incoming.shape()
        && current.is_whole_storage()
        && current.storage().is_unique_allocation()
        // Its bytes can be read in place: the write cannot fail for want of memory.
        && (incoming.is_contiguous() || incoming.numel() == 0)
}

/// A new tensor owning each value (or the value itself when [`shareable`]). The first
/// failure is returned, named by its key, before anything is written anywhere.
pub(super) fn new_copies(jobs: Vec<CopyIn<'_>>) -> Result<Vec<Tensor>> {
    map_weighted(
        jobs,
        |job| match shareable(job.incoming, job.dtype) {
            true => 0,
            false => job.incoming.nbytes(),
        },
        |job| {
            let copy = if shareable(job.incoming, job.dtype) {
                job.incoming.clone()
            } else {
                job.incoming
                    .to_owned_as(job.dtype)
                    .map_err(|e| e.in_entry(job.name))?
            };
            Ok(match job.requires_grad {
                Some(flag) => copy.with_requires_grad(flag),
                None => copy,
            })
        },
    )
    .into_iter()
    .collect()
}

/// Writes each incoming value into its model tensor (each checked by [`fits_in_place`]),
/// straight from where it is: a large value of the same dtype in a file map is read from the
/// file into the tensor's memory ([`Tensor::copy_bytes_into`]). Only a file truncated
/// meanwhile makes this fail (then the tensors written so far keep their new values).
pub(super) fn write_in_place(writes: Vec<(&str, &mut Tensor, &Tensor)>) -> Result<()> {
    map_weighted(
        writes,
        |(_, _, incoming)| incoming.nbytes(),
        |(name, current, incoming)| {
            let dtype = current.dtype();
            // Memory never written yet (a model of zeros) gets all its pages at once.
            populate_storage(current.storage_mut());
            let Some(target) = current.storage_mut().unique_bytes_mut() else {
                return Err(Error::key(
                    name,
                    "a model tensor to write in place is shared",
                ));
            };
            let written = if incoming.dtype() == dtype {
                incoming.copy_bytes_into(target)
            } else {
                incoming.storage().verify_checksum().in_entry(name)?;
                cast_bytes(
                    &incoming.contiguous_bytes(),
                    incoming.dtype(),
                    target,
                    dtype,
                )
            };
            // A checksum that does not match stays one (a resume falls back on it).
            written.map_err(|e| match e {
                Error::Checksum { .. } => e.in_entry(name),
                other => Error::key(name, other.to_string()),
            })
        },
    )
    .into_iter()
    .collect()
}

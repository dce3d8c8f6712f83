//! Copying tensor bytes into a file being written, with memory bounded by a buffer when
//! they come from a memory-mapped file.
//!
//! A value read with [`crate::format::load_with`] (`mmap: true`) holds views of the file's
//! map. Writing it somewhere else reads every page of the map, and a page the process has
//! read stays in its resident memory until the map is dropped: converting a 10 GiB file
//! would need 10 GiB of RAM although nothing is kept. With [`SourcePages::Release`] the
//! writers copy in pieces of [`STREAM_CHUNK`] bytes and drop the pages of what they have
//! written from the process (`MADV_DONTNEED` on the read-only map), so a conversion holds a
//! few pieces whatever the file's size. The file's bytes stay where they were (the page
//! cache, the disk); the tensors stay readable, at the cost of faulting pages in again.
//! (The readers do their part with `LoadOptions::source_pages`: see
//! [`crate::format::LoadOptions`].)
//!
//! Why pieces of the map rather than another way of copying: copying 1 GiB with its crc32
//! (CPU time, medians of 9 runs on a busy 2-core VM; the spread is wide) took, on tmpfs,
//! 0.54 s from the map, 0.60 s with `pread` into a reused buffer and 0.59 s with a
//! kernel-side copy (`copy_file_range`) and the crc32 read from the map; on ext4 0.80 s,
//! 1.6 s and 0.71 s. The map also keeps one code path for every format: storages are slices
//! of it wherever they lie (zip records, legacy streams, numpy arrays inside pickles,
//! safetensors). Only a kernel-side copy that never reads the bytes was clearly cheaper
//! (0.48 s on tmpfs, 0.52 s on ext4, as `cp`), and a torch record cannot have that: its
//! crc32 would have to be taken from the input unchecked, so a stale or zero crc32 there
//! would land in a file this crate wrote. A record's crc32 is always computed from the
//! bytes written (from the piece just read, so it costs little). Safetensors output, which
//! has no crc32, could use such a copy; it would need the map's file and the raw output
//! file, which the writers (taking any `Write`) do not have.

use std::sync::Arc;

use crate::error::Result;
use crate::tensor::{Buffer, Storage, Tensor};

/// Bytes copied per write when [`SourcePages::Release`] streams a map, and about how many
/// bytes of the map may be resident before they are released.
pub const STREAM_CHUNK: usize = 4 << 20;

/// What a reader or a writer does with the pages of a memory-mapped file it reads.
///
/// ```no_run
/// use ckpt::format::{load_with, save_torch, LoadOptions, SaveOptions, SourcePages};
/// // A conversion: the value is read only to be written elsewhere.
/// let read = LoadOptions::default().with_source_pages(SourcePages::Release);
/// let loaded = load_with("big.safetensors", &read)?; // views of the map
/// let write = SaveOptions::default().with_source_pages(SourcePages::Release);
/// save_torch("big.pth", &loaded.value, &write)?; // holds a few MiB of the file at a time
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePages {
    /// Leave the pages mapped once read, for a value that is used after the load or the save:
    /// they stay in the process's memory until the value is dropped. Writers copy each
    /// storage in one piece.
    #[default]
    Keep,
    /// For a value read only to be written elsewhere (a conversion). Readers read zip headers
    /// with `pread` rather than through the map and release what they parsed; writers copy in
    /// pieces of [`STREAM_CHUNK`] bytes and release the pages of each piece once it is
    /// written. A load and a save then hold a few pieces of the file in memory (and the
    /// metadata: the pickle, one entry per tensor), whatever the file's size. Memory the
    /// process owns (eager loads, tensors built in memory) is written as with `Keep`.
    Release,
}

/// Feeds tensor and storage bytes to a writer, releasing map pages behind it when asked.
/// Pages still pending are released when the copier is dropped, also after an error.
pub(crate) struct Copier {
    pages: SourcePages,
    pending: Option<Pending>,
}

/// A span of one map whose pages were read and not released yet.
struct Pending {
    buffer: Arc<Buffer>,
    start: usize,
    end: usize,
    /// Bytes copied from the span (the span may also hold bytes that were skipped).
    copied: usize,
}

impl Copier {
    pub(crate) fn new(pages: SourcePages) -> Copier {
        Copier {
            pages,
            pending: None,
        }
    }

    /// Writes all the bytes of `storage` through `sink`.
    pub(crate) fn storage(
        &mut self,
        storage: &Storage,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let bytes = storage.as_bytes();
        if !self.streams(storage) {
            return sink(bytes);
        }
        for (i, chunk) in bytes.chunks(STREAM_CHUNK).enumerate() {
            sink(chunk)?;
            self.copied(storage, i * STREAM_CHUNK, chunk.len());
        }
        Ok(())
    }

    /// Writes the elements of `tensor` in row-major order through `sink`: straight from
    /// the storage when contiguous, else gathered (a piece at a time when streaming a
    /// map). A tensor too large to gather is an error naming `name`.
    pub(crate) fn tensor(
        &mut self,
        name: &str,
        tensor: &Tensor,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let storage = tensor.storage();
        if !self.streams(storage) {
            let bytes = tensor
                .try_contiguous_bytes()
                .map_err(|e| e.in_entry(name))?;
            return sink(&bytes);
        }
        if let Some((start, bytes)) = tensor.contiguous_range() {
            for (i, chunk) in bytes.chunks(STREAM_CHUNK).enumerate() {
                sink(chunk)?;
                self.copied(storage, start + i * STREAM_CHUNK, chunk.len());
            }
            return Ok(());
        }
        if tensor.nbytes() <= storage.len() {
            // A permuted or sliced view: its elements are spread over the storage, so its
            // pages can only be released once all of it is written.
            tensor.gather_chunks(STREAM_CHUNK, sink)?;
        } else {
            // An expanded view (zero strides) declares more bytes than it reads; gathered
            // whole as without streaming, so an absurd size is an allocation error here
            // rather than a file that fills the disk.
            let bytes = tensor
                .try_contiguous_bytes()
                .map_err(|e| e.in_entry(name))?;
            sink(&bytes)?;
        }
        self.copied(storage, 0, storage.len());
        Ok(())
    }

    /// Releases every page still pending.
    pub(crate) fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending
                .buffer
                .release(pending.start, pending.end - pending.start);
        }
    }

    fn streams(&self, storage: &Storage) -> bool {
        self.pages == SourcePages::Release && storage.mapped_source().is_some()
    }

    /// Notes that `len` bytes at `offset` of `storage` were written. Spans of the same map
    /// are merged and released once [`STREAM_CHUNK`] bytes were copied from them, so that
    /// 100,000s of small tensors cost a release per chunk, not one each.
    fn copied(&mut self, storage: &Storage, offset: usize, len: usize) {
        let Some((buffer, base)) = storage.mapped_source() else {
            return;
        };
        let (start, end) = (base + offset, base + offset + len);
        match &mut self.pending {
            Some(p) if Arc::ptr_eq(&p.buffer, buffer) => {
                p.start = p.start.min(start);
                p.end = p.end.max(end);
                p.copied += len;
            }
            _ => {
                self.finish();
                self.pending = Some(Pending {
                    buffer: buffer.clone(),
                    start,
                    end,
                    copied: len,
                });
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.copied >= STREAM_CHUNK)
        {
            self.finish();
        }
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        self.finish();
    }
}

//! Tensors: a dtype, a shape, strides and an offset over a shared [`Storage`].
//!
//! A storage is either bytes the tensor owns or a slice of a memory-mapped file, so loading a
//! checkpoint copies nothing until the caller asks for owned data. Several tensors may share
//! one storage (tied weights, `t()`, slices); writers keep that sharing.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use std::fs::File;

use memmap2::{Mmap, MmapMut};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fresh::Fresh;
use crate::partial::RangeSource;
use crate::storage_check::CrcCheck;

/// The bytes behind one or more tensors. Cloning is cheap (a reference count).
///
/// A storage owns its bytes ([`Storage::from_vec`], a copy) or is a view of the buffer of a
/// file it was read from: a memory map ([`Storage::is_mapped`]) or the whole file read into
/// memory, which the view keeps alive ([`Storage::owns_its_bytes`] is false for both).
///
/// # A map depends on its file
///
/// A tensor whose storage is a view of a memory map of a file reads the file itself, through
/// the page cache, for as long as it lives. If another program truncates the file (a torn
/// in-place write), reading such a tensor kills the process with `SIGBUS`; if it rewrites the
/// file in place (`torch.save` to the same path, without a rename), the tensor silently
/// changes. ckpt's own writers never do either (they write a new file and rename it), and the
/// checkpointers never leave a map behind: models copy what they keep, checkpointables and
/// the returned extras get owned copies ([`Value::detach`](crate::Value::detach)). Keep map views for reading and
/// inspecting; [`Tensor::to_owned_as`] and [`Storage::into_owned`] copy out of the map.
#[derive(Clone)]
pub struct Storage(Arc<StorageData>);

enum StorageData {
    Owned(Vec<u8>),
    /// Anonymous memory of this storage's own (a large copy, see `fresh`).
    Anon(AnonMemory),
    Slice {
        buffer: Arc<Buffer>,
        start: usize,
        len: usize,
        /// The crc32 these bytes must have, checked by the first copy out of the file.
        check: Option<Box<CrcCheck>>,
    },
}

/// The bytes of a whole file, read once: a memory map, or (for eager loads and in-memory
/// input) memory the process owns. Storages of the tensors in the file are slices of it.
/// A map depends on its file: see [`Storage`].
pub(crate) enum Buffer {
    /// A read-only map of the file (and the file, to read large copies from).
    Map(FileMap),
    /// The file read into memory.
    Heap(Vec<u8>),
    /// An eager read of a large file: anonymous memory, so that it can be provisioned in huge
    /// pages. Owned like `Heap`; it does not depend on the file.
    Anon(AnonMemory),
    /// `len` bytes at `start` of another buffer: a file embedded in a larger one (the
    /// `torch.save` archive of each chunk in a DCP `.distcp` file), read in place.
    Window {
        /// The buffer the window is in.
        parent: Arc<Buffer>,
        /// Where the window starts in it.
        start: usize,
        /// The window's length.
        len: usize,
    },
}

/// A read-only memory map of a whole file, and the file itself: large copies out of the map
/// read the file instead ([`FileMap::read_at`]).
pub(crate) struct FileMap {
    map: Mmap,
    /// `None` when the handle could not be duplicated: copies then go through the map.
    file: Option<File>,
    /// For a partial copy of a remote object: what fetches the ranges it lacks.
    source: Option<Arc<dyn RangeSource>>,
}

/// Copies at least this large read the file rather than the map. Below, one read per copy
/// costs more than the page faults it saves (the kernel maps 64 KiB of a file per fault).
const MIN_FILE_READ: usize = 128 << 10;

impl FileMap {
    /// Makes the `len` bytes at `start` present in a partial copy (a no-op for a whole
    /// file): fetched when absent, or an error naming the object and the offset.
    fn ensure(&self, start: usize, len: usize) -> Result<()> {
        match &self.source {
            Some(source) if len > 0 => {
                let range = start as u64..start.saturating_add(len) as u64;
                if source.is_present(range.clone()) {
                    return Ok(());
                }
                source.ensure(&[range])
            }
            _ => Ok(()),
        }
    }

    /// The bytes of the file, through the map.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.map
    }

    /// Copies `dst.len()` bytes at `offset` of the file into `dst`.
    ///
    /// A large copy reads the file (`pread`) rather than the map: the map's pages are never
    /// touched, which saves a page fault per 64 KiB and the page tables of the map (read
    /// faults, then tearing them down at unmapping), and a file truncated meanwhile is an
    /// error instead of a `SIGBUS`. The bytes are the same: both read the page cache.
    pub(crate) fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let Some(end) = offset
            .checked_add(dst.len())
            .filter(|&end| end <= self.map.len())
        else {
            return Err(Error::invalid(format!(
                "{} bytes at offset {offset} run past the end of a {}-byte file map",
                dst.len(),
                self.map.len()
            )));
        };
        self.ensure(offset, dst.len())?;
        match &self.file {
            #[cfg(unix)]
            Some(file) if dst.len() >= MIN_FILE_READ => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(dst, offset as u64).map_err(|e| {
                    Error::format(format!(
                        "cannot read {} bytes at offset {offset} of the file: {e} (was it truncated while it was loaded?)",
                        dst.len()
                    ))
                })
            }
            _ => {
                dst.copy_from_slice(&self.map[offset..end]);
                Ok(())
            }
        }
    }
}

/// Anonymous private memory of a process's own: a copy of a file, or of tensor bytes (its
/// mapping rounded up to whole huge pages).
pub(crate) struct AnonMemory {
    map: MmapMut,
    len: usize,
}

impl AnonMemory {
    /// `map` holding `len` bytes of content at its start.
    pub(crate) fn new(map: MmapMut, len: usize) -> AnonMemory {
        debug_assert!(len <= map.len());
        AnonMemory { map, len }
    }

    /// The bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.map.get(..self.len).unwrap_or(&self.map)
    }

    /// The bytes, writable.
    pub(crate) fn as_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len.min(self.map.len());
        &mut self.map[..len]
    }

    /// The whole mapping (its length may be rounded up past the content).
    #[cfg(target_os = "linux")]
    pub(crate) fn map(&self) -> &MmapMut {
        &self.map
    }
}

impl Buffer {
    /// Maps `file` read-only. The file must not be truncated or rewritten in place while
    /// views of the map live (see [the hazard](Storage#a-map-depends-on-its-file)).
    pub(crate) fn map(file: &File) -> std::io::Result<Buffer> {
        // SAFETY: the map is read-only; a concurrent truncation by another process is the
        // one hazard, as for every memory-mapped reader (torch, safetensors).
        let map = unsafe { Mmap::map(file)? };
        Ok(Buffer::Map(FileMap {
            map,
            file: file.try_clone().ok(),
            source: None,
        }))
    }

    /// Maps `file`, a partial copy of a remote object that `source` fills: the reader makes
    /// each range present ([`Buffer::ensure`]) before it reads it, and storages do before
    /// their bytes are read.
    pub(crate) fn map_partial(
        file: &File,
        source: Arc<dyn RangeSource>,
    ) -> std::io::Result<Buffer> {
        let mut buffer = Buffer::map(file)?;
        if let Buffer::Map(map) = &mut buffer {
            map.source = Some(source);
        }
        Ok(buffer)
    }

    /// Whether this is a map of a partial copy, whose ranges must be made present
    /// ([`Buffer::ensure`]) before they are read.
    pub(crate) fn is_partial(&self) -> bool {
        match self {
            Buffer::Map(map) => map.source.is_some(),
            Buffer::Window { parent, .. } => parent.is_partial(),
            Buffer::Heap(_) | Buffer::Anon(_) => false,
        }
    }

    /// Makes the `len` bytes at `start` present when this maps a partial copy (fetched when
    /// absent); a no-op for any other buffer.
    pub(crate) fn ensure(&self, start: usize, len: usize) -> Result<()> {
        match self {
            Buffer::Map(map) => map.ensure(start, len),
            Buffer::Window {
                parent, start: at, ..
            } => parent.ensure(at + start, len),
            Buffer::Heap(_) | Buffer::Anon(_) => Ok(()),
        }
    }

    /// [`Buffer::ensure`] of many ranges at once (fetched in parallel).
    pub(crate) fn ensure_all(&self, ranges: &[std::ops::Range<u64>]) -> Result<()> {
        match self {
            Buffer::Map(FileMap {
                source: Some(source),
                ..
            }) => {
                let absent: Vec<_> = ranges
                    .iter()
                    .filter(|r| !source.is_present((*r).clone()))
                    .cloned()
                    .collect();
                if absent.is_empty() {
                    return Ok(());
                }
                source.ensure(&absent)
            }
            Buffer::Window { parent, start, .. } => {
                let at = *start as u64;
                let shifted: Vec<_> = ranges.iter().map(|r| r.start + at..r.end + at).collect();
                parent.ensure_all(&shifted)
            }
            _ => Ok(()),
        }
    }

    /// The bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Buffer::Map(map) => map.as_bytes(),
            Buffer::Heap(bytes) => bytes,
            Buffer::Anon(memory) => memory.as_bytes(),
            Buffer::Window { parent, start, len } => {
                parent.as_bytes().get(*start..start + len).unwrap_or(&[])
            }
        }
    }

    /// `len` bytes at `start` of `parent` as a buffer of their own (empty if out of range).
    pub(crate) fn window(parent: Arc<Buffer>, start: usize, len: usize) -> Buffer {
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= parent.as_bytes().len());
        let (start, len) = if fits { (start, len) } else { (0, 0) };
        Buffer::Window { parent, start, len }
    }

    /// Whether this is a memory map.
    pub(crate) fn is_mapped(&self) -> bool {
        match self {
            Buffer::Map(_) => true,
            Buffer::Window { parent, .. } => parent.is_mapped(),
            Buffer::Heap(_) | Buffer::Anon(_) => false,
        }
    }

    /// Drops this process's pages of the `len` bytes at `start` of a map (a no-op for memory
    /// the process owns), so that they no longer count in its memory: a writer copying a
    /// file much larger than memory releases each part once it is written. A later read of
    /// those bytes faults them in again from the file. Out-of-range parts are ignored.
    pub(crate) fn release(&self, start: usize, len: usize) {
        if let Buffer::Window {
            parent,
            start: at,
            len: size,
        } = self
        {
            let len = len.min(size.saturating_sub(start));
            return parent.release(at + start.min(*size), len);
        }
        #[cfg(unix)]
        if let Buffer::Map(map) = self {
            let len = len.min(map.map.len().saturating_sub(start));
            if len == 0 {
                return;
            }
            // SAFETY: `Buffer::map` maps the file read-only and shared (PROT_READ,
            // MAP_SHARED). On such a map MADV_DONTNEED only drops the process's page-table
            // entries: the pages stay in the page cache, the mapping stays valid (no reference
            // into it dangles) and the next read of an address faults in the same file bytes.
            // No byte a borrower sees changes, since a read-only map has no private
            // copy-on-write pages for DONTNEED to discard; a file modified by another process
            // in the meantime is the hazard every map already has (see `Buffer::map`).
            let result = unsafe {
                map.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
            if let Err(e) = result {
                tracing::debug!(start, len, error = %e, "could not release mapped pages");
            }
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }
}

impl Storage {
    /// A storage that owns `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Storage {
        Storage(Arc::new(StorageData::Owned(bytes)))
    }

    /// A storage that owns `memory`.
    pub(crate) fn from_anon(memory: AnonMemory) -> Storage {
        Storage(Arc::new(StorageData::Anon(memory)))
    }

    /// A zero-copy view of `len` bytes at `start` of a file buffer.
    pub(crate) fn slice(buffer: Arc<Buffer>, start: usize, len: usize) -> Result<Storage> {
        let size = buffer.as_bytes().len();
        match start.checked_add(len) {
            Some(end) if end <= size => {}
            _ => {
                let available = size.saturating_sub(start) as u64;
                return Err(Error::truncated(
                    "storage",
                    start as u64,
                    len as u64,
                    available,
                ));
            }
        }
        Ok(Storage(Arc::new(StorageData::Slice {
            buffer,
            start,
            len,
            check: None,
        })))
    }

    /// [`Storage::slice`] of bytes that must have the crc32 `check` declares: the first copy
    /// of all of them out of the file checks it in the same pass ([`Storage::read_into`]),
    /// any other use first checks it ([`Storage::verify_checksum`]).
    pub(crate) fn slice_checked(
        buffer: Arc<Buffer>,
        start: usize,
        len: usize,
        check: CrcCheck,
    ) -> Result<Storage> {
        let mut storage = Storage::slice(buffer, start, len)?;
        if let Some(StorageData::Slice { check: slot, .. }) = Arc::get_mut(&mut storage.0) {
            *slot = Some(Box::new(check));
        }
        Ok(storage)
    }

    /// The checksum these bytes must match, when they were read with
    /// [`LoadOptions::verify_crc32_on_copy`](crate::format::LoadOptions::verify_crc32_on_copy).
    fn check(&self) -> Option<&CrcCheck> {
        match &*self.0 {
            StorageData::Slice { check, .. } => check.as_deref(),
            _ => None,
        }
    }

    /// Whether these bytes carry a checksum of their zip record that has not been checked
    /// yet (read with
    /// [`LoadOptions::verify_crc32_on_copy`](crate::format::LoadOptions::verify_crc32_on_copy),
    /// and not copied out since).
    pub fn checksum_pending(&self) -> bool {
        self.check().is_some_and(|check| check.outcome().is_none())
    }

    /// Checks these bytes against the crc32 of the zip record they were read from, when the
    /// file was read with
    /// [`LoadOptions::verify_crc32_on_copy`](crate::format::LoadOptions::verify_crc32_on_copy);
    /// `Ok` at once for any other storage, or when a copy has checked them already. A
    /// mismatch is an [`Error::Checksum`] (every later check says it again).
    pub fn verify_checksum(&self) -> Result<()> {
        let Some(check) = self.check() else {
            return Ok(());
        };
        if let Some(found) = check.outcome() {
            return check.result(found);
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut scratch = vec![0u8; crate::storage_check::CHUNK.min(self.len())];
        let mut at = 0;
        while at < self.len() {
            let n = scratch.len().min(self.len() - at);
            self.read_unchecked(at, &mut scratch[..n])?;
            hasher.update(&scratch[..n]);
            at += n;
        }
        check.record(hasher.finalize())
    }

    /// The bytes.
    ///
    /// # Panics
    ///
    /// For a view of a partial copy of a remote object (see
    /// [`ObjectStoreDir`](crate::store::ObjectStoreDir)) whose bytes cannot be fetched (the
    /// object changed or went away), with a message naming the object and the offset: absent
    /// bytes are never returned as data. The copies ([`Storage::try_into_owned`],
    /// [`Tensor::to_owned_as`], what the checkpointers load) return that error instead.
    pub fn as_bytes(&self) -> &[u8] {
        match &*self.0 {
            StorageData::Owned(bytes) => bytes,
            StorageData::Anon(memory) => memory.as_bytes(),
            StorageData::Slice {
                buffer, start, len, ..
            } => {
                if let Err(e) = buffer.ensure(*start, *len) {
                    panic!("{}", e.report());
                }
                &buffer.as_bytes()[*start..*start + *len]
            }
        }
    }

    /// Makes the bytes present when they are a view of a partial copy of a remote object
    /// (fetched when absent); `Ok` at once for any other storage.
    pub(crate) fn ensure_present(&self) -> Result<()> {
        match &*self.0 {
            StorageData::Slice {
                buffer, start, len, ..
            } => buffer.ensure(*start, *len),
            _ => Ok(()),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &*self.0 {
            StorageData::Owned(bytes) => bytes.len(),
            StorageData::Anon(memory) => memory.as_bytes().len(),
            StorageData::Slice { len, .. } => *len,
        }
    }

    /// Whether the storage holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the `dst.len()` bytes at byte `at` of the storage into `dst`; a large part of
    /// a file map is read from the file ([`FileMap::read_at`]).
    ///
    /// Bytes with a checksum still to check ([`Storage::checksum_pending`]) are checked: a
    /// copy of all of them hashes each piece as it lands (while it is in the cache, one
    /// pass over the bytes); a copy of a part checks them all first. A mismatch is an
    /// [`Error::Checksum`], with `dst` holding the bytes as the file has them.
    pub(crate) fn read_into(&self, at: usize, dst: &mut [u8]) -> Result<()> {
        let Some(check) = self.check() else {
            return self.read_unchecked(at, dst);
        };
        match check.outcome() {
            Some(found) => check.result(found)?,
            None if at == 0 && dst.len() == self.len() => {
                let mut hasher = crc32fast::Hasher::new();
                for (i, piece) in dst.chunks_mut(crate::storage_check::CHUNK).enumerate() {
                    self.read_unchecked(i * crate::storage_check::CHUNK, piece)?;
                    hasher.update(piece);
                }
                return check.record(hasher.finalize());
            }
            None => self.verify_checksum()?,
        }
        self.read_unchecked(at, dst)
    }

    /// [`Storage::read_into`] without looking at the checksum.
    fn read_unchecked(&self, at: usize, dst: &mut [u8]) -> Result<()> {
        let end = at
            .checked_add(dst.len())
            .filter(|&end| end <= self.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} bytes at {at} run past the end of a storage of {} bytes",
                    dst.len(),
                    self.len()
                ))
            })?;
        match &*self.0 {
            StorageData::Slice { buffer, start, .. } => match &**buffer {
                Buffer::Map(map) => map.read_at(start + at, dst),
                Buffer::Window {
                    parent,
                    start: window,
                    ..
                } => match &**parent {
                    Buffer::Map(map) => map.read_at(window + start + at, dst),
                    _ => {
                        dst.copy_from_slice(&buffer.as_bytes()[start + at..start + end]);
                        Ok(())
                    }
                },
                _ => {
                    dst.copy_from_slice(&buffer.as_bytes()[start + at..start + end]);
                    Ok(())
                }
            },
            _ => {
                dst.copy_from_slice(&self.as_bytes()[at..end]);
                Ok(())
            }
        }
    }

    /// Whether the bytes are a view of a memory-mapped file (not yet copied).
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.0, StorageData::Slice { buffer, .. } if buffer.is_mapped())
    }

    /// For a view of a memory map, drops this process's pages of these bytes: they stay in
    /// the page cache and are faulted in again when next read, so a pass that reads a file
    /// much larger than memory once (a comparison, a checksum) does not keep it all in the
    /// process's resident memory. A no-op for memory the process owns.
    ///
    /// ```
    /// use ckpt::Storage;
    /// let owned = Storage::from_vec(vec![1, 2, 3]);
    /// owned.release_mapped_pages(); // nothing to release
    /// assert_eq!(owned.as_bytes(), &[1, 2, 3]);
    /// ```
    pub fn release_mapped_pages(&self) {
        if let StorageData::Slice {
            buffer, start, len, ..
        } = &*self.0
        {
            buffer.release(*start, *len);
        }
    }

    /// Whether the bytes are an allocation of this storage's own, rather than a slice of a
    /// file's buffer (mapped or read whole), which keeps that whole buffer alive.
    pub fn owns_its_bytes(&self) -> bool {
        !matches!(&*self.0, StorageData::Slice { .. })
    }

    /// The bytes, writable when this handle is the only one on an allocation of its own
    /// (no clone, no view elsewhere can see a write).
    pub(crate) fn unique_bytes_mut(&mut self) -> Option<&mut [u8]> {
        match Arc::get_mut(&mut self.0)? {
            StorageData::Owned(bytes) => Some(bytes),
            StorageData::Anon(memory) => Some(memory.as_bytes_mut()),
            StorageData::Slice { .. } => None,
        }
    }

    /// The vector of an owned storage, when this is the last handle on it (a staging buffer
    /// given back after a background save); the storage itself otherwise.
    pub(crate) fn try_into_vec(self) -> std::result::Result<Vec<u8>, Storage> {
        match Arc::try_unwrap(self.0) {
            Ok(StorageData::Owned(bytes)) => Ok(bytes),
            Ok(other) => Err(Storage(Arc::new(other))),
            Err(shared) => Err(Storage(shared)),
        }
    }

    /// The anonymous memory of this storage, when it is the only handle on it.
    #[cfg(target_os = "linux")]
    pub(crate) fn anon_mut(&mut self) -> Option<&mut AnonMemory> {
        match Arc::get_mut(&mut self.0)? {
            StorageData::Anon(memory) => Some(memory),
            _ => None,
        }
    }

    /// The map this storage is a view of and where in it the storage starts; `None` for
    /// bytes in memory the process owns.
    pub(crate) fn mapped_source(&self) -> Option<(&Arc<Buffer>, usize)> {
        match &*self.0 {
            StorageData::Slice { buffer, start, .. } if buffer.is_mapped() => {
                Some((buffer, *start))
            }
            _ => None,
        }
    }

    /// Whether [`Storage::unique_bytes_mut`] would give the bytes.
    pub(crate) fn is_unique_allocation(&self) -> bool {
        self.owns_its_bytes() && Arc::strong_count(&self.0) == 1 && Arc::weak_count(&self.0) == 0
    }

    /// Whether two handles refer to the very same storage.
    pub fn same_as(&self, other: &Storage) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// An identity for this storage, equal for every clone of the handle; used by writers to
    /// keep shared storages shared.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    /// A storage that owns its bytes (a slice of a file buffer is copied). Like any `Vec`,
    /// aborts when the memory cannot be had; [`Storage::try_into_owned`] returns an error.
    pub fn into_owned(self) -> Storage {
        match self.owns_its_bytes() {
            true => self,
            false => Fresh::copy_of(&self, 0, self.len())
                .unwrap_or_else(|_| Storage::from_vec(self.as_bytes().to_vec())),
        }
    }

    /// [`Storage::into_owned`], with an error when the memory for the copy cannot be had
    /// (or the file it maps was truncated meanwhile).
    pub fn try_into_owned(self) -> Result<Storage> {
        if self.owns_its_bytes() {
            return Ok(self);
        }
        Fresh::copy_of(&self, 0, self.len())
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// A Rust type that is the element of one [`DType`].
pub trait Element: Copy + Send + Sync + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Decodes one element from little-endian bytes (exactly `DTYPE.size()` of them).
    fn from_le_bytes(bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of this element.
    fn write_le_bytes(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            fn from_le_bytes(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn write_le_bytes(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(f64, DType::Float64);
element!(f32, DType::Float32);
element!(half::f16, DType::Float16);
element!(half::bf16, DType::BFloat16);
element!(i64, DType::Int64);
element!(i32, DType::Int32);
element!(i16, DType::Int16);
element!(i8, DType::Int8);
element!(u8, DType::UInt8);
element!(u16, DType::UInt16);
element!(u32, DType::UInt32);
element!(u64, DType::UInt64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn from_le_bytes(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le_bytes(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// A strided view over a [`Storage`], as torch represents tensors.
///
/// Element `(i0, .., ik)` lives at storage element `offset + Σ i_j * strides_j`. Every
/// constructor checks that all elements lie inside the storage.
///
/// ```
/// use ckpt::Tensor;
/// let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// assert_eq!(t.shape(), &[2, 3]);
/// let transposed = t.view(&[3, 2], &[1, 3], 0).unwrap(); // shares t's storage
/// assert!(transposed.storage().same_as(t.storage()));
/// assert_eq!(transposed.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    storage: Storage,
    requires_grad: bool,
}

/// C-contiguous (row-major) strides for `shape`, in elements.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (stride, dim) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc = acc.saturating_mul(*dim);
    }
    strides
}

/// The number of elements of `shape`, or an error when it overflows.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::format(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })
}

impl Tensor {
    /// A view of `storage`; fails unless every element lies inside it.
    pub fn new(
        dtype: DType,
        shape: Vec<usize>,
        strides: Vec<usize>,
        offset: usize,
        storage: Storage,
    ) -> Result<Tensor> {
        if shape.len() != strides.len() {
            return Err(Error::format(format!(
                "shape {shape:?} and strides {strides:?} differ in length"
            )));
        }
        let numel = checked_numel(&shape)?;
        // A view with zero strides (torch's `expand`) may declare many more elements than
        // its storage holds; its byte size must still be a size (`nbytes` relies on it).
        if numel
            .checked_mul(dtype.size())
            .is_none_or(|n| isize::try_from(n).is_err())
        {
            return Err(Error::format(format!(
                "{dtype} tensor of shape {shape:?} has more bytes than fit in memory"
            )));
        }
        if numel > 0 {
            let mut last = offset;
            for (dim, stride) in shape.iter().zip(&strides) {
                last = (dim - 1)
                    .checked_mul(*stride)
                    .and_then(|step| last.checked_add(step))
                    .ok_or_else(|| Error::format("tensor strides overflow"))?;
            }
            let needed = last
                .checked_add(1)
                .and_then(|n| n.checked_mul(dtype.size()))
                .ok_or_else(|| Error::format("tensor extent overflows"))?;
            if needed > storage.len() {
                return Err(Error::format(format!(
                    "{dtype} tensor of shape {shape:?}, strides {strides:?}, offset {offset} needs {needed} bytes but its storage has {}",
                    storage.len()
                )));
            }
        }
        Ok(Tensor {
            dtype,
            shape,
            strides,
            offset,
            storage,
            requires_grad: false,
        })
    }

    /// A contiguous tensor owning `bytes` (little-endian elements, row-major).
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: Vec<u8>) -> Result<Tensor> {
        let expected = checked_numel(shape)?
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::format("tensor size overflows"))?;
        if bytes.len() != expected {
            return Err(Error::format(format!(
                "{dtype} tensor of shape {shape:?} needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        Tensor::new(
            dtype,
            shape.to_vec(),
            contiguous_strides(shape),
            0,
            Storage::from_vec(bytes),
        )
    }

    /// A contiguous tensor holding a copy of `data` with the given shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(data));
        for &x in data {
            x.write_le_bytes(&mut bytes);
        }
        Tensor::from_bytes(T::DTYPE, shape, bytes)
    }

    /// A contiguous tensor of zero bytes.
    ///
    /// The memory is provided when first written, as `calloc` does: a model of zeros about
    /// to be loaded costs nothing until the load writes it.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let len = checked_numel(shape)?
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::format("tensor size overflows"))?;
        let storage = Fresh::lazy_zeroed(len).ok_or(Error::OutOfMemory { bytes: len as u64 })?;
        Tensor::new(dtype, shape.to_vec(), contiguous_strides(shape), 0, storage)
    }

    /// Another view of the same storage.
    pub fn view(&self, shape: &[usize], strides: &[usize], offset: usize) -> Result<Tensor> {
        let mut t = Tensor::new(
            self.dtype,
            shape.to_vec(),
            strides.to_vec(),
            offset,
            self.storage.clone(),
        )?;
        t.requires_grad = self.requires_grad;
        Ok(t)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The size of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The stride of each dimension, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element in the storage, in elements.
    pub fn storage_offset(&self) -> usize {
        self.offset
    }

    /// The shared storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether torch would track gradients for this tensor (kept through save and load).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Sets [`Tensor::requires_grad`].
    pub fn with_requires_grad(mut self, requires_grad: bool) -> Tensor {
        self.requires_grad = requires_grad;
        self
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        // Checked at construction.
        self.shape.iter().product()
    }

    /// Number of bytes of the elements (not of the storage).
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Whether the elements are row-major and dense (strides of size-1 dimensions ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (dim, stride) in self.shape.iter().zip(&self.strides).rev() {
            if *dim == 0 {
                return true;
            }
            if *dim != 1 && *stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// Whether the tensor covers its whole storage contiguously (offset 0, same byte length).
    pub fn is_whole_storage(&self) -> bool {
        self.offset == 0 && self.is_contiguous() && self.nbytes() == self.storage.len()
    }

    /// The element bytes in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn contiguous_bytes(&self) -> Cow<'_, [u8]> {
        match self.borrowed_bytes() {
            Some(bytes) => Cow::Borrowed(bytes),
            None => Cow::Owned(self.gather(Vec::with_capacity(self.nbytes()))),
        }
    }

    /// [`Tensor::contiguous_bytes`], with an error instead of an abort when the gathered
    /// copy cannot be allocated: an expanded view (zero strides) of a few bytes in a file
    /// may declare exabytes of elements.
    pub fn try_contiguous_bytes(&self) -> Result<Cow<'_, [u8]>> {
        if self.numel() > 0 {
            self.storage.ensure_present()?;
        }
        if let Some(bytes) = self.borrowed_bytes() {
            return Ok(Cow::Borrowed(bytes));
        }
        let mut out = Vec::new();
        out.try_reserve_exact(self.nbytes())
            .map_err(|_| Error::OutOfMemory {
                bytes: self.nbytes() as u64,
            })?;
        Ok(Cow::Owned(self.gather(out)))
    }

    /// The element bytes when they lie in order in the storage.
    fn borrowed_bytes(&self) -> Option<&[u8]> {
        self.contiguous_range().map(|(_, bytes)| bytes)
    }

    /// Where in the storage the element bytes start, and the bytes, when they lie in order
    /// in the storage.
    pub(crate) fn contiguous_range(&self) -> Option<(usize, &[u8])> {
        if self.numel() == 0 {
            // Its offset was never checked against the storage: torch allows any.
            return Some((0, &[]));
        }
        if !self.is_contiguous() {
            return None;
        }
        let start = self.offset * self.dtype.size();
        Some((
            start,
            &self.storage.as_bytes()[start..start + self.nbytes()],
        ))
    }

    /// Passes the elements in row-major order to `write`, gathered into pieces of about
    /// `max` bytes (at least one element), so that a strided tensor is never copied whole.
    pub(crate) fn gather_chunks(
        &self,
        max: usize,
        write: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let size = self.dtype.size();
        let numel = self.numel();
        if numel == 0 {
            return Ok(());
        }
        let per_piece = (max / size).max(1).min(numel);
        let bytes = self.storage.as_bytes();
        let mut piece = Vec::with_capacity(per_piece * size);
        let mut index = vec![0usize; self.shape.len()];
        // The element's position in the storage, kept up to date as the index advances.
        // Wrapping: the stride of a size-1 dimension is never checked and may be huge; the
        // position is in range whenever it is used.
        let mut elem = self.offset;
        for _ in 0..numel {
            piece.extend_from_slice(&bytes[elem * size..(elem + 1) * size]);
            if piece.len() >= per_piece * size {
                write(&piece)?;
                piece.clear();
            }
            for d in (0..index.len()).rev() {
                index[d] += 1;
                elem = elem.wrapping_add(self.strides[d]);
                if index[d] < self.shape[d] {
                    break;
                }
                elem = elem.wrapping_sub(self.strides[d].wrapping_mul(self.shape[d]));
                index[d] = 0;
            }
        }
        if !piece.is_empty() {
            write(&piece)?;
        }
        Ok(())
    }

    /// Writes the element bytes in row-major order into `dst` (exactly [`Tensor::nbytes`]
    /// long); a large contiguous part of a file map is read from the file
    /// ([`FileMap::read_at`]).
    pub(crate) fn copy_bytes_into(&self, dst: &mut [u8]) -> Result<()> {
        if dst.len() != self.nbytes() {
            return Err(Error::invalid(format!(
                "a copy of a {} tensor of shape {:?} needs {} bytes, got {}",
                self.dtype,
                self.shape,
                self.nbytes(),
                dst.len()
            )));
        }
        if self.numel() == 0 {
            return Ok(());
        }
        if self.is_contiguous() {
            return self.storage.read_into(self.offset * self.dtype.size(), dst);
        }
        self.storage.verify_checksum()?;
        let gathered = self.try_contiguous_bytes()?;
        dst.copy_from_slice(&gathered);
        Ok(())
    }

    /// Appends the elements in row-major order to `out`.
    fn gather(&self, mut out: Vec<u8>) -> Vec<u8> {
        let size = self.dtype.size();
        let bytes = self.storage.as_bytes();
        let ndim = self.shape.len();
        let mut index = vec![0usize; ndim];
        for _ in 0..self.numel() {
            let elem: usize = self.offset
                + index
                    .iter()
                    .zip(&self.strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            out.extend_from_slice(&bytes[elem * size..(elem + 1) * size]);
            for d in (0..ndim).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }

    /// A contiguous copy that owns its bytes (a view of a memory map becomes owned data).
    pub fn to_owned_contiguous(&self) -> Tensor {
        let bytes = self.contiguous_bytes().into_owned();
        Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            strides: contiguous_strides(&self.shape),
            offset: 0,
            storage: Storage::from_vec(bytes),
            requires_grad: self.requires_grad,
        }
    }

    /// A contiguous copy in memory the process owns, its elements converted to `dtype` as
    /// torch's `copy_` converts them (see [`cast_bytes`](crate::cast_bytes)); the same dtype copies the bytes
    /// as they are. The copy never depends on the file this tensor may be a view of.
    ///
    /// ```
    /// use ckpt::{DType, Tensor};
    /// let t = Tensor::from_slice(&[1.5f64, -2.75], &[2])?;
    /// let f = t.to_owned_as(DType::Float32)?;
    /// assert_eq!(f.to_vec::<f32>()?, vec![1.5, -2.75]);
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn to_owned_as(&self, dtype: DType) -> Result<Tensor> {
        let no_memory = |len: usize| Error::OutOfMemory { bytes: len as u64 };
        let storage = if dtype == self.dtype && self.is_contiguous() && self.numel() > 0 {
            Fresh::copy_of(
                &self.storage,
                self.offset * self.dtype.size(),
                self.nbytes(),
            )?
        } else if dtype == self.dtype {
            self.storage.verify_checksum()?;
            Storage::from_vec(self.try_contiguous_bytes()?.into_owned())
        } else {
            self.storage.verify_checksum()?;
            let src = self.try_contiguous_bytes()?;
            let len = self
                .numel()
                .checked_mul(dtype.size())
                .ok_or(Error::OutOfMemory { bytes: u64::MAX })?;
            let mut out = Fresh::zeroed(len).ok_or_else(|| no_memory(len))?;
            crate::cast::cast_bytes(&src, self.dtype, out.bytes_mut(), dtype)?;
            out.into_storage()
        };
        Ok(Tensor {
            dtype,
            shape: self.shape.clone(),
            strides: contiguous_strides(&self.shape),
            offset: 0,
            storage,
            requires_grad: self.requires_grad,
        })
    }

    /// The storage, to write into when it is unique ([`Storage::unique_bytes_mut`]).
    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// Replaces the storage by `storage`, which holds the same bytes (a copy of a mapped one).
    pub(crate) fn replace_storage(&mut self, storage: Storage) {
        debug_assert_eq!(storage.len(), self.storage.len());
        self.storage = storage;
    }

    /// The elements in row-major order; `T` must be this tensor's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::DTypeMismatch {
                expected: T::DTYPE,
                found: self.dtype,
            });
        }
        let size = self.dtype.size();
        Ok(self
            .try_contiguous_bytes()?
            .chunks_exact(size)
            .map(T::from_le_bytes)
            .collect())
    }

    /// Same dtype, same shape and the same element bytes (NaNs with equal bits compare equal).
    pub fn data_eq(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype
            && self.shape == other.shape
            && self.contiguous_bytes() == other.contiguous_bytes()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("strides", &self.strides)
            .field("offset", &self.offset)
            .field("storage", &self.storage)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_outside_the_storage_are_rejected() {
        let t = Tensor::from_slice(&[1i64, 2, 3], &[3]).unwrap();
        let err = t.view(&[4], &[1], 0).unwrap_err();
        assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
        let err = t.view(&[2], &[1], 2).unwrap_err();
        assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
        assert!(t.view(&[2], &[2], 0).is_ok());
        assert!(t.view(&[0], &[1], 3).is_ok());
    }

    #[test]
    fn strided_gather_matches_torch_order() {
        let base =
            Tensor::from_slice(&(0..12).map(|x| x as f32).collect::<Vec<_>>(), &[12]).unwrap();
        let t = base.view(&[4, 3], &[1, 4], 0).unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
        );
    }

    #[test]
    fn copies_out_of_a_file_map_read_exactly_the_bytes_of_the_view() {
        let content: Vec<u8> = (0..(MIN_FILE_READ * 3)).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &content).unwrap();
        let buffer = Arc::new(Buffer::map(&file).unwrap());
        for (start, len) in [
            (0, 16),
            (5, MIN_FILE_READ + 3),
            (MIN_FILE_READ, MIN_FILE_READ * 2),
        ] {
            let storage = Storage::slice(buffer.clone(), start, len).unwrap();
            let mut out = vec![0u8; len - 1];
            storage.read_into(1, &mut out).unwrap();
            assert_eq!(out, &content[start + 1..start + len]);
            assert!(storage.read_into(2, &mut out).is_err());
            let t = Tensor::new(DType::UInt8, vec![len], vec![1], 0, storage).unwrap();
            let owned = t.to_owned_as(DType::UInt8).unwrap();
            assert!(owned.storage().owns_its_bytes());
            assert_eq!(owned.storage().as_bytes(), &content[start..start + len]);
        }
    }

    #[test]
    fn gathering_in_pieces_gives_the_row_major_bytes() {
        let base =
            Tensor::from_slice(&(0..24).map(|x| x as u16).collect::<Vec<_>>(), &[24]).unwrap();
        let views = [
            base.view(&[4, 3], &[1, 4], 0).unwrap(),
            base.view(&[2, 3, 2], &[1, 8, 2], 3).unwrap(),
            base.view(&[3, 1, 2], &[6, 0, 5], 1).unwrap(),
            base.view(&[5], &[0], 2).unwrap(),
            base.view(&[0, 3], &[1, 4], 0).unwrap(),
            base.view(&[], &[], 7).unwrap(),
            base.view(&[2, 1], &[3, usize::MAX], 1).unwrap(),
        ];
        for view in &views {
            let expected = view.contiguous_bytes().into_owned();
            for max in [1, 2, 5, 6, 1000] {
                let mut pieces = Vec::new();
                let mut got = Vec::new();
                view.gather_chunks(max, &mut |piece| {
                    pieces.push(piece.len());
                    got.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, expected, "{view:?}, pieces of {max}");
                assert!(pieces.iter().all(|&n| n <= max.max(2)), "{pieces:?}");
            }
        }
    }

    #[test]
    fn absurd_shapes_fail_without_allocating() {
        let storage = Storage::from_vec(vec![0; 8]);
        let err =
            Tensor::new(DType::Float32, vec![usize::MAX, 2], vec![2, 1], 0, storage).unwrap_err();
        assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
    }
}

//! Fresh memory for a copy of tensor bytes (a tensor loaded into a model, a view copied out
//! of a file's buffer).
//!
//! The copy itself costs less than the kernel providing the new pages: a fault and a zeroed
//! page per 4 KiB. On Linux a large copy therefore goes to an anonymous mapping whose pages
//! are all provided by one call (`MADV_POPULATE_WRITE`, Linux 5.14) before the copy, rather
//! than faulted in one at a time as the copy reaches them (about a fifth faster for 1 GiB
//! in 3 MiB tensors). Small copies, other systems and older kernels use the heap.

use crate::tensor::Storage;

/// Copies smaller than this go to the heap: a mapping of their own is not worth a syscall
/// (and a process may only have so many).
#[cfg(target_os = "linux")]
const MIN_MAPPED: usize = 1 << 20;

/// `len` writable bytes (zero), then a [`Storage`] owning them.
pub(crate) struct Fresh(Inner);

enum Inner {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Mapped(crate::tensor::AnonMemory),
}

impl Fresh {
    /// `len` zero bytes about to be written, or `None` when the memory cannot be had.
    pub(crate) fn zeroed(len: usize) -> Option<Fresh> {
        #[cfg(target_os = "linux")]
        if len >= MIN_MAPPED {
            if let Some(mut memory) = mapped(len) {
                populate(&mut memory);
                return Some(Fresh(Inner::Mapped(memory)));
            }
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).ok()?;
        bytes.resize(len, 0);
        Some(Fresh(Inner::Heap(bytes)))
    }

    /// `len` zero bytes whose pages are provided only when written (like `calloc`), for
    /// tensors that may never be written (the zeros of a model about to be loaded), or
    /// `None` when the memory cannot be had. A load into them provides the pages first
    /// ([`populate_storage`]).
    pub(crate) fn lazy_zeroed(len: usize) -> Option<Storage> {
        #[cfg(target_os = "linux")]
        if len >= MIN_MAPPED {
            if let Some(memory) = mapped(len) {
                return Some(Storage::from_anon(memory));
            }
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).ok()?;
        bytes.resize(len, 0);
        Some(Storage::from_vec(bytes))
    }

    /// A copy of `bytes`, or `None` when the memory cannot be had.
    pub(crate) fn copy_of(bytes: &[u8]) -> Option<Storage> {
        #[cfg(target_os = "linux")]
        if bytes.len() >= MIN_MAPPED {
            if let Some(mut memory) = mapped(bytes.len()) {
                populate(&mut memory);
                memory.as_bytes_mut().copy_from_slice(bytes);
                return Some(Storage::from_anon(memory));
            }
        }
        // Not zeroed first: the copy is the only write.
        let mut out = Vec::new();
        out.try_reserve_exact(bytes.len()).ok()?;
        out.extend_from_slice(bytes);
        Some(Storage::from_vec(out))
    }

    /// The bytes, to write the copy into.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Inner::Heap(bytes) => bytes,
            #[cfg(target_os = "linux")]
            Inner::Mapped(memory) => memory.as_bytes_mut(),
        }
    }

    /// The storage owning the bytes.
    pub(crate) fn into_storage(self) -> Storage {
        match self.0 {
            Inner::Heap(bytes) => Storage::from_vec(bytes),
            #[cfg(target_os = "linux")]
            Inner::Mapped(memory) => Storage::from_anon(memory),
        }
    }
}

/// Provides the pages of `storage` before a write of all its bytes, when it is anonymous
/// memory of its own (pages already there cost next to nothing).
pub(crate) fn populate_storage(storage: &mut Storage) {
    #[cfg(target_os = "linux")]
    if let Some(memory) = storage.anon_mut() {
        populate(memory);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = storage;
}

/// An anonymous mapping of `len` bytes, or `None` when the mapping fails.
#[cfg(target_os = "linux")]
fn mapped(len: usize) -> Option<crate::tensor::AnonMemory> {
    let map = memmap2::MmapMut::map_anon(len).ok()?;
    Some(crate::tensor::AnonMemory::new(map, len))
}

/// Provides every page of `memory` in one call. A kernel without `MADV_POPULATE_WRITE`
/// (before 5.14) leaves the pages to be faulted in by the write, as on the heap.
#[cfg(target_os = "linux")]
fn populate(memory: &mut crate::tensor::AnonMemory) {
    let _ = memory.advise(memmap2::Advice::PopulateWrite);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_copies_hold_exactly_the_bytes() {
        for len in [0, 5, (1 << 20) + 4097] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let storage = Fresh::copy_of(&bytes).unwrap();
            assert_eq!(storage.as_bytes(), &bytes[..]);
            assert!(storage.owns_its_bytes() && !storage.is_mapped());

            let mut fresh = Fresh::zeroed(len).unwrap();
            assert!(fresh.bytes_mut().iter().all(|&b| b == 0));
            fresh.bytes_mut().copy_from_slice(&bytes);
            let mut storage = fresh.into_storage();
            assert_eq!(storage.as_bytes(), &bytes[..]);
            assert_eq!(storage.unique_bytes_mut().map(|b| b.len()), Some(len));

            let mut lazy = Fresh::lazy_zeroed(len).unwrap();
            populate_storage(&mut lazy);
            assert!(lazy.as_bytes().iter().all(|&b| b == 0));
            assert_eq!(lazy.len(), len);
        }
    }
}

//! The pickle writer's memo: what it wrote once and refers to by index afterwards (`BINGET`),
//! as CPython's pickler. A memo can serve a second pass over the same value (`write_torch`
//! measures the pickle, then streams it): indices are those of the first pass, and an entry
//! counts as written in the current pass once the pass's memo length has passed it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::dtype::DType;
use crate::tensor::Tensor;

#[derive(Default)]
pub(super) struct Memo<'v> {
    /// Entries written so far in the current pass (the next index).
    pub len: u32,
    /// Globals by (module, name): a handful per pickle, so a list.
    globals: Vec<(&'static str, &'static str, u32)>,
    /// Strings of the value, borrowed: a state dict's keys are not copied.
    strings: HashMap<&'v str, u32>,
    /// Strings made while writing (the text of `bytes`), which the value cannot lend.
    owned_strings: HashMap<String, u32>,
    /// Strings of persistent ids ('storage', 'cpu', storage keys): torch reuses these
    /// objects, but they are distinct from equal strings elsewhere (a `_metadata` prefix
    /// `'0'` is written again after storage key `'0'`), so they have their own memo: these
    /// two, and each storage's key in `storages`.
    pub pid_storage: Option<u32>,
    pub pid_cpu: Option<u32>,
    /// Storages in the pickle (by `Storage::id`).
    storages: HashMap<usize, SavedStorage, BuildHasherDefault<IdHasher>>,
    /// Contiguous copies made for tensors that could not share their storage, in the order
    /// made (a second pass takes them again in that order); kept alive so that their
    /// storage ids stay unique.
    copies: Vec<Tensor>,
    next_copy: usize,
}

/// A storage in the pickle: the dtype it was first saved with and the memo index of its key.
#[derive(Clone, Copy)]
pub(super) struct SavedStorage {
    pub dtype: DType,
    pub key_memo: u32,
}

impl<'v> Memo<'v> {
    /// Starts another pass over the same value.
    pub fn rewind(&mut self) {
        self.len = 0;
        self.next_copy = 0;
    }

    /// `index` if that entry was written in this pass.
    pub fn written(&self, index: Option<u32>) -> Option<u32> {
        index.filter(|&i| i < self.len)
    }

    pub fn global(&self, module: &str, name: &str) -> Option<u32> {
        self.globals
            .iter()
            .find(|(m, n, _)| *m == module && *n == name)
            .map(|&(_, _, index)| index)
    }

    pub fn add_global(&mut self, module: &'static str, name: &'static str, index: u32) {
        self.globals.push((module, name, index));
    }

    pub fn string(&self, s: &str) -> Option<u32> {
        self.strings
            .get(s)
            .or_else(|| self.owned_strings.get(s))
            .copied()
    }

    pub fn add_string(&mut self, s: &'v str, index: u32) {
        self.strings.insert(s, index);
    }

    pub fn add_owned_string(&mut self, s: String, index: u32) {
        self.owned_strings.insert(s, index);
    }

    pub fn storage(&self, id: usize) -> Option<SavedStorage> {
        self.storages.get(&id).copied()
    }

    pub fn add_storage(&mut self, id: usize, saved: SavedStorage) {
        self.storages.insert(id, saved);
    }

    /// The next copy: made by `make` in a first pass, the same one again in a second.
    pub fn copy(&mut self, make: impl FnOnce() -> crate::Result<Tensor>) -> crate::Result<Tensor> {
        let copy = match self.copies.get(self.next_copy) {
            Some(copy) => copy.clone(),
            None => {
                let copy = make()?;
                self.copies.push(copy.clone());
                copy
            }
        };
        self.next_copy += 1;
        Ok(copy)
    }
}

/// Hashes storage ids (addresses, not chosen by users): one wide multiply, folded, so that
/// both the low and the high bits of the hash vary with every bit of the id.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let product = u128::from(self.0 ^ n) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

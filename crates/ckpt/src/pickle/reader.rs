//! The pickle virtual machine (protocols 0-5). It builds values; it never imports or calls.

use crate::dtype::DType;
use crate::error::Result;
use crate::pickle::Limits;
use crate::tensor::Storage;
use crate::value::Value;

/// How Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Py2Strings {
    /// Each byte is one code point, as `pickle.load(encoding="latin1")` (Detectron files).
    #[default]
    Latin1,
    /// UTF-8 when valid, else latin1, as `torch.load` decodes its py2 strings.
    Utf8OrLatin1,
}

/// Options of [`read_pickle`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PickleOptions {
    pub py2_strings: Py2Strings,
    pub limits: Limits,
}

/// A storage resolved from a persistent id, with the dtype its storage class names.
#[derive(Debug, Clone)]
pub struct TypedStorage {
    pub storage: Storage,
    pub dtype: DType,
}

/// Resolves persistent ids (`BINPERSID`), e.g. torch's `('storage', FloatStorage, '0', 'cpu', 6)`.
pub trait PersistentLoad {
    /// The storage a persistent id refers to. `pid` is the id as a value (storage classes
    /// appear as `Value::Object` globals with module `torch` and a name ending in `Storage`,
    /// or `torch.storage.UntypedStorage`).
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage>;
}

/// Reads one pickle from the start of `data`. Returns the value and the number of bytes the
/// pickle took (up to and including `STOP`). `base_offset` is added to offsets in errors so
/// they are offsets in the file.
pub fn read_pickle(
    data: &[u8],
    base_offset: u64,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize)> {
    let _ = (data, base_offset, options, persistent);
    todo!("pickle reader")
}

//! Python pickles: a reader that never runs code, and a writer of the opcode subset that
//! `torch.load(weights_only=True)` accepts.
//!
//! The reader understands the globals checkpoints use (tensor rebuild functions, storages,
//! `OrderedDict`, numpy arrays and dtypes, `torch.Size`, ...); any other global becomes an
//! opaque [`crate::Object`]. Every length is checked against the input before allocating,
//! and nesting depth and the number of values built are bounded.
//!
//! Inside, each file uses only those listed before it (no file depends on one that depends
//! on it): `opcode` (the opcode table), `text` and `long` (argument encodings), `invalid`
//! (what is wrong with a built object), `args` (arguments of known globals), `numpy` and
//! `tensor_metadata`, `globals` (what each known global means), `arena` (the objects being
//! built), `machine` (the machine's state and primitives), `reduce` (the opcodes that build
//! objects), `tensor_record` (the fast path for torch's tensor records), `reader` (the
//! dispatch over opcodes); `writer` stands apart.

mod arena;
mod args;
mod globals;
mod invalid;
mod long;
mod machine;
mod numpy;
pub(crate) mod opcode;
mod reader;
mod reduce;
mod tensor_metadata;
mod tensor_record;
pub(crate) mod text;
mod writer;

use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Storage;
use crate::value::{ObjectBuild, Value};

pub use reader::read_pickle;
pub(crate) use reader::read_pickle_in;
pub(crate) use writer::measure_pickle;
pub use writer::{write_pickle, StorageSink};

/// Bounds that keep a hostile pickle from exhausting memory or the stack.
///
/// ```
/// use ckpt::pickle::Limits;
/// let tight = Limits::default().with_max_depth(50).with_max_values(1_000);
/// assert_eq!((tight.max_depth, tight.max_values), (50, 1_000));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Limits {
    /// Deepest nesting of containers in the result. `Value`'s clone, drop and `Debug` recurse,
    /// so the default leaves room for them on a 2 MB thread stack in a debug build (a dict
    /// level costs about 3 KB there); real checkpoints nest fewer than 20 levels.
    pub max_depth: usize,
    /// Most values the result may contain, counting every copy made by memo references.
    /// Below this, a pickle may build at most two values per opcode it holds beyond a fixed
    /// allowance, so that memory stays proportional to the input whatever this limit says.
    pub max_values: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 200,
            max_values: 50_000_000,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_depth`].
    pub fn with_max_depth(mut self, max_depth: usize) -> Limits {
        self.max_depth = max_depth;
        self
    }

    /// Sets [`Limits::max_values`].
    pub fn with_max_values(mut self, max_values: usize) -> Limits {
        self.max_values = max_values;
        self
    }
}

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
///
/// ```
/// use ckpt::pickle::{PickleOptions, Py2Strings};
/// let options = PickleOptions::default().with_py2_strings(Py2Strings::Utf8OrLatin1);
/// assert_eq!(options.py2_strings, Py2Strings::Utf8OrLatin1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct PickleOptions {
    /// How Python 2 strings become text.
    pub py2_strings: Py2Strings,
    /// Bounds on nesting depth and on the number of values produced.
    pub limits: Limits,
}

impl PickleOptions {
    /// Sets [`PickleOptions::py2_strings`].
    pub fn with_py2_strings(mut self, py2_strings: Py2Strings) -> PickleOptions {
        self.py2_strings = py2_strings;
        self
    }

    /// Sets [`PickleOptions::limits`].
    pub fn with_limits(mut self, limits: Limits) -> PickleOptions {
        self.limits = limits;
        self
    }
}

/// A storage resolved from a persistent id, with the dtype its storage class names.
#[derive(Debug, Clone)]
pub struct TypedStorage {
    /// The bytes (shared by every tensor that refers to the same persistent id).
    pub storage: Storage,
    /// The element type the storage class names (`UInt8` for `UntypedStorage`).
    pub dtype: DType,
}

/// Resolves persistent ids (`BINPERSID`), e.g. torch's `('storage', FloatStorage, '0', 'cpu', 6)`.
pub trait PersistentLoad {
    /// The storage a persistent id refers to. `pid` is the id as a value (storage classes
    /// appear as `Value::Object` globals with module `torch` and a name ending in `Storage`,
    /// or `torch.storage.UntypedStorage`).
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage>;

    /// torch's usual persistent id, by parts: what the reader's fast path for tensor
    /// records passes, so no tuple is built per tensor. The default builds the tuple and
    /// calls [`PersistentLoad::persistent_load`].
    fn torch_storage(&mut self, id: &PersistentStorageId<'_>) -> Result<TypedStorage> {
        self.persistent_load(&id.to_value())
    }
}

/// A persistent id `('storage', class, key, location, numel)` as torch writes it for each
/// storage, by parts.
#[derive(Debug, Clone, Copy)]
pub struct PersistentStorageId<'a> {
    /// Module of the storage class (`torch`, `torch.cuda`).
    pub class_module: &'a str,
    /// Name of the storage class (`FloatStorage`, `UntypedStorage`).
    pub class_name: &'a str,
    /// The storage key (the record `data/<key>` of a zip archive).
    pub key: &'a str,
    /// Where the storage lived (`cpu`, `cuda:0`).
    pub location: &'a str,
    /// Number of elements.
    pub numel: i64,
}

impl PersistentStorageId<'_> {
    /// The id as the tuple value [`PersistentLoad::persistent_load`] receives.
    pub fn to_value(&self) -> Value {
        Value::Tuple(vec![
            Value::Str("storage".into()),
            globals::object(self.class_module, self.class_name, ObjectBuild::Global),
            Value::Str(self.key.into()),
            Value::Str(self.location.into()),
            Value::Int(self.numel),
        ])
    }
}

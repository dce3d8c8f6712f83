//! Python pickles: a reader that never runs code, and a writer of the opcode subset that
//! `torch.load(weights_only=True)` accepts.
//!
//! The reader understands the globals checkpoints use (tensor rebuild functions, storages,
//! `OrderedDict`, numpy arrays and dtypes, `torch.Size`, ...); any other global becomes an
//! opaque [`crate::Object`]. Every length is checked against the input before allocating,
//! and nesting depth and the number of values built are bounded.

mod arena;
mod calls;
mod globals;
mod numpy;
mod opcodes;
mod reader;
mod tensor_metadata;
mod tensor_record;
pub(crate) mod text;
mod writer;

pub(crate) use reader::read_pickle_in;
pub use reader::{
    read_pickle, PersistentLoad, PersistentStorageId, PickleOptions, Py2Strings, TypedStorage,
};
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

//! The pickle writer: protocol 2, only the opcodes and globals `torch.load(weights_only=True)`
//! accepts, laid out as CPython's pickler lays them out (memo included).

use crate::error::Result;
use crate::tensor::Tensor;
use crate::value::Value;

/// Where the writer sends tensor storages: it returns the persistent key for a storage
/// (the same key for the same storage, so sharing survives).
pub trait StorageSink {
    /// The key (`"0"`, `"1"`, ...) under which `tensor`'s storage is saved.
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String>;
}

/// A protocol-2 pickler into a byte buffer.
pub struct PickleWriter {
    pub out: Vec<u8>,
}

/// Pickles `value` (tensors become `_rebuild_tensor_v2`/`_v3` calls over persistent ids
/// from `sink`; numpy arrays are written as tensors).
pub fn write_pickle(value: &Value, sink: &mut dyn StorageSink) -> Result<Vec<u8>> {
    let _ = (value, sink);
    todo!("pickle writer")
}

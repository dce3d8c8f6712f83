//! Reading the pre-1.6 torch stream (magic number, protocol version, sys info, the object,
//! the storage key list, raw storages) and the torch <= 0.3 tar format.

use std::sync::Arc;

use crate::error::Result;
use crate::format::LoadOptions;
use crate::tensor::Buffer;
use crate::value::Value;

/// Whether `bytes` start with a pickle of torch's legacy magic number.
pub(crate) fn starts_with_magic(bytes: &[u8]) -> bool {
    let _ = bytes;
    false
}

/// Reads a legacy torch file.
pub(crate) fn read(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let _ = (buffer, options);
    todo!("legacy reader")
}

/// Reads a torch <= 0.3 tar file.
pub(crate) fn read_tar(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let _ = (buffer, options);
    todo!("tar reader")
}

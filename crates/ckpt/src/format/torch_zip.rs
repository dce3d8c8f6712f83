//! Reading torch zip archives (torch >= 1.6): records found by name under any archive folder.

use std::sync::Arc;

use crate::error::Result;
use crate::format::LoadOptions;
use crate::tensor::Buffer;
use crate::value::Value;

/// Reads the object saved in a torch zip archive; storages are views of `buffer`.
pub(crate) fn read(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let _ = (buffer, options);
    todo!("torch zip reader")
}

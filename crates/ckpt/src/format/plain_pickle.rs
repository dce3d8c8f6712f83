//! Plain pickles: Detectron1/Caffe2 `.pkl` (Python 2) and detectron2 model-zoo `.pkl`
//! (Python 3), whose numpy arrays the pickle reader turns into [`Value::NdArray`]s.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::LoadOptions;
use crate::pickle::{read_pickle_in, PersistentLoad, PickleOptions, Py2Strings, TypedStorage};
use crate::tensor::Buffer;
use crate::value::Value;

/// A plain pickle holds no persistent ids: one is an error.
struct NoPersistentIds;

impl PersistentLoad for NoPersistentIds {
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
        Err(Error::format(format!(
            "a plain pickle refers to an external object (persistent id {}); torch files are zip archives or legacy streams",
            pid.short_repr(60)
        )))
    }
}

/// Reads a plain pickle file (no persistent ids); Python 2 strings decode as latin1, as
/// `pickle.load(f, encoding="latin1")` in detectron2 does. Arrays are views of `buffer`
/// (little-endian ones: big-endian arrays are swapped into copies), as torch records are.
pub(crate) fn read_plain_pickle(buffer: &Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let pickle_options = PickleOptions {
        py2_strings: Py2Strings::Latin1,
        limits: options.limits,
    };
    let all = 0..buffer.as_bytes().len();
    let (value, _) = read_pickle_in(buffer, all, &pickle_options, &mut NoPersistentIds)?;
    Ok(value)
}

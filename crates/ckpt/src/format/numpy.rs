//! numpy inside pickles: `ndarray` (`_reconstruct` + `__setstate__`, `_frombuffer`), numpy
//! scalars and dtypes; and reading plain pickles (Detectron1/Caffe2 and detectron2 `.pkl`).

use crate::error::Result;
use crate::format::LoadOptions;
use crate::value::Value;

/// Reads a plain pickle file (no persistent ids); Python 2 strings decode as latin1.
pub(crate) fn read_plain_pickle(bytes: &[u8], options: &LoadOptions) -> Result<Value> {
    let _ = (bytes, options);
    todo!("plain pickle reader")
}

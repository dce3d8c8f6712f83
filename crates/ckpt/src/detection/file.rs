//! How `DetectionCheckpointer` turns a file into a checkpoint dict, by extension:
//! detectron2 model-zoo and Caffe2/Detectron1 pickles, pycls `.pyth` files, and torch or
//! safetensors files (`docs/behaviour.md#detection-files`).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, ResultExt};
use crate::format;
use crate::tensor::Buffer;
use crate::value::{Dict, Key, Value};

/// What a checkpoint file is, decided by its extension as detectron2 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.pkl`: a detectron2 model-zoo pickle (`model` + `__author__`) or a Caffe2/Detectron1
    /// pickle of blobs.
    Pickle,
    /// `.pyth`: a pycls checkpoint (`model_state`).
    Pycls,
    /// Anything else: a torch (or safetensors) file.
    Torch,
}

impl FileKind {
    /// The kind of the local file `path` (its name, not its content, decides).
    pub fn of(path: &Path) -> FileKind {
        let name = path.to_string_lossy();
        if name.ends_with(".pkl") {
            FileKind::Pickle
        } else if name.ends_with(".pyth") {
            FileKind::Pycls
        } else {
            FileKind::Torch
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            FileKind::Pickle => 0,
            FileKind::Pycls => 1,
            FileKind::Torch => 2,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<FileKind> {
        match byte {
            0 => Some(FileKind::Pickle),
            1 => Some(FileKind::Pycls),
            2 => Some(FileKind::Torch),
            _ => None,
        }
    }
}

/// Reads the local file `path` as `DetectionCheckpointer` does; `matching_heuristics` is the
/// query option of the path (it applies to torch files only, as in detectron2).
pub fn read_detection_file(path: &Path, matching_heuristics: bool) -> Result<Dict> {
    read_detection_file_with(path, matching_heuristics, &format::LoadOptions::default())
}

/// [`read_detection_file`] with reading options (a resume checks checksums).
pub(crate) fn read_detection_file_with(
    path: &Path,
    matching_heuristics: bool,
    options: &format::LoadOptions,
) -> Result<Dict> {
    let value = format::load_with(path, options)?.value;
    detection_checkpoint(value, FileKind::of(path), matching_heuristics).in_file(path)
}

/// [`read_detection_file`] of a checkpoint already in memory: a map of `file`, or bytes
/// received from another rank.
pub(crate) fn read_detection_buffer(
    buffer: Arc<Buffer>,
    file: Option<&std::fs::File>,
    kind: FileKind,
    matching_heuristics: bool,
) -> Result<Dict> {
    let value = format::load_buffer(buffer, file)?;
    detection_checkpoint(value, kind, matching_heuristics)
}

/// The checkpoint dict of a file of `kind` holding `value`:
/// - a model-zoo pickle is used as is (`Reading a file from '<author>'`);
/// - a Caffe2 pickle becomes `{"model": blobs without *_momentum, "__author__": "Caffe2",
///   "matching_heuristics": True}`;
/// - a pycls file becomes `{"model": model_state without *num_batches_tracked, "__author__":
///   "pycls", "matching_heuristics": True}` (`model_state` is required);
/// - a torch file without `model` becomes `{"model": <the whole dict>}`; the query's
///   `matching_heuristics=True` sets that flag.
pub fn detection_checkpoint(
    value: Value,
    kind: FileKind,
    matching_heuristics: bool,
) -> Result<Dict> {
    let Value::Dict(mut data) = value else {
        return Err(Error::format(format!(
            "expected the checkpoint to be a dict, found a {}",
            value.type_name()
        )));
    };
    match kind {
        FileKind::Pickle => {
            if data.get("model").is_some() && data.get("__author__").is_some() {
                let author = data
                    .get("__author__")
                    .map(|a| a.as_str().map_or_else(|| a.short_repr(40), str::to_string))
                    .unwrap_or_default();
                tracing::info!("Reading a file from '{author}'");
                return Ok(data);
            }
            let mut blobs = match data.remove("blobs") {
                Some(Value::Dict(blobs)) => blobs,
                Some(other) => {
                    return Err(Error::key(
                        "blobs",
                        format!("expected a dict of arrays, found a {}", other.type_name()),
                    ))
                }
                None => data,
            };
            blobs
                .items
                .retain(|key, _| !key_ends_with(key, "_momentum"));
            Ok(flagged(blobs, "Caffe2"))
        }
        FileKind::Pycls => {
            let mut state = match data.remove("model_state") {
                Some(Value::Dict(state)) => state,
                Some(other) => {
                    return Err(Error::key(
                        "model_state",
                        format!("expected a dict of tensors, found a {}", other.type_name()),
                    ))
                }
                None => return Err(Error::missing_key("model_state", data.keys())),
            };
            state
                .items
                .retain(|key, _| !key_ends_with(key, "num_batches_tracked"));
            Ok(flagged(state, "pycls"))
        }
        FileKind::Torch => {
            if data.get("model").is_none() {
                let mut wrapped = Dict::new();
                wrapped.insert("model", Value::Dict(data));
                data = wrapped;
            }
            if matching_heuristics {
                data.insert("matching_heuristics", Value::Bool(true));
            }
            Ok(data)
        }
    }
}

fn key_ends_with(key: &Key, suffix: &str) -> bool {
    key.as_str().is_some_and(|k| k.ends_with(suffix))
}

fn flagged(model: Dict, author: &str) -> Dict {
    let mut out = Dict::new();
    out.insert("model", Value::Dict(model));
    out.insert("__author__", Value::Str(author.to_string()));
    out.insert("matching_heuristics", Value::Bool(true));
    out
}

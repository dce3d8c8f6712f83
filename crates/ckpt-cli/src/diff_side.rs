//! One side of `ckpt diff`: the value a file holds, and what it can hold. A safetensors file
//! holds tensors only; with `--match`, a Caffe2/Detectron1 pickle is renamed to detectron2
//! names first (with its background-class rows fixed), as `ckpt plan` and a
//! `DetectionCheckpointer` load do, and then holds only its weights.

use std::collections::HashMap;
use std::path::Path;

use ckpt::detection::{detection_checkpoint, FileKind};
use ckpt::format::{load_with, Format, LoadOptions, SourcePages};
use ckpt::matching::convert_c2_detectron_names;
use ckpt::{Dict, StateDict, Value};

use crate::error::CliError;
use crate::output::printable;
use crate::plan::quiet;
use crate::{convert, source};

/// A checkpoint as `ckpt diff` compares it.
#[derive(Debug)]
pub struct Side {
    /// The value compared (its `--key` entry if asked), tensors viewing a memory map.
    pub value: Value,
    /// Why the file cannot hold values other than tensors (`a safetensors file`), if it
    /// cannot: the other file's non-tensor values are then not compared.
    pub tensors_only: Option<&'static str>,
    /// The file's name of each renamed tensor (detectron2 name -> Caffe2 name).
    pub file_names: HashMap<String, String>,
}

impl Side {
    /// The name of `key` as the file has it.
    pub fn file_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.file_names.get(key).map_or(key, String::as_str)
    }
}

/// Reads `input`; with `caffe2_renames`, a Caffe2 pickle's blobs under detectron2 names.
pub fn open(input: &Path, key: Option<&str>, caffe2_renames: bool) -> Result<Side, CliError> {
    let shown = printable(&input.display().to_string());
    let path = source::local_input(input)?;
    let options = LoadOptions::default().with_source_pages(SourcePages::Release);
    let in_file = |e: ckpt::Error| {
        let message = e.report().to_string();
        if message.contains(&path.display().to_string()) {
            CliError::new(message)
        } else {
            CliError::new(format!("{shown}: {message}"))
        }
    };
    let loaded = load_with(&path, &options).map_err(in_file)?;
    let mut side = Side {
        value: loaded.value,
        tensors_only: (loaded.format == Format::Safetensors).then_some("a safetensors file"),
        file_names: HashMap::new(),
    };
    if caffe2_renames && loaded.format == Format::Pickle && is_dict(&side.value) {
        let value = std::mem::replace(&mut side.value, Value::None);
        let checkpoint = quiet(|| detection_checkpoint(value, FileKind::Pickle, false));
        let mut checkpoint = checkpoint.map_err(in_file)?;
        if checkpoint.get("__author__").and_then(Value::as_str) == Some("Caffe2") {
            let blobs = checkpoint.remove("model").unwrap_or(Value::None);
            let weights = StateDict::from_value(&blobs).map_err(in_file)?;
            let converted = quiet(|| convert_c2_detectron_names(weights)).map_err(in_file)?;
            side.file_names = converted
                .changed()
                .map(|(old, new)| (new.to_string(), old.to_string()))
                .collect();
            side.tensors_only = Some("Caffe2 weights");
            let mut wrapped = Dict::new();
            wrapped.insert("model", converted.state_dict.to_value());
            side.value = Value::Dict(wrapped);
            // Without --key, the weights are compared as a state dict of their own.
            if key.is_none() {
                side.value = convert::select_key(side.value, "model", input)?;
            }
        } else {
            side.value = Value::Dict(checkpoint);
        }
    }
    if let Some(key) = key {
        side.value = convert::select_key(side.value, key, input)?;
    }
    Ok(side)
}

fn is_dict(value: &Value) -> bool {
    matches!(value, Value::Dict(_))
}

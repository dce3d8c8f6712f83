//! Hugging Face sharded checkpoints read as one checkpoint (`docs/formats.md#sharded-checkpoints`):
//! an index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) whose
//! `weight_map` names the shard file of every tensor, beside the shards.
//!
//! Each shard is read as any checkpoint file is (memory-mapped by default, so no tensor's
//! bytes are read until they are used) and the index is checked against what the shards hold:
//! a tensor of the index that its shard lacks, a tensor of a shard that the index does not
//! put there, a shard file that is missing, one name in two shards, and a
//! `metadata.total_size` that is not what the tensors add up to are errors naming the files.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result, ResultExt};
use crate::format::safetensors::METADATA_ATTRIBUTE;
use crate::format::LoadOptions;
use crate::store::check_basename;
use crate::tensor::Tensor;
use crate::value::{Dict, Value};

/// The index of a sharded safetensors checkpoint (transformers, huggingface_hub).
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// The index of a sharded torch checkpoint (transformers' `pytorch_model-0000i-of-0000n.bin`).
pub const TORCH_INDEX: &str = "pytorch_model.bin.index.json";
/// The suffix every index file name ends with.
const INDEX_SUFFIX: &str = ".index.json";
/// The largest index read (a `weight_map` of a million names is a few tens of MiB).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// What an index file holds (other fields are ignored).
#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    weight_map: BTreeMap<String, String>,
}

/// Whether `path` names an index file (`*.index.json`).
pub(crate) fn is_index_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(INDEX_SUFFIX))
}

/// The index of the sharded checkpoint in `dir`: `model.safetensors.index.json`, else
/// `pytorch_model.bin.index.json`, else the one `*.index.json` there is (a
/// `diffusion_pytorch_model.safetensors.index.json`). `None` when there is none, or several
/// that none of the standard names picks from.
pub fn find_index(dir: &Path) -> Option<PathBuf> {
    for name in [SAFETENSORS_INDEX, TORCH_INDEX] {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_index_file(p) && p.is_file());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Reads the sharded checkpoint of the index at `index_path` as one `OrderedDict` of tensors:
/// the shards in the order of their names, each shard's tensors in its own order. `read_shard`
/// reads one shard file (any single-file format).
pub(crate) fn read(
    index_path: &Path,
    options: &LoadOptions,
    read_shard: impl Fn(&Path, &LoadOptions) -> Result<Value>,
) -> Result<Value> {
    let index = read_index(index_path).in_file(index_path)?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let shards: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
    tracing::debug!(index = %index_path.display(), shards = shards.len(), tensors = index.weight_map.len(), "reading a sharded checkpoint");

    let mut dict = Dict::ordered();
    let mut shard_metadata: Option<Value> = None;
    let mut first_shard_of: BTreeMap<String, &str> = BTreeMap::new();
    let mut tensor_bytes: u64 = 0;
    let mut storage_bytes: u64 = 0;
    let mut storages_seen = HashSet::new();
    // Every name checked before any shard is read: none may reach outside the directory.
    for shard in &shards {
        check_basename(shard)
            .map_err(|e| Error::format_caused(format!("the index names the shard '{shard}'"), e))
            .in_file(index_path)?;
    }
    for shard in shards {
        let shard_path = dir.join(shard);
        if !shard_path.is_file() {
            let missing = Error::format(format!(
                "the shard '{shard}' named by the index is missing from {}",
                dir.display()
            ));
            return Err(missing.in_file(index_path));
        }
        let value = read_shard(&shard_path, options)?;
        let Value::Dict(mut held) = value else {
            let what = format!("a shard holds {}, not a dict of tensors", value.type_name());
            return Err(Error::format(what).in_file(&shard_path));
        };
        if shard_metadata.is_none() {
            shard_metadata = held.remove_attribute(METADATA_ATTRIBUTE);
        }
        for (key, value) in held {
            let name = key.to_string();
            let tensor = shard_tensor(&name, &value).in_file(&shard_path)?;
            match index.weight_map.get(&name) {
                Some(listed) if listed == shard => {}
                Some(listed) => {
                    let wrong =
                        format!("the shard holds '{name}', which the index puts in '{listed}'");
                    return Err(Error::format(wrong).in_file(&shard_path));
                }
                None => {
                    let stray = format!("the shard holds '{name}', which the index does not list");
                    return Err(Error::format(stray).in_file(&shard_path));
                }
            }
            if let Some(other) = first_shard_of.get(&name) {
                return Err(twice(&name, other, dict.get(&name), tensor).in_file(&shard_path));
            }
            first_shard_of.insert(name.clone(), shard);
            tensor_bytes += tensor.nbytes() as u64;
            if storages_seen.insert(tensor.storage().id()) {
                storage_bytes += tensor.storage().len() as u64;
            }
            dict.insert(name, value);
        }
    }
    if let Some((name, shard)) = index
        .weight_map
        .iter()
        .find(|(name, _)| !first_shard_of.contains_key(name.as_str()))
    {
        let absent =
            format!("the index puts '{name}' in the shard '{shard}', which does not hold it");
        return Err(Error::format(absent).in_file(index_path));
    }
    check_total_size(&index, tensor_bytes, storage_bytes).in_file(index_path)?;
    if let Some(meta) = shard_metadata {
        dict.set_attribute(METADATA_ATTRIBUTE, meta);
    }
    Ok(Value::Dict(dict))
}

/// Reads and parses the index file (bounded in size).
fn read_index(path: &Path) -> Result<IndexFile> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(Error::format(format!(
            "a sharded checkpoint index of {len} bytes (at most {MAX_INDEX_BYTES} are read)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::format_caused(
            "a sharded checkpoint index must be JSON with a \"weight_map\" of tensor names to shard files",
            e,
        )
    })
}

/// The tensor a shard holds under `name`.
fn shard_tensor<'a>(name: &str, value: &'a Value) -> Result<&'a Tensor> {
    match value {
        Value::Tensor(t) | Value::Parameter(t) => Ok(t),
        other => Err(Error::key(
            name,
            format!(
                "a shard entry must be a tensor, found {}",
                other.type_name()
            ),
        )),
    }
}

/// The error for a name held by two shards, saying how the two tensors differ.
fn twice(name: &str, first_shard: &str, first: Option<&Value>, second: &Tensor) -> Error {
    let differ = match first.and_then(Value::as_tensor) {
        Some(t) if t.dtype() != second.dtype() || t.shape() != second.shape() => format!(
            " (there a {} {:?} tensor, here a {} {:?} one)",
            t.dtype(),
            t.shape(),
            second.dtype(),
            second.shape()
        ),
        _ => String::new(),
    };
    Error::format(format!(
        "'{name}' is in this shard and in '{first_shard}'{differ}"
    ))
}

/// Checks `metadata.total_size` (when the index has it) against the tensors' bytes, or the
/// bytes of their distinct storages (what transformers counts for torch shards).
fn check_total_size(index: &IndexFile, tensor_bytes: u64, storage_bytes: u64) -> Result<()> {
    let Some(declared) = index.metadata.as_ref().and_then(|m| m.get("total_size")) else {
        return Ok(());
    };
    let total = declared.as_u64().or_else(|| {
        // Some writers store it as a float (`1234.0`).
        declared
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
            .map(|f| f as u64)
    });
    match total {
        Some(total) if total == tensor_bytes || total == storage_bytes => Ok(()),
        Some(total) => Err(Error::format(format!(
            "the index's metadata.total_size is {total} bytes, but its tensors add up to {tensor_bytes}"
        ))),
        None => Err(Error::format(format!(
            "the index's metadata.total_size is {declared}, not a number of bytes"
        ))),
    }
}

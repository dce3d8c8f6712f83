//! Writing sharded safetensors the way Hugging Face does (`save_pretrained(max_shard_size=..)`,
//! `huggingface_hub.save_torch_state_dict`): tensors in order, a new shard when the next
//! tensor would pass the size limit, a tensor larger than the limit alone in its shard; shards
//! named `model-0000i-of-0000n.safetensors` with `{"format": "pt"}` metadata (transformers
//! refuses shards without it), and `model.safetensors.index.json` (`metadata.total_size`,
//! sorted `weight_map`, two-space indent) written last, so an interrupted write leaves no
//! index. One shard is `model.safetensors` with no index, as Hugging Face writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, ResultExt};
use crate::format::hf_sharded::SAFETENSORS_INDEX;
use crate::format::safetensors::SafetensorsOptions;
use crate::format::stream::SourcePages;
use crate::store::atomic_write;
use crate::value::StateDict;

/// Options for [`save_sharded_safetensors`].
///
/// ```
/// use ckpt::format::{parse_size, ShardedOptions};
/// let options = ShardedOptions::new(parse_size("100MB")?);
/// assert_eq!(options.max_shard_size, 100_000_000);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardedOptions {
    /// The most bytes of tensor data in one shard (a larger tensor gets a shard of its own).
    pub max_shard_size: u64,
    /// The `__metadata__` of every shard (`{"format": "pt"}` by default, which transformers
    /// requires).
    pub metadata: Vec<(String, String)>,
    /// What to do with the pages of memory-mapped inputs once written (see [`SourcePages`]).
    pub source_pages: SourcePages,
}

impl ShardedOptions {
    /// Shards of at most `max_shard_size` bytes, with `{"format": "pt"}` metadata.
    pub fn new(max_shard_size: u64) -> ShardedOptions {
        ShardedOptions {
            max_shard_size,
            metadata: vec![("format".to_string(), "pt".to_string())],
            source_pages: SourcePages::Keep,
        }
    }

    /// Sets [`ShardedOptions::source_pages`].
    pub fn with_source_pages(mut self, source_pages: SourcePages) -> ShardedOptions {
        self.source_pages = source_pages;
        self
    }
}

/// What [`save_sharded_safetensors`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardedWritten {
    /// The index file (`None` when everything fit in one `model.safetensors`).
    pub index: Option<PathBuf>,
    /// The shard files, in order.
    pub shards: Vec<PathBuf>,
    /// The bytes of tensor data written (the index's `metadata.total_size`).
    pub total_size: u64,
}

/// Splits the tensors into shards as Hugging Face does: in order, a new shard when the next
/// tensor would take the current one past `max_shard_size`, a larger tensor alone. Returns
/// the names of each shard's tensors.
pub fn plan_shards(tensors: &StateDict, max_shard_size: u64) -> Vec<Vec<String>> {
    let mut shards: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut current_size = 0u64;
    for (name, tensor) in tensors.iter() {
        let size = tensor.nbytes() as u64;
        if size > max_shard_size {
            shards.push(vec![name.to_string()]);
            continue;
        }
        if current_size + size > max_shard_size && !current.is_empty() {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(name.to_string());
        current_size += size;
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    shards
}

/// Writes `tensors` into `dir` (created if needed) as sharded safetensors that
/// transformers' `from_pretrained`/`load_sharded_checkpoint` and ckpt read as one
/// checkpoint. Each shard is written atomically and streamed from the tensors' memory (one
/// tensor's bytes at a time); the index comes last.
///
/// ```no_run
/// use ckpt::format::{load, parse_size, save_sharded_safetensors, flatten_tensors, ShardedOptions};
/// let (tensors, _) = flatten_tensors(&load("pytorch_model.bin")?);
/// let written = save_sharded_safetensors("out", &tensors, &ShardedOptions::new(parse_size("2GB")?))?;
/// println!("{} shards", written.shards.len());
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn save_sharded_safetensors(
    dir: impl AsRef<Path>,
    tensors: &StateDict,
    options: &ShardedOptions,
) -> Result<ShardedWritten> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let plan = plan_shards(tensors, options.max_shard_size);
    let count = plan.len();
    let st_options = SafetensorsOptions::default().with_source_pages(options.source_pages);
    let mut weight_map = BTreeMap::new();
    let mut shards = Vec::with_capacity(count);
    let mut total_size = 0u64;
    for (i, names) in plan.iter().enumerate() {
        let file = if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        };
        let mut shard = StateDict::new();
        for name in names {
            if let Some(tensor) = tensors.get(name) {
                total_size += tensor.nbytes() as u64;
                shard.insert(name.clone(), tensor.clone());
                weight_map.insert(name.clone(), file.clone());
            }
        }
        let path = dir.join(&file);
        tracing::debug!(shard = %path.display(), tensors = shard.len(), "writing a shard");
        super::save_safetensors_with(&path, &shard, Some(&options.metadata), &st_options)?;
        shards.push(path);
    }
    let index = if count > 1 {
        let path = dir.join(SAFETENSORS_INDEX);
        let json = serde_json::json!({
            "metadata": { "total_size": total_size },
            "weight_map": weight_map,
        });
        let mut text = serde_json::to_string_pretty(&json).map_err(Error::external)?;
        text.push('\n');
        atomic_write(&path, |w| {
            w.write_all(text.as_bytes()).map_err(Error::io_unnamed)
        })
        .in_file(&path)?;
        Some(path)
    } else {
        None
    };
    Ok(ShardedWritten {
        index,
        shards,
        total_size,
    })
}

/// Parses a size as Hugging Face's `max_shard_size` does: a number of bytes, or a number
/// with `KB`/`MB`/`GB` (powers of 1000), `KiB`/`MiB`/`GiB` (powers of 1024), or `Kb`/`Mb`/`Gb`
/// (bits: an eighth of the bytes).
///
/// ```
/// assert_eq!(ckpt::format::parse_size("5GB")?, 5_000_000_000);
/// assert_eq!(ckpt::format::parse_size("2MiB")?, 2 << 20);
/// assert_eq!(ckpt::format::parse_size("8Mb")?, 1_000_000);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let units: [(&str, u64); 6] = [
        ("GIB", 1 << 30),
        ("MIB", 1 << 20),
        ("KIB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ];
    let (number, unit, bits) = units
        .iter()
        .find(|(suffix, _)| upper.ends_with(suffix))
        .map(|(suffix, unit)| {
            let number = &text[..text.len() - suffix.len()];
            (number, *unit, !suffix.contains('I') && text.ends_with('b'))
        })
        .unwrap_or((text, 1, false));
    let bad = || {
        Error::invalid(format!(
            "'{text}' is not a size (a number of bytes, or one with KB, MB, GB, KiB, MiB, GiB)"
        ))
    };
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(unit).ok_or_else(bad)?;
    Ok(if bits { bytes / 8 } else { bytes })
}

//! `torch.distributed.checkpoint` (DCP) directories read as one checkpoint
//! (`docs/formats.md#dcp`): `.metadata` (a pickle of DCP's dataclasses, read by ckpt's pickle
//! reader, so a hostile one runs nothing) says which entries there are and where each
//! tensor chunk and byte record lies in the `__<rank>_<n>.distcp` files; tensors are
//! assembled from their chunks, non-tensor values (`torch.save`d objects) decoded, and the
//! flattened names (`model.fc.weight`, `optim.state.0.exp_avg`) put back in their nesting.

mod assemble;
mod metadata;
mod nest;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, ResultExt};
use crate::format::{eager, zip_signatures, Format, LoadOptions, SourcePages};
use crate::store::check_basename;
use crate::tensor::{contiguous_strides, Buffer, Tensor};
use crate::value::{Dict, Value};

use assemble::{check_tiling, copy_chunk, volume};
use metadata::{Chunk, Entry, Metadata, PathPart, StorageInfo};

/// The name of a DCP directory's metadata file.
pub const DCP_METADATA: &str = ".metadata";

/// Whether `dir` holds a DCP checkpoint (a `.metadata` file).
pub(crate) fn is_dcp_dir(dir: &Path) -> bool {
    dir.join(DCP_METADATA).is_file()
}

/// Reads the DCP checkpoint in `dir` as its nested state. With `only`, just the entries
/// under that top-level key (`model`), or that flattened name, are read.
pub(crate) fn read(dir: &Path, options: &LoadOptions, only: Option<&str>) -> Result<Value> {
    let metadata_path = dir.join(DCP_METADATA);
    let eager = options.with_mmap(false);
    let loaded = super::load_file(&metadata_path, &eager)?;
    if loaded.format != Format::Pickle {
        let not = format!("a {} file where DCP writes a pickle", loaded.format);
        return Err(Error::format(not).in_file(&metadata_path));
    }
    let metadata = metadata::parse(&loaded.value).in_file(&metadata_path)?;
    tracing::debug!(dir = %dir.display(), entries = metadata.entries.len(), "reading a DCP checkpoint");
    let mut reader = Records {
        dir,
        options,
        files: HashMap::new(),
        used: HashSet::new(),
    };
    let mut root = Dict::new();
    let max_index = metadata.entries.len();
    let mut found = false;
    for (name, entry) in &metadata.entries {
        let flat = [PathPart::Key(name.clone())];
        let path = metadata.paths.get(name).map_or(&flat[..], Vec::as_slice);
        if let Some(only) = only {
            let top = matches!(path.first(), Some(PathPart::Key(k)) if k == only);
            if !top && name != only && !name.starts_with(&format!("{only}.")) {
                continue;
            }
        }
        found = true;
        let value = match entry {
            Entry::Tensor {
                dtype,
                size,
                chunks,
            } => reader
                .tensor(&metadata, name, *dtype, size, chunks)
                .map(Value::Tensor)
                .in_entry(name),
            Entry::Bytes => reader.bytes(&metadata, name).in_entry(name),
        }
        // An error of the chunks' geometry is the metadata's; one of a record names its file.
        .map_err(|e| match e.path() {
            Some(_) => e,
            None => e.in_file(&metadata_path),
        })?;
        nest::set_element(&mut root, path, value, max_index)
            .in_entry(name)
            .in_file(&metadata_path)?;
    }
    if let (Some(only), false) = (only, found) {
        let tops: Vec<String> = metadata
            .entries
            .iter()
            .map(
                |(name, _)| match metadata.paths.get(name).and_then(|p| p.first()) {
                    Some(PathPart::Key(k)) => k.clone(),
                    _ => name.clone(),
                },
            )
            .collect::<indexmap::IndexSet<_>>()
            .into_iter()
            .collect();
        return Err(Error::missing_key(only, tops).in_file(dir));
    }
    Ok(Value::Dict(root))
}

/// The `.distcp` files of a checkpoint, each read (mapped) once, and the records used.
struct Records<'a> {
    dir: &'a Path,
    options: &'a LoadOptions,
    files: HashMap<String, Arc<Buffer>>,
    /// Records already read, by file and offset: two entries sharing one is an error (so
    /// the memory assembled is bounded by the files' size).
    used: HashSet<(String, u64)>,
}

impl Records<'_> {
    /// The bytes of a record, as a window of its file's buffer.
    fn record(&mut self, info: &StorageInfo) -> Result<(Arc<Buffer>, std::path::PathBuf)> {
        check_basename(&info.relative_path)?;
        if !info.transforms.is_empty() {
            return Err(Error::unsupported(format!(
                "DCP records written with transforms {:?}",
                info.transforms
            )));
        }
        if !self.used.insert((info.relative_path.clone(), info.offset)) {
            return Err(Error::format(format!(
                "the record at byte {} of {} is used twice",
                info.offset, info.relative_path
            )));
        }
        let path = self.dir.join(&info.relative_path);
        if !self.files.contains_key(&info.relative_path) {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let buffer = if self.options.mmap {
                Buffer::map(&file).map_err(|e| Error::io(&path, e))?
            } else {
                eager::read_whole_file(&file).map_err(|e| Error::io(&path, e))?
            };
            self.files
                .insert(info.relative_path.clone(), Arc::new(buffer));
        }
        let file = self.files[&info.relative_path].clone();
        let size = file.as_bytes().len() as u64;
        let available = size.saturating_sub(info.offset);
        if info.offset > size || info.length > available {
            let cut = Error::truncated("DCP record", info.offset, info.length, available);
            return Err(cut.in_file(&path));
        }
        let (start, len) = (info.offset as usize, info.length as usize);
        Ok((Arc::new(Buffer::window(file, start, len)), path))
    }

    /// A non-tensor value: a `torch.save`d object.
    fn bytes(&mut self, metadata: &Metadata, name: &str) -> Result<Value> {
        let info = storage_of(metadata, name, None)?;
        let limits = self.options.limits;
        let (record, path) = self.record(&info)?;
        let options = LoadOptions::default().with_limits(limits);
        let loaded = super::read_buffer(record, &options, None).in_file(&path)?;
        Ok(loaded.value)
    }

    /// A tensor assembled from its chunks.
    fn tensor(
        &mut self,
        metadata: &Metadata,
        name: &str,
        dtype: crate::DType,
        size: &[usize],
        chunks: &[Chunk],
    ) -> Result<Tensor> {
        check_tiling(size, chunks)?;
        let element = dtype.size();
        let mut infos = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let info = storage_of(metadata, name, Some(&chunk.offsets))?;
            let needed = volume(&chunk.sizes)?.saturating_mul(element) as u64;
            // Checked before allocating the tensor: its bytes are at most the records'.
            if needed > info.length {
                return Err(Error::format(format!(
                    "the chunk at offsets {:?} needs {needed} bytes; its record in {} has {}",
                    chunk.offsets, info.relative_path, info.length
                )));
            }
            infos.push(info);
        }
        if let ([chunk], [info]) = (chunks, infos.as_slice()) {
            if chunk.sizes == size {
                return self.chunk_tensor(info, dtype, &chunk.sizes);
            }
        }
        let nbytes = volume(size)?
            .checked_mul(element)
            .ok_or_else(|| Error::format(format!("a tensor of shape {size:?} is too large")))?;
        #[cfg(unix)]
        if self.options.mmap && self.options.source_pages == SourcePages::Release && nbytes > 0 {
            return self.assemble_in_file(dtype, size, chunks, &infos, nbytes);
        }
        let mut out = vec![0u8; nbytes];
        for (chunk, info) in chunks.iter().zip(&infos) {
            let part = self.chunk_tensor(info, dtype, &chunk.sizes)?;
            let data = part.try_contiguous_bytes()?;
            copy_chunk(&mut out, size, chunk, &data, element);
        }
        Tensor::from_bytes(dtype, size, out)
    }

    /// A tensor assembled in an unlinked temporary file and mapped, for a value read only to
    /// be written elsewhere ([`SourcePages::Release`]): its bytes go to the page cache, not
    /// the process's memory, and the writer releases the map's pages behind it, so a
    /// conversion holds no more than a chunk at a time whatever the checkpoint's size.
    #[cfg(unix)]
    fn assemble_in_file(
        &mut self,
        dtype: crate::DType,
        size: &[usize],
        chunks: &[Chunk],
        infos: &[StorageInfo],
        nbytes: usize,
    ) -> Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let (file, path) = spill_file()?;
        let io = |e| Error::io(&path, e);
        file.set_len(nbytes as u64).map_err(io)?;
        for (chunk, info) in chunks.iter().zip(infos) {
            let part = self.chunk_tensor(info, dtype, &chunk.sizes)?;
            let data = part.try_contiguous_bytes()?;
            assemble::for_each_run(size, chunk, dtype.size(), |dst, src| {
                file.write_all_at(&data[src], dst as u64).map_err(io)
            })?;
            part.storage().release_mapped_pages();
        }
        let buffer = Arc::new(Buffer::map(&file).map_err(io)?);
        let storage = crate::tensor::Storage::slice(buffer, 0, nbytes)?;
        Tensor::new(dtype, size.to_vec(), contiguous_strides(size), 0, storage)
    }

    /// The tensor of one chunk: a `torch.save`d tensor (or the raw bytes some storage
    /// writers use), of the chunk's dtype and shape.
    fn chunk_tensor(
        &mut self,
        info: &StorageInfo,
        dtype: crate::DType,
        sizes: &[usize],
    ) -> Result<Tensor> {
        let limits = self.options.limits;
        let (record, path) = self.record(info)?;
        let bytes = record.as_bytes();
        let tensor = if bytes.starts_with(&zip_signatures::LOCAL_SIG.to_le_bytes()) {
            // Read in place: the tensor is a view of the file (of its map by default).
            let options = LoadOptions::default().with_limits(limits);
            let value = super::read_buffer(record.clone(), &options, None)
                .in_file(&path)?
                .value;
            match value {
                Value::Tensor(t) | Value::Parameter(t) => t,
                other => {
                    let not = format!(
                        "a chunk's record holds a {}, not a tensor",
                        other.type_name()
                    );
                    return Err(Error::format(not).in_file(&path));
                }
            }
        } else {
            let expected = volume(sizes)? * dtype.size();
            if bytes.len() != expected {
                let not = format!(
                    "a raw chunk record of {} bytes where the chunk has {expected}",
                    bytes.len()
                );
                return Err(Error::format(not).in_file(&path));
            }
            let storage = crate::tensor::Storage::slice(record.clone(), 0, bytes.len())?;
            let strides = contiguous_strides(sizes);
            Tensor::new(dtype, sizes.to_vec(), strides, 0, storage)?
        };
        if tensor.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                expected: dtype,
                found: tensor.dtype(),
            }
            .in_file(&path));
        }
        if tensor.shape() != sizes {
            return Err(Error::shape_mismatch(sizes, tensor.shape()).in_file(&path));
        }
        Ok(tensor)
    }
}

/// A new temporary file (in the temporary directory), already unlinked: it disappears with
/// its last handle or map.
#[cfg(unix)]
fn spill_file() -> Result<(std::fs::File, std::path::PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".ckpt-dcp-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok((file, path))
}

/// Where the record of `name` (a chunk at `offsets`, or a byte record) is.
fn storage_of(
    metadata: &Metadata,
    name: &str,
    offsets: Option<&Vec<usize>>,
) -> Result<StorageInfo> {
    metadata
        .storage
        .get(&(name.to_string(), offsets.cloned()))
        .cloned()
        .ok_or_else(|| match offsets {
            Some(o) => Error::format(format!("no storage record for the chunk at offsets {o:?}")),
            None => Error::format("no storage record for the value"),
        })
}

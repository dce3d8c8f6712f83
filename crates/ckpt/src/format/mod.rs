//! Checkpoint files: detect the format from the content, read any of them into a [`Value`],
//! write torch zip archives and safetensors files.
//!
//! ```no_run
//! use ckpt::format::{load, save_torch, SaveOptions};
//! let value = load("model_final.pkl")?;             // Detectron, torch, safetensors, ...
//! save_torch("model_final.pth", &value, &SaveOptions::default())?; // opens in torch.load
//! # Ok::<(), ckpt::Error>(())
//! ```
//!
//! A value read only to be written elsewhere (a conversion) can go from the input's memory map
//! to the output a few MiB at a time, whatever the file's size: read and write it with
//! [`SourcePages::Release`].
//!
//! ```no_run
//! use ckpt::format::{load_with, save_torch, LoadOptions, SaveOptions, SourcePages};
//! let read = LoadOptions::default().with_source_pages(SourcePages::Release);
//! let value = load_with("huge.safetensors", &read)?.value;
//! let write = SaveOptions::default().with_source_pages(SourcePages::Release);
//! save_torch("huge.pth", &value, &write)?; // peak memory: a few pieces and the metadata
//! # Ok::<(), ckpt::Error>(())
//! ```

mod dcp;
mod eager;
mod hf_shard_write;
mod hf_sharded;
mod plain_pickle;
mod safetensors;
mod stream;
mod torch_legacy;
mod torch_save;
mod torch_zip;
mod verify;
mod zip;
mod zip_data_offsets;
mod zip_signatures;
mod zip_write;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, ResultExt};
use crate::pickle::Limits;
use crate::store::atomic_write;
use crate::tensor::Buffer;
use crate::value::{StateDict, Value};

pub use dcp::DCP_METADATA;
pub use hf_shard_write::{
    parse_size, plan_shards, save_sharded_safetensors, ShardedOptions, ShardedWritten,
};
pub use hf_sharded::{find_index, SAFETENSORS_INDEX, TORCH_INDEX};
pub use safetensors::{
    flatten_tensors, write_safetensors, write_safetensors_with, SafetensorsOptions,
};
pub use stream::{SourcePages, STREAM_CHUNK};
pub use torch_save::write_torch;
pub(crate) use verify::pending_storages;
pub use verify::{verify_checksums, verify_file, FileChecksums};

/// The kinds of file this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// A torch zip archive (torch >= 1.6).
    TorchZip,
    /// The pre-1.6 torch stream (magic number, pickles, raw storages).
    TorchLegacy,
    /// The torch <= 0.3 tar format.
    TorchTar,
    /// A plain pickle (Detectron1/Caffe2 `.pkl`, detectron2 model-zoo `.pkl`).
    Pickle,
    /// safetensors.
    Safetensors,
    /// A Hugging Face sharded checkpoint: an index (`model.safetensors.index.json`,
    /// `pytorch_model.bin.index.json`) and the shard files it names, read as one.
    HfSharded,
    /// A `torch.distributed.checkpoint` directory: `.metadata` and `__<rank>_<n>.distcp`
    /// files, read as the one nested state that was saved.
    Dcp,
}

impl Format {
    /// A short name: `torch-zip`, `torch-legacy`, `torch-tar`, `pickle`, `safetensors`,
    /// `hf-sharded`, `dcp`.
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "torch-zip",
            Format::TorchLegacy => "torch-legacy",
            Format::TorchTar => "torch-tar",
            Format::Pickle => "pickle",
            Format::Safetensors => "safetensors",
            Format::HfSharded => "hf-sharded",
            Format::Dcp => "dcp",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for reading.
///
/// ```
/// use ckpt::format::LoadOptions;
/// let eager = LoadOptions::default().with_mmap(false).with_verify_crc32(true);
/// assert!(!eager.mmap && eager.verify_crc32);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Map the file and make tensors views of the map (zero-copy). When false the file is
    /// read into one heap buffer and tensors are views of that buffer.
    ///
    /// Views of a map read the file for as long as they live: truncating the file then
    /// kills the process with `SIGBUS`, rewriting it in place changes the tensors (see
    /// [`Storage`](crate::Storage#a-map-depends-on-its-file)). Copy what you keep
    /// ([`Value::detach`](crate::Value::detach), [`Tensor::to_owned_as`](crate::Tensor::to_owned_as)), or read eagerly.
    pub mmap: bool,
    /// Check the crc32 of every zip record against the central directory (torch does not),
    /// as the file is read: one more pass over the bytes.
    pub verify_crc32: bool,
    /// Check the crc32 of each storage's zip record as its bytes are first copied out of
    /// the file (a model loading them, [`Value::detach`](crate::Value::detach)), in the same
    /// pass as the copy, rather than when the file is read; `data.pkl` is checked at once.
    /// A copy of a part of a storage, or any other use, checks the storage first
    /// ([`Storage::verify_checksum`](crate::Storage::verify_checksum)); what is never copied
    /// is never checked unless asked ([`verify_checksums`]). Records whose directory crc32 is
    /// 0 (written with [`SaveOptions::crc32`] off) are not checked. What the checkpointers
    /// use to check a checkpoint they resume from at no extra pass.
    pub verify_crc32_on_copy: bool,
    /// Bounds on pickle nesting and size.
    pub limits: Limits,
    /// What to do with the pages of the map the reader reads (headers, pickles): keep them
    /// (the default), or, for a value read only to be copied elsewhere, keep as few as
    /// possible in the process (zip headers read with `pread`, the rest released once
    /// parsed), so that the file's size does not show in the process's memory. Only with
    /// `mmap`.
    pub source_pages: SourcePages,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            mmap: true,
            verify_crc32: false,
            verify_crc32_on_copy: false,
            limits: Limits::default(),
            source_pages: SourcePages::Keep,
        }
    }
}

impl LoadOptions {
    /// Sets [`LoadOptions::mmap`].
    pub fn with_mmap(mut self, mmap: bool) -> LoadOptions {
        self.mmap = mmap;
        self
    }

    /// Sets [`LoadOptions::verify_crc32`].
    pub fn with_verify_crc32(mut self, verify_crc32: bool) -> LoadOptions {
        self.verify_crc32 = verify_crc32;
        self
    }

    /// Sets [`LoadOptions::verify_crc32_on_copy`].
    pub fn with_verify_crc32_on_copy(mut self, on_copy: bool) -> LoadOptions {
        self.verify_crc32_on_copy = on_copy;
        self
    }

    /// Sets [`LoadOptions::limits`].
    pub fn with_limits(mut self, limits: Limits) -> LoadOptions {
        self.limits = limits;
        self
    }

    /// Sets [`LoadOptions::source_pages`].
    pub fn with_source_pages(mut self, source_pages: SourcePages) -> LoadOptions {
        self.source_pages = source_pages;
        self
    }
}

/// What a file held, and in which format.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The format detected from the file's content.
    pub format: Format,
    /// The value the file held.
    pub value: Value,
}

impl Loaded {
    /// `value` read from a file of `format`.
    pub fn new(format: Format, value: Value) -> Loaded {
        Loaded { format, value }
    }
}

/// Options for writing torch files.
///
/// ```
/// use ckpt::format::SaveOptions;
/// let options = SaveOptions::default().with_crc32(false).with_archive_name("archive");
/// assert_eq!(options.archive_name.as_deref(), Some("archive"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Alignment of every record's data (torch's default, 64).
    pub alignment: u64,
    /// Compute crc32 of every record (torch does by default; readers do not check it).
    pub crc32: bool,
    /// The folder name inside the archive; by default the file stem, as torch does.
    pub archive_name: Option<String>,
    /// What to do with the pages of a memory-mapped file the tensors are views of: keep
    /// them (the default), or release them behind the writer for a conversion, so that
    /// memory stays bounded whatever the file's size.
    pub source_pages: SourcePages,
}

impl Default for SaveOptions {
    fn default() -> SaveOptions {
        SaveOptions {
            alignment: 64,
            crc32: true,
            archive_name: None,
            source_pages: SourcePages::Keep,
        }
    }
}

impl SaveOptions {
    /// Sets [`SaveOptions::alignment`].
    pub fn with_alignment(mut self, alignment: u64) -> SaveOptions {
        self.alignment = alignment;
        self
    }

    /// Sets [`SaveOptions::crc32`].
    pub fn with_crc32(mut self, crc32: bool) -> SaveOptions {
        self.crc32 = crc32;
        self
    }

    /// Sets [`SaveOptions::archive_name`].
    pub fn with_archive_name(mut self, archive_name: impl Into<String>) -> SaveOptions {
        self.archive_name = Some(archive_name.into());
        self
    }

    /// Sets [`SaveOptions::source_pages`].
    pub fn with_source_pages(mut self, source_pages: SourcePages) -> SaveOptions {
        self.source_pages = source_pages;
        self
    }
}

/// Detects the format of a file from its first bytes, never its name: a zip local header
/// is a torch archive; `PYTORCH1` (torch 1.0-preview) is refused; `ustar` at offset 257 is
/// the torch <= 0.3 tar format; a u64 header length that fits the file followed by `{` is
/// safetensors; a pickle of torch's legacy magic number (any protocol) is the legacy stream;
/// any other byte that starts a pickle is a plain pickle.
pub fn detect(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(&zip_signatures::LOCAL_SIG.to_le_bytes()) {
        return Ok(Format::TorchZip);
    }
    if bytes.starts_with(b"PYTORCH1") {
        return Err(Error::unsupported(
            "a PyTorch 1.0-preview container (torch itself no longer reads it)",
        ));
    }
    if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
        return Ok(Format::TorchTar);
    }
    if bytes.len() >= 9 {
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(len);
        if bytes[8] == b'{'
            && n.checked_add(8)
                .is_some_and(|end| end <= bytes.len() as u64)
        {
            return Ok(Format::Safetensors);
        }
    }
    if torch_legacy::starts_with_magic(bytes) {
        return Ok(Format::TorchLegacy);
    }
    // The opcodes a pickle of a checkpoint starts with: the protocol (2 and above), or a
    // protocol 0/1 container or global.
    use crate::pickle::opcode::{DICT, EMPTY_DICT, EMPTY_LIST, GLOBAL, LIST, MARK, PROTO};
    match bytes.first() {
        Some(&(PROTO | MARK | EMPTY_DICT | EMPTY_LIST | GLOBAL | DICT | LIST)) => {
            Ok(Format::Pickle)
        }
        _ => Err(Error::UnknownFormat {
            first_bytes: bytes.iter().take(8).copied().collect(),
        }),
    }
}

/// Reads a checkpoint file of any supported format (see [`load_with`]). Tensors are views
/// of a memory map of the file (see [`LoadOptions::mmap`] for what that means when the file
/// changes).
pub fn load(path: impl AsRef<Path>) -> Result<Value> {
    Ok(load_with(path, &LoadOptions::default())?.value)
}

/// Reads a checkpoint of any supported format, detected from its content: a file, a
/// sharded checkpoint as one (its index file `*.index.json`, or the directory that holds
/// it; see [`find_index`]), or a DCP directory (see [`load_dcp`]). Errors name the file.
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded> {
    let path = path.as_ref();
    match layout(path)? {
        Layout::File(file) => load_file(&file, options),
        Layout::HfIndex(index) => {
            // Read as a whole file, not through a map.
            fetch_whole_if_partial(&index)?;
            let value = hf_sharded::read(&index, options, |shard, options| {
                Ok(load_file(shard, options)?.value)
            })?;
            Ok(Loaded::new(Format::HfSharded, value))
        }
        Layout::Dcp(dir) => Ok(Loaded::new(Format::Dcp, dcp::read(&dir, options, None)?)),
    }
}

/// Fetches all of `path` when it is a partial copy of a remote object (see
/// [`crate::partial`]), for a reader that does not map it.
fn fetch_whole_if_partial(path: &Path) -> Result<()> {
    let Some(source) = crate::partial::source_of(path) else {
        return Ok(());
    };
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let whole = 0..len;
    source.ensure(std::slice::from_ref(&whole)).in_file(path)
}

/// Whether `path` names a `torch.distributed.checkpoint` directory (or its `.metadata`).
pub fn is_dcp(path: impl AsRef<Path>) -> bool {
    matches!(layout(path.as_ref()), Ok(Layout::Dcp(_)))
}

/// Reads a `torch.distributed.checkpoint` directory (or its `.metadata`) as the nested state
/// that was saved; with `only`, just the entries under that top-level key (`model`) or that
/// flattened name are read (their chunks and records only), under the same nesting.
///
/// ```no_run
/// let model = ckpt::format::load_dcp("checkpoints/step_1000", &Default::default(), Some("model"))?;
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn load_dcp(
    path: impl AsRef<Path>,
    options: &LoadOptions,
    only: Option<&str>,
) -> Result<Value> {
    let path = path.as_ref();
    let dir = match layout(path)? {
        Layout::Dcp(dir) => dir,
        _ => return Err(Error::format("not a DCP checkpoint (no .metadata)").in_file(path)),
    };
    dcp::read(&dir, options, only)
}

/// What a checkpoint path names.
enum Layout {
    /// One file.
    File(std::path::PathBuf),
    /// The index of a sharded checkpoint.
    HfIndex(std::path::PathBuf),
    /// A DCP directory.
    Dcp(std::path::PathBuf),
}

/// What `path` names: an index file, a directory holding an index (or, unsharded, one
/// `model.safetensors` / `pytorch_model.bin`), or a file. A directory without a checkpoint
/// is an error.
fn layout(path: &Path) -> Result<Layout> {
    if path.is_dir() {
        if dcp::is_dcp_dir(path) {
            return Ok(Layout::Dcp(path.to_path_buf()));
        }
        if let Some(index) = find_index(path) {
            return Ok(Layout::HfIndex(index));
        }
        for single in ["model.safetensors", "pytorch_model.bin"] {
            if path.join(single).is_file() {
                return Ok(Layout::File(path.join(single)));
            }
        }
        let none = "a directory that holds no checkpoint (no DCP .metadata, no single *.index.json, no model.safetensors nor pytorch_model.bin)";
        return Err(Error::format(none).in_file(path));
    }
    if path.file_name().is_some_and(|n| n == DCP_METADATA) {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok(Layout::Dcp(dir.to_path_buf()));
    }
    Ok(match hf_sharded::is_index_file(path) {
        true => Layout::HfIndex(path.to_path_buf()),
        false => Layout::File(path.to_path_buf()),
    })
}

/// Reads one checkpoint file, its format detected from its content.
fn load_file(path: &Path, options: &LoadOptions) -> Result<Loaded> {
    if let Some(source) = crate::partial::source_of(path) {
        let file = source.file().map_err(|e| Error::io(path, e))?;
        return load_partial(path, &file, source, options);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let buffer = if options.mmap {
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            let empty = Error::UnknownFormat {
                first_bytes: Vec::new(),
            };
            return Err(empty.in_file(path));
        }
        Buffer::map(&file).map_err(|e| Error::io(path, e))?
    } else {
        eager::read_whole_file(&file).map_err(|e| Error::io(path, e))?
    };
    let mapped = buffer.is_mapped().then_some(&file);
    let buffer = Arc::new(buffer);
    let loaded = read_buffer(buffer.clone(), options, mapped).in_file(path)?;
    if options.source_pages == SourcePages::Release {
        // The pickle, the zip directory, the safetensors header: parsed, not needed again.
        buffer.release(0, buffer.as_bytes().len());
    }
    Ok(loaded)
}

/// Reads a partial local copy of a remote object (see [`crate::partial`]): a torch zip
/// archive or a safetensors file through a map of the copy, each range fetched as the reader
/// reaches it (the pickle, the zip directory and headers, the safetensors header) and the
/// tensors' bytes when they are first read; any other format, or an eager read, whole first.
fn load_partial(
    path: &Path,
    file: &std::fs::File,
    source: Arc<dyn crate::partial::RangeSource>,
    options: &LoadOptions,
) -> Result<Loaded> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        let empty = Error::UnknownFormat {
            first_bytes: Vec::new(),
        };
        return Err(empty.in_file(path));
    }
    let buffer = Buffer::map_partial(file, source).map_err(|e| Error::io(path, e))?;
    let len = buffer.as_bytes().len();
    // A safetensors header (its length, then the header, and nothing past it), or else
    // enough to tell the formats apart (`ustar` is at 257; a torch archive begins with its
    // pickle, which the reader needs anyway).
    buffer.ensure(0, len.min(8)).in_file(path)?;
    let header = buffer.as_bytes().get(..8).map_or(u64::MAX, |n| {
        u64::from_le_bytes(n.try_into().unwrap_or([0xff; 8]))
    });
    match header.checked_add(8) {
        Some(end) if header <= MAX_SAFETENSORS_HEADER && end <= len as u64 => {
            buffer.ensure(0, end as usize).in_file(path)?
        }
        _ => buffer.ensure(0, len.min(HEAD_LEN)).in_file(path)?,
    }
    let partial_read = options.mmap
        && matches!(
            detect(buffer.as_bytes()),
            Ok(Format::TorchZip | Format::Safetensors)
        );
    if !partial_read {
        buffer.ensure(0, len).in_file(path)?;
    }
    if !options.mmap {
        let whole = eager::read_whole_file(file).map_err(|e| Error::io(path, e))?;
        return read_buffer(Arc::new(whole), options, None).in_file(path);
    }
    let buffer = Arc::new(buffer);
    read_buffer(buffer, options, Some(file)).in_file(path)
}

/// The first bytes of a partial copy fetched to detect its format.
const HEAD_LEN: usize = 512;

/// The largest safetensors header a partial copy fetches before it knows the format (the
/// safetensors crate's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Reads a checkpoint held in memory.
pub fn load_bytes(bytes: Vec<u8>, options: &LoadOptions) -> Result<Loaded> {
    read_buffer(Arc::new(Buffer::Heap(bytes)), options, None)
}

/// Reads a checkpoint held in `buffer` (a map of `file`, or memory received from another
/// process) with the default options.
pub(crate) fn load_buffer(buffer: Arc<Buffer>, file: Option<&std::fs::File>) -> Result<Value> {
    Ok(read_buffer(buffer, &LoadOptions::default(), file)?.value)
}

/// Reads a checkpoint from `buffer`; `file` is the file it maps, when it is a map.
fn read_buffer(
    buffer: Arc<Buffer>,
    options: &LoadOptions,
    file: Option<&std::fs::File>,
) -> Result<Loaded> {
    let format = detect(buffer.as_bytes())?;
    let value = match format {
        Format::TorchZip => torch_zip::read(buffer, options, file)?,
        Format::TorchLegacy => torch_legacy::read(buffer, options)?,
        Format::TorchTar => torch_legacy::read_tar(buffer, options)?,
        Format::Pickle => plain_pickle::read_plain_pickle(&buffer, options)?,
        Format::Safetensors => safetensors::read(buffer)?,
        // A layout of several files, never detected from one file's bytes.
        Format::HfSharded | Format::Dcp => {
            return Err(Error::invalid(format!(
                "{format} is not a single-file format"
            )))
        }
    };
    Ok(Loaded { format, value })
}

/// Writes `value` as a torch zip archive that `torch.load(path, weights_only=True)` reads,
/// atomically (temporary file in the same directory, fsync, rename, fsync the directory).
/// Tensor bytes are streamed from their memory; the file is never built in RAM.
pub fn save_torch(path: impl AsRef<Path>, value: &Value, options: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let mut options = options.clone();
    if options.archive_name.is_none() {
        options.archive_name = Some(torch_save::archive_name_for(path));
    }
    atomic_write(path, |w| write_torch(w, value, &options)).in_file(path)
}

/// Writes a state dict as safetensors, atomically, with optional `__metadata__`.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &StateDict,
    metadata: Option<&[(String, String)]>,
) -> Result<()> {
    save_safetensors_with(path, tensors, metadata, &SafetensorsOptions::default())
}

/// [`save_safetensors`] with options (see [`SafetensorsOptions`]).
pub fn save_safetensors_with(
    path: impl AsRef<Path>,
    tensors: &StateDict,
    metadata: Option<&[(String, String)]>,
    options: &SafetensorsOptions,
) -> Result<()> {
    let path = path.as_ref();
    atomic_write(path, |w| {
        write_safetensors_with(w, tensors, metadata, options)
    })
    .in_file(path)
}

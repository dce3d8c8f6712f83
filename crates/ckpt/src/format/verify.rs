//! Checking the checksums a file carries (the zip records' crc32): of the storages of a value
//! read with [`LoadOptions::verify_crc32_on_copy`](super::LoadOptions::verify_crc32_on_copy)
//! that no copy has checked yet ([`verify_checksums`]), or of every record of a file
//! ([`verify_file`], what `ckpt ls --verify` runs).

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result, ResultExt};
use crate::format::zip::{ZipIndex, STORED};
use crate::format::{detect, Format};
use crate::tensor::{Buffer, Storage};
use crate::value::{ObjectBuild, Value};

/// What [`verify_file`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileChecksums {
    /// The file's format; only torch zip archives carry checksums.
    pub format: Format,
    /// The records whose crc32 was checked (all matched).
    pub records: usize,
    /// The records that could not be checked: compressed, or written without a crc32 (0).
    pub unchecked: usize,
    /// The bytes hashed.
    pub bytes: u64,
}

/// Checks every storage of `value` whose checksum is still to check (see
/// [`Storage::verify_checksum`]); each storage once, however many tensors share it.
pub fn verify_checksums(value: &Value) -> Result<()> {
    for storage in pending_storages([value]) {
        storage.verify_checksum()?;
    }
    Ok(())
}

/// The storages of `values` with a checksum still to check, each once.
pub(crate) fn pending_storages<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<Storage> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = values.into_iter().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => {
                let storage = t.storage();
                if storage.checksum_pending() && seen.insert(storage.id()) {
                    out.push(storage.clone());
                }
            }
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => stack.extend(items),
            Value::Dict(dict) => {
                stack.extend(dict.items.values());
                stack.extend(dict.attributes.values());
            }
            Value::Object(object) => {
                if let ObjectBuild::Call(args) | ObjectBuild::New(args) = &object.build {
                    stack.extend(args);
                }
                stack.extend(object.state.as_ref());
            }
            _ => {}
        }
    }
    out
}

/// Checks the crc32 of every record of the torch zip archive at `path` (read with `pread`, a
/// piece at a time: memory stays small whatever the file's size). A mismatch is an
/// [`Error::Checksum`] naming the record; other formats carry no checksums (`records` 0).
///
/// ```
/// use ckpt::format::{save_torch, verify_file, Format, SaveOptions};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("w.pth");
/// let t = ckpt::Tensor::from_slice(&[1.0f32, 2.0], &[2])?;
/// save_torch(&path, &ckpt::Value::Tensor(t), &SaveOptions::default())?;
/// let checked = verify_file(&path)?;
/// assert_eq!(checked.format, Format::TorchZip);
/// assert!(checked.records >= 3); // data.pkl, the storage, version, ...
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_file(path: impl AsRef<Path>) -> Result<FileChecksums> {
    let path = path.as_ref();
    verify_zip(path).in_file(path)
}

fn verify_zip(path: &Path) -> Result<FileChecksums> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::UnknownFormat {
            first_bytes: Vec::new(),
        });
    }
    // The map is only read at its start (the format) and its end (the directory); the
    // records' bytes are read with pread and never fault the map in.
    let buffer = Buffer::map(&file).map_err(|e| Error::io(path, e))?;
    let bytes = buffer.as_bytes();
    let format = detect(bytes)?;
    let mut checked = FileChecksums {
        format,
        records: 0,
        unchecked: 0,
        bytes: 0,
    };
    if format != Format::TorchZip {
        return Ok(checked);
    }
    let index = ZipIndex::parse(bytes)?;
    let mut piece = vec![0u8; crate::storage_check::CHUNK];
    for record in index.records() {
        if record.method != STORED || (record.crc32 == 0 && record.size > 0) {
            checked.unchecked += 1;
            continue;
        }
        let range = index.data_range(bytes, record)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut at = range.start;
        while at < range.end {
            let n = piece.len().min(range.end - at);
            read_at(&file, &mut piece[..n], at as u64).map_err(|e| Error::io(path, e))?;
            hasher.update(&piece[..n]);
            at += n;
        }
        let found = hasher.finalize();
        if found != record.crc32 {
            return Err(Error::Checksum {
                record: record.name.clone(),
                expected: record.crc32,
                found,
            });
        }
        checked.records += 1;
        checked.bytes += range.len() as u64;
    }
    Ok(checked)
}

#[cfg(unix)]
fn read_at(file: &File, dst: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(dst, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, dst: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(dst)
}

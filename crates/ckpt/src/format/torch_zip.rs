//! Reading torch zip archives (torch >= 1.6): records found by name under any archive folder.
//!
//! `data.pkl` is unpickled with storages resolved to zero-copy views of the `data/<key>`
//! records (one shared [`Storage`] per key, so views and tied weights stay shared).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::format::zip::{Record, ZipIndex, LOCAL_HEADER_LEN};
use crate::format::zip_data_offsets::DataOffsets;
use crate::format::{LoadOptions, SourcePages};
use crate::pickle::{
    read_pickle_in, PersistentLoad, PersistentStorageId, PickleOptions, Py2Strings, TypedStorage,
};
use crate::storage_check::CrcCheck;
use crate::tensor::{Buffer, Storage};
use crate::value::{ObjectBuild, Value};

/// Oldest and newest archive versions torch reads (`caffe2/serialize/versions.h`).
const VERSIONS: std::ops::RangeInclusive<u64> = 1..=10;

/// Reads the object saved in a torch zip archive; storages are views of `buffer`, which
/// maps `file` when `file` is given.
pub(crate) fn read(
    buffer: Arc<Buffer>,
    options: &LoadOptions,
    file: Option<&std::fs::File>,
) -> Result<Value> {
    let bytes = buffer.as_bytes();
    if buffer.is_partial() {
        ZipIndex::fetch_directory(bytes, &|range| buffer.ensure(range.start, range.len()))?;
    }
    let index = ZipIndex::parse(bytes)?;
    let prefix = archive_prefix(&index)?;
    if buffer.is_partial() {
        buffer.ensure_all(&partial_read_ranges(&index, &prefix, bytes.len() as u64))?;
    }
    let record = |name: &str| index.find(&format!("{prefix}{name}"));
    if record("constants.pkl").is_some() {
        return Err(Error::unsupported(
            "a TorchScript archive (torch.jit.save); load it with torch.jit.load and save its state_dict() with torch.save",
        ));
    }
    let version = record(".data/version")
        .or_else(|| record("version"))
        .ok_or_else(|| Error::format(format!("torch archive: no '{prefix}version' record")))?;
    let text = index.stored_bytes(bytes, version)?;
    let version_number = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Error::format(format!(
                "torch archive: '{}' is not a decimal number",
                version.name
            ))
        })?;
    if !VERSIONS.contains(&version_number) {
        return Err(Error::unsupported(format!(
            "torch archive version {version_number} (readable versions are {}..={})",
            VERSIONS.start(),
            VERSIONS.end()
        )));
    }
    let big_endian = match record("byteorder") {
        None => false,
        Some(r) => match index.stored_bytes(bytes, r)? {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(Error::format(format!(
                    "torch archive: byteorder must be 'little' or 'big', found '{}'",
                    String::from_utf8_lossy(other)
                )))
            }
        },
    };
    let pickle = record("data.pkl")
        .ok_or_else(|| Error::format(format!("torch archive: no '{prefix}data.pkl' record")))?;
    let range = index.data_range(bytes, pickle)?;
    let data = index.stored_bytes(bytes, pickle)?;
    if options.verify_crc32 || options.verify_crc32_on_copy {
        check_crc32(pickle, data)?;
    }
    let numbered = numbered_records(&index, &prefix);
    let release = options.source_pages == SourcePages::Release;
    let starts = DataOffsets::new(&index, bytes, file, release);
    let mut storages = ZipStorages {
        buffer: buffer.clone(),
        index: &index,
        starts: &starts,
        prefix: prefix.clone(),
        big_endian,
        verify_crc32: options.verify_crc32,
        on_copy: options.verify_crc32_on_copy && !options.verify_crc32,
        release,
        loaded: vec![None; index.records().len()],
        numbered: &numbered,
        full_name: String::new(),
        by_range: HashMap::new(),
        processed: 0,
    };
    let pickle_options = PickleOptions {
        py2_strings: Py2Strings::Utf8OrLatin1,
        limits: options.limits,
    };
    // numpy arrays inside the pickle stay views of the file too.
    let mut unpickle = || read_pickle_in(&buffer, range.clone(), &pickle_options, &mut storages);
    let (value, _) = if starts.worth_a_thread() {
        std::thread::scope(|scope| {
            // The pickle asks for storages 0, 1, 2, ...: the helper walks ahead of it.
            let in_order = numbered.iter().filter(|&&p| p != NONE);
            let ahead = std::thread::Builder::new()
                .name("ckpt-zip-headers".into())
                .spawn_scoped(scope, || starts.read_ahead(in_order.map(|&p| p as usize)));
            if let Err(e) = &ahead {
                tracing::debug!(error = %e, "no thread to read zip headers ahead");
            }
            let result = unpickle();
            starts.finish();
            result
        })
    } else {
        unpickle()
    }?;
    tracing::debug!(
        archive = %prefix,
        version = version_number,
        storages = storages.loaded.iter().flatten().count(),
        "read torch zip archive"
    );
    Ok(value)
}

/// What the reader reads of a partial copy besides the directory: every record but the
/// storages whole (`data.pkl`, `version`, `byteorder`, ...: small), from its local header to
/// the next record, and the local header of each storage record (30 bytes, where its data
/// offset is found), none of the storages' bytes.
fn partial_read_ranges(index: &ZipIndex, prefix: &str, file_len: u64) -> Vec<Range<u64>> {
    let mut starts: Vec<u64> = index.records().iter().map(|r| r.local_header()).collect();
    starts.push(index.directory_start());
    starts.sort_unstable();
    let storages = format!("{prefix}data/");
    index
        .records()
        .iter()
        .map(|record| {
            let at = record.local_header().min(file_len);
            let end = if record.name.starts_with(&storages) {
                at + LOCAL_HEADER_LEN as u64
            } else {
                let next = starts.partition_point(|&s| s <= at);
                starts.get(next).copied().unwrap_or(file_len)
            };
            at..end.min(file_len)
        })
        .collect()
}

/// The folder of the records: the part of the first record's name up to its first `/` (as
/// torch does), or else the folder of any `data.pkl`.
fn archive_prefix(index: &ZipIndex) -> Result<String> {
    if let Some(first) = index.records().first() {
        if let Some(slash) = first.name.find('/') {
            let prefix = &first.name[..=slash];
            if index.find(&format!("{prefix}data.pkl")).is_some() {
                return Ok(prefix.to_string());
            }
        }
    }
    index
        .records()
        .iter()
        .filter_map(|r| {
            if r.name == "data.pkl" {
                Some(String::new())
            } else {
                r.name
                    .strip_suffix("/data.pkl")
                    .map(|folder| format!("{folder}/"))
            }
        })
        .min_by_key(String::len)
        .ok_or_else(|| Error::format("not a torch archive: the zip file has no data.pkl record"))
}

/// The dtype of a storage class from a persistent id: a legacy typed storage class such as
/// `torch.FloatStorage` (also `torch.cuda.*`), or `UntypedStorage` (bytes).
pub(super) fn storage_dtype(class: &Value) -> Result<DType> {
    match class {
        Value::Object(o) if matches!(o.build, ObjectBuild::Global) => {
            storage_class_dtype(&o.module, &o.name)
        }
        other => Err(Error::format(format!(
            "persistent id: expected a storage class, found {}",
            other.short_repr(60)
        ))),
    }
}

/// The dtype of the storage class `module.name`.
fn storage_class_dtype(module: &str, name: &str) -> Result<DType> {
    if !module.starts_with("torch") {
        return Err(Error::format(format!(
            "persistent id: expected a torch storage class, found {module}.{name}"
        )));
    }
    if name == "UntypedStorage" {
        return Ok(DType::UInt8);
    }
    // Quantized storages (`QInt8Storage`, ...) among them: quantized tensors are not read.
    DType::from_storage_class(name).ok_or_else(|| Error::UnsupportedGlobal {
        module: module.to_string(),
        name: name.to_string(),
    })
}

/// Text of a persistent-id field (`str`, or Python 2 bytes as ASCII).
pub(super) fn pid_text(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Swaps every `unit`-byte group of `bytes` (big-endian storages).
pub(super) fn byteswapped(bytes: &[u8], unit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if unit > 1 {
        for chunk in out.chunks_exact_mut(unit) {
            chunk.reverse();
        }
    }
    out
}

/// Compares the crc32 of a record's bytes with the central directory's.
fn check_crc32(record: &Record, data: &[u8]) -> Result<()> {
    let crc = crc32fast::hash(data);
    if crc != record.crc32 {
        return Err(Error::Checksum {
            record: record.name.clone(),
            expected: record.crc32,
            found: crc,
        });
    }
    Ok(())
}

/// Resolves `('storage', class, key, location, numel)` to the `data/<key>` record.
struct ZipStorages<'a> {
    buffer: Arc<Buffer>,
    index: &'a ZipIndex,
    /// Data offsets of the records, shared with the thread that reads headers ahead.
    starts: &'a DataOffsets<'a>,
    prefix: String,
    big_endian: bool,
    verify_crc32: bool,
    /// Leave the check of each storage's crc32 to its first copy ([`CrcCheck`]).
    on_copy: bool,
    /// Release the pages of a record once its crc32 is checked (see [`SourcePages`]).
    release: bool,
    /// The storages made so far, by record position (a key used twice shares its storage).
    loaded: Vec<Option<Storage>>,
    /// Record positions of the storages `data/0`, `data/1`, ... ([`NONE`]: no record).
    numbered: &'a [u32],
    /// Reused for the record name of a persistent id found by name.
    full_name: String,
    /// Storages checked or byte-swapped, by data range, crc32 and swap unit.
    by_range: HashMap<(usize, usize, u32, usize), Storage>,
    /// Bytes checked or byte-swapped so far.
    processed: usize,
}

impl ZipStorages<'_> {
    fn load(&mut self, position: usize, record: &Record, dtype: DType) -> Result<Storage> {
        let bytes = self.buffer.as_bytes();
        let start = self.starts.start(position)?;
        let len = usize::try_from(record.compressed_size).unwrap_or(usize::MAX);
        let range = start..start.saturating_add(len);
        let data = bytes.get(range.clone()).ok_or_else(|| {
            Error::truncated(
                format!("zip record '{}' data", record.name),
                start as u64,
                record.compressed_size,
                bytes.len().saturating_sub(start) as u64,
            )
        })?;
        // Copied out later (never byte-swapped here): the copy checks the crc32.
        let on_copy = self.on_copy && !self.big_endian && record.crc32 != 0;
        if !(self.verify_crc32 || self.big_endian || on_copy) {
            return Storage::slice(self.buffer.clone(), range.start, range.len());
        }
        if self.verify_crc32 || self.big_endian {
            // Read here: a partial copy fetches them first.
            self.buffer.ensure(range.start, range.len())?;
        }
        // Several directory entries may name the same bytes: they share one check and one
        // swapped copy, so each byte of the file is read and copied once, not once per name.
        let unit = if self.big_endian {
            dtype.swap_unit()
        } else {
            0
        };
        let key = (range.start, range.len(), record.crc32, unit);
        if let Some(storage) = self.by_range.get(&key) {
            return Ok(storage.clone());
        }
        // Distinct records never overlap, so their bytes add up to at most the file's size;
        // more means entries whose data overlap (made by hand), each range a fresh pass.
        self.processed = self.processed.saturating_add(range.len());
        if self.processed > bytes.len() {
            return Err(Error::format(format!(
                "zip archive: the data of '{}' overlaps other records' (the records checked or copied so far add up to more than the file's {} bytes)",
                record.name,
                bytes.len()
            )));
        }
        if self.verify_crc32 || (self.on_copy && self.big_endian) {
            check_crc32(record, data)?;
            if self.release {
                self.buffer.release(range.start, range.len());
            }
        }
        let storage = if on_copy {
            let check = CrcCheck::new(record.name.clone(), record.crc32);
            Storage::slice_checked(self.buffer.clone(), range.start, range.len(), check)?
        } else if self.big_endian {
            Storage::from_vec(byteswapped(data, unit))
        } else {
            Storage::slice(self.buffer.clone(), range.start, range.len())?
        };
        self.by_range.insert(key, storage.clone());
        Ok(storage)
    }
}

impl PersistentLoad for ZipStorages<'_> {
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
        let fields = match pid {
            Value::Tuple(fields) if fields.len() == 5 => fields,
            other => {
                return Err(Error::format(format!(
                    "torch archive: expected a persistent id ('storage', class, key, location, numel), found {}",
                    other.short_repr(80)
                )))
            }
        };
        if fields.first().and_then(pid_text).as_deref() != Some("storage") {
            return Err(Error::format(format!(
                "torch archive: unknown persistent id {}",
                pid.short_repr(80)
            )));
        }
        let dtype = storage_dtype(&fields[1])?;
        let key = pid_text(&fields[2]).ok_or_else(|| {
            Error::format(format!(
                "torch archive: storage key must be a string, found {}",
                fields[2].short_repr(40)
            ))
        })?;
        let numel = match &fields[4] {
            Value::Int(n) => Ok(*n),
            other => Err(other.short_repr(40)),
        };
        self.storage(dtype, &key, numel)
    }

    fn torch_storage(&mut self, id: &PersistentStorageId<'_>) -> Result<TypedStorage> {
        let dtype = storage_class_dtype(id.class_module, id.class_name)?;
        self.storage(dtype, id.key, Ok(id.numel))
    }
}

impl ZipStorages<'_> {
    /// The storage of record `data/<key>`, holding `numel` elements of `dtype` (`numel` is
    /// the declared value's text when it is not an int).
    fn storage(
        &mut self,
        dtype: DType,
        key: &str,
        numel: std::result::Result<i64, String>,
    ) -> Result<TypedStorage> {
        // Only errors need the record name on its own.
        let name = || format!("data/{key}");
        let numel = match numel {
            Ok(n) if n >= 0 => n as u64,
            Ok(n) => return Err(numel_error(name(), n.to_string())),
            Err(found) => return Err(numel_error(name(), found)),
        };
        let (position, record) = self
            .position(key)
            .and_then(|i| Some((i, self.index.records().get(i)?)))
            .ok_or_else(|| Error::key(name(), "the archive has no record for this storage"))?;
        if let Some(Some(storage)) = self.loaded.get(position) {
            return Ok(TypedStorage {
                storage: storage.clone(),
                dtype,
            });
        }
        let expected = numel.checked_mul(dtype.size() as u64);
        if expected != Some(record.size) {
            return Err(Error::key(
                name(),
                format!(
                    "record size ({} bytes) does not match the {numel} {dtype} elements the pickle declares",
                    record.size
                ),
            ));
        }
        let storage = self.load(position, record, dtype).in_entry(&name())?;
        if let Some(slot) = self.loaded.get_mut(position) {
            *slot = Some(storage.clone());
        }
        Ok(TypedStorage { storage, dtype })
    }

    /// Where the record of storage `key` is in the index: by number for the keys torch
    /// writes (`0`, `1`, ...), else by name.
    fn position(&mut self, key: &str) -> Option<usize> {
        if let Some(&position) = canonical_number(key).and_then(|n| self.numbered.get(n)) {
            if position != NONE {
                return Some(position as usize);
            }
        }
        self.full_name.clear();
        self.full_name.push_str(&self.prefix);
        self.full_name.push_str("data/");
        self.full_name.push_str(key);
        self.index.position(&self.full_name)
    }
}

/// No record for this number.
const NONE: u32 = u32::MAX;

/// The record position of each storage `data/<n>` (torch numbers storages 0, 1, ...; gaps
/// are [`NONE`]); keys past the record count, or not written as numbers, are looked up by
/// name.
fn numbered_records(index: &ZipIndex, prefix: &str) -> Vec<u32> {
    let mut numbered = Vec::new();
    for (position, record) in index.records().iter().enumerate() {
        let Some(n) = record
            .name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("data/"))
            .and_then(canonical_number)
        else {
            continue;
        };
        // Sparse numbering (a hand-made archive) falls back to name lookups.
        if n > index.records().len() {
            continue;
        }
        if numbered.len() <= n {
            numbered.resize(n + 1, NONE);
        }
        // The first record of a duplicated name wins, as in the name index.
        if numbered[n] == NONE {
            numbered[n] = u32::try_from(position).unwrap_or(NONE);
        }
    }
    numbered
}

/// `text` as a number when it is written the way Python's `str(int)` writes one.
fn canonical_number(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.len() <= 9
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1);
    canonical.then(|| text.parse().ok()).flatten()
}

fn numel_error(name: String, found: String) -> Error {
    Error::key(
        name,
        format!("storage numel must be a non-negative int, found {found}"),
    )
}

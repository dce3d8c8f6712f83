//! Reading torch zip archives (torch >= 1.6): records found by name under any archive folder.
//!
//! `data.pkl` is unpickled with storages resolved to zero-copy views of the `data/<key>`
//! records (one shared [`Storage`] per key, so views and tied weights stay shared).

use std::collections::HashMap;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::zip::{Record, ZipIndex};
use crate::format::LoadOptions;
use crate::pickle::{read_pickle, PersistentLoad, PickleOptions, Py2Strings, TypedStorage};
use crate::tensor::{Buffer, Storage};
use crate::value::{ObjectBuild, Value};

/// Oldest and newest archive versions torch reads (`caffe2/serialize/versions.h`).
const VERSIONS: std::ops::RangeInclusive<u64> = 1..=10;

/// Reads the object saved in a torch zip archive; storages are views of `buffer`.
pub(crate) fn read(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let bytes = buffer.as_bytes();
    let index = ZipIndex::parse(bytes)?;
    let prefix = archive_prefix(&index)?;
    let record = |name: &str| index.get(&format!("{prefix}{name}"));
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
    if options.verify_crc32 {
        check_crc32(pickle, data)?;
    }
    let mut storages = ZipStorages {
        buffer: buffer.clone(),
        index: &index,
        prefix: prefix.clone(),
        big_endian,
        verify_crc32: options.verify_crc32,
        loaded: HashMap::new(),
    };
    let pickle_options = PickleOptions {
        py2_strings: Py2Strings::Utf8OrLatin1,
        limits: options.limits,
    };
    let (value, _) = read_pickle(data, range.start as u64, &pickle_options, &mut storages)?;
    tracing::debug!(
        archive = %prefix,
        version = version_number,
        storages = storages.loaded.len(),
        "read torch zip archive"
    );
    Ok(value)
}

/// The folder of the records: the part of the first record's name up to its first `/` (as
/// torch does), or else the folder of any `data.pkl`.
fn archive_prefix(index: &ZipIndex) -> Result<String> {
    if let Some(first) = index.records().first() {
        if let Some(slash) = first.name.find('/') {
            let prefix = &first.name[..=slash];
            if index.get(&format!("{prefix}data.pkl")).is_some() {
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
    let (module, name) = match class {
        Value::Object(o) if matches!(o.build, ObjectBuild::Global) => (&o.module, &o.name),
        other => {
            return Err(Error::format(format!(
                "persistent id: expected a storage class, found {}",
                other.short_repr(60)
            )))
        }
    };
    if !module.starts_with("torch") {
        return Err(Error::format(format!(
            "persistent id: expected a torch storage class, found {module}.{name}"
        )));
    }
    if name == "UntypedStorage" {
        return Ok(DType::UInt8);
    }
    if name.starts_with("QInt") || name.starts_with("QUInt") {
        return Err(Error::unsupported(format!(
            "quantized storage {module}.{name} (quantized tensors are not supported)"
        )));
    }
    DType::from_storage_class(name)
        .ok_or_else(|| Error::format(format!("unknown storage class {module}.{name}")))
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
        return Err(Error::format(format!(
            "zip record '{}': crc32 {crc:08x} does not match the directory's {:08x}",
            record.name, record.crc32
        )));
    }
    Ok(())
}

/// Resolves `('storage', class, key, location, numel)` to the `data/<key>` record.
struct ZipStorages<'a> {
    buffer: Arc<Buffer>,
    index: &'a ZipIndex,
    prefix: String,
    big_endian: bool,
    verify_crc32: bool,
    loaded: HashMap<String, Storage>,
}

impl ZipStorages<'_> {
    fn load(&self, record: &Record, dtype: DType) -> Result<Storage> {
        let bytes = self.buffer.as_bytes();
        let data = self.index.stored_bytes(bytes, record)?;
        if self.verify_crc32 {
            check_crc32(record, data)?;
        }
        if self.big_endian {
            return Ok(Storage::from_vec(byteswapped(data, dtype.swap_unit())));
        }
        let range = self.index.data_range(bytes, record)?;
        Storage::slice(self.buffer.clone(), range.start, range.len())
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
        let name = format!("data/{key}");
        let numel = match &fields[4] {
            Value::Int(n) if *n >= 0 => *n as u64,
            other => {
                return Err(Error::key(
                    name,
                    format!(
                        "storage numel must be a non-negative int, found {}",
                        other.short_repr(40)
                    ),
                ))
            }
        };
        if let Some(storage) = self.loaded.get(&key) {
            return Ok(TypedStorage {
                storage: storage.clone(),
                dtype,
            });
        }
        let record = self
            .index
            .get(&format!("{}{name}", self.prefix))
            .ok_or_else(|| {
                Error::key(name.clone(), "the archive has no record for this storage")
            })?;
        let expected = numel.checked_mul(dtype.size() as u64);
        if expected != Some(record.size) {
            return Err(Error::key(
                name,
                format!(
                    "record size ({} bytes) does not match the {numel} {dtype} elements the pickle declares",
                    record.size
                ),
            ));
        }
        let storage = self.load(record, dtype).map_err(|e| match e {
            Error::Format { message } => Error::key(name.clone(), message),
            other => other,
        })?;
        self.loaded.insert(key, storage.clone());
        Ok(TypedStorage { storage, dtype })
    }
}

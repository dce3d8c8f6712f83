//! Reading the pre-1.6 torch stream (magic number, protocol version, sys info, the object,
//! the storage key list, raw storages) and the torch <= 0.3 tar format.
//!
//! The raw section can only be walked once every storage's dtype is known, and dtypes are
//! only known from the object pickle, so the object is unpickled twice: first to collect
//! the storages (resolved to placeholder views of the right length), then with the real
//! zero-copy views.

use std::collections::HashMap;
use std::sync::Arc;

use num_bigint::BigInt;

use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::format::torch_zip::{byteswapped, pid_text, storage_dtype};
use crate::format::{LoadOptions, SourcePages, STREAM_CHUNK};
use crate::pickle::{read_pickle, Limits, PersistentLoad, PickleOptions, Py2Strings, TypedStorage};
use crate::tensor::{Buffer, Storage};
use crate::value::Value;

/// The first pickle of every legacy file.
const MAGIC_NUMBER: u128 = 0x1950_A86A_20F9_469C_FC6C;
/// The second pickle.
const PROTOCOL_VERSION: i64 = 1001;

/// Refuses persistent ids (the header pickles have none).
struct NoPersistentIds;

impl PersistentLoad for NoPersistentIds {
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
        Err(Error::format(format!(
            "unexpected persistent id {} in a header pickle",
            pid.short_repr(60)
        )))
    }
}

fn is_magic(value: &Value) -> bool {
    matches!(value, Value::BigInt(b) if *b == BigInt::from(MAGIC_NUMBER))
}

/// Whether `bytes` start with a pickle of torch's legacy magic number. Reads at most the
/// first 64 bytes, whatever the protocol of that pickle.
pub(crate) fn starts_with_magic(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    let options = PickleOptions {
        py2_strings: Py2Strings::Latin1,
        limits: Limits {
            max_depth: 4,
            max_values: 64,
        },
    };
    matches!(read_pickle(head, 0, &options, &mut NoPersistentIds), Ok((v, _)) if is_magic(&v))
}

/// Reads a legacy torch file.
pub(crate) fn read(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let bytes = buffer.as_bytes();
    let pickle_options = PickleOptions {
        py2_strings: Py2Strings::Utf8OrLatin1,
        limits: options.limits,
    };
    let header = |pos: usize| -> Result<(Value, usize)> {
        let (value, len) = read_pickle(
            bytes.get(pos..).unwrap_or_default(),
            pos as u64,
            &pickle_options,
            &mut NoPersistentIds,
        )?;
        Ok((value, pos + len))
    };
    let (magic, pos) = header(0)?;
    if !is_magic(&magic) {
        return Err(Error::format("not a legacy torch file: wrong magic number"));
    }
    let (version, pos) = header(pos)?;
    if version.as_int() != Some(PROTOCOL_VERSION) {
        return Err(Error::unsupported(format!(
            "legacy torch protocol version {} (expected {PROTOCOL_VERSION})",
            version.short_repr(30)
        )));
    }
    let (sys_info, object_start) = header(pos)?;
    let big_endian = sys_info.get("little_endian").and_then(Value::as_bool) == Some(false);

    let mut collect = Collect {
        buffer: buffer.clone(),
        found: HashMap::new(),
    };
    let (_, object_len) = read_pickle(
        &bytes[object_start..],
        object_start as u64,
        &pickle_options,
        &mut collect,
    )?;
    let (keys, raw_start) = header(object_start + object_len)?;
    let keys = match keys {
        Value::List(keys) | Value::Tuple(keys) => keys,
        other => {
            return Err(Error::format(format!(
                "legacy torch file: expected the list of storage keys, found a {}",
                other.type_name()
            )))
        }
    };
    let release = options.source_pages == SourcePages::Release;
    let roots = walk_raw_section(&buffer, raw_start, &keys, &collect.found, release)?;
    let mut resolve = Resolve {
        buffer: buffer.clone(),
        roots,
        found: collect.found,
        big_endian,
        loaded: HashMap::new(),
        swapped: HashMap::new(),
    };
    let (value, _) = read_pickle(
        &bytes[object_start..],
        object_start as u64,
        &pickle_options,
        &mut resolve,
    )?;
    tracing::debug!(storages = keys.len(), "read legacy torch file");
    Ok(value)
}

/// Reads a torch <= 0.3 tar file.
pub(crate) fn read_tar(buffer: Arc<Buffer>, options: &LoadOptions) -> Result<Value> {
    let _ = (buffer, options);
    Err(Error::unsupported(
        "the torch <= 0.3 tar checkpoint format; load it with an old torch and re-save it with torch.save",
    ))
}

/// Where each storage's bytes lie: for each key of the sorted list, a `u64` element count
/// then the elements. With `release`, the pages read for the counts are released every few
/// MiB (small storages put a count on every page of the file).
fn walk_raw_section(
    buffer: &Buffer,
    start: usize,
    keys: &[Value],
    found: &HashMap<String, (DType, u64)>,
    release: bool,
) -> Result<HashMap<String, (usize, usize)>> {
    let bytes = buffer.as_bytes();
    let mut roots = HashMap::with_capacity(keys.len());
    let mut pos = start;
    let mut released = start;
    for key in keys {
        if release && pos - released >= STREAM_CHUNK {
            buffer.release(released, pos - released);
            released = pos;
        }
        let key = pid_text(key).ok_or_else(|| {
            Error::format(format!(
                "legacy torch file: storage keys must be strings, found {}",
                key.short_repr(40)
            ))
        })?;
        let &(dtype, numel) = found
            .get(&key)
            .ok_or_else(|| Error::key(&key, "storage listed but never referenced by the pickle"))?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|raw| {
                let mut a = [0u8; 8];
                a.copy_from_slice(raw);
                u64::from_le_bytes(a)
            })
            .ok_or_else(|| {
                let available = bytes.len().saturating_sub(pos) as u64;
                Error::truncated("storage size", pos as u64, 8, available).in_entry(&key)
            })?;
        if count != numel {
            return Err(Error::key(
                &key,
                format!(
                    "the file holds {count} elements at byte {pos}, the pickle declares {numel}"
                ),
            ));
        }
        let data = pos + 8;
        let available = bytes.len().saturating_sub(data);
        let len = byte_len(count, dtype, &key)?;
        if len > available {
            let what = format!("{count} {dtype} elements");
            let error = Error::truncated(what, data as u64, len as u64, available as u64);
            return Err(error.in_entry(&key));
        }
        roots.insert(key, (data, len));
        pos = data + len;
    }
    Ok(roots)
}

/// The fields of a legacy persistent id
/// `('storage', class, key, location, numel, view_metadata)`.
struct Pid {
    dtype: DType,
    key: String,
    numel: u64,
    /// `(view_key, offset, size)` in elements of the root storage.
    view: Option<(String, u64, u64)>,
}

fn parse_pid(pid: &Value) -> Result<Pid> {
    let fields = match pid {
        Value::Tuple(fields) => fields.as_slice(),
        other => {
            return Err(Error::format(format!(
                "legacy torch file: expected a persistent id tuple, found {}",
                other.short_repr(80)
            )))
        }
    };
    match fields.first().and_then(pid_text).as_deref() {
        Some("storage") if fields.len() == 6 => {}
        Some("module") => {
            return Err(Error::unsupported(
                "a pickled nn.Module (torch.save(model)); save model.state_dict() instead",
            ))
        }
        _ => {
            return Err(Error::format(format!(
                "legacy torch file: unknown persistent id {}",
                pid.short_repr(80)
            )))
        }
    }
    let dtype = storage_dtype(&fields[1])?;
    let key = pid_text(&fields[2]).ok_or_else(|| {
        Error::format(format!(
            "legacy torch file: storage key must be a string, found {}",
            fields[2].short_repr(40)
        ))
    })?;
    let count = |v: &Value, what: &str| match v {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        other => Err(Error::key(
            &key,
            format!(
                "{what} must be a non-negative int, found {}",
                other.short_repr(40)
            ),
        )),
    };
    let numel = count(&fields[4], "storage numel")?;
    let view = match &fields[5] {
        Value::None => None,
        Value::Tuple(v) if v.len() == 3 => {
            let view_key = pid_text(&v[0])
                .ok_or_else(|| Error::key(&key, "storage view key must be a string"))?;
            Some((
                view_key,
                count(&v[1], "view offset")?,
                count(&v[2], "view size")?,
            ))
        }
        other => {
            return Err(Error::key(
                &key,
                format!("unknown storage view metadata {}", other.short_repr(60)),
            ))
        }
    };
    Ok(Pid {
        dtype,
        key,
        numel,
        view,
    })
}

fn byte_len(count: u64, dtype: DType, key: &str) -> Result<usize> {
    count
        .checked_mul(dtype.size() as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::key(key, format!("{count} {dtype} elements overflow")))
}

/// First pass: records each storage's dtype and size, returning views of the file of the
/// declared length as placeholders (a size beyond the file is an error right away).
struct Collect {
    buffer: Arc<Buffer>,
    found: HashMap<String, (DType, u64)>,
}

impl PersistentLoad for Collect {
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
        let pid = parse_pid(pid)?;
        let (dtype, numel) = *self
            .found
            .entry(pid.key.clone())
            .or_insert((pid.dtype, pid.numel));
        let count = pid.view.as_ref().map_or(numel, |v| v.2);
        let len = byte_len(count, dtype, &pid.key)?;
        let storage = Storage::slice(self.buffer.clone(), 0, len).in_entry(&pid.key)?;
        Ok(TypedStorage {
            storage,
            dtype: pid.dtype,
        })
    }
}

/// Second pass: storages are views of the raw section (of a byte-swapped copy of it for
/// files written on big-endian machines), one shared storage per key or view key.
struct Resolve {
    buffer: Arc<Buffer>,
    roots: HashMap<String, (usize, usize)>,
    /// Each key's dtype and element count, from the first pass.
    found: HashMap<String, (DType, u64)>,
    big_endian: bool,
    loaded: HashMap<String, Storage>,
    /// Byte-swapped copies of big-endian storages, by key: every view of a storage is a
    /// view of its one copy, so a storage is swapped once however many views it has.
    swapped: HashMap<String, Arc<Buffer>>,
}

impl Resolve {
    /// The `len` bytes at `begin` of storage `key`, whose bytes are `root` in the file.
    fn storage(
        &mut self,
        key: &str,
        root: (usize, usize),
        begin: usize,
        len: usize,
    ) -> Result<Storage> {
        if !self.big_endian {
            return Storage::slice(self.buffer.clone(), root.0 + begin, len);
        }
        let copy = match self.swapped.get(key) {
            Some(copy) => copy.clone(),
            None => {
                let unit = self
                    .found
                    .get(key)
                    .map_or(1, |(dtype, _)| dtype.swap_unit());
                let bytes = self
                    .buffer
                    .as_bytes()
                    .get(root.0..root.0 + root.1)
                    .unwrap_or_default();
                let copy = Arc::new(Buffer::Heap(byteswapped(bytes, unit)));
                self.swapped.insert(key.to_string(), copy.clone());
                copy
            }
        };
        Storage::slice(copy, begin, len)
    }
}

impl PersistentLoad for Resolve {
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
        let pid = parse_pid(pid)?;
        let &(start, len) = self
            .roots
            .get(&pid.key)
            .ok_or_else(|| Error::key(&pid.key, "storage missing from the key list"))?;
        let root = (start, len);
        let (cache_key, begin, len) = match &pid.view {
            None => (pid.key.clone(), 0, len),
            Some((view_key, offset, size)) => {
                let begin = byte_len(*offset, pid.dtype, &pid.key)?;
                let size = byte_len(*size, pid.dtype, &pid.key)?;
                if !matches!(begin.checked_add(size), Some(end) if end <= len) {
                    return Err(Error::key(
                        &pid.key,
                        format!("storage view {view_key} lies outside its {len}-byte storage"),
                    ));
                }
                (format!("view:{view_key}"), begin, size)
            }
        };
        if let Some(storage) = self.loaded.get(&cache_key) {
            return Ok(TypedStorage {
                storage: storage.clone(),
                dtype: pid.dtype,
            });
        }
        let storage = self.storage(&pid.key, root, begin, len)?;
        self.loaded.insert(cache_key, storage.clone());
        Ok(TypedStorage {
            storage,
            dtype: pid.dtype,
        })
    }
}

//! safetensors files (`docs/formats.md#safetensors`).
//!
//! Reading goes through the `safetensors` crate's header parser and validation (header size
//! cap, offsets covering the data exactly); tensors are zero-copy views of the file buffer,
//! in the order of their data offsets (for files written by safetensors itself: by
//! decreasing dtype alignment, then name).
//!
//! Writing produces the same bytes as the crate's `serialize` (tensors sorted by decreasing
//! dtype alignment then name, JSON header padded with spaces to 8 bytes) but streams: the
//! crate can only build the whole file in a `Vec` or open a path itself, while our callers
//! hand us a writer (the atomic temporary file), so the header is written here with
//! `serde_json` and each tensor's bytes go straight from its storage to the writer.
//! `__metadata__` keeps the caller's order, so the output is deterministic.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::format::stream::{Copier, SourcePages};
use crate::tensor::{contiguous_strides, Buffer, Storage, Tensor};
use crate::value::{Dict, Key, StateDict, Value};
use crate::walk;

/// The attribute under which [`read`] keeps a file's `__metadata__` (a dict of strings).
pub const METADATA_ATTRIBUTE: &str = "__metadata__";

/// The safetensors code for `dtype`, among those the `safetensors` crate can validate.
fn to_safetensors(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::Bool => Dtype::BOOL,
        DType::UInt8 => Dtype::U8,
        DType::Int8 => Dtype::I8,
        DType::Float8E5M2 => Dtype::F8_E5M2,
        DType::Float8E4M3Fn => Dtype::F8_E4M3,
        DType::Int16 => Dtype::I16,
        DType::UInt16 => Dtype::U16,
        DType::Float16 => Dtype::F16,
        DType::BFloat16 => Dtype::BF16,
        DType::Int32 => Dtype::I32,
        DType::UInt32 => Dtype::U32,
        DType::Float32 => Dtype::F32,
        DType::Float64 => Dtype::F64,
        DType::Int64 => Dtype::I64,
        DType::UInt64 => Dtype::U64,
        DType::Complex128
        | DType::Complex64
        | DType::Complex32
        | DType::Float8E4M3Fnuz
        | DType::Float8E5M2Fnuz => return None,
    })
}

/// The safetensors crate's error as a format error. Its messages include their cause's:
/// the cause is kept as the source and the message says the rest, so a printed chain says
/// each thing once.
fn st_error(e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidHeader(cause) => Error::format_caused("safetensors header: not UTF-8", cause),
        E::InvalidHeaderDeserialization(cause) | E::JsonError(cause) => {
            Error::format_caused("safetensors header: invalid JSON", cause)
        }
        E::IoError(cause) => Error::io_unnamed(cause),
        other => Error::format(format!("invalid safetensors file: {other}")),
    }
}

/// Reads a safetensors file as an `OrderedDict` of tensors in data-offset order, with its
/// `__metadata__` (if any) as the `__metadata__` attribute, a dict of strings sorted by key.
/// Tensors are views of `buffer` (nothing is copied).
pub(crate) fn read(buffer: Arc<Buffer>) -> Result<Value> {
    let bytes = buffer.as_bytes();
    if buffer.is_partial() {
        // A partial copy: the header only (the tensors' bytes come when they are read).
        buffer.ensure(0, bytes.len().min(8))?;
        let header = bytes
            .get(..8)
            .map_or(0, |n| u64::from_le_bytes(n.try_into().unwrap_or_default()));
        let header = usize::try_from(header).unwrap_or(usize::MAX);
        buffer.ensure(8, header.min(bytes.len().saturating_sub(8)))?;
    }
    check_offsets(bytes)?;
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(st_error)?;
    let data_start = 8 + header_len;
    let mut dict = Dict::ordered();
    for name in metadata.offset_keys() {
        let info = metadata
            .info(&name)
            .ok_or_else(|| Error::format(format!("safetensors: tensor '{name}' not indexed")))?;
        let code = info.dtype.to_string();
        let dtype = DType::from_safetensors_name(&code).ok_or_else(|| {
            Error::unsupported(format!("safetensors dtype {code}")).in_entry(name.as_str())
        })?;
        let (begin, end) = info.data_offsets;
        let storage = Storage::slice(buffer.clone(), data_start + begin, end - begin)?;
        let tensor = Tensor::new(
            dtype,
            info.shape.clone(),
            contiguous_strides(&info.shape),
            0,
            storage,
        )
        .in_entry(&name)?;
        dict.insert(name, Value::Tensor(tensor));
    }
    if let Some(meta) = metadata.metadata() {
        let sorted: BTreeMap<&String, &String> = meta.iter().collect();
        let mut attrs = Dict::new();
        for (k, v) in sorted {
            attrs.insert(k.as_str(), Value::Str(v.clone()));
        }
        dict.attributes
            .insert(METADATA_ATTRIBUTE.into(), Value::Dict(attrs));
    }
    Ok(Value::Dict(dict))
}

/// Checks that every tensor's data offsets lie within the file before the `safetensors`
/// crate sees the header: the crate adds the last end offset to the header's length
/// unchecked, so offsets near 2^64 overflow there (a panic in builds with overflow checks).
/// Headers the crate would refuse for another reason pass, and it says why.
fn check_offsets(bytes: &[u8]) -> Result<()> {
    let Some(header) = bytes
        .get(..8)
        .and_then(|raw| usize::try_from(u64::from_le_bytes(raw.try_into().ok()?)).ok())
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Ok(());
    };
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    let mut de = serde_json::Deserializer::from_slice(header);
    match serde::Deserializer::deserialize_map(&mut de, OffsetsWithin(data_len)) {
        Ok(Some((name, begin, end))) => Err(Error::format(format!(
            "invalid safetensors file: tensor '{name}' has data offsets [{begin}, {end}] outside the {data_len} bytes of data"
        ))),
        // A header that is no JSON map of tensors: the crate says what is wrong with it.
        Ok(None) | Err(_) => Ok(()),
    }
}

/// Visits the header's entries without keeping them, checking each `data_offsets`.
struct OffsetsWithin(u64);

/// The one field of a tensor entry [`check_offsets`] needs.
#[derive(serde::Deserialize)]
struct Offsets {
    data_offsets: Option<(u64, u64)>,
}

impl<'de> serde::de::Visitor<'de> for OffsetsWithin {
    /// The first tensor whose data lie outside: name, begin, end.
    type Value = Option<(String, u64, u64)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of tensors")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        // The whole map is read (serde_json refuses a map left half read).
        let mut outside = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let entry: Offsets = map.next_value()?;
            if let Some((begin, end)) = entry.data_offsets {
                if outside.is_none() && (begin > end || end > self.0) {
                    outside = Some((name, begin, end));
                }
            }
        }
        Ok(outside)
    }
}

/// Options for writing safetensors files.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SafetensorsOptions {
    /// What to do with the pages of a memory-mapped file the tensors are views of (keep
    /// them, the default, or release them behind the writer for a conversion).
    pub source_pages: SourcePages,
}

impl SafetensorsOptions {
    /// Sets [`SafetensorsOptions::source_pages`].
    pub fn with_source_pages(mut self, source_pages: SourcePages) -> SafetensorsOptions {
        self.source_pages = source_pages;
        self
    }
}

/// Writes tensors as safetensors with optional `__metadata__` (kept in the given order).
/// Non-contiguous tensors are gathered; contiguous ones are written from their memory.
/// Dtypes the `safetensors` crate lacks (complex, float8 fnuz) are an error naming the key.
pub fn write_safetensors(
    out: &mut dyn Write,
    tensors: &StateDict,
    metadata: Option<&[(String, String)]>,
) -> Result<()> {
    write_safetensors_with(out, tensors, metadata, &SafetensorsOptions::default())
}

/// [`write_safetensors`] with options: with [`SourcePages::Release`], tensors that are views
/// of a memory-mapped file are copied a piece at a time and their pages released once
/// written, so memory stays bounded whatever the file's size (a strided view is gathered a
/// piece at a time too; its storage's pages are released once it is written).
pub fn write_safetensors_with(
    out: &mut dyn Write,
    tensors: &StateDict,
    metadata: Option<&[(String, String)]>,
    options: &SafetensorsOptions,
) -> Result<()> {
    let mut entries = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors.iter() {
        let dtype = to_safetensors(tensor.dtype()).ok_or_else(|| {
            Error::unsupported(format!("safetensors cannot store dtype {}", tensor.dtype()))
                .in_entry(name)
        })?;
        entries.push((name, dtype, tensor));
    }
    entries.sort_by(|(ln, ld, _), (rn, rd, _)| rd.cmp(ld).then(ln.cmp(rn)));

    let mut header = String::from("{");
    let mut first = true;
    let mut push_key = |header: &mut String, key: &str| -> Result<()> {
        if !first {
            header.push(',');
        }
        first = false;
        header.push_str(&json_string(key)?);
        header.push(':');
        Ok(())
    };
    if let Some(meta) = metadata {
        push_key(&mut header, "__metadata__")?;
        header.push('{');
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&json_string(k)?);
            header.push(':');
            header.push_str(&json_string(v)?);
        }
        header.push('}');
    }
    let mut offset = 0usize;
    for (name, dtype, tensor) in &entries {
        push_key(&mut header, name)?;
        let end = offset.checked_add(tensor.nbytes()).ok_or_else(|| {
            Error::key(
                *name,
                "the tensors add up to more bytes than a file can hold",
            )
        })?;
        let shape = serde_json::to_string(tensor.shape()).map_err(Error::external)?;
        header.push_str(&format!(
            "{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{offset},{end}]}}"
        ));
        offset = end;
    }
    header.push('}');
    let padded = header.len().next_multiple_of(8);
    let mut header = header.into_bytes();
    header.resize(padded, b' ');

    let io = Error::io_unnamed;
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let mut copier = Copier::new(options.source_pages);
    for (name, _, tensor) in &entries {
        copier.tensor(name, tensor, &mut |bytes| out.write_all(bytes).map_err(io))?;
    }
    copier.finish();
    out.flush().map_err(io)?;
    Ok(())
}

fn json_string(s: &str) -> Result<String> {
    serde_json::to_string(s).map_err(Error::external)
}

/// Flattens nested dicts of tensors into one state dict with `.`-joined keys (non-string
/// keys by their Python repr). Lists and tuples holding tensors are flattened by index, and
/// opaque objects holding tensors by their parts as [`crate::walk::Step::flat_part`] names
/// them (attributes by name, `__args__.i`, `__state__`).
/// Every other value (and every empty container) is returned by path as the second element,
/// in order, so callers can report or drop it. The root's `_metadata` attribute is kept.
/// A tensor whose joined name is already taken (`{"a.b": x, "a": {"b": y}}`) is returned
/// with the other values too, never dropped.
pub fn flatten_tensors(value: &Value) -> (StateDict, Vec<(String, Value)>) {
    let mut sd = StateDict::new();
    let mut others = Vec::new();
    if let Value::Dict(d) = value {
        sd.metadata = d.attributes.get("_metadata").cloned();
    }
    // Explicit stack (children pushed in reverse) keeps file order without recursion.
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), value)];
    while let Some((path, value)) = stack.pop() {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => {
                if sd.tensors.contains_key(&path) {
                    others.push((path, value.clone()));
                } else {
                    sd.insert(path, t.clone());
                }
            }
            Value::Dict(d) if !d.is_empty() => {
                for (key, child) in d.items.iter().rev() {
                    let name = match key {
                        Key::Str(s) => join(s),
                        other => join(&other.to_string()),
                    };
                    stack.push((name, child));
                }
            }
            Value::List(_) | Value::Tuple(_) | Value::Object(_) if holds_tensor(value) => {
                let children: Vec<_> = walk::children(value).into_iter().flatten().collect();
                for (step, child) in children.into_iter().rev() {
                    stack.push((join(&step.flat_part()), child));
                }
            }
            other => others.push((path, other.clone())),
        }
    }
    (sd, others)
}

/// Whether a tensor is anywhere inside `value` (iterative, like the flattening).
fn holds_tensor(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Tensor(_) | Value::Parameter(_) | Value::NdArray(_) => return true,
            other => stack.extend(walk::children(other).into_iter().flatten().map(|(_, c)| c)),
        }
    }
    false
}

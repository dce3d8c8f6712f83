//! DCP's `.metadata`: a pickle of `torch.distributed.checkpoint.metadata.Metadata`, read by
//! ckpt's pickle reader (which never runs code: every class stays an opaque object) and
//! understood here from the objects' states. Only the dataclasses DCP writes are accepted
//! where they are expected; anything else there is an error naming the entry.

use std::collections::HashMap;

use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::value::{Object, Value};

const METADATA_MODULE: &str = "torch.distributed.checkpoint.metadata";
const FILESYSTEM_MODULE: &str = "torch.distributed.checkpoint.filesystem";

/// A checkpoint's entries, how to nest them, and where their bytes are.
#[derive(Debug)]
pub(crate) struct Metadata {
    /// Every flattened entry (`model.fc.weight`, `optim.param_groups.0.lr`), in file order.
    pub entries: Vec<(String, Entry)>,
    /// The path of each flattened entry in the nested state (`("model", "fc.weight")`).
    pub paths: HashMap<String, Vec<PathPart>>,
    /// Where each tensor chunk (by entry and offsets) or byte record (no offsets) is stored.
    pub storage: StorageMap,
}

/// Storage records by entry name and chunk offsets (`None` for a byte record).
pub(crate) type StorageMap = HashMap<(String, Option<Vec<usize>>), StorageInfo>;

/// One flattened entry.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A tensor, stored as chunks.
    Tensor {
        dtype: DType,
        size: Vec<usize>,
        chunks: Vec<Chunk>,
    },
    /// A `torch.save`d non-tensor value.
    Bytes,
}

/// One chunk of a tensor: where it starts in the global tensor, and its shape.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub offsets: Vec<usize>,
    pub sizes: Vec<usize>,
}

/// A step of a nested path: a dict key or a list index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathPart {
    Key(String),
    Index(usize),
}

/// Where a record is: a file of the directory and a byte range.
#[derive(Debug, Clone)]
pub(crate) struct StorageInfo {
    pub relative_path: String,
    pub offset: u64,
    pub length: u64,
    /// Transforms applied when writing (compression, ...): none is supported.
    pub transforms: Vec<String>,
}

/// Understands the value of a `.metadata` pickle.
pub(crate) fn parse(root: &Value) -> Result<Metadata> {
    let metadata = dataclass(root, METADATA_MODULE, "Metadata")?;
    let sdm = field(metadata, "state_dict_metadata")?;
    let Value::Dict(sdm) = sdm else {
        return Err(expected("state_dict_metadata", "a dict", sdm));
    };
    let mut entries = Vec::with_capacity(sdm.len());
    for (key, value) in sdm.iter() {
        let name = key.as_str().ok_or_else(|| {
            Error::format(format!(
                "state_dict_metadata: the key {key} is not a string"
            ))
        })?;
        let entry = parse_entry(value).in_entry(name)?;
        entries.push((name.to_string(), entry));
    }
    let paths = match metadata.attribute("planner_data") {
        Some(Value::Dict(planner)) => planner
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    parse_path(v).in_entry(&format!("planner_data.{k}"))?,
                ))
            })
            .collect::<Result<_>>()?,
        // No planner data (another planner): the flattened names stay flat.
        _ => HashMap::new(),
    };
    let storage = parse_storage(field(metadata, "storage_data")?)?;
    Ok(Metadata {
        entries,
        paths,
        storage,
    })
}

fn parse_entry(value: &Value) -> Result<Entry> {
    let object = as_object(value)?;
    match (object.module.as_str(), object.name.as_str()) {
        (METADATA_MODULE, "BytesStorageMetadata") => Ok(Entry::Bytes),
        (METADATA_MODULE, "TensorStorageMetadata") => {
            let properties = dataclass(
                field(object, "properties")?,
                METADATA_MODULE,
                "TensorProperties",
            )?;
            // TensorProperties pickles its state as a tuple: (dtype, layout, ...).
            let dtype = match properties.state.as_ref() {
                Some(Value::Tuple(parts)) => match parts.first() {
                    Some(Value::DType(d)) => *d,
                    other => {
                        return Err(Error::format(format!(
                            "TensorProperties: the dtype is {}",
                            other.map_or("missing".into(), |v| v.type_name())
                        )))
                    }
                },
                _ => return Err(Error::format(
                    "TensorProperties: the state is not the (dtype, layout, ...) tuple DCP writes",
                )),
            };
            let size = sizes(field(object, "size")?).in_entry("size")?;
            let Value::List(raw_chunks) = field(object, "chunks")? else {
                return Err(Error::format("TensorStorageMetadata: chunks is not a list"));
            };
            let mut chunks = Vec::with_capacity(raw_chunks.len());
            for (i, chunk) in raw_chunks.iter().enumerate() {
                let chunk = dataclass(chunk, METADATA_MODULE, "ChunkStorageMetadata")
                    .and_then(|c| {
                        Ok(Chunk {
                            offsets: sizes(field(c, "offsets")?)?,
                            sizes: sizes(field(c, "sizes")?)?,
                        })
                    })
                    .in_entry(&format!("chunks[{i}]"))?;
                chunks.push(chunk);
            }
            Ok(Entry::Tensor {
                dtype,
                size,
                chunks,
            })
        }
        _ => Err(Error::format(format!(
            "a {} where DCP writes TensorStorageMetadata or BytesStorageMetadata",
            object.qualified_name()
        ))),
    }
}

/// `storage_data`: a dict keyed by `MetadataIndex` objects, which the pickle reader keeps as
/// the pairs of an opaque `dict(...)` call (an empty one is a plain dict).
fn parse_storage(value: &Value) -> Result<StorageMap> {
    let pairs: &[Value] = match value {
        Value::Dict(d) if d.is_empty() => &[],
        Value::Object(o) if o.qualified_name() == "builtins.dict" => match o.args() {
            [Value::List(pairs)] => pairs,
            _ => return Err(Error::format("storage_data: not the pairs of a dict")),
        },
        other => {
            return Err(expected(
                "storage_data",
                "a dict keyed by MetadataIndex",
                other,
            ))
        }
    };
    let mut storage = HashMap::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        let (index, info) = match pair {
            Value::Tuple(kv) if kv.len() == 2 => (&kv[0], &kv[1]),
            _ => {
                return Err(Error::format(format!(
                    "storage_data[{i}]: not a (key, value) pair"
                )))
            }
        };
        let index = dataclass(index, METADATA_MODULE, "MetadataIndex")
            .in_entry(&format!("storage_data[{i}]"))?;
        let fqn = match field(index, "fqn")? {
            Value::Str(s) => s.clone(),
            other => return Err(expected("MetadataIndex.fqn", "a string", other)),
        };
        let offset = match index.attribute("offset") {
            None | Some(Value::None) => None,
            Some(v) => Some(sizes(v).in_entry(&fqn)?),
        };
        let info = parse_storage_info(info).in_entry(&fqn)?;
        storage.insert((fqn, offset), info);
    }
    Ok(storage)
}

fn parse_storage_info(value: &Value) -> Result<StorageInfo> {
    let info = dataclass(value, FILESYSTEM_MODULE, "_StorageInfo")?;
    let relative_path = match field(info, "relative_path")? {
        Value::Str(s) => s.clone(),
        other => return Err(expected("_StorageInfo.relative_path", "a string", other)),
    };
    let number = |name: &str| -> Result<u64> {
        match field(info, name)? {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            other => Err(expected(
                &format!("_StorageInfo.{name}"),
                "a byte count",
                other,
            )),
        }
    };
    let transforms = match info.attribute("transform_descriptors") {
        None | Some(Value::None) => Vec::new(),
        Some(Value::List(items)) | Some(Value::Tuple(items)) => items
            .iter()
            .map(|v| v.as_str().unwrap_or("?").to_string())
            .collect(),
        Some(other) => {
            return Err(expected(
                "_StorageInfo.transform_descriptors",
                "a list",
                other,
            ))
        }
    };
    Ok(StorageInfo {
        relative_path,
        offset: number("offset")?,
        length: number("length")?,
        transforms,
    })
}

/// A planner-data path: a tuple of str keys and int indices.
fn parse_path(value: &Value) -> Result<Vec<PathPart>> {
    let (Value::Tuple(parts) | Value::List(parts)) = value else {
        return Err(expected("a path", "a tuple", value));
    };
    if parts.is_empty() {
        return Err(Error::format("an empty path"));
    }
    parts
        .iter()
        .map(|p| match p {
            Value::Str(s) => Ok(PathPart::Key(s.clone())),
            Value::Int(i) if *i >= 0 => Ok(PathPart::Index(*i as usize)),
            other => Err(expected("a path step", "a string or an index", other)),
        })
        .collect()
}

/// The dims of a `torch.Size` (or a tuple of ints).
fn sizes(value: &Value) -> Result<Vec<usize>> {
    let dims: Vec<i64> = match value {
        Value::Size(dims) => dims.clone(),
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|v| v.as_int().ok_or_else(|| expected("a dim", "an int", v)))
            .collect::<Result<_>>()?,
        other => return Err(expected("a size", "a torch.Size", other)),
    };
    dims.into_iter()
        .map(|d| usize::try_from(d).map_err(|_| Error::format(format!("a negative size {d}"))))
        .collect()
}

fn as_object(value: &Value) -> Result<&Object> {
    match value {
        Value::Object(o) => Ok(o),
        other => Err(expected("a DCP record", "an object", other)),
    }
}

/// `value` as the dataclass `module.name`.
fn dataclass<'a>(value: &'a Value, module: &str, name: &str) -> Result<&'a Object> {
    let object = as_object(value)?;
    if object.module != module || object.name != name {
        return Err(Error::format(format!(
            "a {} where DCP writes {module}.{name}",
            object.qualified_name()
        )));
    }
    Ok(object)
}

/// The attribute `name` of a dataclass.
fn field<'a>(object: &'a Object, name: &str) -> Result<&'a Value> {
    object
        .attribute(name)
        .ok_or_else(|| Error::format(format!("{} has no field '{name}'", object.qualified_name())))
}

fn expected(what: &str, wanted: &str, found: &Value) -> Error {
    Error::format(format!(
        "{what}: expected {wanted}, found {}",
        found.type_name()
    ))
}

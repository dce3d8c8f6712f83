//! What each known global means: rebuild functions, storage classes, dtypes, containers,
//! numpy; and Python 2 to Python 3 name mapping.
//!
//! Nothing here imports or runs anything: a known global is interpreted from its arguments,
//! an unknown one stays an opaque object in the reader.

use crate::dtype::DType;
use crate::pickle::args::{fixed, int_list, text_of, truthy, usize_list};
use crate::pickle::invalid::Invalid;
use crate::pickle::numpy;
use crate::pickle::tensor_metadata::{LazyBits, ResolvedStorages};
use crate::pickle::TypedStorage;
use crate::tensor::Tensor;
use crate::value::{DictKind, Object, ObjectBuild, Value};

/// Module of the placeholder objects that stand for storages while a rebuild function's
/// arguments are interpreted (the name is the storage's index in the reader's table).
pub(super) const STORAGE_REF: &str = "\u{0}ckpt.storage";

/// The Python 3 module and name of a global pickled by Python 2 (`fix_imports`).
pub(super) fn map_py2_name(module: &str, name: &str) -> (String, String) {
    let (module, name) = match (module, name) {
        ("__builtin__", "unicode" | "basestring") => ("builtins", "str"),
        ("__builtin__", "long") => ("builtins", "int"),
        ("__builtin__", "xrange") => ("builtins", "range"),
        ("__builtin__", "reduce") => ("functools", "reduce"),
        ("__builtin__" | "exceptions", _) => ("builtins", name),
        ("copy_reg", _) => ("copyreg", name),
        ("Queue", _) => ("queue", name),
        ("repr", _) => ("reprlib", name),
        ("cPickle", _) => ("pickle", name),
        ("_abcoll", _) => ("collections.abc", name),
        ("UserDict", "UserDict" | "IterableUserDict") => ("collections", "UserDict"),
        ("UserList", _) => ("collections", name),
        ("UserString", _) => ("collections", name),
        _ => (module, name),
    };
    (module.to_string(), name.to_string())
}

/// How the reader treats a call of a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    /// Builds a mapping that later opcodes fill (`dict`, `OrderedDict`, `Counter`).
    Dict(DictKind),
    /// `collections.defaultdict(factory)`: an empty dict that later opcodes fill (the
    /// factory is dropped; the items are what a checkpoint needs).
    DefaultDict,
    /// `copyreg._reconstructor(cls, base, state)`, how protocols 0 and 1 pickle instances:
    /// a `dict`/`list` subclass reads as its items, any other class as an opaque object.
    Reconstructor,
    /// Builds a set from one iterable argument.
    Set { frozen: bool },
    /// Interpreted by [`call`] from its converted arguments; `raw` keeps Python 2 strings
    /// as bytes (numpy buffers).
    Call { raw: bool },
    /// Kept as an opaque object (possibly interpreted later by `BUILD`, as numpy does).
    Object,
}

const TORCH_UTILS: &[&str] = &[
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_cpu_tensor",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_sparse_csr_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_nested_tensor",
    "_rebuild_wrapper_subclass",
];

/// Classifies `module.name` (already mapped to Python 3 names).
pub(super) fn classify(module: &str, name: &str) -> Known {
    match (module, name) {
        ("collections", "OrderedDict") => Known::Dict(DictKind::OrderedDict),
        ("collections", "Counter") => Known::Dict(DictKind::Counter),
        ("builtins", "dict") => Known::Dict(DictKind::Dict),
        ("collections", "defaultdict") => Known::DefaultDict,
        ("copyreg", "_reconstructor") => Known::Reconstructor,
        ("builtins", "set") => Known::Set { frozen: false },
        ("builtins", "frozenset") => Known::Set { frozen: true },
        ("builtins", "bytearray" | "bytes" | "complex")
        | ("_codecs", "encode")
        | ("torch", "Size" | "device")
        | ("torch._tensor", "_rebuild_from_type_v2") => Known::Call { raw: false },
        ("torch._utils", n) if TORCH_UTILS.contains(&n) => Known::Call { raw: false },
        (m, "scalar") if numpy::is_multiarray_module(m) => Known::Call { raw: true },
        (m, "_frombuffer") if numpy::is_numeric_module(m) => Known::Call { raw: true },
        _ => Known::Object,
    }
}

/// The value a `GLOBAL` stands for by itself, when it is a value rather than a callable
/// (dtype objects such as `torch.float16`).
pub(super) fn global_value(module: &str, name: &str) -> Option<Value> {
    if module == "torch" {
        // `torch.float`/`torch.long` are aliases of the dtype objects.
        return DType::from_name(name).map(Value::DType);
    }
    None
}

/// The storages a rebuild function may refer to: those from persistent ids, and the copies
/// made for lazily conjugated or negated tensors.
pub(super) struct Storages<'s> {
    pub loaded: &'s [TypedStorage],
    pub resolved: &'s mut ResolvedStorages,
}

/// Calls a global classified as [`Known::Call`] on converted arguments. Storages appear as
/// [`STORAGE_REF`] objects resolved in `storages`.
pub(super) fn call(
    module: &str,
    name: &str,
    args: Vec<Value>,
    storages: &mut Storages<'_>,
) -> Result<Value, Invalid> {
    match (module, name) {
        ("torch._utils", _) => rebuild(name, args, storages),
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let [func, new_type, inner, _state] = fixed::<4>(name, args)?;
            let func = match func {
                Value::Object(o) if matches!(o.build, ObjectBuild::Global) => o,
                other => {
                    return Err(Invalid::expected(
                        "_rebuild_from_type_v2",
                        "a function",
                        format!("a {}", other.type_name()),
                    ))
                }
            };
            let inner = match inner {
                Value::Tuple(items) | Value::List(items) => items,
                other => {
                    return Err(Invalid::expected(
                        "_rebuild_from_type_v2",
                        "an argument tuple",
                        format!("a {}", other.type_name()),
                    ))
                }
            };
            if classify(&func.module, &func.name) != (Known::Call { raw: false }) {
                return Err(Invalid::Unsupported(format!(
                    "_rebuild_from_type_v2 of {}",
                    func.qualified_name()
                )));
            }
            let value = call(&func.module, &func.name, inner, storages)?;
            let is_parameter = matches!(&new_type, Value::Object(o) if o.name == "Parameter");
            Ok(match value {
                Value::Tensor(t) if is_parameter => Value::Parameter(t),
                other => other,
            })
        }
        ("torch", "Size") => {
            let [dims] = fixed::<1>(name, args)?;
            Ok(Value::Size(int_list("torch.Size", &dims)?))
        }
        ("torch", "device") => device(args),
        ("_codecs", "encode") => encode(args),
        ("builtins", "bytes") => Ok(Value::Bytes(byte_args("bytes", args)?)),
        ("builtins", "bytearray") => Ok(Value::ByteArray(byte_args("bytearray", args)?)),
        ("builtins", "complex") => {
            let re = args.first().map_or(Some(0.0), Value::as_float);
            let im = args.get(1).map_or(Some(0.0), Value::as_float);
            match (re, im, args.len() <= 2) {
                (Some(re), Some(im), true) => Ok(Value::Complex(re, im)),
                _ => Err(Invalid::Malformed(
                    "complex: expected up to two numbers".into(),
                )),
            }
        }
        (m, "scalar") if numpy::is_multiarray_module(m) => numpy::scalar(args),
        (m, "_frombuffer") if numpy::is_numeric_module(m) => numpy::frombuffer(args),
        _ => Err(Invalid::Malformed(format!(
            "no interpretation for {module}.{name}"
        ))),
    }
}

/// The torch tensor rebuild functions of `torch._utils`.
fn rebuild(name: &str, args: Vec<Value>, storages: &mut Storages<'_>) -> Result<Value, Invalid> {
    let arg = |i: usize| args.get(i);
    let need = |n: usize| {
        if args.len() < n {
            Err(Invalid::expected(
                name,
                format!("at least {n} arguments"),
                args.len().to_string(),
            ))
        } else {
            Ok(())
        }
    };
    match name {
        "_rebuild_tensor" => {
            need(4)?;
            Ok(Value::Tensor(tensor_from(name, &args, None, storages.loaded)?))
        }
        "_rebuild_tensor_v2" => {
            need(4)?;
            let bits = LazyBits::parse(name, arg(6))?;
            let t = tensor_from(name, &args, None, storages.loaded)?;
            let t = storages.resolved.resolve(t, bits)?;
            Ok(Value::Tensor(t.with_requires_grad(truthy(arg(4)))))
        }
        "_rebuild_tensor_v3" => {
            need(7)?;
            let bits = LazyBits::parse(name, arg(7))?;
            let dtype = match arg(6) {
                Some(Value::DType(d)) => *d,
                Some(other) => {
                    return Err(Invalid::expected(name, "a dtype as 7th argument", other.short_repr(40)))
                }
                None => unreachable_arg(name)?,
            };
            let t = tensor_from(name, &args, Some(dtype), storages.loaded)?;
            let t = storages.resolved.resolve(t, bits)?;
            Ok(Value::Tensor(t.with_requires_grad(truthy(arg(4)))))
        }
        "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
            need(2)?;
            match arg(0) {
                Some(Value::Tensor(t) | Value::Parameter(t)) => {
                    Ok(Value::Parameter(t.clone().with_requires_grad(truthy(arg(1)))))
                }
                Some(other) => Err(Invalid::expected(name, "a tensor", format!("a {}", other.type_name()))),
                None => unreachable_arg(name),
            }
        }
        "_rebuild_device_tensor_from_cpu_tensor" | "_rebuild_device_tensor_from_numpy" => {
            need(1)?;
            match arg(0) {
                Some(Value::Tensor(t) | Value::NdArray(t)) => Ok(Value::Tensor(
                    t.clone().with_requires_grad(truthy(arg(3))),
                )),
                Some(other) => Err(Invalid::expected(name, "a tensor", format!("a {}", other.type_name()))),
                None => unreachable_arg(name),
            }
        }
        other => Err(Invalid::Unsupported(format!("torch._utils.{other} (quantized, sparse, nested, meta and wrapper-subclass tensors are not supported)"))),
    }
}

fn unreachable_arg<T>(name: &str) -> Result<T, Invalid> {
    Err(Invalid::Malformed(format!("{name}: missing argument")))
}

/// `storage, storage_offset, size, stride` of the rebuild functions into a tensor.
fn tensor_from(
    name: &str,
    args: &[Value],
    dtype: Option<DType>,
    storages: &[TypedStorage],
) -> Result<Tensor, Invalid> {
    let storage = match args.first() {
        Some(Value::Object(o)) if o.module == STORAGE_REF => o
            .name
            .parse::<usize>()
            .ok()
            .and_then(|i| storages.get(i))
            .ok_or_else(|| Invalid::Malformed(format!("{name}: dangling storage reference")))?,
        Some(other) => {
            return Err(Invalid::expected(
                name,
                "a storage (persistent id) as first argument",
                format!("a {}", other.type_name()),
            ))
        }
        None => return unreachable_arg(name),
    };
    let offset = match args.get(1) {
        Some(Value::Int(i)) if *i >= 0 => usize::try_from(*i).map_err(|_| {
            Invalid::Limit(format!("{name}: storage offset {i} does not fit in memory"))
        })?,
        other => {
            return Err(Invalid::Malformed(format!(
                "{name}: storage offset must be a non-negative int, found {}",
                other.map_or("nothing".into(), |v| v.short_repr(40))
            )))
        }
    };
    let shape = usize_list(name, "size", args.get(2))?;
    let strides = usize_list(name, "stride", args.get(3))?;
    let dtype = dtype.unwrap_or(storage.dtype);
    Tensor::new(dtype, shape, strides, offset, storage.storage.clone())
        .map_err(Invalid::rejected_in(name))
}

/// `torch.device('cuda', 1)`, `torch.device('cuda:1')`, `torch.device('cpu')`.
fn device(args: Vec<Value>) -> Result<Value, Invalid> {
    let spec = args
        .first()
        .and_then(text_of)
        .ok_or_else(|| Invalid::Malformed("torch.device: expected a device string".into()))?;
    let (kind, mut index) =
        match spec.split_once(':') {
            Some((kind, idx)) => (
                kind.to_string(),
                Some(idx.parse::<i64>().map_err(|_| {
                    Invalid::Malformed(format!("torch.device: bad index in '{spec}'"))
                })?),
            ),
            None => (spec.clone(), None),
        };
    match args.get(1) {
        Some(Value::Int(i)) => index = Some(*i),
        Some(Value::None) | None => {}
        Some(other) => {
            return Err(Invalid::expected(
                "torch.device",
                "an int index",
                other.short_repr(40),
            ))
        }
    }
    Ok(Value::Device { kind, index })
}

/// `_codecs.encode(text, encoding)`, how Python 3 pickles `bytes` at protocol 2.
fn encode(args: Vec<Value>) -> Result<Value, Invalid> {
    let encoding = match args.get(1) {
        None => "utf-8".to_string(),
        Some(v) => text_of(v).ok_or_else(|| {
            Invalid::Malformed("_codecs.encode: expected an encoding name".into())
        })?,
    };
    match args.first() {
        Some(Value::Str(s)) => encode_text(s, &encoding).map(Value::Bytes),
        Some(Value::Bytes(b)) => Ok(Value::Bytes(b.clone())),
        _ => Err(Invalid::Malformed(
            "_codecs.encode: expected a string to encode".into(),
        )),
    }
}

fn encode_text(text: &str, encoding: &str) -> Result<Vec<u8>, Invalid> {
    match encoding.to_ascii_lowercase().replace('_', "-").as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => text
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    Invalid::Malformed(format!("_codecs.encode: '{c}' is not a latin1 character"))
                })
            })
            .collect(),
        "utf-8" | "utf8" => Ok(text.as_bytes().to_vec()),
        "ascii" if text.is_ascii() => Ok(text.as_bytes().to_vec()),
        other => Err(Invalid::Unsupported(format!(
            "_codecs.encode with encoding '{other}'"
        ))),
    }
}

/// Arguments of `bytes(...)`/`bytearray(...)`: nothing, bytes, a list of ints, or text
/// with an encoding.
fn byte_args(name: &str, args: Vec<Value>) -> Result<Vec<u8>, Invalid> {
    match args.as_slice() {
        [] => Ok(Vec::new()),
        [Value::Bytes(b) | Value::ByteArray(b)] => Ok(b.clone()),
        [Value::Str(s), enc] => {
            let enc = text_of(enc)
                .ok_or_else(|| Invalid::Malformed(format!("{name}: expected an encoding")))?;
            encode_text(s, &enc)
        }
        [Value::List(items) | Value::Tuple(items)] => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => u8::try_from(*i)
                    .map_err(|_| Invalid::Malformed(format!("{name}: {i} is not a byte"))),
                other => Err(Invalid::expected(name, "ints", other.short_repr(30))),
            })
            .collect(),
        _ => Err(Invalid::Unsupported(format!("{name} with these arguments"))),
    }
}

/// An opaque object for a global that is not interpreted.
pub(super) fn object(module: &str, name: &str, build: ObjectBuild) -> Value {
    Value::Object(Box::new(Object {
        module: module.to_string(),
        name: name.to_string(),
        build,
        state: None,
    }))
}

//! The Python object tree a checkpoint holds, and the state dict of a model.
//!
//! [`Value`] keeps every distinction a round trip through torch needs: int vs float vs bool,
//! tuple vs list, dict vs `OrderedDict` (with its attributes such as `_metadata`), key order,
//! non-string keys. A global the library does not know is kept verbatim as an [`Object`] and
//! is never executed.

use std::fmt;

use indexmap::IndexMap;
use num_bigint::BigInt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A Python value.
///
/// ```
/// use ckpt::{Dict, Value};
/// let mut d = Dict::new();
/// d.insert("iteration", Value::Int(99));
/// d.insert("lr", Value::Float(0.1));
/// let v = Value::Dict(d);
/// assert_eq!(v.get("iteration").and_then(Value::as_int), Some(99));
/// ```
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// An int that does not fit in 64 bits (never produced for values that fit).
    BigInt(BigInt),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A `dict`, `collections.OrderedDict` or `collections.Counter` (see [`DictKind`]).
    Dict(Dict),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    /// A `torch.Tensor`.
    Tensor(Tensor),
    /// A `torch.nn.Parameter`.
    Parameter(Tensor),
    /// A `numpy.ndarray` (or a numpy scalar, as a 0-d array). Written to torch files as a tensor.
    NdArray(Tensor),
    /// A `torch.dtype` object such as `torch.float16`.
    DType(DType),
    /// `torch.device(type, index)`.
    Device {
        kind: String,
        index: Option<i64>,
    },
    /// `torch.Size`.
    Size(Vec<i64>),
    /// Any other global, call or built object, kept verbatim and never executed
    /// ([`crate::walk`] goes into its arguments and state; [`crate::nn_module`] reads a
    /// `torch.nn.Module`'s state dict from it).
    Object(Box<Object>),
}

/// A Python object this library does not interpret: `module.name`, and how the pickle built it.
#[derive(Debug, Clone)]
pub struct Object {
    pub module: String,
    pub name: String,
    /// How the object was made from the global.
    pub build: ObjectBuild,
    /// State applied by `BUILD` (`__setstate__`), if any.
    pub state: Option<Value>,
}

/// How an opaque [`Object`] was produced.
#[derive(Debug, Clone)]
pub enum ObjectBuild {
    /// The global itself (a class or function object).
    Global,
    /// `REDUCE`: `module.name(*args)`.
    Call(Vec<Value>),
    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    New(Vec<Value>),
}

impl Object {
    /// `module.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }

    /// The arguments of the call (`REDUCE`) or `__new__` (`NEWOBJ`) that built the object;
    /// none for a bare global.
    pub fn args(&self) -> &[Value] {
        match &self.build {
            ObjectBuild::Global => &[],
            ObjectBuild::Call(args) | ObjectBuild::New(args) => args,
        }
    }

    /// The attributes the object's state sets, as Python's default `__setstate__` sets
    /// them: the items of a dict state, or of both dicts of a `(dict, slots)` pair. `None`
    /// when there is no state or it has another form (a class's own `__setstate__`).
    pub fn attributes(&self) -> Option<impl Iterator<Item = (&Key, &Value)>> {
        fn as_dict(v: &Value) -> Option<Option<&Dict>> {
            match v {
                Value::Dict(d) => Some(Some(d)),
                Value::None => Some(None),
                _ => None,
            }
        }
        let [dict, slots] = match self.state.as_ref()? {
            Value::Dict(d) => [Some(d), None],
            Value::Tuple(parts) if parts.len() == 2 => [as_dict(&parts[0])?, as_dict(&parts[1])?],
            _ => return None,
        };
        Some(dict.into_iter().chain(slots).flat_map(Dict::iter))
    }

    /// The placeholder a reader leaves where a reference cycle through an opaque object
    /// closes (a module holding a bound method of itself pickles as `getattr(module, 'hook')`
    /// inside the module): the opaque global `ckpt.recursive_reference`. The value tree has
    /// no cycles, so walks over it end.
    pub fn recursive_reference() -> Object {
        Object {
            module: "ckpt".into(),
            name: "recursive_reference".into(),
            build: ObjectBuild::Global,
            state: None,
        }
    }

    /// Whether this is the [`Object::recursive_reference`] placeholder.
    pub fn is_recursive_reference(&self) -> bool {
        self.module == "ckpt"
            && self.name == "recursive_reference"
            && matches!(self.build, ObjectBuild::Global)
    }

    /// The attribute `name` set by the object's state (see [`Object::attributes`]).
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes()?
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value)
    }
}

/// Which Python mapping type a [`Dict`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DictKind {
    #[default]
    Dict,
    OrderedDict,
    Counter,
}

/// A hashable Python value, used as a dict key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    None,
    Bool(bool),
    Int(i64),
    BigInt(BigInt),
    /// A float key, by its bits.
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Key>),
    DType(DType),
}

impl Key {
    /// The key as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Key::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The key as a [`Value`].
    pub fn to_value(&self) -> Value {
        match self {
            Key::None => Value::None,
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::BigInt(i) => Value::BigInt(i.clone()),
            Key::Float(bits) => Value::Float(f64::from_bits(*bits)),
            Key::Str(s) => Value::Str(s.clone()),
            Key::Bytes(b) => Value::Bytes(b.clone()),
            Key::Tuple(items) => Value::Tuple(items.iter().map(Key::to_value).collect()),
            Key::DType(d) => Value::DType(*d),
        }
    }

    /// [`Key::from_value`] taking the value, so a string key is moved rather than copied.
    pub fn from_owned(value: Value) -> Result<Key> {
        match value {
            Value::Str(s) => Ok(Key::Str(s)),
            Value::Bytes(b) => Ok(Key::Bytes(b)),
            other => Key::from_value(&other),
        }
    }

    /// The key of a hashable value; an error names the type of an unhashable one.
    pub fn from_value(value: &Value) -> Result<Key> {
        Ok(match value {
            Value::None => Key::None,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::BigInt(i) => Key::BigInt(i.clone()),
            Value::Float(f) => Key::Float(f.to_bits()),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Bytes(b) => Key::Bytes(b.clone()),
            Value::Tuple(items) => {
                Key::Tuple(items.iter().map(Key::from_value).collect::<Result<_>>()?)
            }
            Value::DType(d) => Key::DType(*d),
            other => {
                return Err(Error::invalid(format!(
                    "a {} cannot be a dict key in ckpt",
                    other.type_name()
                )))
            }
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => f.write_str(s),
            other => write!(f, "{}", other.to_value().short_repr(60)),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.to_string())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Str(s)
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}

/// An insertion-ordered Python mapping with any hashable keys, and the attributes an
/// `OrderedDict` may carry (such as a module state dict's `_metadata`).
#[derive(Debug, Clone, Default)]
pub struct Dict {
    pub kind: DictKind,
    pub items: IndexMap<Key, Value>,
    /// Instance attributes set by `BUILD` (only an `OrderedDict` has any).
    pub attributes: IndexMap<String, Value>,
}

impl Dict {
    /// An empty plain `dict`.
    pub fn new() -> Dict {
        Dict::default()
    }

    /// An empty `collections.OrderedDict`.
    pub fn ordered() -> Dict {
        Dict {
            kind: DictKind::OrderedDict,
            ..Dict::default()
        }
    }

    /// Inserts or replaces (keeping the original position, as Python does).
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        self.items.insert(key.into(), value)
    }

    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.get(&Key::Str(key.to_string()))
    }

    /// Removes a string key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.items.shift_remove(&Key::Str(key.to_string()))
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.items.iter()
    }
}

impl Value {
    /// Python's name for the type of this value (`int`, `dict`, `OrderedDict`, `Tensor`,
    /// `numpy.ndarray`, or `module.name` of an opaque object).
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "NoneType".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Complex(..) => "complex".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::ByteArray(_) => "bytearray".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Dict(d) => match d.kind {
                DictKind::Dict => "dict".into(),
                DictKind::OrderedDict => "OrderedDict".into(),
                DictKind::Counter => "Counter".into(),
            },
            Value::Set(_) => "set".into(),
            Value::FrozenSet(_) => "frozenset".into(),
            Value::Tensor(_) => "Tensor".into(),
            Value::Parameter(_) => "Parameter".into(),
            Value::NdArray(_) => "numpy.ndarray".into(),
            Value::DType(_) => "torch.dtype".into(),
            Value::Device { .. } => "torch.device".into(),
            Value::Size(_) => "torch.Size".into(),
            Value::Object(o) => o.qualified_name(),
        }
    }

    /// The tensor of a `Tensor`, `Parameter` or numpy array.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => Some(t),
            _ => None,
        }
    }

    /// The dict of a `dict`, `OrderedDict` or `Counter`.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Mutable access to a dict.
    pub fn as_dict_mut(&mut self) -> Option<&mut Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// An int that fits in 64 bits (bools excluded).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an int as a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value under a string key of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key))
    }

    /// A short, single-line, Python-like representation (at most about `max` characters).
    pub fn short_repr(&self, max: usize) -> String {
        let mut s = String::new();
        repr_into(self, &mut s, max);
        if s.chars().count() > max {
            let cut: String = s.chars().take(max.saturating_sub(3)).collect();
            format!("{cut}...")
        } else {
            s
        }
    }
}

fn repr_into(value: &Value, out: &mut String, max: usize) {
    use std::fmt::Write;
    if out.len() > max {
        return;
    }
    let seq = |out: &mut String, items: &[Value], open: &str, close: &str| {
        out.push_str(open);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            if out.len() > max {
                out.push_str("...");
                break;
            }
            repr_into(item, out, max);
        }
        if open == "(" && items.len() == 1 {
            out.push(',');
        }
        out.push_str(close);
    };
    match value {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BigInt(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&float_repr(*f)),
        Value::Complex(re, im) => {
            let _ = write!(out, "({}+{}j)", float_repr(*re), float_repr(*im));
        }
        Value::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        Value::Bytes(b) | Value::ByteArray(b) => {
            let _ = write!(out, "b<{} bytes>", b.len());
        }
        Value::List(items) => seq(out, items, "[", "]"),
        Value::Tuple(items) => seq(out, items, "(", ")"),
        Value::Set(items) | Value::FrozenSet(items) => seq(out, items, "{", "}"),
        Value::Dict(d) => {
            out.push('{');
            for (i, (k, v)) in d.items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if out.len() > max {
                    out.push_str("...");
                    break;
                }
                repr_into(&k.to_value(), out, max);
                out.push_str(": ");
                repr_into(v, out, max);
            }
            out.push('}');
        }
        Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => {
            let _ = write!(out, "{}{:?}", t.dtype(), t.shape());
        }
        Value::DType(d) => {
            let _ = write!(out, "torch.{d}");
        }
        Value::Device { kind, index } => match index {
            Some(i) => {
                let _ = write!(out, "device('{kind}:{i}')");
            }
            None => {
                let _ = write!(out, "device('{kind}')");
            }
        },
        Value::Size(dims) => {
            let _ = write!(out, "torch.Size({dims:?})");
        }
        Value::Object(o) => {
            let _ = write!(out, "<{}>", o.qualified_name());
        }
    }
}

/// Python's `repr` of a float (`1.0`, `0.0001`, `1e-08`, `1.5e+16`, `nan`, `inf`, `-0.0`).
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Shortest round-trip digits, laid out as Python does: positional for exponents in
    // [-4, 16), else scientific with a signed exponent of at least two digits.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if f == 0.0 || (-4..16).contains(&exponent) {
        let plain = format!("{f}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A model's parameters and buffers: an ordered map from name to tensor.
///
/// ```
/// use ckpt::{StateDict, Tensor};
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[0.5f32; 6], &[2, 3]).unwrap());
/// assert_eq!(sd.get("fc.weight").unwrap().shape(), &[2, 3]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: IndexMap<String, Tensor>,
    /// The `_metadata` attribute of a module state dict (module prefix to `{"version": N}`),
    /// kept so that a state dict read from torch is written back unchanged.
    pub metadata: Option<Value>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> StateDict {
        StateDict::default()
    }

    /// Inserts or replaces a tensor, keeping the position of a replaced name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Removes `name`, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.shift_remove(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Names and tensors in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Reads a state dict from a dict value: every key must be a string and every value a
    /// tensor or numpy array; otherwise the error names the key and the type found.
    pub fn from_value(value: &Value) -> Result<StateDict> {
        let dict = value.as_dict().ok_or_else(|| {
            Error::invalid(format!(
                "expected a dict of tensors, found a {}",
                value.type_name()
            ))
        })?;
        let mut sd = StateDict::new();
        for (key, v) in dict.iter() {
            let name = key
                .as_str()
                .ok_or_else(|| Error::key(key.to_string(), "state dict keys must be strings"))?;
            let tensor = v.as_tensor().ok_or_else(|| {
                Error::key(
                    name,
                    format!(
                        "expected a tensor or numpy array, found a {}",
                        v.type_name()
                    ),
                )
            })?;
            sd.insert(name, tensor.clone());
        }
        sd.metadata = dict.attributes.get("_metadata").cloned();
        Ok(sd)
    }

    /// The state dict as an `OrderedDict` of tensors (with `_metadata` when present), as
    /// `nn.Module.state_dict()` returns it.
    pub fn to_value(&self) -> Value {
        let mut dict = Dict::ordered();
        for (name, tensor) in &self.tensors {
            dict.insert(name.as_str(), Value::Tensor(tensor.clone()));
        }
        if let Some(meta) = &self.metadata {
            dict.attributes.insert("_metadata".into(), meta.clone());
        }
        Value::Dict(dict)
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> StateDict {
        StateDict {
            tensors: iter.into_iter().collect(),
            metadata: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::float_repr;

    #[test]
    fn floats_print_as_python_prints_them() {
        for (f, python) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-8, "1e-08"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
            (2.5e-300, "2.5e-300"),
        ] {
            assert_eq!(float_repr(f), python, "{f:e}");
        }
    }
}

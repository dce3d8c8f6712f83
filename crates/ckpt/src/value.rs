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
#[non_exhaustive]
pub enum Value {
    /// `None`.
    None,
    /// A `bool`.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// An int that does not fit in 64 bits (never produced for values that fit).
    BigInt(BigInt),
    /// A `float`.
    Float(f64),
    /// A `complex`: real and imaginary parts.
    Complex(f64, f64),
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `bytearray`.
    ByteArray(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`, `collections.OrderedDict` or `collections.Counter` (see [`DictKind`]).
    Dict(Dict),
    /// A `set`, its items in the file's order.
    Set(Vec<Value>),
    /// A `frozenset`, its items in the file's order.
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
        /// The device type: `cpu`, `cuda`, ...
        kind: String,
        /// The device index, if any.
        index: Option<i64>,
    },
    /// `torch.Size`.
    Size(Vec<i64>),
    /// Any other global, call or built object, kept verbatim and never executed
    /// ([`walk`](crate::walk) goes into its arguments and state; [`nn_module`](crate::nn_module)
    /// reads a `torch.nn.Module`'s state dict from it).
    Object(Box<Object>),
}

/// A Python object this library does not interpret: `module.name`, and how the pickle built it.
///
/// ```
/// use ckpt::{Object, ObjectBuild, Value};
/// let call = Object::new("collections", "deque", ObjectBuild::Call(vec![Value::List(vec![])]));
/// assert_eq!(call.qualified_name(), "collections.deque");
/// assert!(call.state.is_none());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Object {
    /// The module of the global (`collections`, `__main__`).
    pub module: String,
    /// The name of the global in its module (`deque`, `Net`).
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
    /// The object `module.name` built by `build`, without state.
    pub fn new(module: impl Into<String>, name: impl Into<String>, build: ObjectBuild) -> Object {
        Object {
            module: module.into(),
            name: name.into(),
            build,
            state: None,
        }
    }

    /// The object with the state `BUILD` applied to it.
    pub fn with_state(mut self, state: Value) -> Object {
        self.state = Some(state);
        self
    }

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
    /// `dict`.
    #[default]
    Dict,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `collections.Counter`.
    Counter,
}

/// A hashable Python value, used as a dict key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// `None`.
    None,
    /// A `bool`.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// An int that does not.
    BigInt(BigInt),
    /// A float key, by its bits.
    Float(u64),
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A tuple of hashable values.
    Tuple(Vec<Key>),
    /// A `torch.dtype`.
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
///
/// ```
/// use ckpt::{Dict, DictKind, Key, Value};
/// let mut state = Dict::ordered();
/// state.insert("lr", Value::Float(0.1));
/// state.insert(3i64, Value::Str("an int key".into()));
/// state.set_attribute("_metadata", Value::Dict(Dict::new()));
/// assert_eq!(state.kind(), DictKind::OrderedDict);
/// assert_eq!(state.get("lr").and_then(Value::as_float), Some(0.1));
/// assert!(state.get_key(&Key::Int(3)).is_some());
/// assert_eq!(state.keys().collect::<Vec<_>>(), [&Key::from("lr"), &Key::Int(3)]);
/// assert_eq!(state.attributes().count(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Dict {
    pub(crate) kind: DictKind,
    pub(crate) items: IndexMap<Key, Value>,
    /// Instance attributes set by `BUILD` (only an `OrderedDict` has any).
    pub(crate) attributes: IndexMap<String, Value>,
}

impl Dict {
    /// An empty plain `dict`.
    pub fn new() -> Dict {
        Dict::default()
    }

    /// An empty `collections.OrderedDict`.
    pub fn ordered() -> Dict {
        Dict::with_kind(DictKind::OrderedDict)
    }

    /// An empty mapping of the type `kind`.
    pub fn with_kind(kind: DictKind) -> Dict {
        Dict {
            kind,
            ..Dict::default()
        }
    }

    /// Which Python mapping type this is.
    pub fn kind(&self) -> DictKind {
        self.kind
    }

    /// Makes this mapping of the type `kind`, keeping its items.
    pub fn set_kind(&mut self, kind: DictKind) {
        self.kind = kind;
    }

    /// Inserts or replaces (keeping the original position, as Python does).
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        self.items.insert(key.into(), value)
    }

    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.get(&Key::Str(key.to_string()))
    }

    /// The value under a string key, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.items.get_mut(&Key::Str(key.to_string()))
    }

    /// The value under any key.
    pub fn get_key(&self, key: &Key) -> Option<&Value> {
        self.items.get(key)
    }

    /// The value under any key, to change it.
    pub fn get_key_mut(&mut self, key: &Key) -> Option<&mut Value> {
        self.items.get_mut(key)
    }

    /// Whether there is an item under `key`.
    pub fn contains_key(&self, key: &Key) -> bool {
        self.items.contains_key(key)
    }

    /// Removes a string key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.items.shift_remove(&Key::Str(key.to_string()))
    }

    /// Removes any key, keeping the order of the others.
    pub fn remove_key(&mut self, key: &Key) -> Option<Value> {
        self.items.shift_remove(key)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Key> {
        self.items.keys()
    }

    /// The values in order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.items.values()
    }

    /// The values in order, to change them.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut Value> {
        self.items.values_mut()
    }

    /// The attribute `name` (set by `BUILD`; only an `OrderedDict` has any, such as a module
    /// state dict's `_metadata`).
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    /// Sets the attribute `name`, returning its previous value.
    pub fn set_attribute(&mut self, name: impl Into<String>, value: Value) -> Option<Value> {
        self.attributes.insert(name.into(), value)
    }

    /// Removes the attribute `name`, keeping the order of the others.
    pub fn remove_attribute(&mut self, name: &str) -> Option<Value> {
        self.attributes.shift_remove(name)
    }

    /// The attributes in order.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.attributes.iter().map(|(k, v)| (k.as_str(), v))
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
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Key, &Value)> {
        self.items.iter()
    }

    /// The items in order, their values to change.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&Key, &mut Value)> {
        self.items.iter_mut()
    }
}

impl Extend<(Key, Value)> for Dict {
    /// Inserts each item as [`Dict::insert`] does.
    fn extend<I: IntoIterator<Item = (Key, Value)>>(&mut self, items: I) {
        self.items.extend(items);
    }
}

impl FromIterator<(Key, Value)> for Dict {
    /// A plain `dict` of the items.
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(items: I) -> Dict {
        Dict {
            items: items.into_iter().collect(),
            ..Dict::default()
        }
    }
}

impl IntoIterator for Dict {
    type Item = (Key, Value);
    type IntoIter = DictIntoIter;

    /// The items in order (the attributes are dropped).
    fn into_iter(self) -> DictIntoIter {
        DictIntoIter(self.items.into_iter())
    }
}

/// The items of a [`Dict`], by value, in order.
#[derive(Debug)]
pub struct DictIntoIter(indexmap::map::IntoIter<Key, Value>);

impl Iterator for DictIntoIter {
    type Item = (Key, Value);

    fn next(&mut self) -> Option<(Key, Value)> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for DictIntoIter {}

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
        Value::BigInt(i) => out.push_str(&int_repr(i)),
        Value::Float(f) => out.push_str(&float_repr(*f)),
        Value::Complex(re, im) => {
            let _ = write!(out, "({}+{}j)", float_repr(*re), float_repr(*im));
        }
        Value::Str(s) => {
            // Only what can show: the caller cuts at `max` characters.
            let end = s.char_indices().nth(max + 1).map_or(s.len(), |(i, _)| i);
            let _ = write!(out, "{:?}", &s[..end]);
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

/// Bits beyond which an int is not written in decimal (about Python's 4300-digit limit):
/// a decimal conversion costs quadratic time in the size of the int.
const DECIMAL_INT_BITS: u64 = 14_000;

/// An int in decimal, or, when it is too large for that to be cheap, its size and leading
/// hex digits (`<int of 8388608 bits: 0x1f3a5c7e9b2d4f60...>`), in time linear in its size.
pub(crate) fn int_repr(i: &BigInt) -> String {
    let bits = i.bits();
    if bits <= DECIMAL_INT_BITS {
        return i.to_string();
    }
    // The leading 16 hex digits: a shift by whole digits.
    let top = i.magnitude() >> ((bits - 64).div_ceil(4) * 4);
    let sign = if i.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    format!("<int of {bits} bits: {sign}0x{top:x}...>")
}

/// Python's `repr` of a float (`1.0`, `0.0001`, `1e-08`, `1.5e+16`, `nan`, `inf`, `-0.0`).
pub(crate) fn float_repr(f: f64) -> String {
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
    pub(crate) tensors: IndexMap<String, Tensor>,
    /// The `_metadata` attribute of a module state dict (module prefix to `{"version": N}`),
    /// kept so that a state dict read from torch is written back unchanged.
    pub(crate) metadata: Option<Value>,
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
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keeps only the tensors for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Tensor) -> bool) {
        self.tensors.retain(|name, tensor| keep(name, tensor));
    }

    /// The position of `name` in the order, and its tensor.
    pub fn get_full(&self, name: &str) -> Option<(usize, &Tensor)> {
        self.tensors.get_full(name).map(|(i, _, t)| (i, t))
    }

    /// The `_metadata` attribute of a module state dict (module prefix to `{"version": N}`),
    /// kept so that a state dict read from torch is written back unchanged.
    pub fn metadata(&self) -> Option<&Value> {
        self.metadata.as_ref()
    }

    /// Sets or clears the `_metadata` attribute, returning the previous one.
    pub fn set_metadata(&mut self, metadata: Option<Value>) -> Option<Value> {
        std::mem::replace(&mut self.metadata, metadata)
    }

    /// Removes `prefix` from every name when every non-empty name starts with it (also from
    /// the module names of `_metadata`), as fvcore's `_strip_prefix_if_present` does for a
    /// model saved while wrapped for data parallelism (`module.`); otherwise changes nothing.
    ///
    /// ```
    /// use ckpt::{StateDict, Tensor};
    /// let mut sd = StateDict::new();
    /// sd.insert("module.fc.weight", Tensor::from_slice(&[1.0f32], &[1])?);
    /// let sd = sd.strip_prefix_if_present("module.");
    /// assert!(sd.get("fc.weight").is_some());
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn strip_prefix_if_present(self, prefix: &str) -> StateDict {
        crate::checkpointer::strip_prefix_if_present(self, prefix)
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

impl Extend<(String, Tensor)> for StateDict {
    /// Inserts each tensor as [`StateDict::insert`] does.
    fn extend<I: IntoIterator<Item = (String, Tensor)>>(&mut self, tensors: I) {
        self.tensors.extend(tensors);
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = StateDictIntoIter;

    /// The names and tensors in order (the metadata is dropped).
    fn into_iter(self) -> StateDictIntoIter {
        StateDictIntoIter(self.tensors.into_iter())
    }
}

/// The tensors of a [`StateDict`], by value, in order.
#[derive(Debug)]
pub struct StateDictIntoIter(indexmap::map::IntoIter<String, Tensor>);

impl Iterator for StateDictIntoIter {
    type Item = (String, Tensor);

    fn next(&mut self) -> Option<(String, Tensor)> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for StateDictIntoIter {}

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

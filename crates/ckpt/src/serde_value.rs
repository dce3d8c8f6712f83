//! A serde bridge: any `Serialize` type becomes a [`Value`] torch can load, and any
//! `DeserializeOwned` type can be read back from a [`Value`], including one Python wrote.
//!
//! This is how non-tensor training state (an LR scheduler, a data-loader position, RNG state,
//! optimizer hyper-parameters) is stored in a checkpoint with one derive.
//!
//! | Rust (serde data model)      | Python value                                            |
//! |------------------------------|---------------------------------------------------------|
//! | struct, map with string keys | `dict` with `str` keys, in field order                  |
//! | map with other keys          | `dict` keeping `int` (tuple, ...) keys, as in optimizer `state` |
//! | `Vec`, sequence              | `list`                                                  |
//! | tuple, tuple struct          | `tuple`                                                 |
//! | `()`, unit struct, `None`    | `None`                                                  |
//! | `Some(x)`, newtype struct    | `x`                                                     |
//! | integers                     | `int` (`u64`/`u128` above `i64::MAX` too)               |
//! | `f32`, `f64`                 | `float`                                                 |
//! | `char`, `String`             | `str`                                                   |
//! | bytes (`serde_bytes`)        | `bytes`                                                 |
//! | unit enum variant            | `"Variant"`                                             |
//! | other enum variants          | `{"Variant": content}` (serde's external tagging)       |
//!
//! Reading is lenient where Python is: an `int` is accepted where a float is expected
//! (`weight_decay: 0`), a `tuple`, `list`, `set` or `torch.Size` where a sequence is expected,
//! any `dict` kind (`OrderedDict` included) where a map or struct is expected, string and int
//! keys for one another (as Python's `json` converts them), and a 0-d tensor or numpy scalar
//! (Adam's `step`, `np.float64(0.1)`) where a number is expected. Dict entries that a struct
//! does not name are ignored unless the struct says `#[serde(deny_unknown_fields)]`.
//!
//! Tensors are not serde values: a struct cannot hold a `Tensor` field through this bridge.
//! State with tensors (model weights, an optimizer's momentum buffers) goes through the
//! checkpointer's checkpointable trait, which produces and consumes a [`Value`] directly; the
//! non-tensor part of it may still be built with [`to_value`] and read with [`from_value`].
//!
//! Errors name the path of the offending entry (`param_groups[0].lr`) and what was expected.
//!
//! ```
//! use ckpt::serde_value::{from_value, to_value};
//! use ckpt::Value;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Scheduler {
//!     base_lrs: Vec<f64>,
//!     last_epoch: i64,
//!     milestones: (u32, u32),
//! }
//!
//! let sched = Scheduler { base_lrs: vec![0.02], last_epoch: 7, milestones: (30, 60) };
//! let value = to_value(&sched)?;
//! assert_eq!(value.get("last_epoch").and_then(Value::as_int), Some(7));
//! assert!(matches!(value.get("milestones"), Some(Value::Tuple(_))));
//! assert_eq!(from_value::<Scheduler>(&value)?, sched);
//! # Ok::<(), ckpt::Error>(())
//! ```

use std::fmt::{self, Display};

use num_bigint::BigInt;
use serde::de::value::{SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use crate::value::{Dict, Key, Value};

/// Converts any `Serialize` value into a [`Value`] (see the module docs for the mapping).
///
/// Fails only if the type's `Serialize` impl fails or a map key is not hashable in Python
/// (a list or dict used as a key); the error names the path.
///
/// ```
/// use std::collections::BTreeMap;
/// use ckpt::{serde_value::to_value, Key, Value};
/// let state: BTreeMap<u32, f64> = [(0, 0.5), (1, 0.25)].into();
/// let Value::Dict(dict) = to_value(&state)? else { unreachable!() };
/// assert!(dict.items.contains_key(&Key::Int(1)));
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value
        .serialize(ValueSerializer)
        .map_err(PathError::into_error)
}

/// Reads a `DeserializeOwned` type from a [`Value`], accepting what Python would plausibly
/// have written (see the module docs).
///
/// On a mismatch the error is an [`Error::Key`] naming the path (`param_groups[0].lr`) and
/// what was expected and found; an error at the top level is an [`Error::Invalid`].
///
/// ```
/// use ckpt::{serde_value::from_value, Dict, Value};
/// #[derive(serde::Deserialize)]
/// struct Hyper { lr: f64, weight_decay: f64 }
///
/// let mut d = Dict::ordered(); // as torch would give it
/// d.insert("lr", Value::Float(0.1));
/// d.insert("weight_decay", Value::Int(0));
/// let hyper: Hyper = from_value(&Value::Dict(d))?;
/// assert_eq!(hyper.weight_decay, 0.0);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    T::deserialize(ValueDeserializer(value)).map_err(PathError::into_error)
}

// ---------------------------------------------------------------------------------------
// Errors with a path

/// The error of both directions; segments are pushed while the error travels outwards, so
/// the success path never pays for path bookkeeping.
#[derive(Debug)]
struct PathError {
    message: String,
    /// Innermost first: a field or string key (`lr`), or a bracketed index or key (`[3]`).
    segments: Vec<String>,
}

impl PathError {
    fn new(message: impl Into<String>) -> PathError {
        let message = message.into();
        PathError {
            message,
            segments: Vec::new(),
        }
    }

    fn at_index(mut self, index: usize) -> PathError {
        self.segments.push(format!("[{index}]"));
        self
    }

    fn at_key(mut self, key: &Key) -> PathError {
        self.segments.push(match key {
            Key::Str(s) => s.clone(),
            other => format!("[{}]", other.to_value().short_repr(40)),
        });
        self
    }

    /// Adds the enum variant whose content failed, if any.
    fn in_variant(mut self, variant: Option<&str>) -> PathError {
        self.segments.extend(variant.map(str::to_string));
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.segments.iter().rev() {
            if !out.is_empty() && !segment.starts_with('[') {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    fn into_error(self) -> Error {
        if self.segments.is_empty() {
            Error::invalid(self.message)
        } else {
            Error::key(self.path(), self.message)
        }
    }
}

impl Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl std::error::Error for PathError {}

impl ser::Error for PathError {
    fn custom<T: Display>(msg: T) -> Self {
        PathError::new(msg.to_string())
    }
}

impl de::Error for PathError {
    fn custom<T: Display>(msg: T) -> Self {
        PathError::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        PathError::new(format!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        PathError::new(format!("expected {exp}, found {unexp}"))
    }
}

/// "expected X, found <python type> <repr>", with a pointer for tensors.
fn mismatch(value: &Value, expected: &dyn de::Expected) -> PathError {
    let hint = if value.as_tensor().is_some() {
        " (tensors are not serde values: read them through the checkpointable trait)"
    } else {
        ""
    };
    PathError::new(format!(
        "expected {expected}, found {} {}{hint}",
        value.type_name(),
        value.short_repr(40)
    ))
}

// ---------------------------------------------------------------------------------------
// Serializer: Rust -> Value

struct ValueSerializer;

fn int_value(v: i128) -> Value {
    match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(BigInt::from(v)),
    }
}

/// `{variant: content}`, serde's external tagging.
fn tagged(variant: &'static str, content: Value) -> Value {
    let mut dict = Dict::new();
    dict.insert(variant, content);
    Value::Dict(dict)
}

macro_rules! serialize_ints {
    ($($method:ident($ty:ty))*) => {$(
        fn $method(self, v: $ty) -> Result<Value, PathError> {
            Ok(int_value(v.into()))
        }
    )*};
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = PathError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = DictBuilder;
    type SerializeStruct = DictBuilder;
    type SerializeStructVariant = DictBuilder;

    serialize_ints!(serialize_i8(i8) serialize_i16(i16) serialize_i32(i32) serialize_i64(i64)
        serialize_u8(u8) serialize_u16(u16) serialize_u32(u32) serialize_u64(u64));

    fn serialize_i128(self, v: i128) -> Result<Value, PathError> {
        Ok(int_value(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, PathError> {
        Ok(i128::try_from(v).map_or_else(|_| Value::BigInt(v.into()), int_value))
    }
    fn serialize_bool(self, v: bool) -> Result<Value, PathError> {
        Ok(Value::Bool(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, PathError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, PathError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, PathError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, PathError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, PathError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, PathError> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, PathError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, PathError> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, PathError> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, PathError> {
        Ok(Value::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Value, PathError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, PathError> {
        let content = value
            .serialize(ValueSerializer)
            .map_err(|e| e.in_variant(Some(variant)))?;
        Ok(tagged(variant, content))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, PathError> {
        Ok(SeqBuilder::new(len.unwrap_or(0), false, None))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, PathError> {
        Ok(SeqBuilder::new(len, true, None))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, PathError> {
        Ok(SeqBuilder::new(len, true, None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, PathError> {
        Ok(SeqBuilder::new(len, true, Some(variant)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<DictBuilder, PathError> {
        Ok(DictBuilder::default())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<DictBuilder, PathError> {
        Ok(DictBuilder::default())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<DictBuilder, PathError> {
        Ok(DictBuilder {
            variant: Some(variant),
            ..DictBuilder::default()
        })
    }
}

/// Builds a `list` or a `tuple`, tagged with its enum variant if it is a variant's content.
struct SeqBuilder {
    items: Vec<Value>,
    tuple: bool,
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn new(len: usize, tuple: bool, variant: Option<&'static str>) -> SeqBuilder {
        let items = Vec::with_capacity(len);
        SeqBuilder {
            items,
            tuple,
            variant,
        }
    }
}

macro_rules! seq_builder_impls {
    ($($trait:ident::$method:ident)*) => {$(
        impl ser::$trait for SeqBuilder {
            type Ok = Value;
            type Error = PathError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), PathError> {
                let index = self.items.len();
                let item = value
                    .serialize(ValueSerializer)
                    .map_err(|e| e.at_index(index).in_variant(self.variant))?;
                self.items.push(item);
                Ok(())
            }
            fn end(self) -> Result<Value, PathError> {
                let seq = if self.tuple { Value::Tuple(self.items) } else { Value::List(self.items) };
                Ok(match self.variant {
                    Some(variant) => tagged(variant, seq),
                    None => seq,
                })
            }
        }
    )*};
}

seq_builder_impls!(SerializeSeq::serialize_element SerializeTuple::serialize_element
    SerializeTupleStruct::serialize_field SerializeTupleVariant::serialize_field);

/// Builds a plain `dict`; keys keep their Python type (a `u32` key becomes an `int` key).
#[derive(Default)]
struct DictBuilder {
    dict: Dict,
    pending_key: Option<Key>,
    variant: Option<&'static str>,
}

impl DictBuilder {
    fn insert<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) -> Result<(), PathError> {
        let value = value
            .serialize(ValueSerializer)
            .map_err(|e| e.at_key(&key).in_variant(self.variant))?;
        self.dict.items.insert(key, value);
        Ok(())
    }

    fn finish(self) -> Value {
        let dict = Value::Dict(self.dict);
        match self.variant {
            Some(variant) => tagged(variant, dict),
            None => dict,
        }
    }
}

impl ser::SerializeMap for DictBuilder {
    type Ok = Value;
    type Error = PathError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), PathError> {
        let key = key.serialize(ValueSerializer)?;
        let key = Key::from_value(&key).map_err(|_| {
            let (kind, repr) = (key.type_name(), key.short_repr(40));
            PathError::new(format!("a {kind} cannot be a dict key: {repr}"))
        })?;
        self.pending_key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), PathError> {
        let key = self.pending_key.take();
        let key = key.ok_or_else(|| PathError::new("map value serialized before its key"))?;
        self.insert(key, value)
    }
    fn end(self) -> Result<Value, PathError> {
        Ok(self.finish())
    }
}

macro_rules! dict_builder_impls {
    ($($trait:ident)*) => {$(
        impl ser::$trait for DictBuilder {
            type Ok = Value;
            type Error = PathError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), PathError> {
                self.insert(Key::Str(name.to_string()), value)
            }
            fn end(self) -> Result<Value, PathError> {
                Ok(self.finish())
            }
        }
    )*};
}

dict_builder_impls!(SerializeStruct SerializeStructVariant);

// ---------------------------------------------------------------------------------------
// Deserializer: Value -> Rust

/// Reads from a borrowed [`Value`]; strings and bytes are copied, so it serves any `'de`.
struct ValueDeserializer<'a>(&'a Value);

fn first<T: Element>(tensor: &Tensor) -> Option<T> {
    tensor.to_vec::<T>().ok()?.into_iter().next()
}

/// The number held by a 0-d tensor or numpy scalar, as a plain value.
fn scalar(value: &Value) -> Option<Value> {
    let t = value.as_tensor().filter(|t| t.shape().is_empty())?;
    Some(match t.dtype() {
        DType::Float64 => Value::Float(first::<f64>(t)?),
        DType::Float32 => Value::Float(first::<f32>(t)?.into()),
        DType::Float16 => Value::Float(first::<half::f16>(t)?.into()),
        DType::BFloat16 => Value::Float(first::<half::bf16>(t)?.into()),
        DType::Int64 => Value::Int(first::<i64>(t)?),
        DType::Int32 => Value::Int(first::<i32>(t)?.into()),
        DType::Int16 => Value::Int(first::<i16>(t)?.into()),
        DType::Int8 => Value::Int(first::<i8>(t)?.into()),
        DType::UInt8 => Value::Int(first::<u8>(t)?.into()),
        DType::UInt16 => Value::Int(first::<u16>(t)?.into()),
        DType::UInt32 => Value::Int(first::<u32>(t)?.into()),
        DType::UInt64 => int_value(first::<u64>(t)?.into()),
        DType::Bool => Value::Bool(first::<bool>(t)?),
        _ => return None,
    })
}

fn visit_bigint<'de, V: Visitor<'de>>(b: &BigInt, visitor: V) -> Result<V::Value, PathError> {
    if let Ok(u) = u64::try_from(b) {
        visitor.visit_u64(u)
    } else if let Ok(i) = i128::try_from(b) {
        visitor.visit_i128(i)
    } else if let Ok(u) = u128::try_from(b) {
        visitor.visit_u128(u)
    } else {
        let expected = &visitor as &dyn de::Expected;
        Err(PathError::new(format!(
            "expected {expected}, found int {b} which does not fit in 128 bits"
        )))
    }
}

/// Visits `items` as a sequence and checks that the visitor consumed all of them.
fn visit_items<'de, V: Visitor<'de>>(items: &[Value], visitor: V) -> Result<V::Value, PathError> {
    let mut seq = SeqAccess(items.iter().enumerate());
    let out = visitor.visit_seq(&mut seq)?;
    match seq.0.len() {
        0 => Ok(out),
        left => Err(PathError::new(format!(
            "expected {} elements, found {}",
            items.len() - left,
            items.len()
        ))),
    }
}

/// Visits plain numbers (`torch.Size` dims, the bytes of a `bytes`) as a sequence.
fn visit_numbers<'de, V, I>(numbers: I, visitor: V) -> Result<V::Value, PathError>
where
    V: Visitor<'de>,
    I: Iterator,
    I::Item: IntoDeserializer<'de, PathError>,
{
    let mut seq = SeqDeserializer::new(numbers);
    let out = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

impl ValueDeserializer<'_> {
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Int(i) => visitor.visit_i64(*i),
            Value::BigInt(b) => visit_bigint(b, visitor),
            v => match scalar(v) {
                Some(s @ (Value::Int(_) | Value::BigInt(_))) => {
                    ValueDeserializer(&s).integer(visitor)
                }
                _ => Err(mismatch(v, &visitor)),
            },
        }
    }

    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        // Python writes `0` for a zero weight decay: any int is accepted as a float.
        match self.0 {
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Int(i) => visitor.visit_f64(*i as f64),
            // Parsing the decimal form rounds correctly, like Python's float() of an int.
            Value::BigInt(b) => visitor.visit_f64(b.to_string().parse().unwrap_or(f64::NAN)),
            v => match scalar(v) {
                Some(s @ (Value::Float(_) | Value::Int(_) | Value::BigInt(_))) => {
                    ValueDeserializer(&s).float(visitor)
                }
                _ => Err(mismatch(v, &visitor)),
            },
        }
    }

    fn boolean<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match (self.0, scalar(self.0)) {
            (Value::Bool(b), _) => visitor.visit_bool(*b),
            (_, Some(Value::Bool(b))) => visitor.visit_bool(b),
            (v, _) => Err(mismatch(v, &visitor)),
        }
    }

    fn string<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Str(_) | Value::DType(_) | Value::Device { .. } => self.deserialize_any(visitor),
            v => Err(mismatch(v, &visitor)),
        }
    }

    fn unit<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Tuple(items) if items.is_empty() => visitor.visit_unit(),
            v => Err(mismatch(v, &visitor)),
        }
    }

    fn seq<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::List(items) | Value::Tuple(items) => visit_items(items, visitor),
            Value::Set(items) | Value::FrozenSet(items) => visit_items(items, visitor),
            Value::Size(dims) => visit_numbers(dims.iter().copied(), visitor),
            // A `Vec<u8>` field written by Python as `bytes`.
            Value::Bytes(b) | Value::ByteArray(b) => visit_numbers(b.iter().copied(), visitor),
            v => Err(mismatch(v, &visitor)),
        }
    }

    fn map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Dict(dict) => visitor.visit_map(MapAccess::new(dict)),
            v => Err(mismatch(v, &visitor)),
        }
    }

    fn structure<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            // A namedtuple-like positional record.
            Value::List(items) | Value::Tuple(items) => visit_items(items, visitor),
            _ => self.map(visitor),
        }
    }
}

/// Deserializer methods that ignore their extra arguments and delegate to `$target`.
macro_rules! delegate {
    ($($method:ident($($arg:ident: $ty:ty),*) => $target:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, PathError> {
            $(let _ = $arg;)*
            self.$target(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDeserializer<'_> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::BigInt(b) => visit_bigint(b, visitor),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Bytes(b) | Value::ByteArray(b) => visitor.visit_bytes(b),
            Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) => {
                self.seq(visitor)
            }
            Value::Size(_) => self.seq(visitor),
            Value::Dict(dict) => visitor.visit_map(MapAccess::new(dict)),
            Value::DType(d) => visitor.visit_str(d.name()),
            Value::Device { kind, index } => match index {
                Some(i) => visitor.visit_str(&format!("{kind}:{i}")),
                None => visitor.visit_str(kind),
            },
            v => match scalar(v) {
                Some(s) => ValueDeserializer(&s).deserialize_any(visitor),
                None => Err(mismatch(v, &visitor)),
            },
        }
    }

    delegate! {
        deserialize_i8() => integer; deserialize_i16() => integer; deserialize_i32() => integer;
        deserialize_i64() => integer; deserialize_i128() => integer; deserialize_u8() => integer;
        deserialize_u16() => integer; deserialize_u32() => integer; deserialize_u64() => integer;
        deserialize_u128() => integer;
        deserialize_f32() => float; deserialize_f64() => float;
        deserialize_bool() => boolean;
        deserialize_char() => string; deserialize_str() => string; deserialize_string() => string;
        deserialize_bytes() => deserialize_any; deserialize_byte_buf() => deserialize_any;
        deserialize_identifier() => deserialize_any;
        deserialize_unit() => unit; deserialize_unit_struct(_name: &'static str) => unit;
        deserialize_seq() => seq; deserialize_tuple(_len: usize) => seq;
        deserialize_tuple_struct(_name: &'static str, _len: usize) => seq;
        deserialize_map() => map;
        deserialize_struct(_name: &'static str, _fields: &'static [&'static str]) => structure;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError>
    where
        V: Visitor<'de>,
    {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            Value::Str(s) => visitor.visit_enum(StrDeserializer::<PathError>::new(s)),
            Value::Dict(dict) if dict.len() == 1 => match dict.iter().next() {
                Some((key, content)) => visitor.visit_enum(VariantAccess { key, content }),
                None => Err(PathError::new("dict changed while reading")),
            },
            v => Err(PathError::new(format!(
                "expected enum {name} as a variant name (str) or a dict with one key, found {} {}",
                v.type_name(),
                v.short_repr(40)
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_unit()
    }
}

/// The items of a sequence, numbered for error paths.
struct SeqAccess<'a>(std::iter::Enumerate<std::slice::Iter<'a, Value>>);

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = PathError;

    fn next_element_seed<T>(&mut self, seed: T) -> Result<Option<T::Value>, PathError>
    where
        T: DeserializeSeed<'de>,
    {
        let Some((index, item)) = self.0.next() else {
            return Ok(None);
        };
        let item = seed.deserialize(ValueDeserializer(item));
        item.map(Some).map_err(|e| e.at_index(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct MapAccess<'a> {
    entries: indexmap::map::Iter<'a, Key, Value>,
    pending: Option<(&'a Key, &'a Value)>,
}

impl<'a> MapAccess<'a> {
    fn new(dict: &'a Dict) -> MapAccess<'a> {
        let entries = dict.items.iter();
        MapAccess {
            entries,
            pending: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = PathError;

    fn next_key_seed<K>(&mut self, seed: K) -> Result<Option<K::Value>, PathError>
    where
        K: DeserializeSeed<'de>,
    {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        let key_value = seed.deserialize(KeyDeserializer(key));
        key_value.map(Some).map_err(|e| e.at_key(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let pending = self.pending.take();
        let (key, value) =
            pending.ok_or_else(|| PathError::new("dict value read before its key"))?;
        seed.deserialize(ValueDeserializer(value))
            .map_err(|e| e.at_key(key))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Reads a dict key, converting between string and int keys the way Python's `json` module
/// does: `{0: ..}` is read by a `String`-keyed map as `"0"`, and `{"3": ..}` by a
/// `u32`-keyed map as `3` (what a JSON round trip of an optimizer's `state` leaves).
struct KeyDeserializer<'a>(&'a Key);

impl KeyDeserializer<'_> {
    fn number<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let Key::Str(s) = self.0 else {
            return self.deserialize_any(visitor);
        };
        if let Ok(u) = s.parse::<u64>() {
            visitor.visit_u64(u)
        } else if let Ok(i) = s.parse::<i64>() {
            visitor.visit_i64(i)
        } else if let Ok(f) = s.parse::<f64>() {
            visitor.visit_f64(f)
        } else {
            visitor.visit_str(s)
        }
    }

    fn name<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Key::Int(i) => visitor.visit_str(&i.to_string()),
            Key::BigInt(b) => visitor.visit_str(&b.to_string()),
            _ => self.deserialize_any(visitor),
        }
    }
}

impl<'de> Deserializer<'de> for KeyDeserializer<'_> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Key::Str(s) => visitor.visit_str(s),
            other => ValueDeserializer(&other.to_value()).deserialize_any(visitor),
        }
    }

    delegate! {
        deserialize_i8() => number; deserialize_i16() => number; deserialize_i32() => number;
        deserialize_i64() => number; deserialize_i128() => number; deserialize_u8() => number;
        deserialize_u16() => number; deserialize_u32() => number; deserialize_u64() => number;
        deserialize_u128() => number; deserialize_f32() => number; deserialize_f64() => number;
        deserialize_str() => name; deserialize_string() => name; deserialize_identifier() => name;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Key::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError>
    where
        V: Visitor<'de>,
    {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            Key::Str(s) => visitor.visit_enum(StrDeserializer::<PathError>::new(s)),
            other => ValueDeserializer(&other.to_value()).deserialize_enum(name, variants, visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct ignored_any
    }
}

/// An externally tagged variant `{variant: content}`, as both the enum and its content.
struct VariantAccess<'a> {
    key: &'a Key,
    content: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for VariantAccess<'a> {
    type Error = PathError;
    type Variant = VariantAccess<'a>;

    fn variant_seed<V>(self, seed: V) -> Result<(V::Value, VariantAccess<'a>), PathError>
    where
        V: DeserializeSeed<'de>,
    {
        let variant = seed.deserialize(KeyDeserializer(self.key))?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_> {
    type Error = PathError;

    fn unit_variant(self) -> Result<(), PathError> {
        match self.content {
            Value::None => Ok(()),
            v => Err(mismatch(v, &"None for a unit variant").at_key(self.key)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, PathError> {
        let content = seed.deserialize(ValueDeserializer(self.content));
        content.map_err(|e| e.at_key(self.key))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, PathError> {
        let content = ValueDeserializer(self.content).seq(visitor);
        content.map_err(|e| e.at_key(self.key))
    }

    fn struct_variant<V>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError>
    where
        V: Visitor<'de>,
    {
        let content = ValueDeserializer(self.content).structure(visitor);
        content.map_err(|e| e.at_key(self.key))
    }
}

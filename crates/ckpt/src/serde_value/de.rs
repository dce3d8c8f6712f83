//! The deserializer: Value -> Rust.

use num_bigint::BigInt;
use serde::de::value::{SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};

use super::error::{mismatch, PathError};
use super::ser::int_value;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::{Element, Tensor};
use crate::value::{Dict, Key, Value};

/// Reads from a borrowed [`Value`]; strings and bytes are copied, so it serves any `'de`.
pub(super) struct ValueDeserializer<'a>(pub(super) &'a Value);

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
pub(super) struct SeqAccess<'a>(std::iter::Enumerate<std::slice::Iter<'a, Value>>);

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

pub(super) struct MapAccess<'a> {
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
pub(super) struct KeyDeserializer<'a>(&'a Key);

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
pub(super) struct VariantAccess<'a> {
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

//! The serializer: Rust -> Value.

use num_bigint::BigInt;
use serde::ser::{self, Serialize};

use super::error::PathError;
use crate::error::Result;
use crate::value::{Dict, Key, Value};

pub(super) struct ValueSerializer;

pub(super) fn int_value(v: i128) -> Value {
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
pub(super) struct SeqBuilder {
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
pub(super) struct DictBuilder {
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

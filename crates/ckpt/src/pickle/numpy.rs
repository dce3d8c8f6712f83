//! numpy inside pickles: `ndarray` (`_reconstruct` + `__setstate__`, `_frombuffer`), numpy
//! scalars and dtypes, as numpy 1.x/2.x and Python 2 write them (`docs/formats.md#numpy`).
//! Arrays become [`Value::NdArray`] tensors owning their bytes in little-endian order.

use crate::dtype::DType;
use crate::pickle::args::{int_list, text_of, truthy};
use crate::pickle::invalid::Invalid;
use crate::tensor::{contiguous_strides, Storage, Tensor};
use crate::value::{ObjectBuild, Value};

/// Modules that hold `_reconstruct` and `scalar` across numpy versions.
pub(super) fn is_multiarray_module(module: &str) -> bool {
    matches!(
        module,
        "numpy.core.multiarray"
            | "numpy._core.multiarray"
            | "numpy.core._multiarray_umath"
            | "numpy._core._multiarray_umath"
    )
}

/// Modules that hold `_frombuffer` across numpy versions.
pub(super) fn is_numeric_module(module: &str) -> bool {
    matches!(module, "numpy.core.numeric" | "numpy._core.numeric")
}

/// Whether a global is numpy's array constructor, whose `BUILD` state carries the data.
pub(super) fn is_reconstruct(module: &str, name: &str) -> bool {
    name == "_reconstruct" && is_multiarray_module(module)
}

/// An element type and whether its bytes are big-endian.
struct NumpyDType {
    dtype: DType,
    big_endian: bool,
}

/// Reads a `numpy.dtype(typestr, align, copy)` object with its `BUILD` state.
fn numpy_dtype(value: &Value) -> Result<NumpyDType, Invalid> {
    let object = match value {
        Value::Object(o) if o.module == "numpy" && o.name == "dtype" => o,
        other => return Err(Invalid::expected("", "a numpy.dtype", other.short_repr(60))),
    };
    let args = match &object.build {
        ObjectBuild::Call(args) | ObjectBuild::New(args) => args,
        ObjectBuild::Global => {
            return Err(Invalid::expected("", "a numpy.dtype instance", "the class"))
        }
    };
    let typestr = args
        .first()
        .and_then(text_of)
        .ok_or_else(|| Invalid::Malformed("numpy.dtype: expected a type string".into()))?;
    let mut big_endian = typestr.starts_with('>');
    let bare = typestr.trim_start_matches(['<', '>', '|', '=']);
    if let Some(Value::Tuple(state)) = &object.state {
        match state.get(1).and_then(text_of).as_deref() {
            Some(">") => big_endian = true,
            Some("<") => big_endian = false,
            _ => {}
        }
        if state
            .get(3)
            .is_some_and(|names| !matches!(names, Value::None))
        {
            return Err(Invalid::Unsupported(format!(
                "structured numpy dtype {typestr} (only plain numeric arrays are supported)"
            )));
        }
    }
    if bare.starts_with('O') {
        return Err(Invalid::Unsupported(
            "numpy object arrays (dtype 'O') hold Python objects, not numbers".into(),
        ));
    }
    let dtype = DType::from_numpy_typestr(bare)
        .ok_or_else(|| Invalid::Unsupported(format!("numpy dtype '{typestr}'")))?;
    Ok(NumpyDType { dtype, big_endian })
}

/// An array's bytes: a copy the reader made, or a view of the file the pickle lies in.
pub(super) enum ArrayBytes {
    Owned(Vec<u8>),
    Shared(Storage),
}

impl ArrayBytes {
    fn len(&self) -> usize {
        match self {
            ArrayBytes::Owned(bytes) => bytes.len(),
            ArrayBytes::Shared(storage) => storage.len(),
        }
    }
}

/// The bytes of an array buffer: bytes, a bytearray, or a Python 2 str read as latin1
/// (numpy's own fallback for Python 2 pickles).
fn buffer_bytes(value: Value) -> Result<ArrayBytes, Invalid> {
    match value {
        Value::Bytes(b) | Value::ByteArray(b) => Ok(ArrayBytes::Owned(b)),
        Value::Str(s) => s
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    Invalid::Malformed("numpy buffer: text with a non-latin1 character".into())
                })
            })
            .collect::<Result<Vec<u8>, Invalid>>()
            .map(ArrayBytes::Owned),
        Value::List(_) => Err(Invalid::Unsupported(
            "numpy object arrays (a list of Python objects)".into(),
        )),
        other => Err(Invalid::expected(
            "numpy buffer",
            "bytes",
            format!("a {}", other.type_name()),
        )),
    }
}

fn shape_of(value: &Value) -> Result<Vec<usize>, Invalid> {
    int_list("numpy shape", value)?
        .into_iter()
        .map(|d| {
            usize::try_from(d)
                .map_err(|_| Invalid::Malformed(format!("numpy shape: negative dimension {d}")))
        })
        .collect()
}

/// A numpy array of `shape` over `bytes` (C or Fortran order), byte-swapped to little-endian
/// (a copy; little-endian views of the file stay views).
fn array(
    dtype: &NumpyDType,
    shape: Vec<usize>,
    fortran: bool,
    bytes: ArrayBytes,
) -> Result<Tensor, Invalid> {
    let numel =
        crate::tensor::checked_numel(&shape).map_err(Invalid::rejected_in("numpy array"))?;
    let expected = numel.checked_mul(dtype.dtype.size());
    if expected != Some(bytes.len()) {
        return Err(Invalid::Malformed(format!("numpy array: buffer size does not match array size ({} bytes for {} of shape {shape:?})", bytes.len(), dtype.dtype)));
    }
    let unit = dtype.dtype.swap_unit();
    let swap = dtype.big_endian && unit > 1;
    let storage = match bytes {
        ArrayBytes::Shared(storage) if !swap => storage,
        ArrayBytes::Shared(storage) => {
            Storage::from_vec(swapped(storage.as_bytes().to_vec(), unit))
        }
        ArrayBytes::Owned(bytes) if swap => Storage::from_vec(swapped(bytes, unit)),
        ArrayBytes::Owned(bytes) => Storage::from_vec(bytes),
    };
    let strides = if fortran {
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        contiguous_strides(&reversed).into_iter().rev().collect()
    } else {
        contiguous_strides(&shape)
    };
    Tensor::new(dtype.dtype, shape, strides, 0, storage)
        .map_err(Invalid::rejected_in("numpy array"))
}

/// `bytes` with every `unit`-byte group reversed.
fn swapped(mut bytes: Vec<u8>, unit: usize) -> Vec<u8> {
    for chunk in bytes.chunks_exact_mut(unit) {
        chunk.reverse();
    }
    bytes
}

/// `ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata))` (or the 4-tuple
/// without version), applied to the array `_reconstruct` made.
pub(super) fn ndarray_from_state(state: Value) -> Result<Value, Invalid> {
    let mut items = match state {
        Value::Tuple(items) => items,
        other => {
            return Err(Invalid::expected(
                "numpy array state",
                "a tuple",
                format!("a {}", other.type_name()),
            ))
        }
    };
    if !matches!(items.len(), 4 | 5) {
        return Err(state_length_error(items.len()));
    }
    let data = match items.pop() {
        Some(data) => buffer_bytes(data)?,
        None => return Err(state_length_error(0)),
    };
    ndarray_from_items(items, data)
}

fn state_length_error(len: usize) -> Invalid {
    Invalid::expected("numpy array state", "4 or 5 items", len.to_string())
}

/// [`ndarray_from_state`] with the state's last item, the data, given apart: `items` are
/// `(version, shape, dtype, is_fortran)` or `(shape, dtype, is_fortran)`.
pub(super) fn ndarray_from_items(
    mut items: Vec<Value>,
    data: ArrayBytes,
) -> Result<Value, Invalid> {
    if !matches!(items.len(), 3 | 4) {
        return Err(state_length_error(items.len() + 1));
    }
    if items.len() == 4 {
        match items.remove(0) {
            Value::Int(0 | 1) => {}
            other => {
                return Err(Invalid::Malformed(format!(
                    "numpy array state: unsupported version {}",
                    other.short_repr(20)
                )))
            }
        }
    }
    let [shape, dtype, fortran]: [Value; 3] = items
        .try_into()
        .map_err(|v: Vec<Value>| state_length_error(v.len() + 1))?;
    let dtype = numpy_dtype(&dtype)?;
    let tensor = array(&dtype, shape_of(&shape)?, truthy(Some(&fortran)), data)?;
    Ok(Value::NdArray(tensor))
}

/// `numpy.core.multiarray.scalar(dtype, bytes)`: a numpy scalar, as a 0-d array.
pub(super) fn scalar(args: Vec<Value>) -> Result<Value, Invalid> {
    let mut args = args.into_iter();
    let dtype = numpy_dtype(
        &args
            .next()
            .ok_or_else(|| Invalid::Malformed("numpy scalar: missing dtype".into()))?,
    )?;
    let data = buffer_bytes(
        args.next()
            .ok_or_else(|| Invalid::Malformed("numpy scalar: missing data".into()))?,
    )?;
    Ok(Value::NdArray(array(&dtype, Vec::new(), false, data)?))
}

/// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5 arrays).
pub(super) fn frombuffer(mut args: Vec<Value>) -> Result<Value, Invalid> {
    if args.len() != 4 {
        return Err(Invalid::Malformed(
            "numpy _frombuffer: expected 4 arguments".into(),
        ));
    }
    let buffer = buffer_bytes(args.remove(0))?;
    frombuffer_with(args, buffer)
}

/// [`frombuffer`] with the buffer given apart: `args` are `(dtype, shape, order)`.
pub(super) fn frombuffer_with(args: Vec<Value>, buffer: ArrayBytes) -> Result<Value, Invalid> {
    let [dtype, shape, order]: [Value; 3] = args
        .try_into()
        .map_err(|_| Invalid::Malformed("numpy _frombuffer: expected 4 arguments".into()))?;
    let dtype = numpy_dtype(&dtype)?;
    let fortran = text_of(&order).as_deref() == Some("F");
    let tensor = array(&dtype, shape_of(&shape)?, fortran, buffer)?;
    Ok(Value::NdArray(tensor))
}

//! Reading the arguments of the globals the reader interprets: argument counts, int
//! tuples, flags and strings, as Python would accept them.

use crate::pickle::invalid::Invalid;
use crate::value::Value;

/// Exactly `N` arguments.
pub(super) fn fixed<const N: usize>(name: &str, args: Vec<Value>) -> Result<[Value; N], Invalid> {
    let found = args.len();
    args.try_into()
        .map_err(|_| Invalid::expected(name, format!("{N} arguments"), found.to_string()))
}

/// A list of non-negative ints (a tensor's size or stride): argument `what` of `name`.
pub(super) fn usize_list(
    name: &str,
    what: &str,
    value: Option<&Value>,
) -> Result<Vec<usize>, Invalid> {
    let value = value.ok_or_else(|| Invalid::Malformed(format!("{name}: missing {what}")))?;
    int_list(name, value)?
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| {
                Invalid::Malformed(format!("{name}: {what} must not be negative, found {d}"))
            })
        })
        .collect()
}

/// A tuple/list/`torch.Size` of ints.
pub(super) fn int_list(name: &str, value: &Value) -> Result<Vec<i64>, Invalid> {
    let items = match value {
        Value::Tuple(items) | Value::List(items) => items,
        Value::Size(dims) => return Ok(dims.clone()),
        other => {
            return Err(Invalid::expected(
                name,
                "a tuple of ints",
                format!("a {}", other.type_name()),
            ))
        }
    };
    items
        .iter()
        .map(|v| match v {
            Value::Int(i) => Ok(*i),
            other => Err(Invalid::expected(name, "ints", other.short_repr(40))),
        })
        .collect()
}

/// Python truthiness of the simple values used as flags.
pub(super) fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        _ => false,
    }
}

/// Text of a `str`, or of Python 2 bytes read as latin1.
pub(super) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
        _ => None,
    }
}

//! Errors that carry the path of the entry they are about.

use std::fmt::{self, Display};

use serde::de::{self};
use serde::ser::{self};

use crate::error::Error;
use crate::value::{Key, Value};

/// The error of both directions; segments are pushed while the error travels outwards, so
/// the success path never pays for path bookkeeping.
#[derive(Debug)]
pub(super) struct PathError {
    message: String,
    /// Innermost first: a field or string key (`lr`), or a bracketed index or key (`[3]`).
    segments: Vec<String>,
}

impl PathError {
    pub(super) fn new(message: impl Into<String>) -> PathError {
        let message = message.into();
        PathError {
            message,
            segments: Vec::new(),
        }
    }

    pub(super) fn at_index(mut self, index: usize) -> PathError {
        self.segments.push(format!("[{index}]"));
        self
    }

    pub(super) fn at_key(mut self, key: &Key) -> PathError {
        self.segments.push(match key {
            Key::Str(s) => s.clone(),
            other => format!("[{}]", other.to_value().short_repr(40)),
        });
        self
    }

    /// Adds the enum variant whose content failed, if any.
    pub(super) fn in_variant(mut self, variant: Option<&str>) -> PathError {
        self.segments.extend(variant.map(str::to_string));
        self
    }

    pub(super) fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.segments.iter().rev() {
            if !out.is_empty() && !segment.starts_with('[') {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    pub(super) fn into_error(self) -> Error {
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
pub(super) fn mismatch(value: &Value, expected: &dyn de::Expected) -> PathError {
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

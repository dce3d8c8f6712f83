//! What is wrong with the objects a pickle builds, as the code below the machine finds it:
//! the arguments of a known global, a numpy array's state, a value that exceeds a limit.
//! Those helpers do not know where they are in the input; the machine does, and turns an
//! [`Invalid`] into an [`Error::Pickle`] with the byte offset of the opcode and its name
//! (`Machine::err`).

use std::fmt;

use crate::error::Error;

/// A problem with a built object, without its position in the input.
#[derive(Debug)]
pub(super) enum Invalid {
    /// `context` (the callable or structure being read) needs `expected` and found `found`.
    Expected {
        /// `torch.Size`, `_rebuild_tensor_v2`, `numpy.dtype`, ... (empty: no context).
        context: String,
        /// What would have been accepted (`a tuple of ints`).
        expected: String,
        /// What the input holds (`a str`, a short repr).
        found: String,
    },
    /// A bound that keeps a hostile input from exhausting memory (values, depth, copies).
    Limit(String),
    /// Valid Python that ckpt does not interpret (quantized tensors, object arrays, ...).
    Unsupported(String),
    /// An input that is malformed in a way said in a sentence.
    Malformed(String),
    /// A value the crate refused while building it (a tensor's layout, a key), with what
    /// was being built.
    Rejected {
        /// What was being built (`_rebuild_tensor_v2`, `numpy array`; empty: no context).
        context: String,
        /// The crate's error.
        cause: Error,
    },
    /// An inconsistency of the reader itself, never the input's fault.
    Internal(String),
}

impl Invalid {
    /// [`Invalid::Expected`].
    pub(super) fn expected(
        context: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Invalid {
        Invalid::Expected {
            context: context.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// [`Invalid::Rejected`] without a context (for `map_err`).
    pub(super) fn rejected(cause: Error) -> Invalid {
        Invalid::Rejected {
            context: String::new(),
            cause,
        }
    }

    /// [`Invalid::Rejected`] of what `context` was building.
    pub(super) fn rejected_in(context: impl Into<String>) -> impl FnOnce(Error) -> Invalid {
        let context = context.into();
        move |cause| Invalid::Rejected { context, cause }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = |f: &mut fmt::Formatter<'_>, context: &str| {
            if context.is_empty() {
                Ok(())
            } else {
                write!(f, "{context}: ")
            }
        };
        match self {
            Invalid::Expected {
                context: c,
                expected,
                found,
            } => {
                context(f, c)?;
                write!(f, "expected {expected}, found {found}")
            }
            Invalid::Limit(message) | Invalid::Malformed(message) => f.write_str(message),
            Invalid::Unsupported(message) => write!(f, "unsupported: {message}"),
            Invalid::Rejected { context: c, cause } => {
                context(f, c)?;
                write!(f, "{cause}")
            }
            Invalid::Internal(message) => write!(f, "internal error: {message}"),
        }
    }
}

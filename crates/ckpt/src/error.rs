//! One error type for the whole library.
//!
//! Every error says what went wrong and where: the file (added by [`Error::in_file`] at the
//! boundary where a path is known), the byte offset inside a pickle or archive, or the key of
//! a checkpoint entry.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, writing or applying a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a path (empty while the path is not yet known, see
    /// [`Error::io_unnamed`]).
    #[error("{}{source}", if path.as_os_str().is_empty() { String::new() } else { format!("{}: ", path.display()) })]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A malformed pickle stream: the byte offset (from the start of the stream or file) and
    /// what was expected there.
    #[error("pickle at byte {offset}: {message}")]
    Pickle {
        /// Where, in bytes.
        offset: u64,
        /// What was wrong.
        message: String,
    },

    /// A malformed container (zip archive, legacy stream, safetensors header, numpy array).
    #[error("{message}")]
    Format {
        /// What was wrong.
        message: String,
    },

    /// Valid content that this library deliberately does not handle (TorchScript archives,
    /// out-of-band pickle buffers, sparse tensors, ...).
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is not handled.
        message: String,
    },

    /// A checkpoint entry with the wrong type or shape, named by its key.
    #[error("key '{key}': {message}")]
    Key {
        /// The entry's key.
        key: String,
        /// What was wrong with it.
        message: String,
    },

    /// A misuse of the API or an invalid argument (bad name, duplicate checkpointable, ...).
    #[error("{message}")]
    Invalid {
        /// What was wrong.
        message: String,
    },

    /// Another error, with the file it happened in.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error from a writer that does not know its file; [`Error::in_file`] names it.
    pub fn io_unnamed(source: std::io::Error) -> Self {
        Error::Io {
            path: PathBuf::new(),
            source,
        }
    }

    /// A malformed pickle at `offset`.
    pub fn pickle(offset: u64, message: impl Into<String>) -> Self {
        Error::Pickle {
            offset,
            message: message.into(),
        }
    }

    /// A malformed container.
    pub fn format(message: impl Into<String>) -> Self {
        Error::Format {
            message: message.into(),
        }
    }

    /// Valid but unsupported content.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported {
            message: message.into(),
        }
    }

    /// A problem with the entry `key`.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A misuse of the API.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
        }
    }

    /// Attach the file this error happened in (once: an error that already names a file, or
    /// an I/O error on a path, is returned unchanged).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Io { path: p, source } if p.as_os_str().is_empty() => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            Error::File { .. } | Error::Io { .. } => self,
            other => Error::File {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }

    /// The innermost error, without the file context.
    pub fn root(&self) -> &Error {
        match self {
            Error::File { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Adds file context to any `Result<_, Error>`.
pub(crate) trait ResultExt<T> {
    /// See [`Error::in_file`].
    fn in_file(self, path: &Path) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn in_file(self, path: &Path) -> Result<T> {
        self.map_err(|e| e.in_file(path))
    }
}

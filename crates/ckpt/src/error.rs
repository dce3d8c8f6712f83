//! One error type for the whole library.
//!
//! Every error says what went wrong and where: the file (added by [`Error::in_file`] at the
//! boundary where a path is known), the byte offset inside a pickle or archive, or the key of
//! a checkpoint entry (added by [`Error::in_entry`]).
//!
//! The cases a program handles differently have their own variants with the data to act on
//! ([`Error::Truncated`], [`Error::MissingKey`], [`Error::BadTag`], [`Error::Download`], ...).
//! Causes stay reachable through [`std::error::Error::source`]: an error's own message never
//! repeats the message of the error it returns as its source, so printing the chain
//! (anyhow's `{:#}`, a loop over `source()`, or [`Error::report`]) says each thing once.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::dtype::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, writing or applying a checkpoint.
///
/// Context wraps the error that happened: [`Error::File`] names the file, [`Error::Entry`]
/// the checkpoint entry. [`Error::root`] looks through them, [`Error::path`] and
/// [`Error::entry_key`] find the context:
///
/// ```
/// use ckpt::Error;
/// let err = ckpt::format::load_bytes(b"\x80\x02".to_vec(), &Default::default()).unwrap_err();
/// assert!(matches!(err.root(), Error::Pickle { offset: 2, .. }));
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("empty.pth"), b"")?;
/// let err = ckpt::format::load(dir.path().join("empty.pth")).unwrap_err();
/// assert!(matches!(err.root(), Error::UnknownFormat { first_bytes } if first_bytes.is_empty()));
/// assert_eq!(err.path(), Some(dir.path().join("empty.pth").as_path()));
/// // The whole chain on one line:
/// assert!(err.report().to_string().ends_with("empty.pth: empty file"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a path (empty while the path is not yet known, see
    /// [`Error::io_unnamed`]); the OS error is the source.
    #[error("{}", if path.as_os_str().is_empty() { "I/O error".to_string() } else { path.display().to_string() })]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Another error, with the file it happened in (see [`Error::in_file`]).
    #[error("{}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<Error>,
    },

    /// Another error, with the checkpoint entry it happened in (see [`Error::in_entry`]).
    #[error("key '{key}'")]
    Entry {
        /// The entry's key (`model`, `fc.weight`, `param_groups[0].lr`, ...).
        key: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },

    /// The input ends before a structure it declares: a file cut short by an interrupted
    /// copy or download.
    #[error("truncated: {what} at byte {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        /// The structure (`zip end record`, `storage data/0`, ...).
        what: String,
        /// Where the structure starts, in bytes from the start of the input.
        offset: u64,
        /// How many bytes it needs from there.
        needed: u64,
        /// How many bytes there are from there to the end of the input.
        available: u64,
    },

    /// Not a checkpoint of a known format (nor an empty file): its first bytes.
    #[error("{}", unknown_format(first_bytes))]
    UnknownFormat {
        /// Up to the first 8 bytes of the input (empty for an empty file).
        first_bytes: Vec<u8>,
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

    /// A malformed container (zip archive, legacy stream, safetensors header, numpy array),
    /// with the parser's error as the source when another library found it.
    #[error("{message}")]
    Format {
        /// What was wrong (and where).
        message: String,
        /// The underlying parser's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A zip record whose data does not match the CRC-32 of the archive's directory (checked
    /// when [`LoadOptions::with_verify_crc32`](crate::format::LoadOptions::with_verify_crc32)
    /// asks): the file is corrupt.
    #[error(
        "zip record '{record}': crc32 {found:08x} does not match the directory's {expected:08x}"
    )]
    Checksum {
        /// The record's name in the archive.
        record: String,
        /// The checksum the directory declares.
        expected: u32,
        /// The checksum of the data.
        found: u32,
    },

    /// Valid content that this library deliberately does not handle (TorchScript archives,
    /// out-of-band pickle buffers, compressed zip records, ...).
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is not handled.
        message: String,
    },

    /// A Python global (class or function) that ckpt does not interpret where it must (a
    /// storage class it does not know, a quantized storage, ...).
    #[error("unsupported global {module}.{name}")]
    UnsupportedGlobal {
        /// The global's module (`torch`).
        module: String,
        /// The global's name (`QInt8Storage`).
        name: String,
    },

    /// A required entry is absent; `available` lists the entries there are.
    #[error("{}", missing_key(key, available))]
    MissingKey {
        /// The key looked for.
        key: String,
        /// The keys present where it was looked for, in their order.
        available: Vec<String>,
    },

    /// A checkpoint entry whose value is not what was expected (its type or content), named
    /// by its key.
    #[error("key '{key}': {message}")]
    Key {
        /// The entry's key.
        key: String,
        /// What was expected and found.
        message: String,
    },

    /// A tensor of another shape than the one it must replace or match (the key is in the
    /// enclosing [`Error::Entry`]).
    #[error("shape {found:?} does not match the expected {expected:?}")]
    ShapeMismatch {
        /// The shape expected (the model's, the parameter's).
        expected: Vec<usize>,
        /// The shape found (the checkpoint's).
        found: Vec<usize>,
    },

    /// A tensor whose dtype cannot be used where it is (a complex tensor into a real one
    /// would lose its imaginary part; a typed read of another dtype); the key is in the
    /// enclosing [`Error::Entry`].
    #[error("{}", dtype_mismatch(*expected, *found))]
    DTypeMismatch {
        /// The dtype needed.
        expected: DType,
        /// The tensor's dtype.
        found: DType,
    },

    /// The `last_checkpoint` tag of a save directory cannot be followed: resuming never
    /// silently starts from scratch.
    #[error("{} {problem}", tag.display())]
    BadTag {
        /// The tag file (`<save_dir>/last_checkpoint`).
        tag: PathBuf,
        /// What is wrong with it.
        problem: TagProblem,
    },

    /// A checkpoint was written, but `last_checkpoint` could not be updated to name it (a
    /// full disk): a resume would start from the checkpoint the tag still names. The cause
    /// (the tag write's error) is the source.
    #[error("{} was written, but last_checkpoint was not updated to name it", checkpoint.display())]
    NotTagged {
        /// The checkpoint that was written.
        checkpoint: PathBuf,
        /// Why the tag could not be written.
        #[source]
        source: Box<Error>,
    },

    /// Another process holds the writer lock of a save directory: two jobs saving into one
    /// directory would interleave their checkpoints and move the tag backwards.
    #[error("{} is locked by another writer ({holder}); two processes must not save into one directory", dir.display())]
    WriterBusy {
        /// The save directory.
        dir: PathBuf,
        /// Who holds the lock, as it wrote itself into the lock file (`pid 12@host`), or
        /// `unknown`.
        holder: String,
    },

    /// A checkpointable registered under a name that is taken (by another checkpointable or
    /// by the model's key).
    #[error("Key {name} already used in the Checkpointer")]
    DuplicateCheckpointable {
        /// The name.
        name: String,
    },

    /// A load asked for a checkpointable that is not registered.
    #[error("no checkpointable is registered under '{name}'")]
    UnknownCheckpointable {
        /// The name asked for.
        name: String,
    },

    /// A name that cannot be used for a file or an archive record (a checkpoint name with a
    /// path separator, an archive name that is empty, ...).
    #[error("invalid name '{name}': {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// A checkpoint path or URL that cannot be resolved to a file (no handler for its scheme,
    /// not in the model catalog, a bad query option, ...).
    #[error("'{path}': {reason}")]
    InvalidPath {
        /// The path or URL as given.
        path: String,
        /// Why it cannot be resolved.
        reason: String,
    },

    /// Memory for a tensor or a file could not be allocated.
    #[error("cannot allocate {bytes} bytes")]
    OutOfMemory {
        /// The size asked for.
        bytes: u64,
    },

    /// A download failed: the server's HTTP status, or the transport error as the source.
    #[error("{url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// The HTTP status the server answered, if it answered with an error.
        status: Option<u16>,
        /// What happened (`the server answered HTTP status 404`, `download broke off after
        /// 100 of 1000 bytes`, ...).
        reason: String,
        /// The transport's error.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A misuse of the API or an invalid argument (a period of 0, a collective the ranks
    /// disagree on, ...).
    #[error("{message}")]
    Invalid {
        /// What was wrong.
        message: String,
    },

    /// An error of another library or of the program's own code, kept as it is (a candle
    /// error from ckpt-candle, an error of a [`Checkpointable`](crate::Checkpointable)).
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// What is wrong with a `last_checkpoint` tag ([`Error::BadTag`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TagProblem {
    /// The tag holds nothing (or only whitespace).
    Empty,
    /// The tag is not UTF-8 text.
    NotUtf8,
    /// The tag is larger than a file name can be.
    TooLarge {
        /// The largest tag read, in bytes.
        max: u64,
    },
    /// The tag names something other than a plain file name in the save directory (`../x`,
    /// an absolute path).
    OutsideDirectory {
        /// The name in the tag.
        name: String,
    },
    /// The tag names a file that does not exist.
    MissingFile {
        /// The name in the tag.
        name: String,
    },
    /// `last_checkpoint` is not a regular file (a directory, a device, a socket).
    NotAFile,
}

impl fmt::Display for TagProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagProblem::Empty => f.write_str("is empty: it should name the last checkpoint"),
            TagProblem::NotUtf8 => f.write_str("is not UTF-8 text"),
            TagProblem::TooLarge { max } => {
                write!(f, "is larger than {max} bytes; it should hold one file name")
            }
            TagProblem::OutsideDirectory { name } => write!(
                f,
                "names '{name}', which is not a file in the save directory; refusing to load outside it"
            ),
            TagProblem::NotAFile => f.write_str(
                "is not a regular file; refusing to start from scratch",
            ),
            TagProblem::MissingFile { name } => write!(
                f,
                "names '{name}', which does not exist; refusing to start from scratch"
            ),
        }
    }
}

fn unknown_format(first_bytes: &[u8]) -> String {
    if first_bytes.is_empty() {
        return "empty file".to_string();
    }
    let hex: Vec<String> = first_bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "not a checkpoint: the file starts with {} (expected a zip archive, a pickle or safetensors)",
        hex.join(" ")
    )
}

fn missing_key(key: &str, available: &[String]) -> String {
    const SHOWN: usize = 8;
    if available.is_empty() {
        return format!("no entry '{key}' (there are no entries)");
    }
    let shown: Vec<String> = available
        .iter()
        .take(SHOWN)
        .map(|k| format!("'{k}'"))
        .collect();
    let more = match available.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!("no entry '{key}' (the entries: {}{more})", shown.join(", "))
}

fn dtype_mismatch(expected: DType, found: DType) -> String {
    let lost = if found.is_complex() && !expected.is_complex() {
        " (the imaginary part would be lost)"
    } else {
        ""
    };
    format!("a {found} tensor where {expected} is needed{lost}")
}

impl Error {
    /// The path or URL `path` cannot be resolved, for `reason`.
    pub fn invalid_path(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidPath {
            path: path.into(),
            reason: reason.into(),
        }
    }

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
            source: None,
        }
    }

    /// A malformed container that another library's parser found (its error is the source).
    pub fn format_caused(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Format {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// `what` at byte `offset` needs `needed` bytes but the input ends `available` bytes
    /// after `offset`.
    pub fn truncated(what: impl Into<String>, offset: u64, needed: u64, available: u64) -> Self {
        Error::Truncated {
            what: what.into(),
            offset,
            needed,
            available,
        }
    }

    /// Valid but unsupported content.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported {
            message: message.into(),
        }
    }

    /// An entry `key` whose value is not what was expected.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The entry `key` is missing; `available` are the keys there are.
    pub fn missing_key<K: fmt::Display>(
        key: impl Into<String>,
        available: impl IntoIterator<Item = K>,
    ) -> Self {
        Error::MissingKey {
            key: key.into(),
            available: available.into_iter().map(|k| k.to_string()).collect(),
        }
    }

    /// A tensor of shape `found` where `expected` is needed.
    pub fn shape_mismatch(expected: &[usize], found: &[usize]) -> Self {
        Error::ShapeMismatch {
            expected: expected.to_vec(),
            found: found.to_vec(),
        }
    }

    /// A misuse of the API.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
        }
    }

    /// Another library's error, kept as it is.
    pub fn external(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::External(error.into())
    }

    /// Attach the file this error happened in (once: an error that already names a file, or
    /// an I/O error on a path, is returned unchanged).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Io { path: p, source } if p.as_os_str().is_empty() => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            Error::File { .. }
            | Error::Io { .. }
            | Error::NotTagged { .. }
            | Error::WriterBusy { .. } => self,
            other => Error::File {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }

    /// Attach the checkpoint entry this error happened in. An error about that very entry
    /// ([`Error::Key`], [`Error::MissingKey`] or [`Error::Entry`] with the same key) is
    /// returned unchanged.
    pub fn in_entry(self, key: impl Into<String>) -> Self {
        let key = key.into();
        match &self {
            Error::Key { key: k, .. }
            | Error::MissingKey { key: k, .. }
            | Error::Entry { key: k, .. }
                if *k == key =>
            {
                self
            }
            _ => Error::Entry {
                key,
                source: Box::new(self),
            },
        }
    }

    /// The innermost error, without the file and entry context.
    pub fn root(&self) -> &Error {
        match self {
            Error::File { source, .. } | Error::Entry { source, .. } => source.root(),
            other => other,
        }
    }

    /// The file this error names, if any (of [`Error::File`], [`Error::Io`] or
    /// [`Error::BadTag`], outermost first).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::File { path, .. } => Some(path),
            Error::Io { path, .. } if !path.as_os_str().is_empty() => Some(path),
            Error::BadTag { tag, .. } => Some(tag),
            Error::NotTagged { checkpoint, .. } => Some(checkpoint),
            Error::WriterBusy { dir, .. } => Some(dir),
            Error::Entry { source, .. } => source.path(),
            _ => None,
        }
    }

    /// The checkpoint entry this error is about, if any (of [`Error::Entry`], [`Error::Key`]
    /// or [`Error::MissingKey`], outermost first).
    pub fn entry_key(&self) -> Option<&str> {
        match self {
            Error::Entry { key, .. } | Error::Key { key, .. } | Error::MissingKey { key, .. } => {
                Some(key)
            }
            Error::File { source, .. } => source.entry_key(),
            _ => None,
        }
    }

    /// The error and its causes on one line, separated by `: ` (what anyhow prints for
    /// `{:#}`).
    ///
    /// ```
    /// let err = ckpt::Error::io("model.pth", std::io::ErrorKind::NotFound.into());
    /// assert_eq!(err.to_string(), "model.pth");
    /// assert_eq!(err.report().to_string(), "model.pth: entity not found");
    /// ```
    pub fn report(&self) -> impl fmt::Display + '_ {
        Report(self)
    }
}

/// See [`Error::report`].
struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Adds file context to any `Result<_, Error>`.
pub(crate) trait ResultExt<T> {
    /// See [`Error::in_file`].
    fn in_file(self, path: &Path) -> Result<T>;

    /// See [`Error::in_entry`].
    fn in_entry(self, key: &str) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn in_file(self, path: &Path) -> Result<T> {
        self.map_err(|e| e.in_file(path))
    }

    fn in_entry(self, key: &str) -> Result<T> {
        self.map_err(|e| e.in_entry(key))
    }
}

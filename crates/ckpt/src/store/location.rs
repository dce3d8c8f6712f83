//! Where a stored file is: a local path, or an object's URL (`s3://bucket/prefix/name`).
//! Logs, errors and listings print either the same way.

use std::fmt;
use std::path::{Path, PathBuf};

/// The full location of a file of a [`Store`](super::Store): a path for a local directory,
/// a URL for an object store. Prints as the path or the URL.
///
/// ```
/// use std::path::Path;
/// use ckpt::store::Location;
/// let local = Location::Path("output/model_final.pth".into());
/// assert_eq!(local.to_string(), "output/model_final.pth");
/// assert_eq!(local.as_path(), Some(Path::new("output/model_final.pth")));
/// let object = Location::Url("s3://bucket/run1/model_final.pth".into());
/// assert_eq!(object.display().to_string(), "s3://bucket/run1/model_final.pth");
/// assert_eq!(object.as_path(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A file on a local (or mounted) filesystem.
    Path(PathBuf),
    /// An object, as a URL with its scheme (`s3://bucket/key`).
    Url(String),
}

impl Location {
    /// The local path, `None` for an object.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Location::Path(path) => Some(path),
            Location::Url(_) => None,
        }
    }

    /// The location as a path argument for [`crate::Checkpointer::load`] and the readers:
    /// the path itself, or the URL as text (which the path resolver recognises).
    pub fn to_path_buf(&self) -> PathBuf {
        match self {
            Location::Path(path) => path.clone(),
            Location::Url(url) => PathBuf::from(url),
        }
    }

    /// Something that prints the location (as `Path::display` does for a path).
    pub fn display(&self) -> &Location {
        self
    }

    /// Whether this is an object's URL.
    pub fn is_url(&self) -> bool {
        matches!(self, Location::Url(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Path(path) => write!(f, "{}", path.display()),
            Location::Url(url) => f.write_str(url),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Path(path)
    }
}

impl From<Location> for PathBuf {
    fn from(location: Location) -> PathBuf {
        location.to_path_buf()
    }
}

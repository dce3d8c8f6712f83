//! The store of a save directory given as text: a local path, or an object store URL
//! (`s3://bucket/prefix`, with the `s3` feature).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Entry, LocalDir, Location, PendingWrite, Store};
use crate::error::{Error, Result};

/// The URL schemes of object stores: `s3://` (S3 and compatible servers), `gs://` (Google
/// Cloud Storage), `az://` (Azure Blob Storage).
pub(crate) const OBJECT_SCHEMES: [&str; 3] = ["s3://", "gs://", "az://"];

/// Whether `text` is an object store URL (`s3://`, `gs://`, `az://`).
///
/// ```
/// assert!(ckpt::store::is_object_url("s3://bucket/run1"));
/// assert!(!ckpt::store::is_object_url("output/run1"));
/// ```
pub fn is_object_url(text: &str) -> bool {
    OBJECT_SCHEMES.iter().any(|scheme| text.starts_with(scheme))
}

/// The store of a save directory: an [`ObjectStoreDir`](super::ObjectStoreDir) for an object
/// store URL (configured from the environment: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...),
/// a [`LocalDir`] otherwise. An object store URL without the `s3` feature is an error.
///
/// ```
/// let store = ckpt::store::open_dir("output/run1".as_ref())?;
/// assert_eq!(store.location("model_final.pth").to_string(), "output/run1/model_final.pth");
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn open_dir(dir: &Path) -> Result<Arc<dyn Store>> {
    match dir.to_str() {
        Some(text) if is_object_url(text) => open_object_dir(text),
        _ => Ok(Arc::new(LocalDir::new(dir))),
    }
}

#[cfg(feature = "s3")]
fn open_object_dir(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(super::ObjectStoreDir::from_url(url)?))
}

#[cfg(not(feature = "s3"))]
fn open_object_dir(url: &str) -> Result<Arc<dyn Store>> {
    Err(Error::unsupported(format!(
        "{url}: ckpt was built without its `s3` feature (object store save directories)"
    )))
}

/// A save directory that could not be opened (an object store URL with a bad configuration,
/// given to an infallible constructor): every use returns the error, so it surfaces at the
/// first save or resume instead of being lost.
#[derive(Debug)]
pub(crate) struct Unavailable {
    dir: String,
    reason: String,
}

impl Unavailable {
    pub(crate) fn new(dir: &Path, error: &Error) -> Unavailable {
        Unavailable {
            dir: dir.display().to_string(),
            reason: error.report().to_string(),
        }
    }

    fn error(&self) -> Error {
        Error::invalid_path(
            self.dir.clone(),
            format!("cannot be used as a save directory: {}", self.reason),
        )
    }
}

impl Store for Unavailable {
    fn location(&self, name: &str) -> Location {
        Location::Url(format!("{}/{name}", self.dir.trim_end_matches('/')))
    }

    fn create(&self, _name: &str) -> Result<Box<dyn PendingWrite + '_>> {
        Err(self.error())
    }

    fn read_small(&self, _name: &str) -> Result<Option<Vec<u8>>> {
        Err(self.error())
    }

    fn exists(&self, _name: &str) -> Result<bool> {
        Err(self.error())
    }

    fn list_entries(&self) -> Result<Vec<Entry>> {
        Err(self.error())
    }

    fn remove(&self, _name: &str) -> Result<()> {
        Err(self.error())
    }

    fn remove_stale_temporaries(&self) -> Result<()> {
        Err(self.error())
    }

    fn local_file(&self, _name: &str) -> Result<PathBuf> {
        Err(self.error())
    }
}

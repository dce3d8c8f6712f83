//! `s3://bucket/key` paths (and `gs://`, `az://` with their features): the object fetched
//! into the download cache by [`crate::store::ObjectStoreDir`]'s reader.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Lookup, PathHandler, Progress};
use crate::error::Result;

/// The handler of object store URLs: a local copy in `<cache>/s3/<bucket>/<key>`, downloaded
/// with parallel range requests and again only when the object's e-tag changed. The client
/// is configured from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
///
/// For ckpt's own readers ([`super::Resolver::get_partial_path`]) it gives a partial copy
/// instead, which fetches only what they read (see
/// [`ObjectStoreDir::partial_file`](crate::store::ObjectStoreDir::partial_file)).
#[derive(Clone)]
pub struct ObjectUrlHandler {
    cache_dir: PathBuf,
    progress: Option<Arc<dyn Progress>>,
}

impl ObjectUrlHandler {
    /// Copies objects into `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> ObjectUrlHandler {
        ObjectUrlHandler {
            cache_dir: cache_dir.into(),
            progress: None,
        }
    }

    /// Reports the progress of whole-object downloads to `progress`.
    pub fn with_progress(self, progress: impl Progress + 'static) -> ObjectUrlHandler {
        self.with_shared_progress(Some(Arc::new(progress)))
    }

    /// [`ObjectUrlHandler::with_progress`] of a callback shared with other handlers.
    pub(crate) fn with_shared_progress(
        mut self,
        progress: Option<Arc<dyn Progress>>,
    ) -> ObjectUrlHandler {
        self.progress = progress;
        self
    }
}

impl fmt::Debug for ObjectUrlHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectUrlHandler")
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl PathHandler for ObjectUrlHandler {
    fn prefixes(&self) -> Vec<String> {
        vec!["s3://".into(), "gs://".into(), "az://".into()]
    }

    fn get_local_path(&self, path: &str, _lookup: &Lookup<'_>) -> Result<PathBuf> {
        crate::store::object::fetch_url(path, &self.cache_dir, self.progress.clone())
    }

    fn get_partial_path(&self, path: &str, _lookup: &Lookup<'_>) -> Result<PathBuf> {
        crate::store::object::partial_url(path, &self.cache_dir)
    }
}

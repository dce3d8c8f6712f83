//! `s3://bucket/key` paths (and `gs://`, `az://` with their features): the object fetched
//! into the download cache by [`crate::store::ObjectStoreDir`]'s reader.

use std::path::PathBuf;

use super::{Lookup, PathHandler};
use crate::error::Result;

/// The handler of object store URLs: a local copy in `<cache>/s3/<bucket>/<key>`, downloaded
/// with parallel range requests and again only when the object's e-tag changed. The client
/// is configured from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone)]
pub struct ObjectUrlHandler {
    cache_dir: PathBuf,
}

impl ObjectUrlHandler {
    /// Copies objects into `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> ObjectUrlHandler {
        ObjectUrlHandler {
            cache_dir: cache_dir.into(),
        }
    }
}

impl PathHandler for ObjectUrlHandler {
    fn prefixes(&self) -> Vec<String> {
        vec!["s3://".into(), "gs://".into(), "az://".into()]
    }

    fn get_local_path(&self, path: &str, _lookup: &Lookup<'_>) -> Result<PathBuf> {
        crate::store::object::fetch_url(path, &self.cache_dir)
    }
}

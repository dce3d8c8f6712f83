//! Local copies of objects for the readers: downloaded into the download cache with parallel
//! range requests, written to a temporary file renamed into place when complete, and used
//! again while the object's e-tag is the one recorded beside the copy.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use super::error::remote_error;
use super::{split_url, ObjectStoreDir};
use crate::error::{Error, Result};
use crate::store::{atomic_write, AtomicFile};

/// The local copy of the object `url` (`s3://bucket/key`), configured from the environment,
/// in `cache_dir`.
pub(crate) fn fetch_url(url: &str, cache_dir: &Path) -> Result<PathBuf> {
    let (scheme, bucket, key) = split_url(url)?;
    if key.is_empty() {
        return Err(Error::invalid_path(url, "names a bucket, not an object"));
    }
    let store = ObjectStoreDir::builder(format!("{scheme}{bucket}"))
        .cache_dir(cache_dir)
        .build()?;
    fetch(&store, &ObjectPath::from(key), url)
}

/// The local copy of `path` of `store` (`url` names it in errors).
pub(super) fn fetch(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<PathBuf> {
    let local = cache_path(store, path, url)?;
    let tag_file = etag_path(&local);
    let objects = store.objects.clone();
    let meta = store.block_on({
        let path = path.clone();
        async move { objects.head(&path).await.map_err(|e| remote_error(url, e)) }
    })?;
    let e_tag = meta.e_tag.clone().unwrap_or_default();
    let cached_size = fs::metadata(&local)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let cached_tag = fs::read_to_string(&tag_file).ok();
    if !e_tag.is_empty() && cached_size == Some(meta.size) && cached_tag.as_deref() == Some(&e_tag)
    {
        tracing::debug!("{url} is cached at {}", local.display());
        return Ok(local);
    }
    if let Some(parent) = local.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    tracing::info!(
        "Downloading {url} ({} bytes) to {}",
        meta.size,
        local.display()
    );
    let mut file = AtomicFile::create(&local)?;
    download(store, path, url, meta.size, &e_tag, &mut file, &local)?;
    file.commit()?;
    atomic_write(&tag_file, |w| {
        w.write_all(e_tag.as_bytes())
            .map_err(|e| Error::io(&tag_file, e))
    })?;
    Ok(local)
}

/// Downloads `size` bytes in ranges of the store's part size, `parts_in_flight` at once,
/// written in order. Every range must come from the same version of the object (`If-Match`
/// its e-tag): an object replaced during the download is an error, not a torn copy.
fn download(
    store: &ObjectStoreDir,
    path: &ObjectPath,
    url: &str,
    size: u64,
    e_tag: &str,
    out: &mut AtomicFile,
    local: &Path,
) -> Result<()> {
    let step = store.part_size as u64;
    let ranges: Vec<std::ops::Range<u64>> = (0..size.div_ceil(step))
        .map(|i| i * step..((i + 1) * step).min(size))
        .collect();
    let objects = store.objects.clone();
    let in_flight = store.parts_in_flight.max(1);
    let if_match = (!e_tag.is_empty()).then(|| e_tag.to_string());
    store.block_on(async move {
        let mut chunks = futures::stream::iter(ranges)
            .map(|range| {
                let objects = objects.clone();
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    if_match: if_match.clone(),
                    ..GetOptions::default()
                };
                async move { get_bytes(&*objects, path, options).await }
            })
            .buffered(in_flight);
        let mut written: u64 = 0;
        while let Some(chunk) = chunks.try_next().await.map_err(|e| remote_error(url, e))? {
            out.write_all(&chunk).map_err(|e| Error::io(local, e))?;
            written += chunk.len() as u64;
        }
        if written != size {
            return Err(Error::Remote {
                url: url.to_string(),
                reason: format!("the download ended after {written} of {size} bytes"),
                source: None,
            });
        }
        Ok(())
    })
}

async fn get_bytes(
    objects: &dyn ObjectStore,
    path: &ObjectPath,
    options: GetOptions,
) -> object_store::Result<Vec<u8>> {
    let result = objects.get_opts(path, options).await?;
    Ok(result.bytes().await?.to_vec())
}

/// `<cache>/<scheme>/<bucket>/<key>`.
fn cache_path(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<PathBuf> {
    let root = store.root.replacen("://", "/", 1);
    let mut local = store.cache_dir.clone();
    for part in root.split('/').chain(
        path.parts()
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    ) {
        if part.is_empty() || part == "." || part == ".." {
            return Err(Error::invalid_path(
                url,
                "cannot be stored in the download cache",
            ));
        }
        local.push(part);
    }
    Ok(local)
}

/// The file beside a cached copy that records the e-tag it was downloaded at.
fn etag_path(local: &Path) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_os_string();
    name.push(".etag");
    local.with_file_name(name)
}

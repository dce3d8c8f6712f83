//! Local copies of objects for the readers: downloaded into the download cache with parallel
//! range requests, written to a temporary file renamed into place when complete, and used
//! again while the object's e-tag is the one recorded beside the copy.

use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStoreExt};

use super::error::remote_error;
use super::{split_url, ObjectStoreDir};
use crate::error::{Error, Result};
use crate::resolve::Progress;
use crate::store::{atomic_write, AtomicFile};

/// The local copy of the object `url` (`s3://bucket/key`), configured from the environment,
/// in `cache_dir`; whole downloads report to `progress`.
pub(crate) fn fetch_url(
    url: &str,
    cache_dir: &Path,
    progress: Option<Arc<dyn Progress>>,
) -> Result<PathBuf> {
    let (store, key) = store_of_url(url, cache_dir, progress)?;
    fetch(&store, &key, url)
}

/// The store of the bucket of `url` and the object's key in it.
pub(super) fn store_of_url(
    url: &str,
    cache_dir: &Path,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(ObjectStoreDir, ObjectPath)> {
    let (scheme, bucket, key) = split_url(url)?;
    if key.is_empty() {
        return Err(Error::invalid_path(url, "names a bucket, not an object"));
    }
    let store = ObjectStoreDir::builder(format!("{scheme}{bucket}"))
        .cache_dir(cache_dir)
        .shared_progress(progress)
        .build()?;
    Ok((store, ObjectPath::from(key)))
}

/// The size and e-tag of `path` (one HEAD request).
fn head(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<(u64, String)> {
    let objects = store.objects.clone();
    let meta = store.block_on({
        let path = path.clone();
        async move { objects.head(&path).await.map_err(|e| remote_error(url, e)) }
    })?;
    Ok((meta.size, meta.e_tag.unwrap_or_default()))
}

/// Whether the whole copy `local` of an object of `size` bytes and e-tag `e_tag` is in the
/// cache.
fn is_cached(local: &Path, size: u64, e_tag: &str) -> bool {
    let cached_size = fs::metadata(local)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let cached_tag = fs::read_to_string(etag_path(local)).ok();
    !e_tag.is_empty() && cached_size == Some(size) && cached_tag.as_deref() == Some(e_tag)
}

/// What the download cache holds of an object.
pub(super) enum Cached {
    /// Its whole copy, at the object's current e-tag.
    Whole(PathBuf),
    /// Not the current version: where its whole copy goes, its size and e-tag.
    Missing {
        local: PathBuf,
        size: u64,
        e_tag: String,
    },
}

/// Looks up `path` of `store` in the download cache (one HEAD request).
pub(super) fn look_up(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<Cached> {
    let local = cache_path(store, path, url)?;
    let (size, e_tag) = head(store, path, url)?;
    if is_cached(&local, size, &e_tag) {
        tracing::debug!("{url} is cached at {}", local.display());
        return Ok(Cached::Whole(local));
    }
    Ok(Cached::Missing { local, size, e_tag })
}

/// The local copy of `path` of `store` (`url` names it in errors).
pub(super) fn fetch(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<PathBuf> {
    let (local, size, e_tag) = match look_up(store, path, url)? {
        Cached::Whole(local) => return Ok(local),
        Cached::Missing { local, size, e_tag } => (local, size, e_tag),
    };
    if let Some(parent) = local.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    tracing::info!("Downloading {url} ({size} bytes) to {}", local.display());
    let file = AtomicFile::create(&local)?;
    let out = file
        .file()
        .ok_or_else(|| Error::invalid("a new atomic file has no file"))?;
    out.set_len(size)
        .map_err(|e| Error::io(file.temp_path(), e))?;
    let whole = 0..size;
    let ranges = split(std::slice::from_ref(&whole), store.part_size as u64);
    let progress = store.progress.clone();
    let done = AtomicU64::new(0);
    if let Some(progress) = &progress {
        progress.update(0, Some(size));
    }
    let on_bytes = |n: u64| {
        let done = done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(progress) = &progress {
            progress.update(done, Some(size));
        }
    };
    let temp = file.temp_path().to_path_buf();
    download(store, path, url, &e_tag, ranges, out, &temp, &on_bytes)?;
    file.commit()?;
    let tag_file = etag_path(&local);
    atomic_write(&tag_file, |w| {
        w.write_all(e_tag.as_bytes())
            .map_err(|e| Error::io(&tag_file, e))
    })?;
    Ok(local)
}

/// `ranges` cut into pieces of at most `step` bytes.
pub(super) fn split(ranges: &[Range<u64>], step: u64) -> Vec<Range<u64>> {
    let step = step.max(1);
    let mut out = Vec::new();
    for range in ranges {
        let mut at = range.start;
        while at < range.end {
            let end = range.end.min(at.saturating_add(step));
            out.push(at..end);
            at = end;
        }
    }
    out
}

/// Downloads `ranges` of the object into `out` at their offsets, `parts_in_flight` at once.
/// Each range streams to the file as it arrives (memory: a few network buffers per range
/// in flight, never a whole range). Every range must come from the same version of the
/// object (`If-Match` its e-tag): an object replaced meanwhile is an error naming the
/// offset, not a torn copy. `on_bytes` hears of every piece written.
#[allow(clippy::too_many_arguments)]
pub(super) fn download(
    store: &ObjectStoreDir,
    path: &ObjectPath,
    url: &str,
    e_tag: &str,
    ranges: Vec<Range<u64>>,
    out: &File,
    local: &Path,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let objects = store.objects.clone();
    let in_flight = store.parts_in_flight.max(1);
    let if_match = (!e_tag.is_empty()).then(|| e_tag.to_string());
    let fetched = &store.fetched;
    store.block_on(async move {
        futures::stream::iter(ranges)
            .map(|range| {
                let objects = objects.clone();
                let if_match = if_match.clone();
                async move {
                    let at = range.start;
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(range.clone())),
                        if_match,
                        ..GetOptions::default()
                    };
                    let result = objects
                        .get_opts(path, options)
                        .await
                        .map_err(|e| range_error(url, &range, e))?;
                    let mut body = result.into_stream();
                    let mut written = at;
                    while let Some(chunk) = body
                        .try_next()
                        .await
                        .map_err(|e| range_error(url, &range, e))?
                    {
                        let n = chunk.len() as u64;
                        if written + n > range.end {
                            return Err(short_range(url, &range, written + n - at));
                        }
                        out.write_all_at(&chunk, written)
                            .map_err(|e| Error::io(local, e))?;
                        written += n;
                        fetched.fetch_add(n, Ordering::Relaxed);
                        on_bytes(n);
                    }
                    if written != range.end {
                        return Err(short_range(url, &range, written - at));
                    }
                    Ok(())
                }
            })
            .buffer_unordered(in_flight)
            .try_collect::<()>()
            .await
    })
}

/// A request for `range` of `url` that failed: the object's URL and the offset.
fn range_error(url: &str, range: &Range<u64>, error: object_store::Error) -> Error {
    let changed = matches!(error, object_store::Error::Precondition { .. });
    let error = remote_error(url, error);
    let reason = match (&error, changed) {
        (_, true) => {
            "the object changed since it was first read (its e-tag is not the same)".to_string()
        }
        (Error::Remote { reason, .. }, _) => reason.clone(),
        (other, _) => other.to_string(),
    };
    Error::Remote {
        url: url.to_string(),
        reason: format!(
            "cannot fetch the {} bytes at offset {}: {reason}",
            range.end - range.start,
            range.start
        ),
        source: None,
    }
}

/// A range whose answer had another length than asked for.
fn short_range(url: &str, range: &Range<u64>, got: u64) -> Error {
    Error::Remote {
        url: url.to_string(),
        reason: format!(
            "the server answered {got} bytes for the {} bytes at offset {}",
            range.end - range.start,
            range.start
        ),
        source: None,
    }
}

/// `<cache>/<scheme>/<bucket>/<key>`.
pub(super) fn cache_path(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<PathBuf> {
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
pub(super) fn etag_path(local: &Path) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_os_string();
    name.push(".etag");
    local.with_file_name(name)
}

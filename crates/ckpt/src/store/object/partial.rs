//! Partial local copies of objects for ckpt's readers: a sparse file of the object's size in
//! the download cache (`partial/s3/<bucket>/<key>`) into which only the ranges the readers
//! ask for are fetched, and the list of those ranges beside it (`<key>.ranges`, with the
//! e-tag they were fetched at), so that a later run fetches only what it lacks.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::path::Path as ObjectPath;

use super::fetch::{download, look_up, split, store_of_url, Cached};
use super::ObjectStoreDir;
use crate::error::{Error, Result};
use crate::partial::{register, RangeSet, RangeSource};
use crate::store::atomic_write;

/// The folder of the download cache that holds partial copies.
const PARTIAL_DIR: &str = "partial";

/// A partial copy of `url` in `cache_dir` (see [`ObjectStoreDir::partial_file`]), the client
/// configured from the environment.
pub(crate) fn partial_url(url: &str, cache_dir: &Path) -> Result<PathBuf> {
    // One client (and runtime) per bucket and cache, kept for the partial copies of the
    // process, rather than one per object.
    type Stores = Mutex<HashMap<(String, PathBuf), ObjectStoreDir>>;
    static STORES: OnceLock<Stores> = OnceLock::new();
    let (fresh, key) = store_of_url(url, cache_dir, None)?;
    let id = (fresh.root.clone(), cache_dir.to_path_buf());
    let store = match STORES.get_or_init(Stores::default).lock() {
        Ok(mut stores) => stores.entry(id).or_insert(fresh).share(),
        Err(_) => fresh,
    };
    open(&store, &key, url)
}

/// The partial copy of `path` of `store`, registered for the readers; or the whole copy
/// when the cache has it.
pub(super) fn open(store: &ObjectStoreDir, path: &ObjectPath, url: &str) -> Result<PathBuf> {
    let (whole, size, e_tag) = match look_up(store, path, url)? {
        Cached::Whole(whole) => return Ok(whole),
        Cached::Missing { local, size, e_tag } => (local, size, e_tag),
    };
    // The same file name as the object's (readers may go by its extension), in a tree of
    // its own.
    let local = store
        .cache_dir
        .join(PARTIAL_DIR)
        .join(whole.strip_prefix(&store.cache_dir).unwrap_or(&whole));
    let list = with_suffix(&local, ".ranges");
    if let Some(parent) = local.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // The list counts only for the very file it was written for: another process may have
    // put a new sparse file in place (renamed over this one) since, and the ranges of the
    // old file are not in the new one.
    let reused = open_rw(&local).ok().and_then(|file| {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() != size {
            return None;
        }
        let present = read_list(&list, size, &e_tag, file_id(&meta))?;
        Some((file, present))
    });
    let (file, present) = match reused {
        Some(reused) => reused,
        None => {
            new_sparse_file(&local, size)?;
            let file = open_rw(&local).map_err(|e| Error::io(&local, e))?;
            (file, RangeSet::default())
        }
    };
    let id = file_id(&file.metadata().map_err(|e| Error::io(&local, e))?);
    tracing::debug!(
        "{url}: partial copy at {} ({} of {size} bytes present)",
        local.display(),
        present.total()
    );
    let source = PartialObject {
        store: store.share(),
        path: path.clone(),
        url: url.to_string(),
        e_tag,
        size,
        file,
        id,
        local: local.clone(),
        list,
        present: Mutex::new(present),
    };
    register(&local, Arc::new(source));
    Ok(local)
}

/// Opens a partial copy to fill it and to map it.
fn open_rw(local: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(local)
}

/// What tells one file from another that replaced it under the same name (the inode).
#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

/// Without inodes, no list is ever taken for another file's: none is reused.
#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> u64 {
    u64::MAX
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A new sparse file of `size` bytes at `local`, renamed over any older one (whose maps in
/// other readers keep the old file).
fn new_sparse_file(local: &Path, size: u64) -> Result<()> {
    let temp = with_suffix(local, &format!(".{}.tmp", std::process::id()));
    let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    file.set_len(size).map_err(|e| Error::io(&temp, e))?;
    drop(file);
    fs::rename(&temp, local).map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::io(local, e)
    })
}

/// The ranges recorded in `list` when they were fetched from the object at `e_tag`, `size`
/// bytes long, into the file `id` ([`file_id`]).
fn read_list(list: &Path, size: u64, e_tag: &str, id: u64) -> Option<RangeSet> {
    let text = fs::read_to_string(list).ok()?;
    let mut lines = text.lines();
    if e_tag.is_empty()
        || id == u64::MAX
        || lines.next()? != e_tag
        || lines.next()?.parse::<u64>().ok()? != size
        || lines.next()?.parse::<u64>().ok()? != id
    {
        return None;
    }
    let mut ranges = Vec::new();
    for line in lines {
        let (start, end) = line.split_once(' ')?;
        let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
        if start > end || end > size {
            return None;
        }
        ranges.push(start..end);
    }
    Some(RangeSet::from_ranges(ranges))
}

/// The source of a partial copy: fetches absent ranges into the file and records them.
struct PartialObject {
    /// The store's client and settings (the store itself may be gone when a tensor's bytes
    /// are first read).
    store: ObjectStoreDir,
    path: ObjectPath,
    url: String,
    e_tag: String,
    size: u64,
    /// The copy, open for reading and writing: the readers map this very file, whatever
    /// the path names by then.
    file: File,
    /// Its [`file_id`], recorded in the list.
    id: u64,
    local: PathBuf,
    /// The list of present ranges.
    list: PathBuf,
    present: Mutex<RangeSet>,
}

impl RangeSource for PartialObject {
    fn file(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    fn is_present(&self, range: Range<u64>) -> bool {
        self.present
            .lock()
            .is_ok_and(|present| present.contains(&range))
    }

    fn ensure(&self, ranges: &[Range<u64>]) -> Result<()> {
        if let Some(past) = ranges.iter().find(|r| r.end > self.size) {
            return Err(Error::Remote {
                url: self.url.clone(),
                reason: format!(
                    "the {} bytes at offset {} run past the end of the {}-byte object",
                    past.end - past.start,
                    past.start,
                    self.size
                ),
                source: None,
            });
        }
        let missing = {
            let present = self.present.lock().map_err(|_| poisoned(&self.url))?;
            let wanted = RangeSet::from_ranges(ranges.iter().cloned());
            let mut missing = Vec::new();
            for range in wanted.ranges() {
                missing.extend(present.missing(range));
            }
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let missing = coalesce(missing, MAX_GAP);
        let bytes: u64 = missing.iter().map(|r| r.end - r.start).sum();
        tracing::debug!(
            "{}: fetching {bytes} bytes in {} ranges",
            self.url,
            missing.len()
        );
        let pieces = split(&missing, self.store.part_size as u64);
        download(
            &self.store,
            &self.path,
            &self.url,
            &self.e_tag,
            pieces,
            &self.file,
            &self.local,
            &|_| {},
        )?;
        // The bytes are in the file before the list says so.
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.local, e))?;
        let mut present = self.present.lock().map_err(|_| poisoned(&self.url))?;
        for range in missing {
            present.insert(range);
        }
        let mut text = format!("{}\n{}\n{}\n", self.e_tag, self.size, self.id);
        for range in present.ranges() {
            text.push_str(&format!("{} {}\n", range.start, range.end));
        }
        // The list only saves a later run some requests: a failure to write it is no error.
        if let Err(e) = atomic_write(&self.list, |w| {
            w.write_all(text.as_bytes())
                .map_err(|e| Error::io(&self.list, e))
        }) {
            tracing::debug!("{}: {}", self.list.display(), e.report());
        }
        Ok(())
    }
}

/// Ranges closer than this are fetched in one request, the bytes between them too: one
/// request fewer is worth more than that many bytes (the local headers of small storage
/// records, a few KiB apart, come in a few requests instead of one each).
const MAX_GAP: u64 = 64 << 10;

/// `ranges` (in order) with those less than `gap` bytes apart merged.
fn coalesce(ranges: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(range.end);
            }
            _ => out.push(range),
        }
    }
    out
}

fn poisoned(url: &str) -> Error {
    Error::invalid(format!(
        "{url}: the list of fetched ranges was poisoned by a panic"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_are_fetched_together() {
        assert_eq!(
            coalesce(vec![0..30, 100..130, 200_000..200_030], 1000),
            vec![0..130, 200_000..200_030]
        );
        assert_eq!(coalesce(Vec::new(), 10), Vec::<Range<u64>>::new());
    }
}

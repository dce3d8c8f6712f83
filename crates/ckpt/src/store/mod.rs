//! Where a checkpointer keeps its files: one small interface ([`Store`]) so that the
//! checkpointer never touches the filesystem itself. [`LocalDir`] is a local directory with
//! atomic writes ([`atomic_write`]); with the `s3` feature, [`ObjectStoreDir`] is a prefix of
//! an object store (`s3://bucket/prefix`). Both are first-class: a file's [`Location`] is a
//! path or a URL, a write streams into a [`PendingWrite`] that is committed or aborted, and
//! listings carry sizes ([`Entry`]).
//!
//! ```
//! use std::sync::Arc;
//! use ckpt::store::{LocalDir, Store};
//! use ckpt::{shared, Checkpointer, Dict, StateDict, StateDictModel};
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(LocalDir::new(dir.path()));
//! let model = shared(StateDictModel::new(StateDict::new()));
//! let checkpointer = Checkpointer::with_store(model, store.clone());
//! checkpointer.save("model_final", Dict::new())?;
//! assert_eq!(store.list()?, ["last_checkpoint", "model_final.pth"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
mod location;
mod lock;
#[cfg(feature = "s3")]
pub(crate) mod object;
pub(crate) mod open;

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result, TagProblem};
pub use atomic::{atomic_write, temp_owner, AtomicFile, TEMP_PREFIX};
pub use location::Location;
pub use lock::{WriterLock, WRITER_LOCK};
#[cfg(feature = "s3")]
pub use object::{ObjectStoreDir, ObjectStoreDirBuilder};
pub use open::{is_object_url, open_dir};

/// A write in progress ([`Store::create`]): bytes written to it become the file's content
/// only at [`PendingWrite::commit`]. Aborted, or dropped without a commit (an error, a
/// panic), it leaves the previous content and nothing else: a local temporary file is
/// removed, an object store's multipart upload is aborted.
pub trait PendingWrite: Write + Send {
    /// Makes the written bytes the file's content, whole and durably.
    fn commit(self: Box<Self>) -> Result<()>;

    /// Drops the written bytes; the previous content is untouched.
    fn abort(self: Box<Self>) -> Result<()>;
}

impl PendingWrite for AtomicFile {
    fn commit(self: Box<Self>) -> Result<()> {
        AtomicFile::commit(*self)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        AtomicFile::abort(*self)
    }
}

/// A file of a store, its size and when it was last modified, as [`Store::list_entries`]
/// lists it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use ckpt::store::Entry;
/// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let entry = Entry::new("model_final.pth", 1024).with_modified(at);
/// assert_eq!((entry.size, entry.modified), (1024, Some(at)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The file's basename.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last modified: a file's modification time, an object's `Last-Modified`
    /// (`None` when the store does not say).
    pub modified: Option<SystemTime>,
}

impl Entry {
    /// The entry of `name`, of `size` bytes, modified at an unknown time.
    pub fn new(name: impl Into<String>, size: u64) -> Entry {
        Entry {
            name: name.into(),
            size,
            modified: None,
        }
    }

    /// The entry, last modified at `modified`.
    pub fn with_modified(mut self, modified: SystemTime) -> Entry {
        self.modified = Some(modified);
        self
    }
}

/// What a conditional write ([`Store::write_small`]) expects to find, so that two writers
/// cannot silently overwrite each other's file (the `last_checkpoint` tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// The file must not exist.
    Absent,
    /// The file must be at this version (an object's e-tag, as
    /// [`Store::read_small_versioned`] or an earlier [`Store::write_small`] returned it).
    Version(String),
}

/// A flat namespace of files (a checkpoint directory), addressed by plain basenames.
pub trait Store: Send + Sync + fmt::Debug {
    /// The full location of `name` (a path for a local directory, a URL for an object
    /// store), for logs, errors and readers.
    fn location(&self, name: &str) -> Location;

    /// Starts writing `name`: the content is replaced when the returned writer is
    /// committed, and not at all when it is aborted or dropped. A reader, or a crash at any
    /// instant, sees either the previous content or the complete new content.
    fn create(&self, name: &str) -> Result<Box<dyn PendingWrite + '_>>;

    /// Writes `name` atomically with `write` ([`Store::create`], committed when `write`
    /// succeeds, aborted otherwise). On error the previous content is intact.
    fn write(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        let mut pending = self.create(name)?;
        match write(&mut pending) {
            Ok(()) => pending.commit(),
            Err(e) => {
                if let Err(abort) = pending.abort() {
                    tracing::warn!(
                        "Could not abort the write of {}: {}",
                        self.location(name),
                        abort.report()
                    );
                }
                Err(e)
            }
        }
    }

    /// Reads a small file whole (a tag); `Ok(None)` when it does not exist. A file too large
    /// to be a tag is an [`crate::Error::BadTag`].
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Whether the store keeps versions of its files (e-tags) and honours the
    /// preconditions of [`Store::write_small`]. A local directory does not.
    fn has_versions(&self) -> bool {
        false
    }

    /// [`Store::read_small`] with the file's version (an e-tag) for a later conditional
    /// [`Store::write_small`]; `None` as the version for a store without versions.
    fn read_small_versioned(&self, name: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        Ok(self.read_small(name)?.map(|bytes| (bytes, None)))
    }

    /// Replaces `name` with `bytes` atomically if `precondition` holds, and returns the new
    /// version (`None` for a store without versions). A precondition that does not hold is
    /// an [`crate::Error::Conflict`]. A store without versions (a local directory) writes
    /// whatever the precondition.
    fn write_small(
        &self,
        name: &str,
        bytes: &[u8],
        precondition: &Precondition,
    ) -> Result<Option<String>> {
        let _ = precondition;
        let location = self.location(name);
        self.write(name, &mut |w| {
            w.write_all(bytes)
                .map_err(|e| Error::io(location.to_path_buf(), e))
        })?;
        Ok(None)
    }

    /// Whether `name` exists (as a regular file).
    fn exists(&self, name: &str) -> Result<bool>;

    /// The regular files and their sizes, sorted by name, without temporary files of
    /// unfinished writes. A store that does not exist yet is empty.
    fn list_entries(&self) -> Result<Vec<Entry>>;

    /// The names of [`Store::list_entries`].
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.list_entries()?.into_iter().map(|e| e.name).collect())
    }

    /// Deletes `name`; deleting a file that does not exist is not an error.
    fn remove(&self, name: &str) -> Result<()>;

    /// Deletes temporary files (abandoned uploads) left by writes that were interrupted (a
    /// crash, a kill), and never those of a write still in progress.
    fn remove_stale_temporaries(&self) -> Result<()>;

    /// A local file with the content of `name`, for the readers: the file itself in a local
    /// directory, a copy in the download cache for an object store.
    fn local_file(&self, name: &str) -> Result<PathBuf> {
        match self.location(name) {
            Location::Path(path) => Ok(path),
            Location::Url(url) => Err(Error::unsupported(format!(
                "{url}: this store cannot make a local copy"
            ))),
        }
    }

    /// Takes the writer lock of the store (creating it when it does not exist), held while
    /// the returned value lives: a checkpointer takes it on its first save, so that a second
    /// process saving into the same place fails with [`Error::WriterBusy`] instead of
    /// interleaving checkpoints. Readers never need it. The default (a store that cannot
    /// lock) returns [`WriterLock::none`]; an object store can implement it with a
    /// conditional put.
    fn lock_writer(&self) -> Result<WriterLock> {
        Ok(WriterLock::none())
    }
}

/// Checks that `name` is a plain file name: not empty, not `.`/`..`, no path separator.
pub(crate) fn check_basename(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "not a plain file name (a checkpoint name must not contain a path)",
        });
    }
    Ok(())
}

/// The most [`LocalDir`] reads of a small file (a tag).
pub(crate) const MAX_SMALL_FILE: u64 = 64 * 1024;

/// A local directory. Writes go to a temporary file in the directory, are fsynced, renamed
/// over the target and the directory is fsynced. The directory is created on first write.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// The store of files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_basename(name)?;
        Ok(self.dir.join(name))
    }
}

/// Makes an error of a write name the file being written, also when the writer reported an
/// I/O error on a placeholder or temporary path.
fn name_target(error: Error, path: &Path) -> Error {
    match error {
        Error::Io { path: ref at, .. } if !at.as_os_str().is_empty() && at != path => Error::File {
            path: path.to_path_buf(),
            source: Box::new(error),
        },
        other => other.in_file(path),
    }
}

impl Store for LocalDir {
    fn location(&self, name: &str) -> Location {
        Location::Path(self.dir.join(name))
    }

    fn create(&self, name: &str) -> Result<Box<dyn PendingWrite + '_>> {
        let path = self.path(name)?;
        atomic::create_dir_durably(&self.dir)?;
        Ok(Box::new(AtomicFile::create(&path)?))
    }

    fn write(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        let path = self.path(name)?;
        atomic::create_dir_durably(&self.dir)?;
        atomic_write(&path, |w| write(w)).map_err(|e| name_target(e, &path))
    }

    /// Reads at most 64 KiB: a larger file (or a link to a device that never
    /// ends) is an error, not a read of unbounded size.
    ///
    /// Anything but a regular file (or a link to one) under that name, a directory say, is an
    /// [`Error::BadTag`] too ([`TagProblem::NotAFile`]), without opening it (a FIFO would
    /// block).
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(Error::BadTag {
                    tag: path,
                    problem: TagProblem::NotAFile,
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SMALL_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 > MAX_SMALL_FILE {
            return Err(Error::BadTag {
                tag: path,
                problem: TagProblem::TooLarge {
                    max: MAX_SMALL_FILE,
                },
            });
        }
        Ok(Some(bytes))
    }

    /// An `flock` on [`WRITER_LOCK`] in the directory (shared by the checkpointers of this
    /// process); on a file system without locks, a warning and no lock.
    fn lock_writer(&self) -> Result<WriterLock> {
        atomic::create_dir_durably(&self.dir)?;
        lock::lock_dir(&self.dir)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn list_entries(&self) -> Result<Vec<Entry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: never a name this library wrote
            };
            if name.starts_with(TEMP_PREFIX) || name == WRITER_LOCK {
                continue;
            }
            // Follows symlinks, as Python's isfile does.
            match fs::metadata(entry.path()) {
                Ok(meta) if meta.is_file() => {
                    let entry = Entry::new(name, meta.len());
                    names.push(match meta.modified() {
                        Ok(modified) => entry.with_modified(modified),
                        Err(_) => entry,
                    });
                }
                _ => {}
            }
        }
        names.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A temporary file of this host is stale when no process holds its lock (its writer
    /// locks it until it is renamed; the kernel drops the lock of a killed process), whatever
    /// the pid in its name; on a file system without locks, when its writer's pid is gone.
    /// Another host's is stale once a day old.
    fn remove_stale_temporaries(&self) -> Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                continue;
            };
            let path = entry.path();
            // Another host's lock may not be visible here (a network file system that
            // locks locally only): its files are left to the age rule below.
            let removed = match written_on_this_host(rest) {
                true => lock::remove_if_unlocked(&path),
                false => None,
            };
            match removed {
                Some(Ok(true)) => {
                    tracing::debug!("Removed stale temporary file {}", path.display());
                    continue;
                }
                Some(Ok(false)) => continue,
                Some(Err(e)) => return Err(Error::io(path, e)),
                // No locks on this file system: fall back to the writer's pid.
                None => {}
            }
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            if temp_writer_is_gone(rest, modified) {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!("Removed stale temporary file {}", path.display()),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
        }
        Ok(())
    }
}

/// Whether a temporary file (`<pid>@<host>-<unique>-<name>` after the prefix) was written
/// by a process of this host (also when its name does not say).
fn written_on_this_host(rest: &str) -> bool {
    let owner = rest.split('-').next().unwrap_or_default();
    let this = temp_owner();
    match (owner.split_once('@'), this.split_once('@')) {
        (Some((_, host)), Some((_, this_host))) => host == this_host,
        _ => true,
    }
}

/// Whether the writer of a temporary file (`<pid>@<host>-<unique>-<name>` after the prefix)
/// can no longer finish it: a process of this host that is gone, or any writer of a file
/// untouched for a day (a host that crashed). Our own process may have a write in flight,
/// another live process or another host too; where liveness cannot be checked, a file is
/// kept until it is a day old.
pub(crate) fn temp_writer_is_gone(rest: &str, modified: Option<std::time::SystemTime>) -> bool {
    const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    if modified
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > ABANDONED_AFTER)
    {
        return true;
    }
    let owner = rest.split('-').next().unwrap_or_default();
    let this = temp_owner();
    let (Some((pid, host)), Some((_, this_host))) = (owner.split_once('@'), this.split_once('@'))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == this_host && pid != std::process::id() && process_is_gone(pid)
}

#[cfg(target_os = "linux")]
fn process_is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_is_gone(_pid: u32) -> bool {
    // Without a portable liveness check, keep the file: a leftover temporary is never
    // listed as a checkpoint, while deleting a live writer's file would fail its save.
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_are_rejected() {
        for bad in ["", ".", "..", "../x.pth", "/abs.pth", "a/b.pth", "a\\b"] {
            let err = check_basename(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidName { name, .. } if name == bad),
                "{bad:?}: {err:?}"
            );
        }
        check_basename("model_0000009.pth").unwrap();
    }

    #[test]
    fn listing_gives_the_files_modified_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        fs::write(dir.path().join("a.pth"), b"x").unwrap();
        let on_disk = fs::metadata(dir.path().join("a.pth"))
            .unwrap()
            .modified()
            .unwrap();
        let entries = store.list_entries().unwrap();
        assert_eq!(entries, [Entry::new("a.pth", 1).with_modified(on_disk)]);
    }

    #[test]
    fn listing_skips_temporaries_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        store
            .write("a.pth", &mut |w| {
                w.write_all(b"x").map_err(|e| Error::io("a.pth", e))
            })
            .unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}1-2-b.pth")), b"y").unwrap();
        fs::create_dir(dir.path().join("sub.pth")).unwrap();
        assert_eq!(store.list().unwrap(), vec!["a.pth"]);
        assert!(store.exists("a.pth").unwrap());
        assert!(!store.exists("sub.pth").unwrap());
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed_and_ours_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        // No process has the largest pid, so that writer is gone (checked on Linux).
        let owner = temp_owner();
        let (_, host) = owner.split_once('@').unwrap();
        let dead = dir
            .path()
            .join(format!("{TEMP_PREFIX}4294967295@{host}-1-a.pth"));
        let ours = dir.path().join(format!("{TEMP_PREFIX}{owner}-1-a.pth"));
        fs::write(&dead, b"x").unwrap();
        // A write of ours in flight: created and locked as `atomic_write` does.
        let writing = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&ours)
            .unwrap();
        assert!(lock::lock_new_temp(&writing));
        store.remove_stale_temporaries().unwrap();
        assert_eq!(dead.exists(), cfg!(not(target_os = "linux")));
        assert!(ours.exists());
        // Our pid in the name does not keep a file nobody writes (a restarted container's
        // trainer has the pid of the one that crashed).
        drop(writing);
        store.remove_stale_temporaries().unwrap();
        assert_eq!(ours.exists(), cfg!(not(target_os = "linux")));
    }

    #[test]
    fn the_writer_lock_file_is_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        let lock = store.lock_writer().unwrap();
        assert_eq!(lock.is_held(), cfg!(target_os = "linux"));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_tag_that_is_a_directory_is_a_bad_tag() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("last_checkpoint")).unwrap();
        let err = LocalDir::new(dir.path())
            .read_small("last_checkpoint")
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::BadTag {
                    problem: TagProblem::NotAFile,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

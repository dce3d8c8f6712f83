//! Telling a live writer from a dead one by a lock it holds, not by its pid.
//!
//! A pid says nothing after a restart: a trainer running as PID 1 of a container has the same
//! pid in every life of the container, and another process may get a dead writer's pid. An
//! advisory lock (`flock`) is held by an open file, and the kernel drops it when the process
//! exits or is killed, so "the lock is free" means "nobody is writing" whatever the pids.
//!
//! Two locks use it:
//! - every temporary file of a save is locked by its writer until it is renamed into place:
//!   a temporary whose lock is free is left over from a crash ([`remove_if_unlocked`]);
//! - a save directory has a writer lock (on the directory itself, or [`WRITER_LOCK`] in it
//!   where directories cannot be locked), taken by a checkpointer on its
//!   first save and held for the checkpointer's life ([`WriterLock`]): a second process
//!   saving into the same directory fails with [`Error::WriterBusy`] instead of interleaving
//!   its checkpoints with the first's. Readers never take it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;

/// The lock file of a save directory on a file system that cannot lock the directory itself
/// (NFS): never listed as a checkpoint, never removed.
pub const WRITER_LOCK: &str = ".ckpt-writer.lock";

/// The writer lock of a save directory, held while this value (or a clone) lives; see
/// [`Store::lock_writer`](super::Store::lock_writer).
///
/// The checkpointers of one process share the lock of a directory (a periodic checkpointer
/// and another one saving the final model are one writer); another process trying to take
/// it gets [`Error::WriterBusy`](crate::Error::WriterBusy). The kernel releases it when the
/// process ends, however it ends, so a killed trainer never leaves a stale lock behind.
///
/// ```
/// use ckpt::store::{LocalDir, Store};
/// let dir = tempfile::tempdir()?;
/// let store = LocalDir::new(dir.path().join("output"));
/// let lock = store.lock_writer()?; // creates the directory
/// let again = store.lock_writer()?; // the same process: shared, not refused
/// assert_eq!(lock.is_held(), cfg!(target_os = "linux")); // flock is used on Linux
/// assert_eq!(again.is_held(), lock.is_held());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriterLock(Option<Arc<Held>>);

/// An open lock file whose lock this process holds.
#[derive(Debug)]
struct Held {
    /// Keeps the lock: closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// No lock: what a store that cannot lock returns (nothing guards its directory).
    pub fn none() -> WriterLock {
        WriterLock(None)
    }

    /// Whether a lock is actually held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// The lock file, when a lock is held.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_ref().map(|held| held.path.as_path())
    }
}

/// Takes the writer lock of directory `dir` (which exists), or shares the one this process
/// already holds there.
pub(crate) fn lock_dir(dir: &Path) -> Result<WriterLock> {
    imp::lock_dir(dir)
}

/// Removes the temporary file at `path` when no writer holds its lock (its writer is gone):
/// `Some(Ok(true))` when removed, `Some(Ok(false))` when it is being written (or already
/// gone), `None` when the file system cannot tell (no `flock`).
pub(crate) fn remove_if_unlocked(path: &Path) -> Option<std::io::Result<bool>> {
    imp::remove_if_unlocked(path)
}

/// Locks a temporary file just created for writing (best effort: on a file system without
/// `flock`, liveness falls back to the writer's pid). Returns false when the file was removed
/// before the lock was had: a cleaner took it for a dead writer's between its creation and
/// the lock, and the writer must start over with a new file.
pub(crate) fn lock_new_temp(file: &File) -> bool {
    imp::lock_new_temp(file)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::{Arc, Mutex, OnceLock, Weak};

    use super::{Held, WriterLock, WRITER_LOCK};
    use crate::error::{Error, Result};

    /// The outcome of a non-blocking `flock`.
    enum Flock {
        Taken,
        Busy,
        /// The file system does not lock (some network and FUSE file systems).
        Unsupported(std::io::Error),
    }

    fn try_flock(file: &File) -> Flock {
        // SAFETY: flock on a file descriptor this `File` owns and keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Flock::Taken;
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Flock::Busy,
            _ => Flock::Unsupported(error),
        }
    }

    /// The writer locks of this process by the lock file's device and inode.
    type HeldLocks = Mutex<HashMap<(u64, u64), Weak<Held>>>;

    /// The writer locks this process holds, by the lock file's device and inode: a second
    /// `flock` through another open file of the same process would be refused.
    fn held() -> &'static HeldLocks {
        static HELD: OnceLock<HeldLocks> = OnceLock::new();
        HELD.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(super) fn lock_dir(dir: &Path) -> Result<WriterLock> {
        // The directory itself is locked: no file of ours shows in it. A file system that
        // cannot lock a directory (NFS locks only files opened for writing) gets a lock file.
        let handle = File::open(dir).map_err(|e| Error::io(dir, e))?;
        match lock_file(dir, handle, dir)? {
            Some(lock) => Ok(lock),
            None => {
                let path = dir.join(WRITER_LOCK);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                match lock_file(dir, file, &path)? {
                    Some(lock) => Ok(lock),
                    None => {
                        tracing::warn!(
                            "Cannot lock {}; nothing keeps a second process from saving into it",
                            dir.display()
                        );
                        Ok(WriterLock::none())
                    }
                }
            }
        }
    }

    /// Locks `file` (the directory `dir` or its lock file at `path`) for this process, or
    /// shares this process's lock of it; `None` when the file system cannot lock it.
    fn lock_file(dir: &Path, mut file: File, path: &Path) -> Result<Option<WriterLock>> {
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let key = (meta.dev(), meta.ino());
        // Held across the flock, so that two threads of this process never race for it.
        let mut held = held()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.retain(|_, weak| weak.strong_count() > 0);
        if let Some(ours) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(Some(WriterLock(Some(ours))));
        }
        match try_flock(&file) {
            Flock::Taken => {}
            Flock::Busy => {
                return Err(Error::WriterBusy {
                    dir: dir.to_path_buf(),
                    holder: holder(&mut file, meta.is_dir(), meta.ino()),
                })
            }
            Flock::Unsupported(e) => {
                tracing::debug!(error = %e, "cannot flock {}", path.display());
                return Ok(None);
            }
        }
        if !meta.is_dir() {
            // Who holds it, for the error another writer gets (best effort: the lock is
            // what counts, not this text).
            let who = format!(
                "pid {}",
                super::super::temp_owner().replacen('@', " on ", 1)
            );
            let _ = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(who.as_bytes()));
        }
        let lock = Arc::new(Held {
            _file: file,
            path: path.to_path_buf(),
        });
        held.insert(key, Arc::downgrade(&lock));
        tracing::debug!("Holding the writer lock of {}", dir.display());
        Ok(Some(WriterLock(Some(lock))))
    }

    /// Who holds the lock of `file`: what the holder wrote into a lock file, or the pid
    /// `/proc/locks` gives for the directory's inode; `unknown` when neither says.
    fn holder(file: &mut File, is_dir: bool, ino: u64) -> String {
        let mut text = String::new();
        if !is_dir {
            let _ = (&*file).take(256).read_to_string(&mut text);
        } else if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
            // `1: FLOCK  ADVISORY  WRITE 4242 00:2a:131077 0 EOF`
            let suffix = format!(":{ino}");
            if let Some(pid) = locks.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let ours = fields.get(1) == Some(&"FLOCK")
                    && fields.get(5).is_some_and(|f| f.ends_with(&suffix));
                ours.then(|| fields.get(4).map(|pid| pid.to_string()))
                    .flatten()
            }) {
                text = format!("pid {pid}");
            }
        }
        let text = text.trim();
        if text.is_empty() {
            "unknown".to_string()
        } else {
            text.to_string()
        }
    }

    pub(super) fn remove_if_unlocked(path: &Path) -> Option<std::io::Result<bool>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Ok(false)),
            Err(e) => return Some(Err(e)),
        };
        match try_flock(&file) {
            // Removed while the lock is held, so that a writer that created the file but
            // has not locked it yet sees it gone once it has the lock (`lock_new_temp`).
            Flock::Taken => Some(match std::fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }),
            Flock::Busy => Some(Ok(false)),
            Flock::Unsupported(_) => None,
        }
    }

    pub(super) fn lock_new_temp(file: &File) -> bool {
        // Blocking: a cleaner holds the lock only while it removes the file.
        // SAFETY: flock on a file descriptor this `File` owns and keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "cannot lock a temporary file");
            return true;
        }
        // A cleaner removes a file only while holding its lock: once the lock is ours, the
        // file is either still linked (and stays so) or already gone.
        file.metadata().map_or(true, |m| m.nlink() > 0)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::fs::File;
    use std::path::Path;

    use super::WriterLock;
    use crate::error::Result;

    pub(super) fn lock_dir(_dir: &Path) -> Result<WriterLock> {
        Ok(WriterLock::none())
    }

    pub(super) fn remove_if_unlocked(_path: &Path) -> Option<std::io::Result<bool>> {
        None
    }

    pub(super) fn lock_new_temp(_file: &File) -> bool {
        true
    }
}

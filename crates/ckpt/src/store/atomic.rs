//! Atomic file replacement: write a temporary file in the target's directory, fsync it,
//! rename it over the target, fsync the directory. A crash at any instant leaves either the
//! old file or the new one, never a torn file under the final name.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The start of the name of every temporary file [`atomic_write`] makes: a name starting
/// with it is never a checkpoint, and is never listed by [`LocalDir`](super::LocalDir).
/// The full name is `<TEMP_PREFIX><temp_owner()>-<unique number>-<start of the target's
/// name>.tmp` ([`temp_owner`]).
pub const TEMP_PREFIX: &str = ".ckpt-tmp-";

/// Writes `path` atomically. `write` gets a buffered writer over the temporary file; on any
/// error the temporary file is removed and `path` is untouched.
pub fn atomic_write<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let mut file = AtomicFile::create(path)?;
    write(&mut file)?;
    file.commit()
}

/// A file being written atomically: bytes go to a temporary file in the target's directory;
/// [`AtomicFile::commit`] fsyncs it, renames it over the target and fsyncs the directory.
/// Dropped without a commit (an error, a panic), it removes the temporary file and leaves
/// the target untouched.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    dir: PathBuf,
    /// `None` once committed or aborted.
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (its directory must exist).
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let dir = parent_dir(path);
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{} has no file name", path.display())))?;
        // The `.tmp` ending keeps a save in flight out of listings that match on the final
        // name's extension (a Python checkpointer's `get_all_checkpoint_files` lists `*.pth`).
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{}.tmp",
            temp_owner(),
            unique(),
            name_hint(&name.to_string_lossy())
        ));
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| Error::io(&temp, e))
        };
        let mut file = open()?;
        // Locked by this process while it is written (see `lock.rs`). A cleaner that found
        // the file before it was locked removed it: make it again (the name is free). A
        // cleaner only removes unlocked files, so this ends.
        let mut attempts = 1;
        while !super::lock::lock_new_temp(&file) && attempts < 5 {
            file = open()?;
            attempts += 1;
        }
        Ok(AtomicFile {
            target: path.to_path_buf(),
            temp,
            dir,
            // Large writes (tensor bytes) bypass the buffer; small ones (headers) are batched.
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The temporary file itself, for writes at offsets (`pwrite`) rather than in order;
    /// `None` once committed or aborted.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn file(&self) -> Option<&File> {
        self.writer.as_ref().map(BufWriter::get_ref)
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Makes the written bytes the target's content, durably. On error the target is
    /// untouched and the temporary file removed.
    pub fn commit(mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Err(Error::invalid("an atomic file was committed twice"));
        };
        let result = finish_temp(&self.temp, writer).and_then(|file| {
            fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
            // The temporary stays locked until it has its final name: a save that another
            // process sees unlocked is one whose writer is gone (see `lock.rs`).
            drop(file);
            fsync_dir(&self.dir)
        });
        if result.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        result
    }

    /// Drops the written bytes: the temporary file is removed, the target untouched.
    pub fn abort(mut self) -> Result<()> {
        self.writer = None;
        match fs::remove_file(&self.temp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.temp, e)),
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.writer {
            Some(writer) => writer.write(buf),
            None => Err(finished()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(writer) => writer.write_all(buf),
            None => Err(finished()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.writer {
            Some(writer) => writer.flush(),
            None => Err(finished()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn finished() -> std::io::Error {
    std::io::Error::other("the atomic file was already committed or aborted")
}

/// Flushes and fsyncs the temporary file; returns it still open (and locked, see
/// `lock.rs`) so that the lock lasts until the file has its final name.
fn finish_temp(temp: &Path, writer: BufWriter<File>) -> Result<File> {
    let file = writer
        .into_inner()
        .map_err(|e| Error::io(temp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(temp, e))?;
    Ok(file)
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each directory created,
/// so that a new save directory survives a power cut together with the files saved in it.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The missing directories, innermost first.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for created in missing.iter().rev() {
        fsync_dir(&parent_dir(created))?;
    }
    Ok(())
}

/// fsyncs a directory so that a rename inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(|e| Error::io(dir, e))?;
        handle.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Who writes a temporary file, as its name says after [`TEMP_PREFIX`]: `<pid>@<host>` of
/// this process, so that a save directory shared by several
/// hosts (NFS, a volume of several containers) can tell its own leftovers from another host's
/// save in flight. The host name keeps only characters that cannot be confused with the
/// separators of the temporary name.
pub fn temp_owner() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        let raw = fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let host: String = raw
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .take(32)
            .collect();
        if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        }
    });
    format!("{}@{host}", std::process::id())
}

/// The start of the target's name, for people looking at a directory: short enough that the
/// temporary name stays within the 255-byte limit of file names whatever the target's length.
pub(crate) fn name_hint(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

pub(crate) fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (COUNTER.fetch_add(1, Ordering::Relaxed) << 32) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_unicode_names_save() {
        let dir = tempfile::tempdir().unwrap();
        // 244 bytes: a valid file name, too long once a temporary prefix is added in full.
        let name = format!("{}.pth", "é".repeat(120));
        let path = dir.path().join(&name);
        atomic_write(&path, |w| {
            w.write_all(b"x").map_err(|e| Error::io(&path, e))
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn a_save_in_flight_is_not_named_like_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model_0000999.pth");
        atomic_write(&path, |_| {
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            // What Python's get_all_checkpoint_files would list: none of it.
            assert!(names.iter().all(|n| !n.ends_with(".pth")), "{names:?}");
            assert!(
                names.iter().all(|n| n.starts_with(TEMP_PREFIX)),
                "{names:?}"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn failed_write_leaves_previous_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pth");
        atomic_write(&path, |w| {
            w.write_all(b"old").map_err(|e| Error::io(&path, e))
        })
        .unwrap();
        let err = atomic_write(&path, |w| {
            w.write_all(b"partial").map_err(|e| Error::io(&path, e))?;
            Err(Error::invalid("disk full"))
        });
        assert!(
            matches!(&err, Err(Error::Invalid { message }) if message == "disk full"),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

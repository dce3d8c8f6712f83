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
    let result = write_temp(&temp, write).and_then(|file| {
        fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
        // The temporary stays locked until it has its final name: a save that another
        // process sees unlocked is one whose writer is gone (see `lock.rs`).
        drop(file);
        fsync_dir(&dir)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes and fsyncs the temporary file, locked by this process (see `lock.rs`); returns it
/// still open, so that the lock lasts until the file is renamed.
fn write_temp<F>(temp: &Path, write: F) -> Result<File>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(|e| Error::io(temp, e))
    };
    let mut file = open()?;
    // A cleaner that found the file before it was locked removed it: make it again (the
    // name is free). A cleaner only removes unlocked files, so this ends.
    let mut attempts = 1;
    while !super::lock::lock_new_temp(&file) && attempts < 5 {
        file = open()?;
        attempts += 1;
    }
    // Large writes (tensor bytes) bypass the buffer; small ones (headers) are batched.
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    write(&mut writer)?;
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
fn name_hint(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn unique() -> u64 {
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

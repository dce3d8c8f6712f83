//! `ckpt ls DIR [--json]`: the checkpoints in a save directory, as a detectron2/fvcore
//! `Checkpointer` (Python or ckpt) leaves it.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use ckpt::format::{load_with, verify_file, LoadOptions};
use ckpt::store::TEMP_PREFIX;
use serde::Serialize;

use crate::error::{one_line, without_file, CliError};
use crate::output::{human_bytes, print, printable, Align, JsonLines, Table};
use crate::time::rfc3339_utc;

/// List the checkpoints in a save directory
///
/// Every `*.pth` file with its iteration, size, modified time (UTC), whether
/// `last_checkpoint` points to it, and whether it is intact (its structure reads to the end;
/// with `--verify`, every byte matches the crc32 its archive declares). Works on directories
/// written by fvcore/detectron2 and by ckpt.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpointer's save directory.
    pub dir: PathBuf,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also check the crc32 of every record of every checkpoint (reads every byte; without
    /// it only the structure is read, which is fast whatever the files' sizes).
    #[arg(long)]
    pub verify: bool,
}

/// Name of the tag file, as the Python checkpointer writes it.
const TAG_FILE: &str = "last_checkpoint";
/// The most of a tag file read: it holds one file name (the bound a checkpointer reads too).
const MAX_TAG_BYTES: u64 = 64 * 1024;

/// What `ls` reports; serialised as the `--json` output.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub dir: String,
    /// The `last_checkpoint` tag, or null when the directory has none.
    pub last_checkpoint: Option<Tag>,
    /// Sorted by iteration (files without one last), then by name.
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Serialize)]
pub struct Tag {
    /// The stripped content of `last_checkpoint` (a basename when a checkpointer wrote it).
    pub target: String,
    /// Whether the target is a file in the directory.
    pub exists: bool,
    /// Why the tag cannot be followed, if it cannot.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Checkpoint {
    pub file: String,
    /// The top-level `iteration` int of the checkpoint, if it has one.
    pub iteration: Option<i64>,
    pub size: u64,
    /// RFC 3339, UTC.
    pub modified: Option<String>,
    /// Whether `last_checkpoint` names this file.
    pub last: bool,
    /// Whether the file reads to the end (and, when `verified`, every crc32 matches).
    pub intact: bool,
    /// Whether the crc32 of every record was checked (`--verify`).
    pub verified: bool,
    /// Why it does not, in one line.
    pub error: Option<String>,
}

pub fn run(args: &Args) -> Result<(), CliError> {
    let listing = list_with(&args.dir, args.verify)?;
    if args.json {
        print(&listing.to_json()?)
    } else {
        print(&listing.render())
    }
}

/// Reads the structure of every checkpoint in `dir` (each once, one at a time).
#[cfg(test)]
pub fn list(dir: &Path) -> Result<Listing, CliError> {
    list_with(dir, false)
}

/// [`list`], checking every record's crc32 too when `verify`.
pub fn list_with(dir: &Path, verify: bool) -> Result<Listing, CliError> {
    let shown = printable(&dir.display().to_string());
    let read = fs::read_dir(dir).map_err(|e| CliError::new(format!("{shown}: {e}")))?;
    let mut checkpoints = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| CliError::new(format!("{shown}: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pth") || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        // As Python's os.path.isfile: symlinks are followed, directories and dangling links skipped.
        let Ok(metadata) = fs::metadata(entry.path()) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        checkpoints.push(examine(&entry.path(), name, &metadata, verify));
    }
    let last_checkpoint = read_tag(dir)?;
    if let Some(tag) = &last_checkpoint {
        for c in &mut checkpoints {
            c.last = c.file == tag.target;
        }
    }
    checkpoints.sort_by(|a, b| {
        (a.iteration.is_none(), a.iteration, &a.file).cmp(&(
            b.iteration.is_none(),
            b.iteration,
            &b.file,
        ))
    });
    Ok(Listing {
        dir: dir.display().to_string(),
        last_checkpoint,
        checkpoints,
    })
}

fn examine(path: &Path, file: String, metadata: &fs::Metadata, verify: bool) -> Checkpoint {
    // Mapped, so the tensors' bytes are not read: only the structure is.
    let (iteration, mut error) = match load_with(path, &LoadOptions::default()) {
        Ok(loaded) => (loaded.value.get("iteration").and_then(|v| v.as_int()), None),
        // The row names the file already: keep only what went wrong.
        Err(e) => (None, Some(one_line(&without_file(&e)))),
    };
    if verify && error.is_none() {
        if let Err(e) = verify_file(path) {
            error = Some(one_line(&without_file(&e)));
        }
    }
    Checkpoint {
        file,
        iteration,
        size: metadata.len(),
        modified: metadata.modified().ok().map(rfc3339_utc),
        last: false,
        intact: error.is_none(),
        verified: verify,
        error,
    }
}

/// At most one byte more than [`MAX_TAG_BYTES`] of `path` (a link to an endless device
/// is not read forever).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_TAG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The `last_checkpoint` tag of `dir`, if there is one.
fn read_tag(dir: &Path) -> Result<Option<Tag>, CliError> {
    let path = dir.join(TAG_FILE);
    let bytes = match read_bounded(&path) {
        Ok(bytes) if bytes.len() as u64 > MAX_TAG_BYTES => {
            return Ok(Some(Tag {
                target: String::new(),
                exists: false,
                error: Some(format!(
                    "{TAG_FILE} is larger than {MAX_TAG_BYTES} bytes; it should hold one file name"
                )),
            }))
        }
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Ok(Some(Tag {
                target: String::new(),
                exists: false,
                error: Some(format!("cannot read {TAG_FILE}: {e}")),
            }))
        }
    };
    // Python strips the content before joining it to the directory.
    let target = String::from_utf8_lossy(&bytes).trim().to_string();
    let plain = !target.is_empty()
        && Path::new(&target).file_name().map(|n| n.to_string_lossy())
            == Some(target.as_str().into());
    let exists = plain && dir.join(&target).is_file();
    let error = if target.is_empty() {
        Some(format!("{TAG_FILE} is empty"))
    } else if !plain {
        Some("not a file name inside the directory".to_string())
    } else if !exists {
        Some("no such file in the directory".to_string())
    } else {
        None
    };
    Ok(Some(Tag {
        target,
        exists,
        error,
    }))
}

impl Listing {
    /// The `--json` output: the fields of [`Listing`], one checkpoint per line.
    pub fn to_json(&self) -> Result<String, CliError> {
        Ok(JsonLines::new()
            .field("dir", &self.dir)?
            .field("last_checkpoint", &self.last_checkpoint)?
            .rows("checkpoints", &self.checkpoints)?
            .render())
    }

    /// A table for people, then where `last_checkpoint` points.
    pub fn render(&self) -> String {
        let dir = printable(&self.dir);
        let mut out = String::new();
        if self.checkpoints.is_empty() {
            out.push_str(&format!("no checkpoints (*.pth) in {dir}\n"));
        } else {
            let mut table = Table::new(
                &["FILE", "ITERATION", "SIZE", "MODIFIED", "LAST", "STATUS"],
                &[
                    Align::Left,
                    Align::Right,
                    Align::Right,
                    Align::Left,
                    Align::Left,
                    Align::Left,
                ],
            );
            for c in &self.checkpoints {
                table.row(vec![
                    printable(&c.file),
                    c.iteration.map_or("-".to_string(), |i| i.to_string()),
                    human_bytes(c.size),
                    c.modified.clone().unwrap_or_else(|| "-".to_string()),
                    if c.last { "*" } else { "" }.to_string(),
                    match &c.error {
                        None if c.verified => "ok (crc32 checked)".to_string(),
                        None => "ok".to_string(),
                        Some(e) if c.verified && e.contains("crc32") => {
                            format!("CORRUPT: {}", printable(e))
                        }
                        Some(e) => format!("BROKEN: {}", printable(e)),
                    },
                ]);
            }
            out.push_str(&table.render());
        }
        match &self.last_checkpoint {
            None => out.push_str(&format!("no {TAG_FILE} in {dir}\n")),
            Some(tag) => {
                out.push_str(&format!("{TAG_FILE} -> {}", printable(&tag.target)));
                if let Some(e) = &tag.error {
                    out.push_str(&format!(" (BROKEN: {e})"));
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_other_files_are_not_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".ckpt-tmp-1-2-model_0000009.pth"), b"").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        fs::create_dir(dir.path().join("sub.pth")).unwrap();
        let listing = list(dir.path()).unwrap();
        assert!(listing.checkpoints.is_empty());
        assert!(listing.last_checkpoint.is_none());
        assert!(listing.render().contains("no checkpoints"));
    }

    #[test]
    fn tag_to_a_missing_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TAG_FILE), b"model_0000019.pth").unwrap();
        let tag = read_tag(dir.path()).unwrap().unwrap();
        assert_eq!(tag.target, "model_0000019.pth");
        assert!(!tag.exists);
        assert_eq!(tag.error.as_deref(), Some("no such file in the directory"));
    }

    #[test]
    fn tag_outside_the_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TAG_FILE), b"../model.pth\n").unwrap();
        let tag = read_tag(dir.path()).unwrap().unwrap();
        assert_eq!(tag.target, "../model.pth");
        assert!(!tag.exists);
        assert!(tag.error.is_some());
    }

    #[test]
    fn empty_file_is_listed_as_broken_and_sorted_last() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("model_0000004.pth"), b"").unwrap();
        fs::write(dir.path().join(TAG_FILE), b"model_0000004.pth").unwrap();
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.checkpoints.len(), 1);
        let c = &listing.checkpoints[0];
        assert!(!c.intact && c.last && c.iteration.is_none());
        assert!(
            c.error.as_deref().unwrap_or("").contains("empty file"),
            "{c:?}"
        );
        let text = listing.render();
        assert!(text.contains("BROKEN: empty file"), "{text}");
        assert!(
            text.contains("last_checkpoint -> model_0000004.pth\n"),
            "{text}"
        );
    }
}

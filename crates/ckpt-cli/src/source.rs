//! Where input files come from: local paths, or URLs and named paths (`https://`,
//! `detectron2://`, `catalog://`, `s3://`) fetched into the download cache, with a progress
//! bar on a terminal; for the commands that only read a checkpoint's structure, partial
//! copies of objects.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ckpt::resolve::{default_cache_dir, HttpCache, Progress, Resolved, Resolver};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;
use crate::output::printable;

/// The standard resolver, downloading into the default cache with a progress bar on stderr
/// (drawn only when stderr is a terminal).
pub fn resolver() -> Resolver {
    Resolver::with_cache(HttpCache::new(default_cache_dir()).with_progress(DownloadBar::default()))
}

/// The local file for a command's input: the path itself when it exists or does not look
/// like a URL, else what the resolver fetches.
pub fn local_input(input: &Path) -> Result<PathBuf, CliError> {
    input_path(input, false)
}

/// [`local_input`] for an input that only ckpt's readers read (`inspect`, `plan`): an
/// object store URL becomes a partial copy that fetches only what the reader reads (the
/// pickle and the zip directory, a safetensors header), not the whole object.
pub fn partial_input(input: &Path) -> Result<PathBuf, CliError> {
    input_path(input, true)
}

/// [`local_input`], or [`partial_input`] when `partial`.
fn input_path(input: &Path, partial: bool) -> Result<PathBuf, CliError> {
    if input.exists() {
        return Ok(input.to_path_buf());
    }
    match input.to_str() {
        Some(text) if text.contains("://") => {
            let resolver = resolver();
            let path = match partial {
                true => resolver.get_partial_path(text),
                false => resolver.get_local_path(text),
            };
            path.map_err(|e| resolve_error(&e))
        }
        _ => Ok(input.to_path_buf()),
    }
}

/// The local file for a checkpoint input that may carry a query string
/// (`model.pth?matching_heuristics=True`, the query checked and dropped) or be a URL.
pub fn checkpoint_input(input: &Path) -> Result<PathBuf, CliError> {
    if input.exists() {
        return Ok(input.to_path_buf());
    }
    match input.to_str() {
        Some(text) => Ok(resolve(text)?.path),
        None => Ok(input.to_path_buf()),
    }
}

/// Resolves a checkpoint path with its query string (`?matching_heuristics=True`).
pub fn resolve(input: &str) -> Result<Resolved, CliError> {
    resolver().resolve(input).map_err(|e| resolve_error(&e))
}

/// [`resolve`] for an input that only ckpt's readers read (see [`partial_input`]).
pub fn resolve_partial(input: &str) -> Result<Resolved, CliError> {
    resolver()
        .resolve_partial(input)
        .map_err(|e| resolve_error(&e))
}

/// A path that cannot be resolved: the error names the path or URL (which the user typed:
/// control characters are escaped).
fn resolve_error(e: &ckpt::Error) -> CliError {
    CliError::new(printable(&e.report().to_string()))
}

/// A progress bar for one download at a time, created when the download starts.
#[derive(Default)]
pub(crate) struct DownloadBar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for DownloadBar {
    fn update(&self, downloaded: u64, total: Option<u64>) {
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        let bar = slot.get_or_insert_with(|| new_bar(total));
        bar.set_position(downloaded);
        if total.is_some_and(|t| downloaded >= t) {
            bar.finish_and_clear();
            *slot = None;
        }
    }
}

impl Drop for DownloadBar {
    fn drop(&mut self) {
        if let Ok(Some(bar)) = self.bar.get_mut().map(Option::take) {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(total: Option<u64>) -> ProgressBar {
    // Only a person at a terminal watches a bar; in a log it is noise.
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "downloading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("downloading {spinner} {bytes} ({bytes_per_sec})")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }
    }
}

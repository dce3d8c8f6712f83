//! `http://` and `https://` checkpoints: downloaded once into a cache directory and read
//! from there afterwards.
//!
//! A download streams to a temporary file in the cache directory and is renamed into place
//! only when every byte the server announced has arrived, so the cache never holds a torn
//! file: an interrupted download is simply retried on the next resolve.

use std::fmt;
use std::fs;
#[cfg(feature = "http")]
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{split_query, Lookup, PathHandler};
use crate::error::{Error, Result};

/// The environment variable that overrides the default cache directory.
pub const CACHE_DIR_ENV: &str = "CKPT_CACHE_DIR";

/// The cache directory used by [`crate::resolve::Resolver::new`]: `$CKPT_CACHE_DIR` when set,
/// else `ckpt` in the user's cache directory (`$XDG_CACHE_HOME`, `~/.cache`,
/// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows), else `ckpt-cache` in the
/// temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    match user_cache_dir() {
        Some(dir) => dir.join("ckpt"),
        None => std::env::temp_dir().join("ckpt-cache"),
    }
}

fn user_cache_dir() -> Option<PathBuf> {
    if cfg!(windows) {
        return non_empty_env("LOCALAPPDATA").map(PathBuf::from);
    }
    if cfg!(target_os = "macos") {
        return non_empty_env("HOME").map(|home| Path::new(&home).join("Library/Caches"));
    }
    non_empty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| non_empty_env("HOME").map(|home| Path::new(&home).join(".cache")))
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Receives download progress: bytes written so far and the total when the server said it.
/// Called once before the first byte and after every chunk.
pub trait Progress: Send + Sync {
    /// `downloaded` bytes of `total` have been written to the cache.
    fn update(&self, downloaded: u64, total: Option<u64>);
}

impl fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

impl<F> Progress for F
where
    F: Fn(u64, Option<u64>) + Send + Sync,
{
    fn update(&self, downloaded: u64, total: Option<u64>) {
        self(downloaded, total)
    }
}

/// The handler for `http://` and `https://`: a directory of downloaded files, one per URL,
/// at `<dir>/<host>/<url path>` (the query string is not part of the name).
///
/// A URL whose file is in the cache is never requested again.
#[derive(Clone)]
pub struct HttpCache {
    dir: PathBuf,
    progress: Option<Arc<dyn Progress>>,
    offline: bool,
    #[cfg(feature = "http")]
    agent: ureq::Agent,
}

impl HttpCache {
    /// A cache in `dir` (created on the first download).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HttpCache {
            dir: dir.into(),
            progress: None,
            offline: false,
            #[cfg(feature = "http")]
            agent: new_agent(),
        }
    }

    /// Reports download progress to `progress`.
    pub fn with_progress(mut self, progress: impl Progress + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// When `offline`, a URL missing from the cache is an error instead of a download.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The progress callback, shared with the other downloaders of a resolver.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(super) fn progress(&self) -> Option<Arc<dyn Progress>> {
        self.progress.clone()
    }

    /// Where `url` is (or would be) stored. Errors for a URL that names no file or whose
    /// path would leave the cache directory (`..`).
    pub fn cached_path(&self, url: &str) -> Result<PathBuf> {
        let (bare, _query) = split_query(url);
        let bare = bare.split_once('#').map_or(bare, |(b, _)| b);
        let (scheme, rest) = bare
            .split_once("://")
            .ok_or_else(|| Error::invalid_path(url, "not a URL"))?;
        if !matches!(scheme, "http" | "https") {
            return Err(Error::invalid_path(url, "not an http(s) URL"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // Credentials never become part of a file name.
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if matches!(host, "" | "." | "..") {
            return Err(Error::invalid_path(url, "no valid host"));
        }
        let mut local = self.dir.join(file_name_part(host));
        let mut has_file = false;
        for segment in path.split('/') {
            match segment {
                "" => has_file = false,
                "." | ".." => {
                    return Err(Error::invalid_path(
                        url,
                        format!("a '{segment}' path segment is not allowed in a cached URL"),
                    ))
                }
                _ => {
                    local.push(file_name_part(segment));
                    has_file = true;
                }
            }
        }
        if !has_file {
            return Err(Error::invalid_path(url, "does not name a file"));
        }
        Ok(local)
    }

    /// The local copy of `url`: the cached file when present, else downloaded first.
    pub fn fetch(&self, url: &str) -> Result<PathBuf> {
        let path = self.cached_path(url)?;
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            tracing::debug!("{url} is cached at {}", path.display());
            return Ok(path);
        }
        if self.offline {
            return Err(Error::Download {
                url: url.to_string(),
                status: None,
                reason: format!(
                    "not in the cache ({}) and downloads are off",
                    path.display()
                ),
                source: None,
            });
        }
        self.download(url, &path)?;
        Ok(path)
    }

    #[cfg(feature = "http")]
    fn download(&self, url: &str, dest: &Path) -> Result<()> {
        if url.starts_with("https://") && !cfg!(feature = "https") {
            return Err(Error::unsupported(format!(
                "{url}: ckpt was built without its `https` feature"
            )));
        }
        tracing::info!("Downloading {url} to {}", dest.display());
        let mut response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| request_error(url, e))?;
        // Only now: a failed request leaves no empty directories behind.
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let total = response.body().content_length();
        let mut body = response.body_mut().as_reader();
        crate::store::atomic_write(dest, |out| {
            copy_body(url, dest, &mut body, out, total, self.progress.as_deref())
        })?;
        tracing::info!("Downloaded {url}");
        Ok(())
    }

    #[cfg(not(feature = "http"))]
    fn download(&self, url: &str, dest: &Path) -> Result<()> {
        Err(Error::unsupported(format!(
            "{url}: not in the cache ({}) and ckpt was built without its `http` feature",
            dest.display()
        )))
    }
}

impl PathHandler for HttpCache {
    fn prefixes(&self) -> Vec<String> {
        vec!["http://".to_string(), "https://".to_string()]
    }

    fn get_local_path(&self, path: &str, _lookup: &Lookup<'_>) -> Result<PathBuf> {
        self.fetch(path)
    }
}

impl fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("dir", &self.dir)
            .field("progress", &self.progress.is_some())
            .field("offline", &self.offline)
            .finish()
    }
}

/// A URL part as a file name: bytes that are unsafe in file names on some system (`:`,
/// `\`, control characters, ...) are percent-encoded, so distinct names stay distinct.
fn file_name_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~%+=,@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(feature = "http")]
fn new_agent() -> ureq::Agent {
    use std::time::Duration;
    let config = ureq::Agent::config_builder()
        .user_agent(concat!("ckpt/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // No global limit: model files can take long; a stalled connection still fails.
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(config)
}

#[cfg(feature = "http")]
fn request_error(url: &str, error: ureq::Error) -> Error {
    let (status, reason, source) = match error {
        ureq::Error::StatusCode(code) => (
            Some(code),
            format!("the server answered HTTP status {code}"),
            None,
        ),
        ureq::Error::Io(e) => (None, "request failed".to_string(), Some(e)),
        // ureq's own error, kept whole behind an I/O error: its type is not part of ckpt's API.
        other => (
            None,
            "request failed".to_string(),
            Some(io::Error::other(other)),
        ),
    };
    Error::Download {
        url: url.to_string(),
        status,
        reason,
        source,
    }
}

/// Streams the body into `out`, reporting progress; fails unless exactly `total` bytes
/// arrive when the server announced a length.
#[cfg(feature = "http")]
fn copy_body(
    url: &str,
    dest: &Path,
    body: &mut dyn io::Read,
    out: &mut dyn io::Write,
    total: Option<u64>,
    progress: Option<&dyn Progress>,
) -> Result<()> {
    let mut chunk = vec![0u8; 256 * 1024];
    let mut done: u64 = 0;
    let interrupted = |done: u64, e: io::Error| {
        let expected = total.map_or(String::new(), |t| format!(" of {t}"));
        Error::Download {
            url: url.to_string(),
            status: None,
            reason: format!("download broke off after {done}{expected} bytes"),
            source: Some(e),
        }
    };
    if let Some(progress) = progress {
        progress.update(0, total);
    }
    loop {
        let n = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(interrupted(done, e)),
        };
        let data = chunk.get(..n).ok_or_else(|| {
            Error::invalid(format!(
                "{url}: reader returned {n} bytes for a smaller buffer"
            ))
        })?;
        out.write_all(data).map_err(|e| Error::io(dest, e))?;
        done += n as u64;
        if let Some(progress) = progress {
            progress.update(done, total);
        }
    }
    match total {
        Some(total) if done != total => Err(interrupted(
            done,
            io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed early"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_path_is_host_then_url_path() {
        let cache = HttpCache::new("/c");
        assert_eq!(
            cache
                .cached_path("https://user:pw@example.com:8080/a/b%3Ac/m.pkl?x=1#f")
                .unwrap(),
            PathBuf::from("/c/example.com%3A8080/a/b%3Ac/m.pkl")
        );
    }

    #[test]
    fn cached_path_rejects_dot_dot_and_missing_file_names() {
        let cache = HttpCache::new("/c");
        let err = cache.cached_path("http://h/../etc/passwd").unwrap_err();
        assert!(
            matches!(err.root(), Error::InvalidPath { path, .. } if path == "http://h/../etc/passwd"),
            "{err:?}"
        );
        let err = cache.cached_path("http://h/dir/").unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }), "{err:?}");
        let err = cache.cached_path("http://h").unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }), "{err:?}");
        let err = cache.cached_path("http://../x").unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }), "{err:?}");
        let err = cache.cached_path("ftp://h/a").unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }), "{err:?}");
    }
}

//! Path resolution: turn what a user writes as a checkpoint path into a local file.
//!
//! A [`Resolver`] holds one [`PathHandler`] per prefix, like iopath's `PathManager`:
//!
//! - no prefix (or `file://`): a local path, used as is;
//! - `http://`, `https://`: downloaded once into a cache directory ([`HttpCache`]);
//! - `detectron2://X`: the detectron2 model zoo, `https://dl.fbaipublicfiles.com/detectron2/X`;
//! - `catalog://...`: Detectron1 models named in a fixed table ([`catalog_url`]);
//! - `s3://bucket/key` (and `gs://`, `az://`), with the `s3` feature: downloaded into the
//!   same cache with parallel range requests, again only when the object changed
//!   ([`ObjectUrlHandler`]).
//!
//! Users add their own prefixes with [`Resolver::register`]. Before any handler runs,
//! [`Resolver::resolve`] strips a query string (`model.pth?matching_heuristics=True`) and
//! returns its options beside the local path.
//!
//! ```no_run
//! use ckpt::resolve::Resolver;
//! let resolved = Resolver::new().resolve("detectron2://ImageNetPretrained/MSRA/R-50.pkl")?;
//! println!("{} (matching heuristics: {})", resolved.path.display(), resolved.options.matching_heuristics);
//! # Ok::<(), ckpt::Error>(())
//! ```

mod catalog;
mod http;
#[cfg(feature = "s3")]
mod object;
mod query;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};

pub use catalog::{catalog_url, CatalogHandler};
pub use http::{default_cache_dir, HttpCache, Progress, CACHE_DIR_ENV};
#[cfg(feature = "s3")]
pub use object::ObjectUrlHandler;
pub(crate) use query::split_query;
pub use query::QueryOptions;

/// How deep handlers may delegate to each other (`catalog://` -> `https://` -> file) before
/// the resolver assumes a cycle between user handlers.
const MAX_DEPTH: usize = 16;

/// Turns paths that start with one of its prefixes into local files.
///
/// A handler that maps its paths to other paths (a URL, another prefix) delegates through
/// [`Lookup::get_local_path`], which runs the resolver's handlers again.
pub trait PathHandler: Send + Sync {
    /// The prefixes this handler claims, e.g. `["http://", "https://"]`. Read once, when the
    /// handler is registered.
    fn prefixes(&self) -> Vec<String>;

    /// The local file for `path` (which starts with one of [`PathHandler::prefixes`] and has
    /// no query string). The file need not exist yet when the handler only maps names.
    fn get_local_path(&self, path: &str, lookup: &Lookup<'_>) -> Result<PathBuf>;

    /// The local file for `path` that only ckpt's readers ([`crate::format::load_with`] and
    /// what is built on it) read, so that it may be a partial copy whose ranges are fetched
    /// as they are read (object store URLs). [`PathHandler::get_local_path`] by default.
    fn get_partial_path(&self, path: &str, lookup: &Lookup<'_>) -> Result<PathBuf> {
        self.get_local_path(path, lookup)
    }
}

/// What a handler uses to resolve the path it maps to.
pub struct Lookup<'a> {
    resolver: &'a Resolver,
    depth: usize,
}

impl Lookup<'_> {
    /// Resolves `path` with the same resolver (any prefix, no query string).
    pub fn get_local_path(&self, path: &str) -> Result<PathBuf> {
        self.resolver.local_path_at(path, self.depth + 1)
    }
}

/// A local path and the options parsed from its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolved {
    /// The local file (not checked for existence: in distributed training a worker may lack
    /// a file that the main worker has).
    pub path: PathBuf,
    /// Options from the query string.
    pub options: QueryOptions,
}

impl Resolved {
    /// A local path without options.
    pub fn local(path: impl Into<PathBuf>) -> Resolved {
        Resolved {
            path: path.into(),
            options: QueryOptions::default(),
        }
    }
}

/// A handler that rewrites one prefix into another string and resolves the result, e.g.
/// `detectron2://` -> `https://dl.fbaipublicfiles.com/detectron2/`.
#[derive(Debug, Clone)]
pub struct PrefixRewrite {
    from: String,
    to: String,
}

impl PrefixRewrite {
    /// Paths starting with `from` are resolved as `to` followed by the rest of the path.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        PrefixRewrite {
            from: from.into(),
            to: to.into(),
        }
    }

    /// The `detectron2://` handler of the detectron2 model zoo.
    pub fn detectron2() -> Self {
        PrefixRewrite::new("detectron2://", catalog::DETECTRON2_URL_PREFIX)
    }
}

impl PathHandler for PrefixRewrite {
    fn prefixes(&self) -> Vec<String> {
        vec![self.from.clone()]
    }

    fn get_local_path(&self, path: &str, lookup: &Lookup<'_>) -> Result<PathBuf> {
        let rest = path.strip_prefix(self.from.as_str()).ok_or_else(|| {
            Error::invalid_path(path, format!("does not start with '{}'", self.from))
        })?;
        let target = format!("{}{rest}", self.to);
        tracing::info!("{path} points to {target}");
        lookup.get_local_path(&target)
    }
}

/// Paths written `file:///abs/path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileUrlHandler;

impl PathHandler for FileUrlHandler {
    fn prefixes(&self) -> Vec<String> {
        vec!["file://".to_string()]
    }

    fn get_local_path(&self, path: &str, _lookup: &Lookup<'_>) -> Result<PathBuf> {
        let rest = path.strip_prefix("file://").unwrap_or(path);
        if rest.is_empty() {
            return Err(Error::invalid_path(path, "names no file"));
        }
        Ok(PathBuf::from(rest))
    }
}

/// Resolves checkpoint paths and URLs to local files through per-prefix handlers.
///
/// Cheap to clone (handlers are shared). The longest registered prefix wins; a path with no
/// registered prefix is a local path, unless it looks like `scheme://...`, which is an error
/// rather than a confusing "file not found" later.
#[derive(Clone)]
pub struct Resolver {
    /// Sorted by prefix length, longest first, so that the most specific prefix wins.
    handlers: Vec<(String, Arc<dyn PathHandler>)>,
}

impl Resolver {
    /// The standard handlers: `file://`, `http://`/`https://` cached in [`default_cache_dir`]
    /// (`CKPT_CACHE_DIR` or the user's cache directory), `detectron2://` and `catalog://`.
    pub fn new() -> Self {
        Resolver::with_cache(HttpCache::new(default_cache_dir()))
    }

    /// The standard handlers, downloading URLs through `cache` (its directory, progress
    /// callback and network settings).
    pub fn with_cache(cache: HttpCache) -> Self {
        let mut resolver = Resolver::local_only();
        resolver.register(FileUrlHandler);
        resolver.register(cache.clone());
        resolver.register(PrefixRewrite::detectron2());
        resolver.register(CatalogHandler);
        #[cfg(feature = "s3")]
        resolver
            .register(ObjectUrlHandler::new(cache.dir()).with_shared_progress(cache.progress()));
        resolver
    }

    /// A resolver that knows only local paths; add handlers with [`Resolver::register`].
    pub fn local_only() -> Self {
        Resolver {
            handlers: Vec::new(),
        }
    }

    /// Adds `handler` for each of its prefixes. A prefix registered before is taken over by
    /// the new handler (so users can replace the built-in ones).
    pub fn register(&mut self, handler: impl PathHandler + 'static) -> &mut Self {
        self.register_shared(Arc::new(handler))
    }

    /// [`Resolver::register`] for a handler shared with other resolvers.
    pub fn register_shared(&mut self, handler: Arc<dyn PathHandler>) -> &mut Self {
        for prefix in handler.prefixes() {
            if prefix.is_empty() {
                tracing::warn!("ignoring an empty path prefix");
                continue;
            }
            if let Some(slot) = self.handlers.iter_mut().find(|(p, _)| *p == prefix) {
                tracing::debug!("replacing the handler for {prefix}");
                slot.1 = Arc::clone(&handler);
            } else {
                self.handlers.push((prefix, Arc::clone(&handler)));
            }
        }
        self.handlers
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self
    }

    /// The registered prefixes, longest first.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|(p, _)| p.as_str())
    }

    /// Splits off the query string of `path`, parses its options (an unknown key is an
    /// error: `Unsupported query remaining: ...`) and resolves the rest to a local file.
    pub fn resolve(&self, path: &str) -> Result<Resolved> {
        self.resolve_at(path, false)
    }

    /// [`Resolver::resolve`], or [`Resolver::resolve_partial`] when `partial`.
    fn resolve_at(&self, path: &str, partial: bool) -> Result<Resolved> {
        let (bare, query) = split_query(path);
        let options = match query {
            Some(query) => QueryOptions::parse(query, path)?,
            None => QueryOptions::default(),
        };
        Ok(Resolved {
            path: self.path_at(bare, 0, partial)?,
            options,
        })
    }

    /// Resolves `path` (taken literally: no query parsing) to a local file.
    pub fn get_local_path(&self, path: &str) -> Result<PathBuf> {
        self.local_path_at(path, 0)
    }

    /// [`Resolver::resolve`] for ckpt's own readers only ([`crate::format::load_with`],
    /// [`crate::detection::read_detection_file`], ...): an object store URL becomes a partial
    /// copy that fetches only what the reader reads (a torch archive's directory and pickle,
    /// a safetensors header) and each tensor's bytes when they are first read (see
    /// [`ObjectStoreDir::partial_file`](crate::store::ObjectStoreDir::partial_file)). Other
    /// paths resolve as with [`Resolver::resolve`]. What was not fetched reads as zeros to
    /// any other program: give the path to ckpt's readers only.
    ///
    /// ```no_run
    /// use ckpt::resolve::Resolver;
    /// let resolved = Resolver::new().resolve_partial("s3://bucket/run1/model_final.pth")?;
    /// let value = ckpt::format::load(&resolved.path)?; // the pickle, not the tensors
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn resolve_partial(&self, path: &str) -> Result<Resolved> {
        self.resolve_at(path, true)
    }

    /// [`Resolver::resolve_partial`] of a path taken literally (no query parsing).
    pub fn get_partial_path(&self, path: &str) -> Result<PathBuf> {
        self.path_at(path, 0, true)
    }

    fn local_path_at(&self, path: &str, depth: usize) -> Result<PathBuf> {
        self.path_at(path, depth, false)
    }

    fn path_at(&self, path: &str, depth: usize, partial: bool) -> Result<PathBuf> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid_path(
                path,
                format!("path handlers delegated more than {MAX_DEPTH} times (a cycle?)"),
            ));
        }
        if path.is_empty() {
            return Err(Error::invalid_path(path, "empty checkpoint path"));
        }
        let handler = self
            .handlers
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()));
        match handler {
            Some((_, handler)) => {
                let lookup = Lookup {
                    resolver: self,
                    depth,
                };
                match partial {
                    true => handler.get_partial_path(path, &lookup),
                    false => handler.get_local_path(path, &lookup),
                }
            }
            None => match unknown_scheme(path) {
                Some(scheme) => Err(Error::invalid_path(
                    path,
                    format!(
                        "no handler for '{scheme}://' (known prefixes: {})",
                        self.prefixes().collect::<Vec<_>>().join(", ")
                    ),
                )),
                None => Ok(PathBuf::from(path)),
            },
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("prefixes", &self.prefixes().collect::<Vec<_>>())
            .finish()
    }
}

/// The scheme of `path` when it looks like a URL (`s3://bucket/x`), so that an unregistered
/// scheme is reported instead of being looked up as a relative local path.
fn unknown_scheme(path: &str) -> Option<&str> {
    let (scheme, _) = path.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_only_for_url_like_paths() {
        assert_eq!(unknown_scheme("s3://bucket/x"), Some("s3"));
        assert_eq!(unknown_scheme("dir/model.pth"), None);
        assert_eq!(unknown_scheme("/a/b://c"), None);
        assert_eq!(unknown_scheme("://x"), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let mut resolver = Resolver::local_only();
        resolver.register(PrefixRewrite::new("zoo://", "/models/"));
        resolver.register(PrefixRewrite::new("zoo://big/", "/big-models/"));
        assert_eq!(
            resolver.get_local_path("zoo://big/a.pth").unwrap(),
            PathBuf::from("/big-models/a.pth")
        );
        assert_eq!(
            resolver.get_local_path("zoo://small/a.pth").unwrap(),
            PathBuf::from("/models/small/a.pth")
        );
    }
}

//! Downloads through the HTTP cache against a local server started by each test.
#![cfg(feature = "http")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ckpt::resolve::{HttpCache, PathHandler, PrefixRewrite, Resolver};
use ckpt::Error;

use crate::support::http::{refused_url, Reply, Server};
use crate::support::paths::files_under;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn download_is_cached_and_second_resolve_makes_no_request() {
    let server = Server::start();
    let body = payload(3 * 1024 * 1024 + 17);
    let url = server.route("/zoo/R-50/model_final.pkl", Reply::Body(body.clone()));
    let cache_dir = tempfile::tempdir().unwrap();
    type Updates = Vec<(u64, Option<u64>)>;
    let updates: Arc<Mutex<Updates>> = Arc::default();
    let seen = Arc::clone(&updates);
    let cache = HttpCache::new(cache_dir.path())
        .with_progress(move |done, total| seen.lock().unwrap().push((done, total)));
    let resolver = Resolver::with_cache(cache);

    let first = resolver.resolve(&url).unwrap();
    assert!(first.path.starts_with(cache_dir.path()));
    assert!(first.path.ends_with("zoo/R-50/model_final.pkl"));
    assert_eq!(std::fs::read(&first.path).unwrap(), body);
    assert_eq!(server.requests(), 1);

    let second = resolver.resolve(&url).unwrap();
    assert_eq!(second.path, first.path);
    assert_eq!(
        server.requests(),
        1,
        "a cached URL must not be requested again"
    );
    assert_eq!(files_under(cache_dir.path()), vec![first.path.clone()]);

    let updates = updates.lock().unwrap();
    let total = Some(body.len() as u64);
    assert_eq!(updates.first(), Some(&(0, total)));
    assert_eq!(updates.last(), Some(&(body.len() as u64, total)));
    assert!(updates.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn not_found_is_a_clear_error_and_caches_nothing() {
    let server = Server::start();
    let url = format!("{}/missing/model.pth", server.base);
    let cache_dir = tempfile::tempdir().unwrap();
    let resolver = Resolver::with_cache(HttpCache::new(cache_dir.path()));

    let error = resolver.resolve(&url).unwrap_err();
    assert!(
        matches!(error.root(), Error::Download { url: u, status: Some(404), .. } if *u == url),
        "{error:?}"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

#[test]
fn refused_connection_is_a_clear_error_and_caches_nothing() {
    let url = refused_url("/model.pth");
    let cache_dir = tempfile::tempdir().unwrap();
    let resolver = Resolver::with_cache(HttpCache::new(cache_dir.path()));

    let error = resolver.resolve(&url).unwrap_err();
    assert!(
        matches!(error.root(), Error::Download { url: u, status: None, source: Some(e), .. }
            if *u == url && e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

#[test]
fn truncated_download_leaves_no_file_and_is_retried_next_time() {
    let server = Server::start();
    let body = payload(1000);
    let truncated = Reply::Truncated {
        announced: body.len(),
        body: body[..100].to_vec(),
    };
    let url = server.route("/model.pth", truncated);
    let cache_dir = tempfile::tempdir().unwrap();
    let resolver = Resolver::with_cache(HttpCache::new(cache_dir.path()));

    let error = resolver.resolve(&url).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("after 100 of 1000 bytes"), "{message}");
    assert!(
        files_under(cache_dir.path()).is_empty(),
        "no torn or temporary file"
    );

    server.route("/model.pth", Reply::Body(body.clone()));
    let resolved = resolver.resolve(&url).unwrap();
    assert_eq!(std::fs::read(resolved.path).unwrap(), body);
    assert_eq!(server.requests(), 2);
}

#[test]
fn query_options_are_stripped_before_download() {
    let server = Server::start();
    let url = server.route("/model.pth", Reply::Body(b"weights".to_vec()));
    let cache_dir = tempfile::tempdir().unwrap();
    let resolver = Resolver::with_cache(HttpCache::new(cache_dir.path()));

    let resolved = resolver
        .resolve(&format!("{url}?matching_heuristics=True"))
        .unwrap();
    assert!(resolved.options.matching_heuristics);
    assert!(resolved.path.ends_with("model.pth"));
    assert_eq!(std::fs::read(&resolved.path).unwrap(), b"weights");

    let error = resolver.resolve(&format!("{url}?dl=1")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("Unsupported query remaining: dl=1"),
        "{error}"
    );
    assert_eq!(
        server.requests(),
        1,
        "a bad query is rejected before any request"
    );
}

#[test]
fn user_prefix_handler_downloads_through_the_cache() {
    let server = Server::start();
    server.route("/models/a.pth", Reply::Body(b"a".to_vec()));
    let cache_dir = tempfile::tempdir().unwrap();
    let mut resolver = Resolver::with_cache(HttpCache::new(cache_dir.path()));
    resolver.register(PrefixRewrite::new(
        "zoo://",
        format!("{}/models/", server.base),
    ));

    let resolved = resolver.resolve("zoo://a.pth").unwrap();
    assert_eq!(std::fs::read(resolved.path).unwrap(), b"a");
}

#[test]
fn replacing_the_http_handler_is_possible() {
    struct Mirror(PathBuf);
    impl PathHandler for Mirror {
        fn prefixes(&self) -> Vec<String> {
            vec!["https://".into()]
        }
        fn get_local_path(
            &self,
            path: &str,
            _lookup: &ckpt::resolve::Lookup<'_>,
        ) -> ckpt::Result<PathBuf> {
            let name = path.rsplit('/').next().unwrap_or_default();
            Ok(self.0.join(name))
        }
    }
    let mut resolver = Resolver::with_cache(HttpCache::new("/nonexistent").offline(true));
    resolver.register(Mirror(PathBuf::from("/mirror")));
    let resolved = resolver
        .resolve("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
        .unwrap();
    assert_eq!(resolved.path, PathBuf::from("/mirror/R-50.pkl"));
}

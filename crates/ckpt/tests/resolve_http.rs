//! Downloads through the HTTP cache against a local server started by each test.
#![cfg(feature = "http")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use ckpt::resolve::{HttpCache, PathHandler, PrefixRewrite, Resolver};
use ckpt::Error;

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    /// Announces `announced` bytes, sends `body`, then closes the connection.
    Truncated {
        announced: usize,
        body: Vec<u8>,
    },
}

/// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1 that counts requests.
struct Server {
    base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (r, n) = (Arc::clone(&routes), Arc::clone(&requests));
        // The thread ends with the test process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                n.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &r);
            }
        });
        Server {
            base,
            routes,
            requests,
        }
    }

    fn route(&self, path: &str, reply: Reply) -> String {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let reply = routes.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    match reply {
        Some(Reply::Body(body)) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(&body)?;
        }
        Some(Reply::Truncated { announced, body }) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
            )?;
            out.write_all(&body)?;
        }
        None => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            )?;
        }
    }
    out.flush()
}

/// Every file under `dir` (temporary files included).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/model.pth", listener.local_addr().unwrap());
    drop(listener);
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

//! A local HTTP server for the download tests: answers the routes a test gives it, on
//! 127.0.0.1, one connection at a time, and counts the requests it gets.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the server answers for a path.
#[derive(Clone)]
pub enum Reply {
    /// `200 OK` with this body.
    Body(Vec<u8>),
    /// Announces `announced` bytes, sends `body`, then closes the connection.
    Truncated { announced: usize, body: Vec<u8> },
}

/// The server; its thread ends with the test process. Paths without a route get a 404.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    /// Starts a server with no routes.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (r, n) = (Arc::clone(&routes), Arc::clone(&requests));
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

    /// Answers `path` (`/dir/file`) with `reply` from now on; returns its URL.
    pub fn route(&self, path: &str, reply: Reply) -> String {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
        format!("{}{path}", self.base)
    }

    /// How many requests the server got so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An `http://` URL of `path` on a port nothing listens on: connecting is refused.
pub fn refused_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    drop(listener);
    url
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
    let (announced, body) = match reply {
        Some(Reply::Body(body)) => (body.len(), body),
        Some(Reply::Truncated { announced, body }) => (announced, body),
        None => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            )?;
            return out.flush();
        }
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    )?;
    out.write_all(&body)?;
    out.flush()
}

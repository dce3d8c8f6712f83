//! Captures what the library logs, per test thread, through one global subscriber.
//!
//! A scoped `tracing::subscriber::with_default` subscriber misses events now and then when
//! tests run in parallel: a callsite first reached on a thread without a subscriber caches
//! "not interested". One global subscriber that never caches an answer, routing each event to
//! the capture of its own thread, has no such race. It is enabled only on a thread that
//! captures, so that the other tests run as if no subscriber were installed.

use std::cell::RefCell;
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

thread_local! {
    static LINES: RefCell<Option<Vec<(Level, String)>>> = const { RefCell::new(None) };
}

struct ThreadCapture;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for ThreadCapture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asks `enabled` at every event: the answer depends on the thread.
        Interest::sometimes()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        LINES.with(|lines| lines.borrow().is_some())
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        LINES.with(|lines| {
            if let Some(lines) = lines.borrow_mut().as_mut() {
                let mut message = Message(String::new());
                event.record(&mut message);
                lines.push((*event.metadata().level(), message.0));
            }
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` and returns the level and message of every event it logged on this thread.
pub fn captured<T>(f: impl FnOnce() -> T) -> (T, Vec<(Level, String)>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(ThreadCapture)
            .expect("no other global subscriber in the tests");
    });
    LINES.with(|lines| *lines.borrow_mut() = Some(Vec::new()));
    let out = f();
    let lines = LINES.with(|lines| lines.borrow_mut().take().unwrap_or_default());
    (out, lines)
}

/// Runs `f` and returns what it logged on this thread as text, one `LEVEL message` per line.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let (out, lines) = captured(f);
    let text = lines
        .iter()
        .map(|(level, message)| format!("{level} {message}\n"))
        .collect();
    (out, text)
}

/// The messages logged at `level`.
pub fn at(lines: &[(Level, String)], level: Level) -> Vec<&str> {
    lines
        .iter()
        .filter(|(l, _)| *l == level)
        .map(|(_, m)| m.as_str())
        .collect()
}

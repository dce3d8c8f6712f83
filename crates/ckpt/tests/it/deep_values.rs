//! The deepest values the reader accepts by default can be cloned, formatted, walked, written
//! and dropped on a spawned thread's default (2 MB) stack: a hostile file cannot abort the
//! process with a stack overflow after it was read.

use ckpt::format::{load_bytes, write_torch, LoadOptions, SaveOptions};
use ckpt::Value;

/// `{"x": {"x": ... None}}`, `n` dicts deep.
fn nested_dicts(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    for _ in 0..n {
        p.extend_from_slice(b"}X\x01\x00\x00\x00x");
    }
    p.push(b'N');
    p.extend(std::iter::repeat_n(b's', n));
    p.push(b'.');
    p
}

/// `foo.bar(foo.bar(... None))`, `n` calls deep.
fn nested_objects(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    for _ in 0..n {
        p.extend_from_slice(b"cfoo\nbar\n(");
    }
    p.push(b'N');
    for _ in 0..n {
        p.extend_from_slice(b"tR");
    }
    p.push(b'.');
    p
}

fn nested_lists(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    p
}

/// The deepest value of this shape the default limits accept.
fn deepest(make: fn(usize) -> Vec<u8>) -> Value {
    let (mut ok, mut too_deep) = (1, 4096);
    let mut best = load_bytes(make(ok), &LoadOptions::default()).unwrap().value;
    while too_deep - ok > 1 {
        let mid = (ok + too_deep) / 2;
        match load_bytes(make(mid), &LoadOptions::default()) {
            Ok(loaded) => {
                best = loaded.value;
                ok = mid;
            }
            Err(_) => too_deep = mid,
        }
    }
    best
}

fn use_everywhere(value: Value) {
    let copy = value.clone();
    let _ = format!("{copy:?}");
    let _ = copy.short_repr(200);
    let _ = ckpt::walk::leaves(&copy).count();
    let options = SaveOptions::default().with_archive_name("deep");
    let _ = write_torch(&mut std::io::Cursor::new(Vec::new()), &copy, &options);
    drop(copy);
    drop(value);
}

#[test]
fn deepest_readable_dicts_clone_format_and_drop_on_a_thread_stack() {
    std::thread::spawn(|| use_everywhere(deepest(nested_dicts)))
        .join()
        .unwrap();
}

#[test]
fn deepest_readable_objects_clone_format_and_drop_on_a_thread_stack() {
    std::thread::spawn(|| use_everywhere(deepest(nested_objects)))
        .join()
        .unwrap();
}

#[test]
fn deepest_readable_lists_clone_format_and_drop_on_a_thread_stack() {
    std::thread::spawn(|| use_everywhere(deepest(nested_lists)))
        .join()
        .unwrap();
}

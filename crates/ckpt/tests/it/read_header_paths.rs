//! The data offset of each storage comes from its local zip header, read three ways: from
//! memory (eager loads), by a second thread reading ahead (mapped archives of many records)
//! and with `pread` (mapped archives of few large records). All must read the same tensors,
//! and a broken header must be reported whichever way it was read.

use std::path::Path;

use ckpt::format::{load_with, save_torch, LoadOptions, SaveOptions};
use ckpt::{StateDict, Tensor, Value};

fn write(path: &Path, count: usize, numel: usize) {
    let mut sd = StateDict::new();
    for i in 0..count {
        let data: Vec<f32> = (0..numel).map(|j| (i * 7 + j) as f32).collect();
        sd.insert(
            format!("t{i}"),
            Tensor::from_slice(&data, &[numel]).unwrap(),
        );
    }
    save_torch(path, &sd.to_value(), &SaveOptions::default()).unwrap();
}

fn load(path: &Path, mmap: bool) -> ckpt::Result<Value> {
    let options = LoadOptions::default().with_mmap(mmap);
    load_with(path, &options).map(|l| l.value)
}

fn assert_same_tensors(a: &Value, b: &Value, count: usize) {
    let (a, b) = (a.as_dict().unwrap(), b.as_dict().unwrap());
    assert_eq!(a.len(), count);
    for i in 0..count {
        let key = format!("t{i}");
        match (a.get(&key), b.get(&key)) {
            (Some(Value::Tensor(x)), Some(Value::Tensor(y))) => {
                assert_eq!(x.shape(), y.shape(), "{key}");
                assert_eq!(
                    x.try_contiguous_bytes().unwrap(),
                    y.try_contiguous_bytes().unwrap(),
                    "{key}"
                );
            }
            other => panic!("{key}: {other:?}"),
        }
    }
}

/// Breaks the local header signature of the record `data/<key>` of archive `archive`.
fn break_local_header(path: &Path, archive: &str, key: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let name = format!("{archive}/data/{key}");
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .expect("record name");
    // The first occurrence is the local header's name, 30 bytes into the header.
    assert_eq!(&bytes[at - 30..at - 26], b"PK\x03\x04");
    bytes[at - 30] = b'X';
    std::fs::write(path, bytes).unwrap();
}

/// Writes `count` tensors of `numel` values and checks that mapped and eager loads agree.
fn write_and_compare(path: &Path, count: usize, numel: usize) {
    write(path, count, numel);
    let mapped = load(path, true).unwrap();
    let eager = load(path, false).unwrap();
    assert_same_tensors(&mapped, &eager, count);
}

/// Both loads of `path` fail naming storage `key` and its local header.
fn assert_broken_header_reported(path: &Path, key: usize) {
    for mmap in [true, false] {
        let err = load(path, mmap).unwrap_err();
        let report = err.report().to_string();
        assert!(
            report.contains(&format!("data/{key}")) && report.contains("local header"),
            "mmap {mmap}, key {key}: {report}"
        );
        assert!(
            matches!(err.root(), ckpt::Error::Format { .. }),
            "mmap {mmap}, key {key}: {err:?}"
        );
    }
}

#[test]
fn many_mapped_records_read_as_the_eager_load_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    write_and_compare(&dir.path().join("many.pt"), 5000, 3);
}

#[test]
fn a_broken_header_among_many_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.pt");
    // Whichever thread reaches the broken record first (the one reading ahead, or the
    // reader itself), the reader reports it.
    for key in [4999, 2500, 0] {
        write(&path, 5000, 3);
        break_local_header(&path, "many", key);
        assert_broken_header_reported(&path, key);
    }
}

#[test]
fn few_large_mapped_records_read_as_the_eager_load_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.pt");
    write_and_compare(&path, 4, 100_000);
    break_local_header(&path, "large", 2);
    assert_broken_header_reported(&path, 2);
}

//! `ckpt ls`: the checkpoints of a save directory, as fvcore's checkpointer leaves it.

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::support::{ckpt, fixture, success};

/// A copy of the committed fvcore save dir (model_0000004/0000009/final.pth + last_checkpoint).
fn fvcore_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixture("fvcore_run")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn ls_json(dir: &Path) -> serde_json::Value {
    let out = success(&ckpt(&["ls".as_ref(), "--json".as_ref(), dir.as_os_str()]));
    serde_json::from_str(&out).unwrap()
}

fn column(listing: &serde_json::Value, field: &str) -> serde_json::Value {
    listing["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].clone())
        .collect()
}

#[test]
fn temporary_files_are_never_listed_and_a_dangling_tag_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(".ckpt-tmp-41-7-model_0000019.pth"), b"PK").unwrap();
    fs::write(dir.path().join("last_checkpoint"), b"model_0000019.pth").unwrap();
    fs::write(dir.path().join("metrics.json"), b"{}").unwrap();
    let listing = ls_json(dir.path());
    assert_eq!(listing["checkpoints"], json!([]));
    assert_eq!(listing["last_checkpoint"]["target"], "model_0000019.pth");
    assert_eq!(listing["last_checkpoint"]["exists"], false);

    let table = success(&ckpt(&["ls".as_ref(), dir.path().as_os_str()]));
    assert!(table.contains("no checkpoints"), "{table}");
    assert!(
        table.contains("last_checkpoint -> model_0000019.pth (BROKEN: no such file"),
        "{table}"
    );
}

#[test]
fn empty_checkpoint_file_is_listed_as_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("model_0000004.pth"), b"").unwrap();
    let listing = ls_json(dir.path());
    assert_eq!(column(&listing, "file"), json!(["model_0000004.pth"]));
    assert_eq!(column(&listing, "intact"), json!([false]));
    assert_eq!(column(&listing, "error"), json!(["empty file"]));
    assert_eq!(listing["last_checkpoint"], json!(null));
}

#[test]
fn python_checkpointer_directory_is_listed_by_iteration_with_the_tag() {
    let dir = fvcore_dir();
    let listing = ls_json(dir.path());
    assert_eq!(
        column(&listing, "file"),
        json!(["model_0000004.pth", "model_0000009.pth", "model_final.pth"])
    );
    assert_eq!(column(&listing, "iteration"), json!([4, 9, 9]));
    assert_eq!(column(&listing, "intact"), json!([true, true, true]));
    assert_eq!(column(&listing, "last"), json!([false, false, true]));
    let files = column(&listing, "file");
    let sizes = column(&listing, "size");
    for (name, size) in files
        .as_array()
        .unwrap()
        .iter()
        .zip(sizes.as_array().unwrap())
    {
        let real = fs::metadata(dir.path().join(name.as_str().unwrap()))
            .unwrap()
            .len();
        assert_eq!(size, &json!(real), "{name}");
    }
    for modified in column(&listing, "modified").as_array().unwrap() {
        let m = modified.as_str().unwrap();
        assert!(
            m.len() == 20 && m.ends_with('Z') && m.as_bytes()[10] == b'T',
            "{m}"
        );
    }
    assert_eq!(
        listing["last_checkpoint"],
        json!({"target": "model_final.pth", "exists": true, "error": null})
    );

    let table = success(&ckpt(&["ls".as_ref(), dir.path().as_os_str()]));
    let final_row = table
        .lines()
        .find(|l| l.starts_with("model_final.pth"))
        .unwrap();
    assert!(
        final_row.contains('*') && final_row.ends_with("ok"),
        "{table}"
    );
    assert!(
        table.contains("last_checkpoint -> model_final.pth\n"),
        "{table}"
    );
}

#[test]
fn truncated_checkpoint_is_reported_broken_with_a_reason() {
    let dir = fvcore_dir();
    let path = dir.path().join("model_0000009.pth");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let listing = ls_json(dir.path());
    // Without a readable iteration the broken file sorts last.
    assert_eq!(
        column(&listing, "file"),
        json!(["model_0000004.pth", "model_final.pth", "model_0000009.pth"])
    );
    assert_eq!(column(&listing, "intact"), json!([true, true, false]));
    let error = listing["checkpoints"][2]["error"].as_str().unwrap();
    assert!(!error.is_empty() && !error.contains('\n'), "{error}");

    let table = success(&ckpt(&["ls".as_ref(), dir.path().as_os_str()]));
    assert!(table.contains("BROKEN: "), "{table}");
}

#[test]
fn flipped_tensor_byte_fails_the_crc_check_with_verify() {
    let dir = fvcore_dir();
    let path = dir.path().join("model_0000004.pth");
    let mut bytes = fs::read(&path).unwrap();
    // fvcore saves through a file object, so torch names the archive folder `archive`.
    let start = first_record_data(&bytes, b"archive/data/0");
    bytes[start] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    // Without --verify only the structure is read: the flipped byte goes unseen.
    let quick = ls_json(dir.path());
    assert_eq!(column(&quick, "intact"), json!([true, true, true]));
    assert_eq!(column(&quick, "verified"), json!([false, false, false]));

    let out = success(&ckpt(&[
        "ls".as_ref(),
        "--json".as_ref(),
        "--verify".as_ref(),
        dir.path().as_os_str(),
    ]));
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Its iteration still reads, so it keeps its place.
    let broken = &listing["checkpoints"][0];
    assert_eq!(broken["file"], "model_0000004.pth");
    assert_eq!(broken["intact"], false);
    assert_eq!(column(&listing, "intact"), json!([false, true, true]));
    assert_eq!(column(&listing, "verified"), json!([true, true, true]));
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("archive/data/0") && error.contains("crc32"),
        "{error}"
    );

    let table = success(&ckpt(&[
        "ls".as_ref(),
        "--verify".as_ref(),
        dir.path().as_os_str(),
    ]));
    let row = table
        .lines()
        .find(|l| l.starts_with("model_0000004.pth"))
        .unwrap();
    assert!(
        row.contains("CORRUPT: zip record 'archive/data/0'"),
        "{table}"
    );
    let intact = table
        .lines()
        .find(|l| l.starts_with("model_final.pth"))
        .unwrap();
    assert!(intact.ends_with("ok (crc32 checked)"), "{table}");
}

/// Offset of the data of the zip record called `name` (from its local header).
fn first_record_data(bytes: &[u8], name: &[u8]) -> usize {
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("record name in the archive");
    let header = at - 30;
    assert_eq!(&bytes[header..header + 4], b"PK\x03\x04");
    let name_len = u16::from_le_bytes([bytes[header + 26], bytes[header + 27]]) as usize;
    let extra_len = u16::from_le_bytes([bytes[header + 28], bytes[header + 29]]) as usize;
    header + 30 + name_len + extra_len
}

#[test]
fn tag_naming_a_deleted_checkpoint_is_flagged() {
    let dir = fvcore_dir();
    fs::remove_file(dir.path().join("model_final.pth")).unwrap();
    let listing = ls_json(dir.path());
    assert_eq!(column(&listing, "last"), json!([false, false]));
    assert_eq!(listing["last_checkpoint"]["exists"], false);
    assert_eq!(
        listing["last_checkpoint"]["error"],
        "no such file in the directory"
    );
}

#[test]
fn an_oversized_tag_is_flagged_without_being_printed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("last_checkpoint"), vec![b'x'; 2 << 20]).unwrap();
    let listing = ls_json(dir.path());
    assert_eq!(listing["last_checkpoint"]["exists"], false);
    let error = listing["last_checkpoint"]["error"].as_str().unwrap();
    assert!(error.contains("larger than"), "{error}");
    let table = success(&ckpt(&["ls".as_ref(), dir.path().as_os_str()]));
    assert!(table.len() < 1000, "{} bytes of listing", table.len());
}

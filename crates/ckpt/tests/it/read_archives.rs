//! Container details of torch files: where records live in the zip, byte order, storage
//! sharing, and legacy streams with storage views.

use ckpt::format::{load_bytes, Format, LoadOptions};
use ckpt::Value;

use crate::support::archive::{tensor_dict_pickle, text, zip, Entry};

fn load(bytes: Vec<u8>) -> ckpt::Result<(Format, Value)> {
    load_bytes(bytes, &LoadOptions::default()).map(|l| (l.format, l.value))
}

fn floats(values: &[f32], big_endian: bool) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        })
        .collect()
}

fn entry<'a>(name: &'a str, key: &'a str, offset: i64, shape: &'a [i64]) -> Entry<'a> {
    Entry {
        name,
        key,
        numel: 6,
        offset,
        shape,
        stride: if shape.len() == 2 { &[3, 1] } else { &[1] },
    }
}

fn tensor(value: &Value, name: &str) -> Vec<f32> {
    value
        .get(name)
        .unwrap()
        .as_tensor()
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn records_at_the_zip_root_or_under_any_folder_are_found() {
    let pickle = tensor_dict_pickle(&[entry("w", "0", 0, &[2, 3])]);
    let data = floats(&[0., 1., 2., 3., 4., 5.], false);
    let root = zip(
        &[
            ("data.pkl".into(), pickle.clone()),
            ("data/0".into(), data.clone()),
            ("version".into(), b"3\n".to_vec()),
        ],
        0,
    );
    let (format, value) = load(root).unwrap();
    assert_eq!(format, Format::TorchZip);
    assert_eq!(tensor(&value, "w"), vec![0., 1., 2., 3., 4., 5.]);
    let elsewhere = zip(
        &[
            ("notes/readme.txt".into(), b"hi".to_vec()),
            ("my_ckpt-v2/data.pkl".into(), pickle),
            ("my_ckpt-v2/data/0".into(), data),
            ("my_ckpt-v2/.data/version".into(), b"3\n".to_vec()),
        ],
        0,
    );
    assert_eq!(
        tensor(&load(elsewhere).unwrap().1, "w"),
        vec![0., 1., 2., 3., 4., 5.]
    );
}

#[test]
fn big_endian_archives_are_byteswapped_and_bad_byteorders_rejected() {
    let pickle = tensor_dict_pickle(&[entry("w", "0", 0, &[6])]);
    let archive = |order: &[u8], big: bool| {
        zip(
            &[
                ("a/data.pkl".into(), pickle.clone()),
                ("a/byteorder".into(), order.to_vec()),
                ("a/data/0".into(), floats(&[0.5, -1., 2., 3., 4., 1e9], big)),
                ("a/version".into(), b"3\n".to_vec()),
            ],
            0,
        )
    };
    let (_, value) = load(archive(b"big", true)).unwrap();
    assert_eq!(tensor(&value, "w"), vec![0.5, -1., 2., 3., 4., 1e9]);
    let (_, value) = load(archive(b"little", false)).unwrap();
    assert_eq!(tensor(&value, "w"), vec![0.5, -1., 2., 3., 4., 1e9]);
    let err = load(archive(b"little\n", false)).unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::Format { message, .. } if message.contains("byteorder")),
        "{err:?}"
    );
}

#[test]
fn entries_with_one_storage_key_share_one_storage() {
    let pickle = tensor_dict_pickle(&[
        entry("a", "0", 0, &[2, 3]),
        entry("b", "0", 3, &[3]),
        entry("c", "1", 0, &[6]),
    ]);
    let data = floats(&[0., 1., 2., 3., 4., 5.], false);
    let archive = zip(
        &[
            ("a/data.pkl".into(), pickle),
            ("a/data/0".into(), data.clone()),
            ("a/data/1".into(), data),
            ("a/version".into(), b"3\n".to_vec()),
        ],
        0,
    );
    let (_, value) = load(archive).unwrap();
    let get = |n: &str| value.get(n).unwrap().as_tensor().unwrap().clone();
    assert!(get("a").storage().same_as(get("b").storage()));
    assert!(!get("a").storage().same_as(get("c").storage()));
    assert_eq!(get("b").to_vec::<f32>().unwrap(), vec![3., 4., 5.]);
}

const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";

/// A legacy stream whose dict maps `whole` to a root storage and `view` to a storage view
/// `(view key, offset 2, size 3)` of it.
fn legacy_stream(big_endian: bool) -> Vec<u8> {
    let mut object = b"\x80\x02}(".to_vec();
    for (name, view) in [("whole", false), ("view", true)] {
        text(&mut object, name);
        object.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut object, "storage");
        object.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut object, "140230");
        text(&mut object, "cpu");
        object.extend_from_slice(b"K\x06");
        if view {
            object.push(b'(');
            text(&mut object, "140238");
            object.extend_from_slice(b"K\x02K\x03t");
        } else {
            object.push(b'N');
        }
        object.extend_from_slice(b"tQK\x00K\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
    }
    object.extend_from_slice(b"u.");
    let mut sys_info = b"\x80\x02}(".to_vec();
    text(&mut sys_info, "little_endian");
    sys_info.push(if big_endian { 0x89 } else { 0x88 });
    sys_info.extend_from_slice(b"u.");
    let mut keys = b"\x80\x02](".to_vec();
    text(&mut keys, "140230");
    keys.extend_from_slice(b"e.");
    let mut out = [MAGIC, b"\x80\x02M\xe9\x03.", &sys_info, &object, &keys].concat();
    out.extend_from_slice(&6u64.to_le_bytes());
    out.extend_from_slice(&floats(&[0., 1., 2., 3., 4., 5.], big_endian));
    out
}

#[test]
fn legacy_storage_views_slice_their_root_storage() {
    for big_endian in [false, true] {
        let (format, value) = load(legacy_stream(big_endian)).unwrap();
        assert_eq!(format, Format::TorchLegacy);
        assert_eq!(tensor(&value, "whole"), vec![0., 1., 2.]);
        assert_eq!(tensor(&value, "view"), vec![2., 3., 4.]);
    }
}

#[test]
fn legacy_streams_with_a_wrong_raw_section_are_errors() {
    let good = legacy_stream(false);
    let mut short = good.clone();
    short.truncate(good.len() - 1);
    let err = load(short).unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::Truncated { .. }),
        "{err:?}"
    );
    let count_at = good.len() - 24 - 8;
    let mut wrong_count = good.clone();
    wrong_count[count_at] = 7;
    let err = load(wrong_count).unwrap_err();
    assert!(err.to_string().contains("140230"), "{err}");
}

#[test]
fn tar_checkpoints_are_reported_as_unsupported() {
    let mut tar = vec![0u8; 1024];
    tar[..8].copy_from_slice(b"storages");
    tar[257..262].copy_from_slice(b"ustar");
    let err = load(tar).unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::Unsupported { .. }),
        "{err}"
    );
}

#[test]
fn a_plain_pickle_of_another_big_int_is_not_a_legacy_stream() {
    let (format, value) =
        load(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x18.".to_vec()).unwrap();
    assert_eq!(format, Format::Pickle);
    assert!(matches!(value, Value::BigInt(_)));
    let err = load(MAGIC.to_vec()).unwrap_err();
    assert!(err.to_string().contains("pickle"), "{err}");
}

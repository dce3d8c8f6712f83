//! Hostile and broken files: the reader returns errors (never panics), never runs anything,
//! never allocates beyond what the file holds, and stays linear in the number of tensors.

use ckpt::format::{load_bytes, LoadOptions};
use ckpt::pickle::{read_pickle, Limits, PersistentLoad, PickleOptions, TypedStorage};
use ckpt::Error;
use ckpt::{ObjectBuild, Value};

use crate::support::archive::{tensor_dict_pickle, text, torch_zip, zip, Entry};
use crate::support::fixture_bytes;

fn load(bytes: &[u8]) -> ckpt::Result<Value> {
    load_bytes(bytes.to_vec(), &LoadOptions::default()).map(|l| l.value)
}

struct NoStorages;

impl PersistentLoad for NoStorages {
    fn persistent_load(&mut self, _pid: &Value) -> ckpt::Result<TypedStorage> {
        Err(Error::format("no storages here"))
    }
}

fn pickle_with(bytes: &[u8], limits: Limits) -> ckpt::Result<Value> {
    let options = PickleOptions::default().with_limits(limits);
    read_pickle(bytes, 0, &options, &mut NoStorages).map(|(v, _)| v)
}

fn pickle(bytes: &[u8]) -> ckpt::Result<Value> {
    pickle_with(bytes, Limits::default())
}

fn one_tensor(numel: i64, shape: &[i64], stride: &[i64], record_bytes: usize) -> Vec<u8> {
    let p = tensor_dict_pickle(&[Entry {
        name: "w",
        key: "0",
        numel,
        offset: 0,
        shape,
        stride,
    }]);
    torch_zip(p, vec![("0".into(), vec![0; record_bytes])])
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn hand_built_archive_reads_as_a_baseline() {
    let value = load(&one_tensor(6, &[2, 3], &[3, 1], 24)).unwrap();
    assert_eq!(
        value.get("w").unwrap().as_tensor().unwrap().shape(),
        &[2, 3]
    );
}

#[test]
fn os_system_and_eval_globals_stay_opaque_objects_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let command = format!("touch {}", marker.display());
    let mut p = b"\x80\x02}(".to_vec();
    text(&mut p, "system");
    p.extend_from_slice(b"cos\nsystem\n(");
    text(&mut p, &command);
    p.extend_from_slice(b"tR");
    text(&mut p, "eval");
    p.extend_from_slice(b"c__builtin__\neval\n(");
    text(&mut p, &format!("__import__('os').system('{command}')"));
    p.extend_from_slice(b"tR");
    text(&mut p, "stack_global");
    text(&mut p, "subprocess");
    text(&mut p, "call");
    p.extend_from_slice(b"\x93(");
    text(&mut p, &command);
    p.extend_from_slice(b"\x85tR");
    text(&mut p, "built");
    p.extend_from_slice(b"cposix\nsystem\n)\x81}b");
    p.extend_from_slice(b"u.");
    for bytes in [p.clone(), torch_zip(p, Vec::new())] {
        let value = load(&bytes).unwrap();
        match value.get("system") {
            Some(Value::Object(o)) => {
                assert_eq!(o.qualified_name(), "os.system");
                assert!(matches!(&o.build, ObjectBuild::Call(args) if args.len() == 1));
            }
            other => panic!("expected an opaque object, found {other:?}"),
        }
        match value.get("eval") {
            Some(Value::Object(o)) => assert_eq!(o.qualified_name(), "builtins.eval"),
            other => panic!("expected an opaque object, found {other:?}"),
        }
        assert!(matches!(value.get("stack_global"), Some(Value::Object(_))));
        assert!(matches!(value.get("built"), Some(Value::Object(o)) if o.state.is_some()));
    }
    assert!(!marker.exists(), "a global was executed");
}

#[test]
fn every_truncation_of_fixtures_is_an_error_not_a_panic() {
    for name in [
        "module_sd.pt",
        "legacy.pt",
        "legacy_p1.pt",
        "detectron1_py2.pkl",
        "d2_model_zoo.pkl",
        "numpy_p5.pkl",
        "misc.pt",
    ] {
        let bytes = fixture_bytes(name);
        assert!(load(&bytes).is_ok(), "{name} loads whole");
        for len in 0..bytes.len() {
            assert!(
                load(&bytes[..len]).is_err(),
                "{name} truncated to {len} bytes loaded"
            );
        }
    }
}

#[test]
fn corrupted_bytes_anywhere_never_panic() {
    for name in [
        "module_sd.pt",
        "legacy.pt",
        "detectron1_py2.pkl",
        "proto4.pt",
    ] {
        let bytes = fixture_bytes(name);
        for at in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[at] ^= 0x81;
            let _ = load(&broken);
        }
    }
}

#[test]
fn record_shorter_than_the_declared_storage_is_an_error_naming_the_key() {
    let err = load(&one_tensor(6, &[2, 3], &[3, 1], 20)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("data/0"), "{message}");
}

#[test]
fn tensor_reaching_past_its_storage_is_an_error() {
    let err = load(&one_tensor(2, &[2, 3], &[3, 1], 8)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    assert!(load(&one_tensor(6, &[2, 3], &[1, 2], 24)).is_ok());
    let err = load(&one_tensor(6, &[2, 3], &[4, 1], 24)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
}

#[test]
fn absurd_or_negative_shapes_fail_without_allocating() {
    let huge = 1i64 << 62;
    let err = load(&one_tensor(6, &[huge, huge], &[1, 1], 24)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    let err = load(&one_tensor(6, &[huge], &[huge], 24)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    let err = load(&one_tensor(6, &[-1, 3], &[3, 1], 24)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    let err = load(&one_tensor(6, &[2, 3], &[-3, 1], 24)).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    let err = load(&one_tensor(huge, &[2, 3], &[3, 1], 24)).unwrap_err();
    assert!(
        matches!(err.root(), Error::Key { key, .. } if key == "data/0"),
        "{err:?}"
    );
    let err = load(&one_tensor(-6, &[2, 3], &[3, 1], 24)).unwrap_err();
    assert!(
        matches!(err.root(), Error::Key { key, .. } if key == "data/0"),
        "{err:?}"
    );
}

#[test]
fn huge_declared_lengths_are_errors_before_any_allocation() {
    let cases: Vec<Vec<u8>> = vec![
        [
            b"\x80\x02X".as_slice(),
            &0xFFFF_FFF0u32.to_le_bytes(),
            b"abc.",
        ]
        .concat(),
        [b"\x80\x04\x8e".as_slice(), &u64::MAX.to_le_bytes(), b"abc."].concat(),
        [
            b"\x80\x04\x8d".as_slice(),
            &(1u64 << 40).to_le_bytes(),
            b"abc.",
        ]
        .concat(),
        [
            b"\x80\x05\x96".as_slice(),
            &(1u64 << 40).to_le_bytes(),
            b"abc.",
        ]
        .concat(),
        [b"\x80\x02T".as_slice(), &(-5i32).to_le_bytes(), b"abc."].concat(),
        [b"\x80\x02T".as_slice(), &i32::MAX.to_le_bytes(), b"abc."].concat(),
        [b"\x80\x02\x8b".as_slice(), &i32::MAX.to_le_bytes(), b"abc."].concat(),
        [b"\x80\x02\x8b".as_slice(), &(-1i32).to_le_bytes(), b"abc."].concat(),
        [b"\x80\x04\x95".as_slice(), &u64::MAX.to_le_bytes(), b"N."].concat(),
        b"\x80\x02U\xffabc.".to_vec(),
        b"\x80\x02\x8a\xff\x01.".to_vec(),
    ];
    for case in cases {
        let err = pickle(&case).unwrap_err();
        assert!(matches!(err, Error::Pickle { .. }), "{err}");
    }
}

#[test]
fn hundred_thousand_nested_lists_are_an_error_without_stack_overflow() {
    let n = 100_000;
    let mut appended = b"\x80\x02".to_vec();
    appended.extend(std::iter::repeat_n(b']', n));
    appended.extend(std::iter::repeat_n(b'a', n - 1));
    appended.push(b'.');
    let mut marked = b"\x80\x02".to_vec();
    marked.extend(std::iter::repeat_n(b'(', n));
    marked.extend(std::iter::repeat_n(b'l', n));
    marked.push(b'.');
    let mut tuples = b"\x80\x02N".to_vec();
    tuples.extend(std::iter::repeat_n(0x85, n));
    tuples.push(b'.');
    let mut marks_only = b"\x80\x02".to_vec();
    marks_only.extend(std::iter::repeat_n(b'(', n));
    marks_only.push(b'.');
    for case in [appended, marked, tuples, marks_only] {
        let err = pickle(&case).unwrap_err();
        assert!(matches!(err, Error::Pickle { .. }), "{err}");
    }
}

#[test]
fn nesting_within_the_limit_reads() {
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 150));
    p.extend(std::iter::repeat_n(b'a', 149));
    p.push(b'.');
    assert!(pickle(&p).is_ok());
}

#[test]
fn memo_bombs_hit_the_value_limit() {
    // Each level is a list of 1000 references to the previous level: 1000^4 values.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for level in 0u8..4 {
        p.push(b'(');
        for _ in 0..1000 {
            p.extend_from_slice(&[b'h', level]);
        }
        p.extend_from_slice(&[b'l', b'q', level + 1]);
    }
    p.push(b'.');
    // A lower limit than the default keeps the test quick; the default stops it too.
    let limits = Limits::default().with_max_values(1_000_000);
    let err = pickle_with(&p, limits).unwrap_err();
    assert!(err.to_string().contains("values"), "{err}");

    // The same with strings: a 1 MB string referenced a million times.
    let mut s = b"\x80\x04\x8e".to_vec();
    s.extend_from_slice(&(1u64 << 20).to_le_bytes());
    s.extend(std::iter::repeat_n(b'x', 1 << 20));
    s.extend_from_slice(b"q\x00(");
    for _ in 0..1_000_000 {
        s.extend_from_slice(b"h\x00");
    }
    s.extend_from_slice(b"l.");
    let err = pickle(&s).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");

    let small = Limits::default().with_max_depth(100).with_max_values(50);
    let mut list = b"\x80\x02(".to_vec();
    list.extend(std::iter::repeat_n(b'N', 100));
    list.extend_from_slice(b"l.");
    let err = pickle_with(&list, small).unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
}

#[test]
fn self_referencing_containers_are_an_error() {
    let err = pickle(b"\x80\x02]q\x00h\x00a.").unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
    let err = pickle(b"\x80\x02}q\x00K\x01h\x00s.").unwrap_err();
    assert!(matches!(err.root(), Error::Pickle { .. }), "{err:?}");
}

#[test]
fn a_reference_cycle_through_an_object_is_cut_where_it_closes() {
    // `m = M(); m.hooks = [getattr(m, "hook")]`, as a module with a bound-method hook pickles.
    let bytes = b"\x80\x02c__main__\nM\n)\x81q\x00}X\x05\x00\x00\x00hooks]cbuiltins\ngetattr\nh\x00X\x04\x00\x00\x00hook\x86Rasb.";
    let value = pickle(bytes).unwrap();
    let Value::Object(m) = &value else {
        panic!("{value:?}")
    };
    assert_eq!(m.qualified_name(), "__main__.M");
    let hook = match m.attribute("hooks") {
        Some(Value::List(items)) => &items[0],
        other => panic!("{other:?}"),
    };
    let Value::Object(getattr) = hook else {
        panic!("{hook:?}")
    };
    assert!(matches!(&getattr.args()[0], Value::Object(o) if o.is_recursive_reference()));
    assert_eq!(getattr.args()[1].as_str(), Some("hook"));
    assert_eq!(ckpt::walk::leaves(&value).count(), 2);
}

#[test]
fn unknown_opcodes_and_extension_codes_are_errors_naming_the_offset() {
    let err = pickle(b"\x80\x02N\xff.").unwrap_err();
    match err {
        Error::Pickle { offset, message } => {
            assert_eq!(offset, 3);
            assert!(message.contains("0xff"), "{message}");
        }
        other => panic!("{other}"),
    }
    let err = pickle(b"\x80\x02\x82\x01.").unwrap_err();
    assert!(
        matches!(err.root(), Error::Pickle { offset: 2, .. }),
        "{err:?}"
    );
    let err = pickle(b"\x80\x05\x97.").unwrap_err();
    assert!(
        matches!(err.root(), Error::Pickle { offset: 2, .. }),
        "{err:?}"
    );
    let err = pickle(b"\x80\x07N.").unwrap_err();
    assert!(
        matches!(err.root(), Error::Pickle { offset: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn plain_pickle_with_a_persistent_id_is_an_error() {
    let err = load(b"\x80\x02X\x01\x00\x00\x000Q.").unwrap_err();
    assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
}

#[test]
fn torchscript_archives_missing_versions_and_compressed_records_are_rejected() {
    let p = tensor_dict_pickle(&[]);
    let script = zip(
        &[
            ("a/data.pkl".into(), p.clone()),
            ("a/constants.pkl".into(), b"\x80\x02).".to_vec()),
            ("a/version".into(), b"3\n".to_vec()),
        ],
        0,
    );
    let err = load(&script).unwrap_err();
    assert!(err.to_string().contains("TorchScript"), "{err}");
    let no_version = zip(&[("a/data.pkl".into(), p.clone())], 0);
    let err = load(&no_version).unwrap_err();
    assert!(
        matches!(err.root(), Error::Format { message, .. } if message.contains("version")),
        "{err:?}"
    );
    let too_new = zip(
        &[
            ("a/data.pkl".into(), p.clone()),
            ("a/version".into(), b"11\n".to_vec()),
        ],
        0,
    );
    let err = load(&too_new).unwrap_err();
    assert!(
        matches!(err.root(), Error::Unsupported { message } if message.contains("version 11")),
        "{err:?}"
    );
    let deflated = zip(
        &[
            ("a/data.pkl".into(), p.clone()),
            ("a/version".into(), b"3\n".to_vec()),
        ],
        8,
    );
    let err = load(&deflated).unwrap_err();
    assert!(err.to_string().contains("compressed"), "{err}");
}

#[test]
fn crc_mismatch_is_reported_only_when_asked() {
    let mut bytes = one_tensor(6, &[2, 3], &[3, 1], 24);
    // The record data/0 holds zeros; change one of its bytes after the crc was computed.
    let at = bytes
        .windows(8)
        .position(|w| w == b"a/data/0")
        .map(|p| p + 8)
        .unwrap();
    bytes[at] = 1;
    assert!(load(&bytes).is_ok());
    let verify = LoadOptions::default().with_verify_crc32(true);
    let err = load_bytes(bytes, &verify).unwrap_err();
    assert!(
        matches!(err.root(), Error::Checksum { record, expected, found }
            if record.ends_with("data/0") && expected != found),
        "{err:?}"
    );
}

#[test]
fn fifty_thousand_small_tensors_load_with_one_storage_each() {
    let n = 50_000;
    let names: Vec<String> = (0..n).map(|i| format!("layer{i}.weight")).collect();
    let keys: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry {
            name: &names[i],
            key: &keys[i],
            numel: 2,
            offset: 0,
            shape: &[2],
            stride: &[1],
        })
        .collect();
    let storages = (0..n)
        .map(|i| (keys[i].clone(), (i as f32).to_le_bytes().repeat(2)))
        .collect();
    let bytes = torch_zip(tensor_dict_pickle(&entries), storages);
    let value = load(&bytes).unwrap();
    let dict = value.as_dict().unwrap();
    assert_eq!(dict.len(), n);
    let last = dict.get("layer49999.weight").unwrap().as_tensor().unwrap();
    assert_eq!(last.to_vec::<f32>().unwrap(), vec![49999.0, 49999.0]);
}

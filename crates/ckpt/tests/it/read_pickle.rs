//! Pickle semantics on hand-written opcode streams: the memo shares objects by reference,
//! known globals are interpreted, storages come from the persistent loader.

use ckpt::pickle::{read_pickle, PersistentLoad, PickleOptions, Py2Strings, TypedStorage};
use ckpt::Error;
use ckpt::{DType, DictKind, Key, ObjectBuild, Storage, Value};

/// Serves one float32 storage of 6 elements (0..6) for every persistent id, and records
/// the ids it was asked for.
#[derive(Default)]
struct SixFloats {
    pids: Vec<Value>,
}

impl PersistentLoad for SixFloats {
    fn persistent_load(&mut self, pid: &Value) -> ckpt::Result<TypedStorage> {
        self.pids.push(pid.clone());
        let bytes: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let dtype = match pid {
            Value::Tuple(f) if matches!(f.get(1), Some(Value::Object(o)) if o.name == "UntypedStorage") => {
                DType::UInt8
            }
            _ => DType::Float32,
        };
        Ok(TypedStorage {
            storage: Storage::from_vec(bytes),
            dtype,
        })
    }
}

fn read_with(bytes: &[u8], py2: Py2Strings) -> ckpt::Result<Value> {
    let options = PickleOptions::default().with_py2_strings(py2);
    let (value, used) = read_pickle(bytes, 0, &options, &mut SixFloats::default())?;
    assert_eq!(used, bytes.len(), "the pickle ends at STOP");
    Ok(value)
}

fn read(bytes: &[u8]) -> Value {
    read_with(bytes, Py2Strings::Latin1).unwrap_or_else(|e| panic!("{e}"))
}

/// `BINUNICODE` of `s`.
fn u(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn tuple_items(v: &Value) -> &[Value] {
    match v {
        Value::Tuple(items) => items,
        other => panic!("expected a tuple, found {other:?}"),
    }
}

#[test]
fn memo_shares_containers_filled_after_they_were_referenced() {
    // d = {}; l = [d]; d['k'] = 1; (d, l)
    let p = cat(&[b"\x80\x02}q\x00]q\x01h\x00a0", &u("k"), b"K\x01sh\x01\x86."]);
    let v = read(&p);
    let items = tuple_items(&v);
    match &items[1] {
        Value::List(l) => assert_eq!(l[0].get("k").and_then(Value::as_int), Some(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn memo_indices_out_of_order_huge_or_overwritten_resolve_to_the_last_put() {
    // K1 LONG_BINPUT 4000000000; K2 BINPUT 0; K3 BINPUT 0 (overwrites); MEMOIZE (index 2,
    // the number of entries) on K4; then get 4000000000, 0, 2.
    let p = cat(&[
        b"\x80\x04K\x01r\x00\x28\x6b\xee0",
        b"K\x02q\x000K\x03q\x000K\x04\x940",
        b"j\x00\x28\x6b\xeeh\x00h\x02\x87.",
    ]);
    let items = tuple_items(&read(&p)).to_vec();
    let ints: Vec<Option<i64>> = items.iter().map(Value::as_int).collect();
    assert_eq!(ints, vec![Some(1), Some(3), Some(4)]);
}

#[test]
fn build_on_a_memoized_ordered_dict_sets_attributes_seen_by_every_reference() {
    let p = cat(&[
        b"\x80\x02ccollections\nOrderedDict\n)Rq\x00(h\x00tq\x010}",
        &u("_metadata"),
        b"K\x07sbh\x01\x86.",
    ]);
    let v = read(&p);
    let items = tuple_items(&v);
    let inner = &tuple_items(&items[1])[0];
    let dict = inner.as_dict().unwrap();
    assert_eq!(dict.kind(), DictKind::OrderedDict);
    assert_eq!(dict.attribute("_metadata").and_then(Value::as_int), Some(7));
}

#[test]
fn setitems_and_dict_keep_insertion_order_and_non_string_keys() {
    let p = cat(&[b"\x80\x02}(", &u("b"), b"K\x01K\x05K\x02NK\x03u."]);
    let v = read(&p);
    let keys: Vec<Key> = v.as_dict().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec![Key::Str("b".into()), Key::Int(5), Key::None]);
    let p = b"(I1\nS'x'\nI2\nS'y'\nd.";
    let keys: Vec<Key> = read(p).as_dict().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec![Key::Int(1), Key::Int(2)]);
}

#[test]
fn integers_use_the_width_and_sign_of_each_opcode() {
    let p = b"\x80\x02(\x8a\x01\xffM\xff\xffJ\xff\xff\xff\xff\x8a\x00I01\nI00\nL123L\nI-4\n\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01t.";
    let v = read(p);
    let items = tuple_items(&v);
    assert_eq!(items[0].as_int(), Some(-1));
    assert_eq!(items[1].as_int(), Some(65535));
    assert_eq!(items[2].as_int(), Some(-1));
    assert_eq!(items[3].as_int(), Some(0));
    assert_eq!(items[4].as_bool(), Some(true));
    assert_eq!(items[5].as_bool(), Some(false));
    assert_eq!(items[6].as_int(), Some(123));
    assert_eq!(items[7].as_int(), Some(-4));
    match &items[8] {
        Value::BigInt(b) => assert_eq!(b.to_string(), "18446744073709551616"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn floats_are_big_endian_and_text_floats_parse() {
    let mut p = b"\x80\x02(G".to_vec();
    p.extend_from_slice(&1.5f64.to_be_bytes());
    p.extend_from_slice(b"F-0.25\nFnan\nt.");
    let v = read(&p);
    let items = tuple_items(&v);
    assert_eq!(items[0].as_float(), Some(1.5));
    assert_eq!(items[1].as_float(), Some(-0.25));
    assert!(items[2].as_float().unwrap().is_nan());
}

#[test]
fn python2_strings_decode_per_option() {
    let p = b"\x80\x02U\x02\xc3\xa9.";
    assert_eq!(
        read_with(p, Py2Strings::Latin1).unwrap().as_str(),
        Some("Ã©")
    );
    assert_eq!(
        read_with(p, Py2Strings::Utf8OrLatin1).unwrap().as_str(),
        Some("é")
    );
    let p = b"\x80\x02U\x01\xff.";
    assert_eq!(
        read_with(p, Py2Strings::Utf8OrLatin1).unwrap().as_str(),
        Some("ÿ")
    );
}

#[test]
fn container_globals_build_dicts_sets_and_bytes() {
    let p = cat(&[
        b"\x80\x02(ccollections\nOrderedDict\n]((",
        &u("a"),
        b"K\x01t(",
        &u("b"),
        b"K\x02te\x85R",
        b"ccollections\nCounter\n}",
        &u("x"),
        b"K\x03s\x85R",
        b"c__builtin__\nset\n](K\x01K\x02e\x85R",
        b"c__builtin__\nfrozenset\n](K\x03e\x85R",
        b"\x8f(K\x04K\x05\x90",
        b"(K\x06\x91",
        b"c_codecs\nencode\n",
        &u("\u{ff}a"),
        &u("latin1"),
        b"\x86R",
        b"c__builtin__\nbytearray\nC\x02hi\x85R",
        b"c__builtin__\ncomplex\nG",
        &2.0f64.to_be_bytes(),
        b"G",
        &(-1.0f64).to_be_bytes(),
        b"\x86R",
        b"c__builtin__\nbytes\n)R",
        b"t.",
    ]);
    let v = read(&p);
    let items = tuple_items(&v);
    let od = items[0].as_dict().unwrap();
    assert_eq!(od.kind(), DictKind::OrderedDict);
    assert_eq!(od.get("b").and_then(Value::as_int), Some(2));
    assert_eq!(items[1].as_dict().unwrap().kind(), DictKind::Counter);
    assert!(matches!(&items[2], Value::Set(s) if s.len() == 2));
    assert!(matches!(&items[3], Value::FrozenSet(s) if s.len() == 1));
    assert!(matches!(&items[4], Value::Set(s) if s.len() == 2));
    assert!(matches!(&items[5], Value::FrozenSet(s) if s.len() == 1));
    assert!(matches!(&items[6], Value::Bytes(b) if b == &[0xff, b'a']));
    assert!(matches!(&items[7], Value::ByteArray(b) if b == b"hi"));
    assert!(matches!(items[8], Value::Complex(re, im) if re == 2.0 && im == -1.0));
    assert!(matches!(&items[9], Value::Bytes(b) if b.is_empty()));
}

#[test]
fn torch_value_globals_become_sizes_devices_and_dtypes() {
    let p = cat(&[
        b"\x80\x02(ctorch\nSize\nK\x02K\x03\x86\x85R",
        b"ctorch\ndevice\n",
        &u("cuda"),
        b"K\x01\x86R",
        b"ctorch\ndevice\n",
        &u("cuda:2"),
        b"\x85R",
        b"ctorch\nbfloat16\n",
        b"t.",
    ]);
    let v = read(&p);
    let items = tuple_items(&v);
    assert!(matches!(&items[0], Value::Size(d) if d == &[2, 3]));
    assert!(matches!(&items[1], Value::Device { kind, index: Some(1) } if kind == "cuda"));
    assert!(matches!(&items[2], Value::Device { index: Some(2), .. }));
    assert!(matches!(items[3], Value::DType(DType::BFloat16)));
}

#[test]
fn unknown_globals_are_kept_as_objects_with_call_new_and_state() {
    let p = cat(&[
        b"\x80\x04(",
        &u("mymod.sub"),
        &u("Thing"),
        b"\x93q\x00K\x01\x85R}",
        &u("a"),
        b"K\x02sb",
        b"h\x00)\x81",
        b"cmymod\nfunc\nt.",
    ]);
    let v = read(&p);
    let items = tuple_items(&v);
    match &items[0] {
        Value::Object(o) => {
            assert_eq!(o.qualified_name(), "mymod.sub.Thing");
            assert!(matches!(&o.build, ObjectBuild::Call(a) if a.len() == 1));
            assert!(o.state.as_ref().and_then(|s| s.get("a")).is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&items[1], Value::Object(o) if matches!(o.build, ObjectBuild::New(_))));
    assert!(matches!(&items[2], Value::Object(o) if matches!(o.build, ObjectBuild::Global)));
}

fn storage_pid(class: &str, numel: u8) -> Vec<u8> {
    cat(&[
        b"(",
        &u("storage"),
        b"ctorch\n",
        class.as_bytes(),
        b"\n",
        &u("0"),
        &u("cpu"),
        &[b'K', numel],
        b"tQ",
    ])
}

#[test]
fn rebuild_functions_make_tensors_and_parameters_over_persistent_storages() {
    let v2 = cat(&[
        b"ctorch._utils\n_rebuild_tensor_v2\n(",
        &storage_pid("FloatStorage", 6),
        b"K\x01K\x02K\x02\x86K\x01K\x02\x86\x88ccollections\nOrderedDict\n)RtR",
    ]);
    let v3 = cat(&[
        b"ctorch._utils\n_rebuild_tensor_v3\n(",
        &storage_pid("UntypedStorage", 24),
        b"K\x00K\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rctorch\nfloat16\ntR",
    ]);
    let param = cat(&[
        b"ctorch._utils\n_rebuild_parameter\n",
        &v2,
        b"\x88ccollections\nOrderedDict\n)R\x87R",
    ]);
    let typed = cat(&[
        b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n(",
        &storage_pid("FloatStorage", 6),
        b"K\x00K\x06\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt}tR",
    ]);
    let p = cat(&[b"\x80\x02(", &v2, &v3, &param, &typed, b"t."]);
    let v = read(&p);
    let items = tuple_items(&v);
    let t = match &items[0] {
        Value::Tensor(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(t.shape(), &[2, 2]);
    assert!(t.requires_grad());
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
    let half = items[1].as_tensor().unwrap();
    assert_eq!((half.dtype(), half.shape()), (DType::Float16, &[3][..]));
    assert!(matches!(&items[2], Value::Parameter(p) if p.requires_grad()));
    assert_eq!(items[3].as_tensor().unwrap().shape(), &[6]);
}

#[test]
fn rebuild_arguments_of_unusual_forms_read_or_fail_like_the_usual_ones() {
    // A list as size and an int flag read like a tuple and a bool.
    let listed = cat(&[
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(",
        &storage_pid("FloatStorage", 6),
        b"K\x02]K\x02aK\x01\x85K\x01tR.",
    ]);
    let t = read(&listed);
    let t = t.as_tensor().unwrap();
    assert_eq!((t.shape(), t.storage_offset()), (&[2][..], 2));
    assert!(t.requires_grad());
    // A size past the storage is an error naming the function.
    let past = cat(&[
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(",
        &storage_pid("FloatStorage", 6),
        b"K\x00K\x07\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR.",
    ]);
    let err = read_with(&past, Py2Strings::Latin1).unwrap_err();
    assert!(err.to_string().contains("_rebuild_tensor_v2"), "{err}");
}

/// `_rebuild_tensor_v2` of two float32 elements at offset 1 with a metadata dict of `key`.
fn record_with_metadata(key: &str) -> Vec<u8> {
    cat(&[
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(",
        &storage_pid("FloatStorage", 6),
        b"K\x01K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)R}",
        &u(key),
        b"\x88stR.",
    ])
}

#[test]
fn tensor_metadata_applies_neg_and_refuses_what_torch_refuses() {
    // The negative bit is applied; the stored bytes are the values before negation.
    let neg = read(&record_with_metadata("neg"));
    let t = neg.as_tensor().unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![-1.0, -2.0]);
    assert_eq!(t.storage_offset(), 1);
    // torch cannot load a conjugate bit on a real tensor; an unknown key might change values.
    let err = read_with(&record_with_metadata("conj"), Py2Strings::Latin1).unwrap_err();
    assert!(err.to_string().contains("only complex tensors"), "{err}");
    let err = read_with(&record_with_metadata("zerotensor"), Py2Strings::Latin1).unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
    let sparse = b"\x80\x02ctorch._utils\n_rebuild_sparse_tensor\nN\x85R.";
    let err = read_with(sparse, Py2Strings::Latin1).unwrap_err();
    assert!(matches!(err, Error::Pickle { .. }));
    assert!(err.to_string().contains("unsupported"), "{err}");
}

#[test]
fn text_persistent_ids_reach_the_loader() {
    let mut loader = SixFloats::default();
    let (v, _) = read_pickle(b"P7\n.", 0, &PickleOptions::default(), &mut loader).unwrap();
    assert!(matches!(loader.pids.as_slice(), [Value::Str(s)] if s == "7"));
    assert_eq!(v.as_tensor().unwrap().shape(), &[6]);
}

#[test]
fn errors_carry_the_file_offset() {
    let options = PickleOptions::default();
    let err = read_pickle(b"\x80\x02a.", 100, &options, &mut SixFloats::default()).unwrap_err();
    match err {
        Error::Pickle { offset, message } => {
            assert_eq!(offset, 102);
            assert!(message.contains("APPEND"), "{message}");
        }
        other => panic!("{other}"),
    }
}

//! The serde bridge: Rust training state to Python-like values and back, including values
//! shaped exactly as torch 2.x returns them from `state_dict()`.

use std::collections::{BTreeMap, HashMap};

use ckpt::{from_value, to_value, Dict, DictKind, Error, Key, Tensor, Value};
use num_bigint::BigInt;
use serde::{Deserialize, Serialize};

fn dict(entries: Vec<(&str, Value)>) -> Dict {
    let mut d = Dict::new();
    for (k, v) in entries {
        d.insert(k, v);
    }
    d
}

fn ordered(entries: Vec<(&str, Value)>) -> Value {
    let mut d = dict(entries);
    d.set_kind(DictKind::OrderedDict);
    Value::Dict(d)
}

fn plain(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(dict(entries))
}

fn ints(values: &[i64]) -> Vec<Value> {
    values.iter().map(|&i| Value::Int(i)).collect()
}

fn key_error(err: Error) -> (String, String) {
    match err.root() {
        Error::Key { key, message } => (key.clone(), message.clone()),
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct LoaderPosition {
    epoch: u32,
    batch: usize,
    shuffle_seed: Option<u64>,
    order: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct TrainerState {
    name: String,
    iteration: i64,
    lr: f64,
    warmup: (u32, f32),
    loader: LoaderPosition,
    resumed_from: Option<String>,
    enabled: bool,
    tags: BTreeMap<String, Vec<i8>>,
}

fn trainer_state() -> TrainerState {
    TrainerState {
        name: "retinanet".into(),
        iteration: 89_999,
        lr: 0.02,
        warmup: (1000, 0.001),
        loader: LoaderPosition {
            epoch: 3,
            batch: 17,
            shuffle_seed: Some(42),
            order: vec![2, 0, 1],
        },
        resumed_from: None,
        enabled: true,
        tags: [("a".to_string(), vec![-1, 2])].into(),
    }
}

#[test]
fn nested_struct_round_trips_through_python_shaped_value() {
    let state = trainer_state();
    let value = to_value(&state).unwrap();

    let Value::Dict(top) = &value else {
        panic!("struct must become a dict, got {value:?}")
    };
    assert_eq!(top.kind(), DictKind::Dict);
    let keys: Vec<&str> = top.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "name",
            "iteration",
            "lr",
            "warmup",
            "loader",
            "resumed_from",
            "enabled",
            "tags"
        ],
        "fields keep declaration order"
    );
    assert_eq!(value.get("iteration").and_then(Value::as_int), Some(89_999));
    assert!(matches!(value.get("warmup"), Some(Value::Tuple(t)) if t.len() == 2));
    assert!(matches!(value.get("resumed_from"), Some(Value::None)));
    assert_eq!(value.get("enabled").and_then(Value::as_bool), Some(true));
    let loader = value.get("loader").unwrap();
    assert!(matches!(loader.get("order"), Some(Value::List(l)) if l.len() == 3));
    assert_eq!(loader.get("shuffle_seed").and_then(Value::as_int), Some(42));

    let back: TrainerState = from_value(&value).unwrap();
    assert_eq!(back, state);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Schedule {
    Constant,
    Step(u32),
    Warmup(u32, f64),
    Cosine { max_iter: u64, min_lr: f64 },
}

#[test]
fn enums_are_externally_tagged_and_round_trip() {
    let cases = [
        (Schedule::Constant, "Constant"),
        (Schedule::Step(10), "Step"),
        (Schedule::Warmup(100, 0.5), "Warmup"),
        (
            Schedule::Cosine {
                max_iter: 90_000,
                min_lr: 0.0,
            },
            "Cosine",
        ),
    ];
    for (schedule, name) in cases {
        let value = to_value(&schedule).unwrap();
        match (&schedule, &value) {
            (Schedule::Constant, Value::Str(s)) => assert_eq!(s, name),
            (Schedule::Step(_), v) => assert_eq!(v.get(name).and_then(Value::as_int), Some(10)),
            (Schedule::Warmup(..), v) => assert!(matches!(v.get(name), Some(Value::Tuple(_)))),
            (Schedule::Cosine { .. }, v) => {
                assert_eq!(
                    v.get(name)
                        .and_then(|c| c.get("max_iter"))
                        .and_then(Value::as_int),
                    Some(90_000)
                )
            }
            (_, v) => panic!("unexpected encoding {v:?}"),
        }
        assert_eq!(from_value::<Schedule>(&value).unwrap(), schedule);
    }
}

#[test]
fn option_none_is_python_none_and_some_is_the_bare_value() {
    let value = to_value(&vec![Some(1.5), None]).unwrap();
    let Value::List(items) = &value else {
        panic!("expected a list, got {value:?}")
    };
    assert!(matches!(items.as_slice(), [Value::Float(f), Value::None] if *f == 1.5));
    assert_eq!(
        from_value::<Vec<Option<f64>>>(&value).unwrap(),
        vec![Some(1.5), None]
    );
    assert_eq!(to_value(&()).unwrap().type_name(), "NoneType");
}

#[test]
fn int_keyed_maps_keep_int_keys_like_optimizer_state() {
    let state: BTreeMap<u32, LoaderPosition> = [
        (
            0,
            LoaderPosition {
                epoch: 1,
                batch: 2,
                shuffle_seed: None,
                order: vec![],
            },
        ),
        (
            7,
            LoaderPosition {
                epoch: 3,
                batch: 4,
                shuffle_seed: Some(5),
                order: vec![6],
            },
        ),
    ]
    .into();
    let value = to_value(&state).unwrap();
    let d = value.as_dict().unwrap();
    assert!(d.contains_key(&Key::Int(0)));
    assert!(d.contains_key(&Key::Int(7)));
    assert!(d.get("7").is_none(), "keys must not become strings");
    assert_eq!(
        from_value::<BTreeMap<u32, LoaderPosition>>(&value).unwrap(),
        state
    );
}

#[test]
fn string_keys_are_read_as_int_keys_when_the_map_wants_ints() {
    // What a JSON round trip of an optimizer's `state` leaves behind.
    let value = plain(vec![("0", Value::Float(0.5)), ("12", Value::Int(3))]);
    let map: HashMap<u16, f64> = from_value(&value).unwrap();
    assert_eq!(map, HashMap::from([(0, 0.5), (12, 3.0)]));
}

#[test]
fn int_keys_are_read_as_strings_when_the_map_wants_strings_like_json_dumps() {
    let mut counter = Dict::with_kind(DictKind::Counter);
    counter.insert(30i64, Value::Int(1));
    counter.insert(60i64, Value::Int(1));
    let value = plain(vec![("milestones", Value::Dict(counter))]);

    let named: BTreeMap<String, BTreeMap<String, u32>> = from_value(&value).unwrap();
    assert_eq!(named["milestones"]["60"], 1);
    let json: serde_json::Value = from_value(&value).unwrap();
    assert_eq!(json, serde_json::json!({"milestones": {"30": 1, "60": 1}}));
}

#[test]
fn u64_above_i64_max_becomes_a_python_bigint_and_round_trips() {
    let seeds = (u64::MAX, i64::MAX as u64, u128::MAX, i128::MIN);
    let value = to_value(&seeds).unwrap();
    let Value::Tuple(items) = &value else {
        panic!("expected a tuple, got {value:?}")
    };
    assert!(matches!(&items[0], Value::BigInt(b) if *b == BigInt::from(u64::MAX)));
    assert!(matches!(&items[1], Value::Int(i) if *i == i64::MAX));
    assert!(matches!(&items[2], Value::BigInt(b) if *b == BigInt::from(u128::MAX)));
    assert!(matches!(&items[3], Value::BigInt(b) if *b == BigInt::from(i128::MIN)));
    assert_eq!(from_value::<(u64, u64, u128, i128)>(&value).unwrap(), seeds);
}

#[test]
fn bigint_that_does_not_fit_the_rust_type_is_an_error() {
    let value = plain(vec![("seed", Value::BigInt(BigInt::from(u64::MAX)))]);
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Rng {
        seed: i64,
    }
    let (key, message) = key_error(from_value::<Rng>(&value).unwrap_err());
    assert_eq!(key, "seed");
    assert!(message.contains("i64"), "{message}");
}

#[derive(Deserialize, Debug, PartialEq)]
struct SgdGroup {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    foreach: Option<bool>,
    params: Vec<usize>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct SgdHyper {
    param_groups: Vec<SgdGroup>,
}

/// `torch.optim.SGD(..., lr=0.1, momentum=0.9).state_dict()` after one step, as torch 2.x
/// returns it (int `0` for `dampening` and `weight_decay`, int keys in `state`).
fn sgd_state_dict() -> Value {
    let group = ordered(vec![
        ("lr", Value::Float(0.1)),
        ("momentum", Value::Float(0.9)),
        ("dampening", Value::Int(0)),
        ("weight_decay", Value::Int(0)),
        ("nesterov", Value::Bool(false)),
        ("maximize", Value::Bool(false)),
        ("foreach", Value::None),
        ("differentiable", Value::Bool(false)),
        ("fused", Value::None),
        ("initial_lr", Value::Float(0.1)),
        ("params", Value::List(ints(&[0, 1]))),
    ]);
    let mut state = Dict::new();
    let buffer = Tensor::from_slice(&[1.0f32, 1.0], &[2]).unwrap();
    state.insert(
        0i64,
        plain(vec![("momentum_buffer", Value::Tensor(buffer.clone()))]),
    );
    state.insert(
        1i64,
        plain(vec![("momentum_buffer", Value::Tensor(buffer))]),
    );
    plain(vec![
        ("state", Value::Dict(state)),
        ("param_groups", Value::List(vec![group])),
    ])
}

#[test]
fn sgd_state_dict_from_torch_reads_ints_as_floats_and_ignores_extra_keys() {
    let hyper: SgdHyper = from_value(&sgd_state_dict()).unwrap();
    assert_eq!(
        hyper.param_groups,
        vec![SgdGroup {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            foreach: None,
            params: vec![0, 1],
        }]
    );
}

#[test]
fn tensor_in_a_serde_field_is_an_error_naming_the_path_and_the_checkpointable_trait() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct WithState {
        state: BTreeMap<i64, BTreeMap<String, Vec<f32>>>,
    }
    let (key, message) = key_error(from_value::<WithState>(&sgd_state_dict()).unwrap_err());
    assert_eq!(key, "state[0].momentum_buffer");
    assert!(message.contains("found Tensor"), "{message}");
    assert!(message.contains("checkpointable"), "{message}");
}

#[test]
fn multistep_lr_state_reads_counter_milestones_with_int_keys() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct MultiStepLr {
        milestones: BTreeMap<u64, u32>,
        gamma: f64,
        base_lrs: Vec<f64>,
        last_epoch: i64,
        #[serde(rename = "_step_count")]
        step_count: u64,
    }
    let mut counter = Dict::with_kind(DictKind::Counter);
    counter.insert(30i64, Value::Int(1));
    counter.insert(60i64, Value::Int(1));
    // `MultiStepLR(opt, [30, 60]).state_dict()` in torch 2.x.
    let value = plain(vec![
        ("milestones", Value::Dict(counter)),
        ("gamma", Value::Float(0.1)),
        ("base_lrs", Value::List(vec![Value::Float(0.1)])),
        ("last_epoch", Value::Int(0)),
        ("_step_count", Value::Int(1)),
        ("_is_initial", Value::Bool(false)),
        ("_get_lr_called_within_step", Value::Bool(false)),
        ("_last_lr", Value::List(vec![Value::Float(0.1)])),
    ]);
    let sched: MultiStepLr = from_value(&value).unwrap();
    assert_eq!(sched.milestones, BTreeMap::from([(30, 1), (60, 1)]));
    assert_eq!(
        (sched.gamma, sched.last_epoch, sched.step_count),
        (0.1, 0, 1)
    );
    assert_eq!(sched.base_lrs, vec![0.1]);
}

#[test]
fn adam_group_reads_betas_tuple_and_step_as_zero_dim_tensor() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct AdamGroup {
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f32,
        amsgrad: bool,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct AdamStep {
        step: f64,
    }
    let group = ordered(vec![
        ("lr", Value::Float(0.001)),
        (
            "betas",
            Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)]),
        ),
        ("eps", Value::Float(1e-8)),
        ("weight_decay", Value::Int(0)),
        ("amsgrad", Value::Bool(false)),
        ("capturable", Value::Bool(false)),
    ]);
    let g: AdamGroup = from_value(&group).unwrap();
    assert_eq!(
        g,
        AdamGroup {
            lr: 0.001,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false
        }
    );

    // torch keeps Adam's `step` as `tensor(1.)`; numpy scalars are 0-d arrays too.
    let step = Tensor::from_slice(&[1.0f32], &[]).unwrap();
    let state = plain(vec![("step", Value::Tensor(step))]);
    assert_eq!(
        from_value::<AdamStep>(&state).unwrap(),
        AdamStep { step: 1.0 }
    );
    let np_int = Tensor::from_slice(&[5i64], &[]).unwrap();
    assert_eq!(from_value::<u8>(&Value::NdArray(np_int)).unwrap(), 5);
    let vector = Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let err = from_value::<f64>(&Value::Tensor(vector)).unwrap_err();
    assert!(matches!(err.root(), Error::Invalid { .. }), "{err:?}");
}

#[test]
fn python_random_state_tuple_reads_into_rust_types() {
    // `random.getstate()`: (3, tuple of 625 ints, None).
    let words: Vec<Value> = (0..625).map(Value::Int).collect();
    let value = Value::Tuple(vec![Value::Int(3), Value::Tuple(words), Value::None]);
    let (version, words, gauss): (u8, Vec<u32>, Option<f64>) = from_value(&value).unwrap();
    assert_eq!(
        (version, words.len(), words[624], gauss),
        (3, 625, 624, None)
    );
}

#[test]
fn sequences_accept_lists_tuples_sets_size_and_bytes() {
    let list = Value::List(ints(&[1, 2]));
    let tuple = Value::Tuple(ints(&[1, 2]));
    assert_eq!(from_value::<(u8, u8)>(&list).unwrap(), (1, 2));
    assert_eq!(from_value::<Vec<u8>>(&tuple).unwrap(), vec![1, 2]);
    assert_eq!(
        from_value::<Vec<u8>>(&Value::Set(ints(&[1, 2]))).unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        from_value::<Vec<usize>>(&Value::Size(vec![3, 224])).unwrap(),
        vec![3, 224]
    );
    assert_eq!(
        from_value::<Vec<u8>>(&Value::Bytes(b"ab".to_vec())).unwrap(),
        b"ab".to_vec()
    );
}

#[test]
fn torch_dtype_and_device_read_as_strings() {
    let value = plain(vec![
        ("dtype", Value::DType(ckpt::DType::Float16)),
        (
            "device",
            Value::Device {
                kind: "cuda".into(),
                index: Some(1),
            },
        ),
    ]);
    let map: BTreeMap<String, String> = from_value(&value).unwrap();
    assert_eq!(map["dtype"], "float16");
    assert_eq!(map["device"], "cuda:1");
}

#[test]
fn errors_name_the_nested_path_and_what_was_expected() {
    let mut value = sgd_state_dict();
    let groups = match value
        .as_dict_mut()
        .and_then(|d| d.get_key_mut(&Key::from("param_groups")))
    {
        Some(Value::List(groups)) => groups,
        other => panic!("fixture changed: {other:?}"),
    };
    groups.push(groups[0].clone());
    groups[1]
        .as_dict_mut()
        .unwrap()
        .insert("lr", Value::Str("fast".into()));

    let err = from_value::<SgdHyper>(&value).unwrap_err();
    let (key, message) = key_error(err);
    assert_eq!(key, "param_groups[1].lr");
    assert!(message.contains("expected f64"), "{message}");
    assert!(message.contains("found str \"fast\""), "{message}");
}

#[test]
fn missing_field_and_wrong_tuple_length_are_reported_with_their_path() {
    let value = plain(vec![(
        "loader",
        plain(vec![("epoch", Value::Int(1)), ("batch", Value::Int(2))]),
    )]);
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        loader: LoaderPosition,
    }
    let (key, message) = key_error(from_value::<Outer>(&value).unwrap_err());
    assert_eq!(key, "loader");
    assert!(message.contains("missing field `order`"), "{message}");

    let value = plain(vec![("warmup", Value::Tuple(ints(&[1, 2, 3])))]);
    let err = from_value::<BTreeMap<String, (u32, u32)>>(&value).unwrap_err();
    let (key, message) = key_error(err);
    assert_eq!(key, "warmup");
    assert!(
        message.contains("expected 2 elements, found 3"),
        "{message}"
    );
}

#[test]
fn top_level_mismatch_is_an_invalid_error_without_a_path() {
    let err = from_value::<LoaderPosition>(&Value::Int(3)).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("found int 3"), "{err}");
}

#[test]
fn enum_from_a_dict_with_several_keys_is_an_error() {
    let value = plain(vec![("Step", Value::Int(1)), ("Constant", Value::None)]);
    let err = from_value::<Schedule>(&value).unwrap_err();
    assert!(err.to_string().contains("dict with one key"), "{err}");
    let err = from_value::<Schedule>(&Value::Str("Linear".into())).unwrap_err();
    assert!(matches!(err.root(), Error::Invalid { .. }), "{err:?}");
}

#[test]
fn unhashable_map_key_is_an_error_naming_the_key_type() {
    let map: BTreeMap<Vec<u32>, u32> = [(vec![1, 2], 3)].into();
    let err = to_value(&map).unwrap_err();
    assert!(
        err.to_string().contains("a list cannot be a dict key"),
        "{err}"
    );

    let nested = BTreeMap::from([("groups", map)]);
    let (key, _) = key_error(to_value(&nested).unwrap_err());
    assert_eq!(key, "groups");
}

#[test]
fn tuple_map_keys_become_python_tuple_keys() {
    let map: BTreeMap<(u8, String), bool> = [((1, "a".to_string()), true)].into();
    let value = to_value(&map).unwrap();
    let expected = Key::Tuple(vec![Key::Int(1), Key::Str("a".into())]);
    assert!(value.as_dict().unwrap().contains_key(&expected));
    assert_eq!(
        from_value::<BTreeMap<(u8, String), bool>>(&value).unwrap(),
        map
    );
}

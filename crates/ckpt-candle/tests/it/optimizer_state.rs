//! The optimizers' checkpoint state: torch's `state_dict()` layout, a save/load round trip
//! that continues bit for bit, and loads that refuse a foreign state without changing
//! anything.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use ckpt::format::{load, save_torch, SaveOptions};
use ckpt::{Checkpointable, Key, Value};
use ckpt_candle::{AdamW, AdamWConfig, Sgd, SgdConfig, VarMapModel};

fn setup() -> (Linear, VarMapModel) {
    let varmap = VarMap::new();
    let fc = linear(
        3,
        2,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let model = VarMapModel::new(varmap)
        .with_order(["weight", "bias"])
        .unwrap();
    for (i, (_, var)) in model.vars().into_iter().enumerate() {
        let n = var.elem_count();
        let values: Vec<f32> = (0..n).map(|k| (k as f32 - 1.5) * 0.25 + i as f32).collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    (fc, model)
}

fn loss(fc: &Linear, step: usize) -> Tensor {
    let x = Tensor::new(&[[1f32, -2., 0.5], [0.25, 1., -1.]], &Device::Cpu).unwrap();
    let x = (x * (1.0 + step as f64 * 0.1)).unwrap();
    fc.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap()
}

fn bits(model: &VarMapModel) -> Vec<Vec<u32>> {
    model
        .vars()
        .iter()
        .map(|(_, v)| {
            let values = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            values.iter().map(|f| f.to_bits()).collect()
        })
        .collect()
}

fn group_keys(state: &Value) -> Vec<String> {
    let Some(Value::List(groups)) = state.get("param_groups") else {
        panic!("no param_groups")
    };
    groups[0]
        .as_dict()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect()
}

fn entry(state: &Value, index: i64) -> Option<&Value> {
    state.get("state")?.as_dict()?.get_key(&Key::Int(index))
}

#[test]
fn adamw_state_dict_has_torch_adamw_layout() {
    let (fc, model) = setup();
    let mut opt = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    opt.backward_step(&loss(&fc, 0)).unwrap();
    opt.backward_step(&loss(&fc, 1)).unwrap();
    let state = opt.state_dict().unwrap();
    assert_eq!(
        group_keys(&state),
        [
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "amsgrad",
            "maximize",
            "foreach",
            "capturable",
            "differentiable",
            "fused",
            "decoupled_weight_decay",
            "params"
        ]
    );
    let Some(Value::List(groups)) = state.get("param_groups") else {
        panic!()
    };
    let group = &groups[0];
    assert!(matches!(group.get("betas"), Some(Value::Tuple(b)) if b.len() == 2));
    assert!(matches!(
        group.get("decoupled_weight_decay"),
        Some(Value::Bool(true))
    ));
    assert!(matches!(group.get("params"), Some(Value::List(p)) if p.len() == 2));

    let weight = entry(&state, 0).unwrap();
    let names: Vec<String> = weight
        .as_dict()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(names, ["step", "exp_avg", "exp_avg_sq"]);
    let step = weight.get("step").unwrap().as_tensor().unwrap();
    assert_eq!(step.dtype(), ckpt::DType::Float32);
    assert!(step.shape().is_empty());
    assert_eq!(step.to_vec::<f32>().unwrap(), vec![2.0]);
    assert_eq!(
        weight.get("exp_avg").unwrap().as_tensor().unwrap().shape(),
        &[2, 3]
    );
    assert_eq!(
        entry(&state, 1)
            .unwrap()
            .get("exp_avg_sq")
            .unwrap()
            .as_tensor()
            .unwrap()
            .shape(),
        &[2]
    );
}

#[test]
fn parameters_without_gradients_get_no_state() {
    let (fc, model) = setup();
    let unused = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let mut vars: Vec<Var> = model.vars().into_iter().map(|(_, v)| v).collect();
    vars.push(unused);
    let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
    opt.backward_step(&loss(&fc, 0)).unwrap();
    let state = opt.state_dict().unwrap();
    assert!(entry(&state, 1).is_some());
    assert!(entry(&state, 2).is_none());
    assert_eq!(opt.step_count(2), None);
}

#[test]
fn adamw_saved_to_a_file_and_loaded_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let config = AdamWConfig {
        lr: 0.05,
        ..AdamWConfig::default()
    };
    let (fc, model) = setup();
    let mut opt = AdamW::from_model(&model, config).unwrap();
    for step in 0..3 {
        opt.backward_step(&loss(&fc, step)).unwrap();
    }
    opt.set_learning_rate(0.02);
    let path = dir.path().join("adamw.pth");
    save_torch(&path, &opt.state_dict().unwrap(), &SaveOptions::default()).unwrap();

    let (fc2, model2) = setup();
    for ((_, a), (_, b)) in model.vars().iter().zip(model2.vars()) {
        b.set(a.as_tensor()).unwrap();
    }
    let mut resumed = AdamW::from_model(&model2, AdamWConfig::default()).unwrap();
    resumed.load_state_dict(load(&path).unwrap()).unwrap();
    assert_eq!(resumed.learning_rate(), 0.02);
    assert_eq!(resumed.step_count(0), Some(3));

    for step in 3..6 {
        opt.backward_step(&loss(&fc, step)).unwrap();
        resumed.backward_step(&loss(&fc2, step)).unwrap();
    }
    assert_eq!(bits(&model), bits(&model2));
}

#[test]
fn sgd_state_dict_has_torch_sgd_layout_and_round_trips() {
    let (fc, model) = setup();
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    let mut opt = Sgd::from_model(&model, config).unwrap();
    opt.backward_step(&loss(&fc, 0)).unwrap();
    let state = opt.state_dict().unwrap();
    assert_eq!(
        group_keys(&state),
        [
            "lr",
            "momentum",
            "dampening",
            "weight_decay",
            "nesterov",
            "maximize",
            "foreach",
            "differentiable",
            "fused",
            "params"
        ]
    );
    let buf = entry(&state, 0)
        .unwrap()
        .get("momentum_buffer")
        .unwrap()
        .as_tensor()
        .unwrap();
    assert_eq!(buf.shape(), &[2, 3]);

    let (_, model2) = setup();
    let mut other = Sgd::from_model(&model2, SgdConfig::default()).unwrap();
    other.load_state_dict(state).unwrap();
    assert_eq!(*other.config(), config);
}

#[test]
fn sgd_without_momentum_keeps_no_buffers() {
    let (fc, model) = setup();
    let mut opt = Sgd::from_model(
        &model,
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    opt.backward_step(&loss(&fc, 0)).unwrap();
    let state = opt.state_dict().unwrap();
    assert_eq!(state.get("state").unwrap().as_dict().unwrap().len(), 0);
}

#[test]
fn a_foreign_optimizer_state_is_refused_and_changes_nothing() {
    let (fc, model) = setup();
    let mut opt = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    opt.backward_step(&loss(&fc, 0)).unwrap();
    let good = opt.state_dict().unwrap();

    // A state for three parameters.
    let mut wrong_count = good.clone();
    let group = match wrong_count
        .as_dict_mut()
        .unwrap()
        .get_key_mut(&Key::from("param_groups"))
    {
        Some(Value::List(groups)) => groups[0].as_dict_mut().unwrap(),
        _ => panic!(),
    };
    group.insert(
        "params",
        Value::List(vec![Value::Int(0), Value::Int(1), Value::Int(2)]),
    );
    let err = opt.load_state_dict(wrong_count).unwrap_err();
    assert!(err.to_string().contains("3 parameters"), "{err}");

    // amsgrad is not implemented.
    let mut amsgrad = good.clone();
    if let Some(Value::List(groups)) = amsgrad
        .as_dict_mut()
        .unwrap()
        .get_key_mut(&Key::from("param_groups"))
    {
        groups[0]
            .as_dict_mut()
            .unwrap()
            .insert("amsgrad", Value::Bool(true));
    }
    let err = opt.load_state_dict(amsgrad).unwrap_err();
    assert!(err.to_string().contains("amsgrad"), "{err}");

    // An exp_avg of the wrong shape names its key; the lr change before it is not applied.
    let mut bad_shape = good.clone();
    let top = bad_shape.as_dict_mut().unwrap();
    if let Some(Value::List(groups)) = top.get_key_mut(&Key::from("param_groups")) {
        groups[0]
            .as_dict_mut()
            .unwrap()
            .insert("lr", Value::Float(0.5));
    }
    let state = top
        .get_key_mut(&Key::from("state"))
        .unwrap()
        .as_dict_mut()
        .unwrap();
    let first = state
        .get_key_mut(&Key::Int(0))
        .unwrap()
        .as_dict_mut()
        .unwrap();
    first.insert(
        "exp_avg",
        Value::Tensor(ckpt::Tensor::from_slice(&[0f32; 3], &[3]).unwrap()),
    );
    let err = opt.load_state_dict(bad_shape).unwrap_err();
    assert_eq!(err.entry_key(), Some("state[0].exp_avg"), "{err:?}");
    assert_eq!(opt.learning_rate(), AdamWConfig::default().lr);

    // A plain Adam state (coupled weight decay).
    let mut adam = good;
    if let Some(Value::List(groups)) = adam
        .as_dict_mut()
        .unwrap()
        .get_key_mut(&Key::from("param_groups"))
    {
        groups[0]
            .as_dict_mut()
            .unwrap()
            .insert("decoupled_weight_decay", Value::Bool(false));
    }
    let err = opt.load_state_dict(adam).unwrap_err();
    assert!(err.to_string().contains("decoupled_weight_decay"), "{err}");
}

#[test]
fn invalid_hyperparameters_are_refused_as_torch_refuses_them() {
    let (_, model) = setup();
    let invalid = |err: ckpt_candle::Error, what: &str| {
        assert!(
            matches!(&err, ckpt_candle::Error::Ckpt(ckpt::Error::Invalid { message })
                if message.contains(what)),
            "{err:?}"
        );
    };
    let beta1 = AdamWConfig {
        beta1: 1.0,
        ..AdamWConfig::default()
    };
    invalid(AdamW::from_model(&model, beta1).err().unwrap(), "beta1");
    let lr = AdamWConfig {
        lr: -1.0,
        ..AdamWConfig::default()
    };
    invalid(AdamW::from_model(&model, lr).err().unwrap(), "lr");
    let nesterov = SgdConfig {
        momentum: 0.9,
        dampening: 0.1,
        nesterov: true,
        ..SgdConfig::default()
    };
    invalid(Sgd::from_model(&model, nesterov).err().unwrap(), "Nesterov");
}

#[test]
fn a_checkpoint_whose_optimizer_state_is_refused_leaves_the_model_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint of other weights with an optimizer over three parameters.
    let (fc, other) = setup();
    let mut three = AdamW::new(
        other
            .vars()
            .into_iter()
            .map(|(_, v)| v)
            .chain([Var::zeros(1, DType::F32, &Device::Cpu).unwrap()])
            .collect(),
        AdamWConfig::default(),
    )
    .unwrap();
    three.backward_step(&loss(&fc, 0)).unwrap();
    let mut top = ckpt::Dict::new();
    top.insert("model", ckpt::Model::state_dict(&other).unwrap().to_value());
    top.insert("optimizer", three.state_dict().unwrap());
    top.insert("iteration", Value::Int(0));
    let path = dir.path().join("bad.pth");
    save_torch(&path, &Value::Dict(top), &SaveOptions::default()).unwrap();

    let (_, model) = setup();
    let before = bits(&model);
    let optimizer = ckpt::shared(AdamW::from_model(&model, AdamWConfig::default()).unwrap());
    let mut checkpointer = ckpt::Checkpointer::new(ckpt::shared(model.clone()), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer)
        .unwrap();
    let err = checkpointer
        .load(&path, ckpt::Checkpointables::All)
        .unwrap_err();
    assert_eq!(err.path(), Some(path.as_path()), "{err:?}");
    assert_eq!(err.entry_key(), Some("optimizer"), "{err:?}");
    assert!(
        matches!(err.root(), ckpt::Error::Invalid { message } if message.contains("3 parameters")),
        "{err:?}"
    );
    assert_eq!(bits(&model), before);
}

//! An optimizer state saved by a run that numbered the parameters in another order (the usual
//! cause: building the optimizer from `varmap.all_vars()`, a hash-map order that changes from
//! process to process) is refused with an error that names that cause and the fix.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use ckpt::Checkpointable;
use ckpt_candle::{AdamW, AdamWConfig, Sgd, SgdConfig, VarMapModel};

struct Net {
    fc1: Linear,
    fc2: Linear,
    varmap: VarMap,
}

fn net() -> Net {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Net {
        fc1: linear(3, 4, vb.pp("fc1")).unwrap(),
        fc2: linear(4, 2, vb.pp("fc2")).unwrap(),
        varmap,
    }
}

fn loss(net: &Net) -> Tensor {
    let x = Tensor::new(&[[1f32, -2., 0.5], [0.25, 1., -1.]], &Device::Cpu).unwrap();
    let h = net.fc1.forward(&x).unwrap().tanh().unwrap();
    net.fc2
        .forward(&h)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
}

/// The variables in the order of `names`.
fn vars_in(net: &Net, names: &[&str]) -> Vec<Var> {
    let data = net.varmap.data().lock().unwrap();
    names.iter().map(|n| data[*n].clone()).collect()
}

const SAVED_ORDER: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];
/// What `all_vars()` may give in the next process.
const OTHER_ORDER: [&str; 4] = ["fc2.bias", "fc1.weight", "fc2.weight", "fc1.bias"];

fn assert_names_cause_and_fix(message: &str, optimizer: &str) {
    for part in [
        "state[0].",
        "shape [4, 3] in the state, [2] for parameter 0 (",
        "state tensors do not fit their parameter",
        "another order",
        "varmap.all_vars()",
        &format!("{optimizer}::from_model"),
        "with_order",
    ] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

#[test]
fn adamw_state_of_another_parameter_order_names_the_cause_and_the_fix() {
    let net = net();
    let mut saving = AdamW::new(vars_in(&net, &SAVED_ORDER), AdamWConfig::default()).unwrap();
    saving.backward_step(&loss(&net)).unwrap();
    let state = saving.state_dict().unwrap();

    let mut resuming = AdamW::new(vars_in(&net, &OTHER_ORDER), AdamWConfig::default()).unwrap();
    let err = resuming.load_state_dict(state.clone()).unwrap_err();
    assert_names_cause_and_fix(&err.to_string(), "AdamW");
    assert_eq!(resuming.step_count(0), None, "nothing was loaded");

    // The fix: numbered in the model's fixed order, the same state loads.
    let model = VarMapModel::new(net.varmap.clone())
        .with_order(SAVED_ORDER)
        .unwrap();
    let mut fixed = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    fixed.load_state_dict(state).unwrap();
    assert_eq!(fixed.step_count(0), Some(1));
}

#[test]
fn sgd_state_of_another_parameter_order_names_the_cause_and_the_fix() {
    let net = net();
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut saving = Sgd::new(vars_in(&net, &SAVED_ORDER), config).unwrap();
    saving.backward_step(&loss(&net)).unwrap();
    let mut resuming = Sgd::new(vars_in(&net, &OTHER_ORDER), config).unwrap();
    let err = resuming
        .load_state_dict(saving.state_dict().unwrap())
        .unwrap_err();
    assert_names_cause_and_fix(&err.to_string(), "Sgd");
}

#[test]
fn a_model_ordered_optimizer_names_the_parameter_and_points_at_the_model_order() {
    let net = net();
    let saved = VarMapModel::new(net.varmap.clone())
        .with_order(SAVED_ORDER)
        .unwrap();
    let mut saving = AdamW::from_model(&saved, AdamWConfig::default()).unwrap();
    saving.backward_step(&loss(&net)).unwrap();
    // Another run left the order to the default (sorted): fc1.bias comes first.
    let sorted = VarMapModel::new(net.varmap.clone());
    let mut resuming = AdamW::from_model(&sorted, AdamWConfig::default()).unwrap();
    let message = resuming
        .load_state_dict(saving.state_dict().unwrap())
        .unwrap_err()
        .to_string();
    for part in [
        "state[0].exp_avg",
        "for parameter 0 (fc1.bias)",
        "another order",
        "with_order or with_param_order",
    ] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

#[test]
fn a_state_of_other_shapes_says_the_model_may_have_changed() {
    let net = net();
    let mut saving = AdamW::new(vars_in(&net, &SAVED_ORDER), AdamWConfig::default()).unwrap();
    saving.backward_step(&loss(&net)).unwrap();
    // A wider model: the same names, other shapes.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    linear(3, 5, vb.pp("fc1")).unwrap();
    linear(5, 2, vb.pp("fc2")).unwrap();
    let wider = VarMapModel::new(varmap).with_order(SAVED_ORDER).unwrap();
    let mut resuming = AdamW::from_model(&wider, AdamWConfig::default()).unwrap();
    let message = resuming
        .load_state_dict(saving.state_dict().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("Either the model changed") && !message.contains("another order"),
        "{message}"
    );
}

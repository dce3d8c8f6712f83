//! A parameter the loss does not depend on gets no gradient: it is skipped (as torch skips
//! it, weight decay included), and named once, in a warning at the first step, so that a
//! layer that silently does not train shows up.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use ckpt_candle::{AdamW, AdamWConfig, Sgd, SgdConfig, VarMapModel};

use crate::support::warnings_during;

struct Net {
    used: Linear,
    varmap: VarMap,
}

/// `used` (3 → 2) takes part in the loss; `aux` (3 → 2) is built but never called.
fn net() -> Net {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let used = linear(3, 2, vb.pp("used")).unwrap();
    linear(3, 2, vb.pp("aux")).unwrap();
    Net { used, varmap }
}

fn loss(net: &Net) -> Tensor {
    let x = Tensor::new(&[[1f32, -2., 0.5]], &Device::Cpu).unwrap();
    net.used
        .forward(&x)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
}

fn aux_weight(net: &Net) -> Vec<Vec<f32>> {
    net.varmap.data().lock().unwrap()["aux.weight"]
        .as_tensor()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn parameters_without_gradient_are_named_once_at_the_first_step_and_left_unchanged() {
    let net = net();
    let model = VarMapModel::new(net.varmap.clone())
        .with_order(["used.weight", "used.bias", "aux.weight", "aux.bias"])
        .unwrap();
    let mut opt = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    let before = aux_weight(&net);
    let logged = warnings_during(|| {
        for _ in 0..3 {
            opt.backward_step(&loss(&net)).unwrap();
        }
    });
    assert_eq!(logged.matches("WARN").count(), 1, "{logged}");
    assert!(
        logged.contains("AdamW: 2 of 4 parameters got no gradient at the first step")
            && logged.contains("aux.weight, aux.bias"),
        "{logged}"
    );
    // Skipped as torch skips them: not even weight decay touches them, and no state.
    assert_eq!(aux_weight(&net), before);
    assert_eq!(opt.step_count(0), Some(3));
    assert_eq!(opt.step_count(2), None);
}

#[test]
fn an_optimizer_over_unnamed_variables_names_them_by_index_and_shape() {
    let net = net();
    let vars = {
        let data = net.varmap.data().lock().unwrap();
        ["used.weight", "aux.bias", "used.bias"].map(|n| data[n].clone())
    };
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(vars.to_vec(), config).unwrap();
    let logged = warnings_during(|| opt.backward_step(&loss(&net)).unwrap());
    assert!(
        logged.contains("SGD: 1 of 3 parameters") && logged.contains("parameter 1 (shape [2])"),
        "{logged}"
    );
}

#[test]
fn a_model_whose_parameters_all_train_logs_nothing() {
    let net = net();
    let vars = {
        let data = net.varmap.data().lock().unwrap();
        vec![data["used.weight"].clone(), data["used.bias"].clone()]
    };
    let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
    let logged = warnings_during(|| opt.backward_step(&loss(&net)).unwrap());
    assert_eq!(logged, "");
}

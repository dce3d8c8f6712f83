//! Switching from `candle_nn::AdamW` (whose moments are private, so it cannot be
//! checkpointed) to `ckpt_candle::AdamW`: the same hyperparameters (`From<ParamsAdamW>`) train
//! the same network to the same weights, step for step.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};

const STEPS: usize = 60;

struct Net {
    fc1: Linear,
    fc2: Linear,
    model: VarMapModel,
}

/// The same network with the same initial weights every time.
fn net() -> Net {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let fc1 = linear(6, 16, vb.pp("fc1")).unwrap();
    let fc2 = linear(16, 3, vb.pp("fc2")).unwrap();
    let model = VarMapModel::new(varmap)
        .with_order(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        .unwrap();
    for (i, (_, var)) in model.vars().into_iter().enumerate() {
        let values: Vec<f32> = (0..var.elem_count())
            .map(|k| ((k * 7 + i * 13) % 23) as f32 / 23.0 - 0.5)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    Net { fc1, fc2, model }
}

fn loss(net: &Net, step: usize) -> Tensor {
    let x: Vec<f32> = (0..4 * 6)
        .map(|k| (((k + step * 5) % 11) as f32 - 5.0) / 4.0)
        .collect();
    let x = Tensor::from_vec(x, (4, 6), &Device::Cpu).unwrap();
    let y = net
        .fc2
        .forward(&net.fc1.forward(&x).unwrap().tanh().unwrap());
    y.unwrap().sqr().unwrap().mean_all().unwrap()
}

fn weights(net: &Net) -> Vec<Vec<f32>> {
    net.model
        .vars()
        .iter()
        .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn adamw_config_takes_candle_nn_params() {
    let params = ParamsAdamW {
        lr: 3e-4,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
    };
    let config = AdamWConfig::from(params.clone());
    assert_eq!(
        config,
        AdamWConfig {
            lr: 3e-4,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.1
        }
    );
    let back = ParamsAdamW::from(config);
    assert_eq!(
        (back.lr, back.beta1, back.beta2, back.eps, back.weight_decay),
        (
            params.lr,
            params.beta1,
            params.beta2,
            params.eps,
            params.weight_decay
        )
    );
    assert_eq!(
        AdamWConfig::from(ParamsAdamW::default()),
        AdamWConfig::default()
    );
}

/// The largest difference between two sets of tensors, relative to each tensor's largest
/// magnitude.
fn worst_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let mut worst = 0f32;
    for (a, b) in a.iter().zip(b) {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs() / scale);
        }
    }
    worst
}

#[test]
fn on_the_same_gradients_both_optimizers_give_the_same_weights_up_to_rounding() {
    // loss = sum(w * g_t) with g_t independent of w: both see exactly the same gradients.
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.1,
        ..Default::default()
    };
    let init: Vec<f32> = (0..64).map(|k| (k as f32 - 31.5) / 16.0).collect();
    let theirs = candle_core::Var::new(init.as_slice(), &Device::Cpu).unwrap();
    let ours = candle_core::Var::new(init.as_slice(), &Device::Cpu).unwrap();
    let mut candle_opt = candle_nn::AdamW::new(vec![theirs.clone()], params.clone()).unwrap();
    let mut ckpt_opt = AdamW::new(vec![ours.clone()], params.into()).unwrap();
    let mut worst = 0f32;
    for step in 0..STEPS {
        let g: Vec<f32> = (0..64)
            .map(|k| (((k * 3 + step * 7) % 17) as f32 - 8.0) / 8.0)
            .collect();
        let g = Tensor::new(g.as_slice(), &Device::Cpu).unwrap();
        candle_opt
            .backward_step(&(theirs.as_tensor() * &g).unwrap().sum_all().unwrap())
            .unwrap();
        ckpt_opt
            .backward_step(&(ours.as_tensor() * &g).unwrap().sum_all().unwrap())
            .unwrap();
        worst = worst.max(worst_difference(
            &[theirs.to_vec1::<f32>().unwrap()],
            &[ours.to_vec1::<f32>().unwrap()],
        ));
    }
    // The same update, rounded differently: candle_nn multiplies the moments by the
    // bias corrections and takes sqrt(v / (1 - beta2^t)); torch's order, kept here for
    // bit-exact resumes of torch runs, divides sqrt(v) by sqrt(1 - beta2^t) and folds lr
    // into the step size. Measured: 3.2e-8 of the scale (a float32 ulp is 6e-8 to 1.2e-7
    // of a value).
    assert!(
        worst <= 1.2e-7,
        "after {STEPS} steps the weights differ by up to {worst:e} of their scale"
    );
}

#[test]
fn through_a_network_both_optimizers_train_to_the_same_weights() {
    let params = ParamsAdamW {
        lr: 0.02,
        weight_decay: 0.05,
        ..Default::default()
    };
    let theirs = net();
    let mut candle_opt =
        candle_nn::AdamW::new(theirs.model.varmap().all_vars(), params.clone()).unwrap();
    let ours = net();
    let mut ckpt_opt = AdamW::from_model(&ours.model, params.into()).unwrap();
    assert_eq!(weights(&theirs), weights(&ours));
    let mut worst = 0f32;
    for step in 0..STEPS {
        candle_opt.backward_step(&loss(&theirs, step)).unwrap();
        ckpt_opt.backward_step(&loss(&ours, step)).unwrap();
        worst = worst.max(worst_difference(&weights(&theirs), &weights(&ours)));
    }
    // The rounding differences above, fed back through the gradients (measured: 7.2e-7).
    assert!(
        worst <= 5e-6,
        "after {STEPS} steps the weights differ by up to {worst:e} of their scale"
    );
}

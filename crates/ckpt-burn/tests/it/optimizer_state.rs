//! AdamW and SGD state in torch.optim's layout: numbering, shapes in torch's layout, round
//! trips that continue bit-identically, refusals that name what is wrong.

use burn::tensor::{Device, Tensor};
use ckpt::{Checkpointable, Value};
use ckpt_burn::{AdamW, AdamWConfig, BurnModel, Sgd, SgdConfig};

use crate::support::train_mlp::{batch, build_mlp, mse, synthetic_data, Mlp};

fn device() -> Device {
    Device::default().autodiff()
}

/// `steps` AdamW-or-SGD steps on the train_mlp batches starting at `from`.
fn train<F>(model: &mut BurnModel<Mlp>, from: u64, steps: u64, mut step: F)
where
    F: FnMut(Mlp, &burn::tensor::Gradients) -> Mlp,
{
    let data = synthetic_data();
    for iteration in from..from + steps {
        let (x, y) = batch(&data, iteration, &device());
        let module = model.module().clone();
        let grads = mse(&module, x, y).backward();
        model.set_module(step(module, &grads));
    }
}

fn bits(model: &BurnModel<Mlp>) -> Vec<Vec<u8>> {
    use ckpt::Model;
    model
        .state_dict()
        .unwrap()
        .iter()
        .map(|(_, t)| t.contiguous_bytes().to_vec())
        .collect()
}

#[test]
fn adamw_state_has_torch_layout_and_resumes_bit_identically() {
    let mut model = build_mlp(&device()).unwrap();
    let mut optimizer = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    train(&mut model, 0, 3, |m, g| optimizer.step(m, g));
    let state = optimizer.state_dict().unwrap();

    let per_param = state.get("state").and_then(Value::as_dict).unwrap();
    assert_eq!(per_param.len(), 4);
    let first = per_param.get_key(&ckpt::Key::Int(0)).unwrap();
    let exp_avg = first.get("exp_avg").and_then(Value::as_tensor).unwrap();
    assert_eq!(
        exp_avg.shape(),
        &[64, 16],
        "fc1.weight's state in torch's [out, in]"
    );
    let step = first.get("step").and_then(Value::as_tensor).unwrap();
    assert_eq!(step.to_vec::<f32>().unwrap(), [3.0]);
    let groups = state.get("param_groups").unwrap();
    let Value::List(groups) = groups else {
        panic!("{groups:?}")
    };
    let group = groups[0].as_dict().unwrap();
    assert_eq!(group.get("lr").and_then(Value::as_float), Some(1e-3));
    assert_eq!(
        group
            .get("params")
            .map(|p| format!("{p:?}"))
            .unwrap()
            .matches("Int")
            .count(),
        4
    );

    // Through a file, into a fresh optimizer: the next steps are the same to the bit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.pth");
    ckpt::format::save_torch(&path, &state, &Default::default()).unwrap();
    let mut copy = model.clone();
    let mut resumed = AdamW::from_model(
        &copy,
        AdamWConfig {
            lr: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    resumed
        .load_state_dict(ckpt::format::load(&path).unwrap())
        .unwrap();
    assert_eq!(resumed.config().lr, 1e-3, "the file's hyper-parameters win");
    train(&mut model, 3, 2, |m, g| optimizer.step(m, g));
    train(&mut copy, 3, 2, |m, g| resumed.step(m, g));
    assert_eq!(bits(&model), bits(&copy));
}

#[test]
fn sgd_momentum_state_round_trips() {
    let mut model = build_mlp(&device()).unwrap();
    let config = SgdConfig::new(0.05).with_momentum(0.9);
    let mut optimizer = Sgd::from_model(&model, config).unwrap();
    train(&mut model, 0, 2, |m, g| optimizer.step(m, g));
    let state = optimizer.state_dict().unwrap();
    let per_param = state.get("state").and_then(Value::as_dict).unwrap();
    let buf = per_param
        .get_key(&ckpt::Key::Int(2))
        .and_then(|e| e.get("momentum_buffer"))
        .and_then(Value::as_tensor)
        .unwrap();
    assert_eq!(buf.shape(), &[4, 64]);
    let mut copy = model.clone();
    let mut resumed = Sgd::from_model(&copy, SgdConfig::new(1.0)).unwrap();
    resumed.load_state_dict(state).unwrap();
    train(&mut model, 2, 3, |m, g| optimizer.step(m, g));
    train(&mut copy, 2, 3, |m, g| resumed.step(m, g));
    assert_eq!(bits(&model), bits(&copy));
}

#[test]
fn a_state_for_another_model_is_refused_with_the_reason() {
    let model = build_mlp(&device()).unwrap();
    let mut optimizer = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    // A single Linear's state: 2 parameters, not 4.
    let small = BurnModel::new(burn::nn::LinearConfig::new(2, 3).init(&device()));
    let mut other = AdamW::from_model(&small, AdamWConfig::default()).unwrap();
    let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device());
    let module = other.step(
        small.module().clone(),
        &small.module().forward(x).sum().backward(),
    );
    drop(module);
    let err = optimizer
        .load_state_dict(other.state_dict().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("2 parameters"), "{err}");
}

#[test]
fn model_optimizer_scheduler_and_iteration_go_in_one_file_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = build_mlp(&device()).unwrap();
    let optimizer = ckpt::shared(AdamW::from_model(&model, AdamWConfig::default()).unwrap());
    let schedule = ckpt::shared(ckpt_burn::StepLr::new(1e-3, 2, 0.5).unwrap());
    for _ in 0..3 {
        let lr = schedule.lock().unwrap().step();
        optimizer.lock().unwrap().set_lr(lr);
        train(&mut model, 0, 1, |m, g| {
            optimizer.lock().unwrap().step(m, g)
        });
    }
    let mut checkpointer = ckpt::Checkpointer::new(ckpt::shared(model.clone()), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    checkpointer
        .add_checkpointable("scheduler", schedule.clone())
        .unwrap();
    let mut extra = ckpt::Dict::new();
    extra.insert("iteration", Value::Int(2));
    checkpointer.save("model_0000002", extra).unwrap();
    checkpointer
        .tag_last_checkpoint("model_0000002.pth")
        .unwrap();

    let file = ckpt::format::load(dir.path().join("model_0000002.pth")).unwrap();
    for key in ["model", "optimizer", "scheduler", "iteration"] {
        assert!(file.get(key).is_some(), "{key} not in the checkpoint");
    }

    let fresh = build_mlp(&device()).unwrap();
    let optimizer2 = ckpt::shared(AdamW::from_model(&fresh, AdamWConfig::default()).unwrap());
    let schedule2 = ckpt::shared(ckpt_burn::StepLr::new(9.0, 9, 9.0).unwrap());
    let fresh = ckpt::shared(fresh);
    let mut checkpointer = ckpt::Checkpointer::new(fresh.clone(), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer2.clone())
        .unwrap();
    checkpointer
        .add_checkpointable("scheduler", schedule2.clone())
        .unwrap();
    let extra = checkpointer.resume_or_load(None, true).unwrap();
    assert_eq!(extra.get("iteration").and_then(Value::as_int), Some(2));
    assert_eq!(*schedule2.lock().unwrap(), *schedule.lock().unwrap());
    assert_eq!(optimizer2.lock().unwrap().config().lr, 5e-4);
    assert_eq!(bits(&fresh.lock().unwrap()), bits(&model));
}

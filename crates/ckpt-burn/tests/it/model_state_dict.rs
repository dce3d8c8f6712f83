//! A burn module as a ckpt model: torch's names and layouts, round trips through torch
//! files, non-strict loads with their report, and DetectionCheckpointer's name matching.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use ckpt::{shared, Checkpointables, Checkpointer, DetectionCheckpointer, Model, StateDict};
use ckpt_burn::{BurnModel, TorchNames};

#[derive(Module, Debug)]
struct Net {
    fc: Linear,
    norm: LayerNorm,
    bn: BatchNorm,
    layers: Vec<Linear>,
}

fn net() -> Net {
    let device = Device::default();
    Net {
        fc: LinearConfig::new(3, 5).init(&device),
        norm: LayerNormConfig::new(5).init(&device),
        bn: BatchNormConfig::new(5).init(&device),
        layers: vec![
            LinearConfig::new(5, 2).init(&device),
            LinearConfig::new(2, 2).with_bias(false).init(&device),
        ],
    }
}

fn values(t: &ckpt::Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn state_dict_has_torch_names_layouts_and_order() {
    let model = BurnModel::new(net());
    let sd = model.state_dict().unwrap();
    let names: Vec<&str> = sd.keys().collect();
    assert_eq!(
        names,
        [
            "fc.weight",
            "fc.bias",
            "norm.weight",
            "norm.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
        ]
    );
    assert_eq!(sd.get("fc.weight").unwrap().shape(), &[5, 3]);
    assert_eq!(sd.get("layers.0.weight").unwrap().shape(), &[2, 5]);
    // The transposed weight holds burn's [in, out] weight transposed.
    let burn_weight = model
        .module()
        .fc
        .weight
        .val()
        .to_data()
        .try_to_vec::<f32>()
        .unwrap();
    let torch_weight = values(sd.get("fc.weight").unwrap());
    for i in 0..3 {
        for o in 0..5 {
            assert_eq!(torch_weight[o * 3 + i], burn_weight[i * 5 + o]);
        }
    }
    let burn_names = BurnModel::new(net()).with_names(TorchNames::burn());
    let sd = burn_names.state_dict().unwrap();
    assert!(sd.get("norm.gamma").is_some() && sd.get("bn.beta").is_some());
    assert_eq!(sd.get("fc.weight").unwrap().shape(), &[3, 5]);
}

#[test]
fn a_saved_torch_file_loads_back_into_another_module_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let source = shared(BurnModel::new(net()));
    Checkpointer::new(source.clone(), dir.path())
        .save("weights", ckpt::Dict::new())
        .unwrap();
    let target = shared(BurnModel::new(net()));
    let report = Checkpointer::new(target.clone(), dir.path())
        .load_with_report(dir.path().join("weights.pth"), Checkpointables::All)
        .unwrap();
    assert!(
        report.incompatible.missing_keys.is_empty(),
        "{:?}",
        report.incompatible
    );
    assert_eq!(report.loaded.len(), 11);
    let a = source.lock().unwrap().state_dict().unwrap();
    let b = target.lock().unwrap().state_dict().unwrap();
    for (name, t) in a.iter() {
        assert!(t.data_eq(b.get(name).unwrap()), "{name}");
    }
    // The module computes with the loaded weights.
    let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &Device::default());
    let ya = source
        .lock()
        .unwrap()
        .module()
        .fc
        .forward(x.clone())
        .to_data();
    let yb = target.lock().unwrap().module().fc.forward(x).to_data();
    assert_eq!(ya, yb);
}

#[test]
fn non_strict_load_reports_missing_unexpected_and_shape_mismatches() {
    let mut model = BurnModel::new(net());
    let mut sd = model.state_dict().unwrap();
    let before = values(sd.get("fc.bias").unwrap());
    sd.insert(
        "fc.weight",
        ckpt::Tensor::zeros(ckpt::DType::Float32, &[3, 5]).unwrap(),
    );
    sd.insert(
        "fc.bias",
        ckpt::Tensor::from_slice(&[1f64, 2., 3., 4., 5.], &[5]).unwrap(),
    );
    sd.remove("norm.bias");
    sd.insert(
        "bn.num_batches_tracked",
        ckpt::Tensor::zeros(ckpt::DType::Int64, &[]).unwrap(),
    );
    let report = model.load_non_strict(sd).unwrap();
    // As in torch: an entry skipped for its shape leaves the parameter missing, too.
    assert_eq!(report.missing_keys, ["fc.weight", "norm.bias"]);
    assert_eq!(report.unexpected_keys, ["bn.num_batches_tracked"]);
    assert_eq!(report.incorrect_shapes.len(), 1);
    assert_eq!(report.incorrect_shapes[0].model_key, "fc.weight");
    let loaded = model.state_dict().unwrap();
    // float64 converted to the parameter's float32.
    assert_eq!(values(loaded.get("fc.bias").unwrap()), [1., 2., 3., 4., 5.]);
    assert_ne!(values(loaded.get("fc.bias").unwrap()), before);
}

#[test]
fn a_strict_load_with_a_wrong_shape_names_the_key_and_changes_nothing() {
    let mut model = BurnModel::new(net());
    let before = model.state_dict().unwrap();
    let mut sd = StateDict::new();
    sd.insert(
        "fc.bias",
        ckpt::Tensor::zeros(ckpt::DType::Float32, &[5]).unwrap(),
    );
    sd.insert(
        "layers.0.weight",
        ckpt::Tensor::zeros(ckpt::DType::Float32, &[5, 2]).unwrap(),
    );
    let err = model.load_state_dict(sd).unwrap_err();
    assert!(err.to_string().contains("layers.0.weight"), "{err}");
    let after = model.state_dict().unwrap();
    for (name, t) in before.iter() {
        assert!(t.data_eq(after.get(name).unwrap()), "{name} changed");
    }
}

#[test]
fn detection_checkpointer_matches_prefixed_names() {
    let dir = tempfile::tempdir().unwrap();
    // A torch file whose keys carry a wrapper's prefix (DistributedDataParallel's `module.`).
    let source = BurnModel::new(net()).state_dict().unwrap();
    let mut prefixed = StateDict::new();
    for (name, t) in source.iter() {
        prefixed.insert(format!("module.{name}"), t.clone());
    }
    let mut top = ckpt::Dict::new();
    top.insert("model", prefixed.to_value());
    let path = dir.path().join("wrapped.pth");
    ckpt::format::save_torch(&path, &ckpt::Value::Dict(top), &Default::default()).unwrap();

    let target = shared(BurnModel::new(net()));
    DetectionCheckpointer::new(target.clone(), dir.path())
        .load(path.to_str().unwrap(), Checkpointables::All)
        .unwrap();
    let loaded = target.lock().unwrap().state_dict().unwrap();
    for (name, t) in source.iter() {
        assert!(t.data_eq(loaded.get(name).unwrap()), "{name}");
    }
}

//! The parameter order of a `VarMapModel`: names given by hand must all be variables (a typo
//! is an error, not a parameter silently numbered elsewhere), and the order can be taken from
//! a checkpoint: an fvcore file (committed) and files torch writes live, whose optimizer state
//! then loads onto the right parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{batch_norm, linear, VarBuilder, VarMap};
use ckpt::{Checkpointable, Key, Value};
use ckpt_candle::{AdamW, AdamWConfig, ParamOrder, Sgd, SgdConfig, VarMapModel};

use crate::support::{interop_script, python, repo_file};

/// `linear(2, 3)` as `0` and `batch_norm(3)` as `1`: the network of the fvcore fixture.
fn fvcore_net() -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    linear(2, 3, vb.pp("0")).unwrap();
    batch_norm(3, 1e-5, vb.pp("1")).unwrap();
    varmap
}

fn fvcore_checkpoint() -> PathBuf {
    repo_file("crates/ckpt-cli/tests/fixtures/fvcore_run/model_final.pth")
}

#[test]
fn with_order_refuses_names_the_varmap_lacks_and_lists_them() {
    let err = VarMapModel::new(fvcore_net())
        .with_order(["0.weight", "0.bais", "2.weight", "0.bias"])
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("0.bais, 2.weight") && message.contains("does not have"),
        "{message}"
    );
    // The names it does have, to spot the typo.
    assert!(message.contains("0.bias, 0.weight, 1.bias"), "{message}");
}

#[test]
fn with_order_refuses_a_name_listed_twice() {
    let err = VarMapModel::new(fvcore_net())
        .with_order(["0.weight", "0.bias", "0.weight"])
        .unwrap_err();
    assert!(err.to_string().contains("0.weight more than once"), "{err}");
}

#[test]
fn the_order_of_an_fvcore_checkpoint_passes_over_buffers_candle_lacks() {
    let order = ParamOrder::from_file(fvcore_checkpoint()).unwrap();
    assert!(
        order.source().contains("'model' entry") && order.source().contains("model_final.pth"),
        "{}",
        order.source()
    );
    assert_eq!(order.names().len(), 7);
    let model = VarMapModel::new(fvcore_net())
        .with_param_order(&order)
        .unwrap();
    // torch's order (parameters, then each module's buffers), not the sorted one;
    // `1.num_batches_tracked` has no candle variable and is passed over.
    assert_eq!(
        model.names(),
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var"
        ]
    );
}

#[test]
fn a_variable_the_file_order_lacks_is_an_error_until_it_is_placed() {
    let varmap = fvcore_net();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    linear(3, 5, vb.pp("new_head")).unwrap();
    let order = ParamOrder::from_file(fvcore_checkpoint()).unwrap();
    let err = VarMapModel::new(varmap.clone())
        .with_param_order(&order)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("2 of the VarMap's 8 variables")
            && message.contains("new_head.bias, new_head.weight")
            && message.contains("ParamOrder::then"),
        "{message}"
    );
    let model = VarMapModel::new(varmap)
        .with_param_order(&order.then(["new_head.weight", "new_head.bias"]))
        .unwrap();
    assert_eq!(
        model.names()[4..],
        [
            "1.running_mean",
            "1.running_var",
            "new_head.weight",
            "new_head.bias"
        ]
    );
}

#[test]
fn fvcore_sgd_state_loads_into_an_optimizer_over_the_parameters_without_buffers() {
    let order = ParamOrder::from_file(fvcore_checkpoint()).unwrap();
    let model = VarMapModel::new(fvcore_net())
        .with_param_order(&order)
        .unwrap();
    // torch numbers parameters only; candle's batch norm keeps its statistics as variables.
    let params: Vec<_> = model
        .vars()
        .into_iter()
        .filter(|(name, _)| !name.contains("running_"))
        .collect();
    let mut optimizer = Sgd::from_named_vars(params, SgdConfig::default()).unwrap();
    let checkpoint = ckpt::format::load(fvcore_checkpoint()).unwrap();
    let saved = checkpoint.get("optimizer").unwrap();
    optimizer.load_state_dict(saved.clone()).unwrap();
    assert_eq!(
        (optimizer.config().lr, optimizer.config().momentum),
        (0.1, 0.9)
    );
    let state = optimizer.state_dict().unwrap();
    for index in 0..4 {
        let buffer = |state: &Value| {
            state
                .get("state")
                .and_then(Value::as_dict)
                .and_then(|s| s.get_key(&Key::Int(index)))
                .and_then(|e| e.get("momentum_buffer"))
                .and_then(Value::as_tensor)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(buffer(&state), buffer(saved), "state[{index}]");
    }
}

#[test]
fn an_optimizer_state_without_param_names_gives_no_order() {
    let checkpoint = ckpt::format::load(fvcore_checkpoint()).unwrap();
    let err = ParamOrder::of_optimizer_state(checkpoint.get("optimizer").unwrap()).unwrap_err();
    assert!(err.to_string().contains("named_parameters"), "{err}");
}

// ---- Orders of files torch writes live ----

#[derive(serde::Deserialize)]
struct TorchSide {
    /// file → parameter name → torch's exp_avg.
    exp_avg: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

/// torch_pretrained.py's `Mlp` (stem, head) in a VarMap.
fn mlp() -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    linear(4, 8, vb.pp("stem")).unwrap();
    linear(8, 2, vb.pp("head")).unwrap();
    varmap
}

/// The order from `file` makes the candle AdamW take torch's optimizer state onto the
/// parameters torch had it for.
fn assert_state_loads_by_name(dir: &Path, file: &str, source: &str, torch: &TorchSide) {
    let path = dir.join(file);
    let order = ParamOrder::from_file(&path).unwrap();
    assert!(order.source().contains(source), "{}", order.source());
    let model = VarMapModel::new(mlp()).with_param_order(&order).unwrap();
    let names = model.names();
    assert_eq!(
        names,
        ["stem.weight", "stem.bias", "head.weight", "head.bias"]
    );
    let mut optimizer = AdamW::from_model(&model, AdamWConfig::default()).unwrap();
    let checkpoint = ckpt::format::load(&path).unwrap();
    optimizer
        .load_state_dict(checkpoint.get("optimizer").unwrap().clone())
        .unwrap();
    let state = optimizer.state_dict().unwrap();
    for (index, name) in names.iter().enumerate() {
        let exp_avg = state
            .get("state")
            .and_then(Value::as_dict)
            .and_then(|s| s.get_key(&Key::Int(index as i64)))
            .and_then(|e| e.get("exp_avg"))
            .and_then(Value::as_tensor)
            .unwrap();
        // JSON carries torch's float32 values as the nearest shortest decimal.
        let expected: Vec<f32> = torch.exp_avg[file][name]
            .iter()
            .map(|v| *v as f32)
            .collect();
        assert_eq!(exp_avg.to_vec::<f32>().unwrap(), expected, "{file}: {name}");
    }
}

#[test]
fn torch_orders_from_optimizer_param_names_or_the_model_entry_load_the_state_by_name() {
    let Some(python) =
        python::interop_python("the parameter-order interop test", "torch, safetensors")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = interop_script("candle/torch_pretrained.py");
    let line = python::run_script_last_line(&python, &script, &[dir.path().to_str().unwrap()]);
    let torch: TorchSide = serde_json::from_str(&line).unwrap();
    assert_state_loads_by_name(
        dir.path(),
        "mlp_named.pth",
        "param_names of the 'optimizer' entry",
        &torch,
    );
    assert_state_loads_by_name(dir.path(), "mlp_unnamed.pth", "'model' entry", &torch);
}

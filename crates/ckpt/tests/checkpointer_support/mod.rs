//! Helpers shared by the checkpointer, periodic and crash tests.
#![allow(dead_code)]

#[path = "../log_capture/mod.rs"]
mod log_capture;
#[allow(unused_imports)] // not every test file captures logs
pub use log_capture::capture_logs;

use ckpt::{shared, Checkpointable, Result, Shared, StateDict, StateDictModel, Tensor, Value};

/// A model with two layers whose values are all `fill`.
pub fn model_state(fill: f32) -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        "layer1.weight",
        Tensor::from_slice(&[fill; 6], &[2, 3]).unwrap(),
    );
    sd.insert("layer1.bias", Tensor::from_slice(&[fill; 2], &[2]).unwrap());
    sd.insert(
        "layer2.weight",
        Tensor::from_slice(&[fill; 4], &[2, 2]).unwrap(),
    );
    sd.insert("layer2.bias", Tensor::from_slice(&[fill; 2], &[2]).unwrap());
    sd
}

pub fn model(fill: f32) -> Shared<StateDictModel> {
    shared(StateDictModel::new(model_state(fill)))
}

/// Whether two state dicts have the same names, in order, and the same tensors.
pub fn same_state(a: &StateDict, b: &StateDict) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((na, ta), (nb, tb))| na == nb && ta.data_eq(tb))
}

pub fn state_of(model: &Shared<StateDictModel>) -> StateDict {
    model.lock().unwrap().tensors().clone()
}

/// A checkpointable counter whose state is a plain int; it rejects anything else.
#[derive(Debug, Default)]
pub struct Counter(pub i64);

impl Checkpointable for Counter {
    fn state_dict(&self) -> Result<Value> {
        Ok(Value::Int(self.0))
    }
    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        self.0 = state.as_int().ok_or_else(|| {
            ckpt::Error::invalid(format!("expected an int, got a {}", state.type_name()))
        })?;
        Ok(())
    }
}

//! Helpers shared by the DetectionCheckpointer tests: log capture, models and files.
#![allow(dead_code)] // each test file uses a different subset

#[path = "../log_capture/mod.rs"]
mod log_capture;
pub use log_capture::{at, captured};

use std::path::{Path, PathBuf};

use ckpt::{DType, Shared, StateDict, StateDictModel, Tensor};

/// A committed fixture under `tests/fixtures/detection/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/detection")
        .join(name)
}

pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(DType::Float32, shape).unwrap()
}

/// A tensor whose values are `start, start + 1, ...`.
pub fn counting(start: f32, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
    Tensor::from_slice(&values, shape).unwrap()
}

/// A model of zero tensors with these names and shapes.
pub fn zero_model<'a>(
    shapes: impl IntoIterator<Item = (&'a str, &'a [usize])>,
) -> Shared<StateDictModel> {
    let sd: StateDict = shapes
        .into_iter()
        .map(|(name, shape)| (name.to_string(), zeros(shape)))
        .collect();
    ckpt::shared(StateDictModel::new(sd))
}

/// The values of the model's tensor `name`.
pub fn values(model: &Shared<StateDictModel>, name: &str) -> Vec<f32> {
    model
        .lock()
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("the model has no {name}"))
        .to_vec::<f32>()
        .unwrap()
}

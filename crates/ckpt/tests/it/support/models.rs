//! Small models and tensors the checkpointer, detection and matching tests load into.

use ckpt::{
    shared, Checkpointable, DType, Result, Shared, StateDict, StateDictModel, Tensor, Value,
};

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

/// [`model_state`] as a shared model.
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

/// The tensors of `model` now.
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

/// A float32 tensor of zeros.
pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(DType::Float32, shape).unwrap()
}

/// A float32 tensor whose values are `start, start + 1, ...`.
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
    shared(StateDictModel::new(sd))
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

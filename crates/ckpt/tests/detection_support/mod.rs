//! Helpers shared by the DetectionCheckpointer tests: log capture, models and files.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ckpt::{DType, Shared, StateDict, StateDictModel, Tensor};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

pub type Lines = Arc<Mutex<Vec<(Level, String)>>>;

/// Records the message of every event.
pub struct Capture(pub Lines);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` and returns what it logged on this thread.
pub fn captured<T>(f: impl FnOnce() -> T) -> (T, Vec<(Level, String)>) {
    let lines = Lines::default();
    let out = tracing::subscriber::with_default(Capture(lines.clone()), f);
    let lines = lines.lock().unwrap().clone();
    (out, lines)
}

/// The messages logged at `level`.
pub fn at(lines: &[(Level, String)], level: Level) -> Vec<&str> {
    lines
        .iter()
        .filter(|(l, _)| *l == level)
        .map(|(_, m)| m.as_str())
        .collect()
}

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

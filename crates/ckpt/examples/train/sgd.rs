//! Stochastic gradient descent with momentum, as `torch.optim.SGD` computes it, whose state
//! is checkpointed in torch's own `state_dict()` layout so that Python and Rust runs resume
//! each other:
//! `{"state": {0: {"momentum_buffer": T}, ..}, "param_groups": [{"lr": .., "params": [0, ..], ..}]}`.

// Also compiled into the interop test, which uses a different subset.
#![allow(dead_code)]

use ckpt::{Checkpointable, Dict, Error, Key, Result, Tensor, Value};

pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    shapes: Vec<Vec<usize>>,
    /// One momentum buffer per parameter, created by the first step.
    buffers: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    pub fn new(shapes: Vec<Vec<usize>>, lr: f64, momentum: f64) -> Sgd {
        let buffers = vec![None; shapes.len()];
        Sgd {
            lr,
            momentum,
            shapes,
            buffers,
        }
    }

    /// One update: `buf = momentum * buf + grad` (`buf = grad` at first), `p -= lr * buf`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        let (lr, momentum) = (self.lr as f32, self.momentum as f32);
        for ((param, grad), buffer) in params.iter_mut().zip(grads).zip(&mut self.buffers) {
            let buf = match buffer {
                Some(buf) => {
                    for (b, g) in buf.iter_mut().zip(grad) {
                        *b = *b * momentum + g;
                    }
                    buf
                }
                None => buffer.insert(grad.clone()),
            };
            for (p, b) in param.iter_mut().zip(buf.iter()) {
                *p -= lr * b;
            }
        }
    }

    /// The momentum buffers (for comparisons in tests).
    pub fn buffers(&self) -> &[Option<Vec<f32>>] {
        &self.buffers
    }
}

impl Checkpointable for Sgd {
    fn state_dict(&self) -> Result<Value> {
        let mut state = Dict::new();
        for (index, (buffer, shape)) in self.buffers.iter().zip(&self.shapes).enumerate() {
            if let Some(buf) = buffer {
                let mut entry = Dict::new();
                entry.insert(
                    "momentum_buffer",
                    Value::Tensor(Tensor::from_slice(buf, shape)?),
                );
                state.insert(index as i64, Value::Dict(entry));
            }
        }
        let mut group = Dict::new();
        group.insert("lr", Value::Float(self.lr));
        group.insert("momentum", Value::Float(self.momentum));
        group.insert("dampening", Value::Int(0));
        group.insert("weight_decay", Value::Int(0));
        group.insert("nesterov", Value::Bool(false));
        group.insert("maximize", Value::Bool(false));
        group.insert("foreach", Value::None);
        group.insert("differentiable", Value::Bool(false));
        group.insert("fused", Value::None);
        let params = (0..self.shapes.len() as i64).map(Value::Int).collect();
        group.insert("params", Value::List(params));
        let mut out = Dict::new();
        out.insert("state", Value::Dict(state));
        out.insert("param_groups", Value::List(vec![Value::Dict(group)]));
        Ok(Value::Dict(out))
    }

    fn load_state_dict(&mut self, state: Value) -> Result<()> {
        let groups = match state.get("param_groups") {
            Some(Value::List(groups)) => groups,
            _ => {
                return Err(Error::key(
                    "param_groups",
                    "expected a list of parameter groups",
                ))
            }
        };
        let [group] = groups.as_slice() else {
            return Err(Error::key(
                "param_groups",
                "expected exactly one parameter group",
            ));
        };
        let number = |key: &str| {
            group
                .get(key)
                .and_then(Value::as_float)
                .ok_or_else(|| Error::key(key, "expected a number in the parameter group"))
        };
        let (lr, momentum) = (number("lr")?, number("momentum")?);
        let params = match group.get("params") {
            Some(Value::List(p)) => p.len(),
            _ => return Err(Error::key("params", "expected a list of parameter ids")),
        };
        if params != self.shapes.len() {
            return Err(Error::key(
                "params",
                format!(
                    "the group has {params} parameters, the model {}",
                    self.shapes.len()
                ),
            ));
        }
        let entries = state
            .get("state")
            .and_then(Value::as_dict)
            .ok_or_else(|| Error::key("state", "expected a dict of per-parameter state"))?;
        let mut buffers = vec![None; self.shapes.len()];
        for (key, entry) in entries.iter() {
            let index = match key {
                Key::Int(i) => usize::try_from(*i).ok().filter(|i| *i < self.shapes.len()),
                _ => None,
            }
            .ok_or_else(|| Error::key(key.to_string(), "not a parameter index"))?;
            let tensor = entry
                .get("momentum_buffer")
                .and_then(Value::as_tensor)
                .ok_or_else(|| Error::key(format!("state.{index}"), "no momentum_buffer tensor"))?;
            if tensor.shape() != self.shapes[index].as_slice() {
                return Err(Error::key(
                    format!("state.{index}.momentum_buffer"),
                    format!(
                        "shape {:?}, expected {:?}",
                        tensor.shape(),
                        self.shapes[index]
                    ),
                ));
            }
            buffers[index] = Some(tensor.to_vec::<f32>()?);
        }
        // Validated as a whole before anything changes.
        self.lr = lr;
        self.momentum = momentum;
        self.buffers = buffers;
        Ok(())
    }

    /// The buffers are copied into vectors of its own: the checkpointer need not copy them
    /// out of the file first.
    fn keeps_loaded_tensors(&self) -> bool {
        false
    }
}

//! In-memory state for the Rust contenders (pseudo-random float32, built before the timer
//! starts) and the "touch every byte" pass that loads are measured with.

use ckpt::{DType, Dict, StateDict, Tensor, Value};

use crate::spec::{Detectron, TensorSpec};

/// Fills `len` bytes with pseudo-random float32 values in [-1, 1) (xorshift; no zero pages
/// the kernel or a compressor could shortcut).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() + 4 <= len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let unit = f32::from_bits(0x3F80_0000 | (state >> 41) as u32) - 1.0;
        out.extend_from_slice(&(unit * 2.0 - 1.0).to_le_bytes());
    }
    out.resize(len, 0);
    out
}

/// A float32 tensor of `spec`'s shape filled with pseudo-random values.
pub fn random_tensor(spec: &TensorSpec, seed: u64) -> ckpt::Result<Tensor> {
    Tensor::from_bytes(
        DType::Float32,
        &spec.shape,
        random_bytes(spec.nbytes() as usize, seed),
    )
}

/// A state dict of pseudo-random tensors named and shaped as `specs`.
pub fn random_state(specs: &[TensorSpec]) -> ckpt::Result<StateDict> {
    let mut state = StateDict::new();
    for (i, spec) in specs.iter().enumerate() {
        state.insert(spec.name.clone(), random_tensor(spec, i as u64 + 1)?);
    }
    Ok(state)
}

/// A float32 tensor of zeros whose memory has been written, as `torch.zeros` writes it (and
/// as a model's initialised weights are): a load into it needs no new pages.
/// `Tensor::zeros` instead leaves its pages to be provided when first written.
pub fn written_zeros(shape: &[usize]) -> ckpt::Result<Tensor> {
    let len = shape.iter().product::<usize>() * DType::Float32.size();
    let mut bytes = vec![0u8; len];
    // Written, so that every page is there (a zeroed allocation has none yet); the values
    // are zeros again before the model is used.
    bytes.fill(1);
    std::hint::black_box(&mut bytes);
    bytes.fill(0);
    Tensor::from_bytes(DType::Float32, shape, bytes)
}

/// The detection model's state dict, zero-filled (`zeros`, written as `torch.zeros` does)
/// or pseudo-random.
pub fn detectron_model(spec: &Detectron, zeros: bool) -> ckpt::Result<StateDict> {
    let mut state = StateDict::new();
    for (i, t) in spec.model.iter().enumerate() {
        let tensor = if zeros {
            written_zeros(&t.tensor.shape)?
        } else {
            random_tensor(&t.tensor, i as u64 + 1)?
        };
        state.insert(t.tensor.name.clone(), tensor);
    }
    Ok(state)
}

/// `torch.optim.SGD(trainable params, lr, momentum).state_dict()` after a step: a momentum
/// buffer for every trainable parameter, keyed by its index in the optimizer.
pub fn sgd_state(spec: &Detectron) -> ckpt::Result<Value> {
    let params: Vec<&TensorSpec> = spec
        .model
        .iter()
        .filter(|t| !t.buffer && t.trainable)
        .map(|t| &t.tensor)
        .collect();
    let mut state = Dict::new();
    for (index, t) in params.iter().enumerate() {
        let mut entry = Dict::new();
        entry.insert(
            "momentum_buffer",
            Value::Tensor(random_tensor(t, 1_000 + index as u64)?),
        );
        state.insert(index as i64, Value::Dict(entry));
    }
    let mut group = Dict::new();
    group.insert("lr", Value::Float(spec.lr));
    group.insert("momentum", Value::Float(spec.momentum));
    group.insert("dampening", Value::Int(0));
    group.insert("weight_decay", Value::Float(0.0001));
    group.insert("nesterov", Value::Bool(false));
    group.insert("maximize", Value::Bool(false));
    group.insert("foreach", Value::None);
    group.insert("differentiable", Value::Bool(false));
    group.insert("fused", Value::None);
    group.insert(
        "params",
        Value::List((0..params.len() as i64).map(Value::Int).collect()),
    );
    let mut out = Dict::new();
    out.insert("state", Value::Dict(state));
    out.insert("param_groups", Value::List(vec![Value::Dict(group)]));
    Ok(Value::Dict(out))
}

/// Reads every byte of `bytes` (summed as little-endian u64 words) so that lazily mapped
/// data is really brought in; returns the sum.
pub fn touch_bytes(bytes: &[u8]) -> u64 {
    let word = |w: &[u8]| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(w);
        u64::from_le_bytes(raw)
    };
    // Eight independent sums so the compiler vectorises the loop.
    let mut blocks = bytes.chunks_exact(64);
    let mut lanes = [0u64; 8];
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = lane.wrapping_add(word(w));
        }
    }
    let mut words = blocks.remainder().chunks_exact(8);
    let mut sum = lanes.iter().fold(0u64, |acc, &l| acc.wrapping_add(l));
    for w in &mut words {
        sum = sum.wrapping_add(word(w));
    }
    words
        .remainder()
        .iter()
        .fold(sum, |acc, &b| acc.wrapping_add(u64::from(b)))
}

/// Touches the bytes of every tensor in `value` (nested dicts and lists included).
pub fn touch_value(value: &Value) -> u64 {
    match value {
        Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => {
            touch_bytes(&t.contiguous_bytes())
        }
        Value::Dict(d) => d
            .iter()
            .fold(0u64, |acc, (_, v)| acc.wrapping_add(touch_value(v))),
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .fold(0u64, |acc, v| acc.wrapping_add(touch_value(v))),
        _ => 0,
    }
}

/// Touches every tensor of a state dict.
pub fn touch_state(state: &StateDict) -> u64 {
    state.iter().fold(0u64, |acc, (_, t)| {
        acc.wrapping_add(touch_bytes(&t.contiguous_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_sums_every_word_and_the_tail() {
        let mut bytes = Vec::new();
        for i in 1..=20u64 {
            bytes.extend_from_slice(&i.to_le_bytes());
        }
        bytes.extend_from_slice(&[5, 6]);
        assert_eq!(touch_bytes(&bytes), 210 + 11);
    }

    #[test]
    fn random_values_are_finite_and_in_range() {
        let t = random_tensor(
            &TensorSpec {
                name: "x".into(),
                shape: vec![1000],
            },
            3,
        )
        .unwrap();
        let v = t.to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(v.iter().any(|x| *x != v[0]));
    }
}

//! A two-layer perceptron in plain f32 math on synthetic data: enough of a real optimisation
//! to show that a resumed run ends exactly where an uninterrupted one does.
//!
//! Parameter names and shapes match `torch.nn.Linear` layers `fc1` (4 -> 8) and `fc2`
//! (8 -> 1), so a Python model with the same layers shares checkpoints with this one.

// Also compiled into the interop test, which uses a different subset.
#![allow(dead_code)]

use ckpt::{Result, Shared, StateDict, StateDictModel, Tensor};

pub const INPUTS: usize = 4;
pub const HIDDEN: usize = 8;
pub const SAMPLES: usize = 64;

/// The parameter names, in the order of `nn.Module.state_dict()` and of the optimizer.
pub const NAMES: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

/// The shapes of [`NAMES`].
pub fn shapes() -> [Vec<usize>; 4] {
    [vec![HIDDEN, INPUTS], vec![HIDDEN], vec![1, HIDDEN], vec![1]]
}

/// A 32-bit linear congruential generator giving floats in [-1, 1) that are exact in f32,
/// so Python can produce the very same numbers.
pub struct Lcg(u32);

impl Lcg {
    pub fn new(seed: u32) -> Lcg {
        Lcg(seed)
    }

    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (self.0 >> 8) as f32 / 16_777_216.0 * 2.0 - 1.0
    }
}

/// Inputs (`SAMPLES x INPUTS`, row-major) and targets of a smooth nonlinear function.
pub struct Data {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

pub fn synthetic_data() -> Data {
    let mut rng = Lcg::new(7);
    let x: Vec<f32> = (0..SAMPLES * INPUTS).map(|_| rng.next()).collect();
    let y = x
        .chunks_exact(INPUTS)
        .map(|r| 0.5 * r[0] - r[1] * r[2] + 0.3 * r[3] * r[3])
        .collect();
    Data { x, y }
}

/// Small deterministic initial weights.
pub fn initial_state() -> Result<StateDict> {
    let mut rng = Lcg::new(42);
    let mut state = StateDict::new();
    for (name, shape) in NAMES.iter().zip(shapes()) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| 0.5 * rng.next()).collect();
        state.insert(*name, Tensor::from_slice(&values, &shape)?);
    }
    Ok(state)
}

/// The parameters of `model` as flat f32 vectors, in [`NAMES`] order.
pub fn read_params(model: &Shared<StateDictModel>) -> Result<Vec<Vec<f32>>> {
    let model = model
        .lock()
        .map_err(|_| ckpt::Error::invalid("model lock poisoned"))?;
    NAMES
        .iter()
        .map(|name| {
            model
                .get(name)
                .ok_or_else(|| ckpt::Error::key(*name, "missing from the model"))?
                .to_vec::<f32>()
        })
        .collect()
}

/// Writes flat parameters back into `model`.
pub fn write_params(model: &Shared<StateDictModel>, params: &[Vec<f32>]) -> Result<()> {
    let mut model = model
        .lock()
        .map_err(|_| ckpt::Error::invalid("model lock poisoned"))?;
    for ((name, shape), values) in NAMES.iter().zip(shapes()).zip(params) {
        model.set(name, Tensor::from_slice(values, &shape)?);
    }
    Ok(())
}

/// Mean squared error of the model on `data`, and its gradient for each parameter.
pub fn loss_and_grads(params: &[Vec<f32>], data: &Data) -> (f32, Vec<Vec<f32>>) {
    let (w1, b1, w2, b2) = (&params[0], &params[1], &params[2], &params[3]);
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut loss = 0.0f32;
    let scale = 2.0 / SAMPLES as f32;
    for (x, y) in data.x.chunks_exact(INPUTS).zip(&data.y) {
        let mut h = [0.0f32; HIDDEN];
        for (j, hj) in h.iter_mut().enumerate() {
            let z: f32 = b1[j] + (0..INPUTS).map(|i| w1[j * INPUTS + i] * x[i]).sum::<f32>();
            *hj = z.tanh();
        }
        let out = b2[0] + (0..HIDDEN).map(|j| w2[j] * h[j]).sum::<f32>();
        let err = out - y;
        loss += err * err;
        let d_out = scale * err;
        grads[3][0] += d_out;
        for j in 0..HIDDEN {
            grads[2][j] += d_out * h[j];
            let dz = d_out * w2[j] * (1.0 - h[j] * h[j]);
            grads[1][j] += dz;
            for i in 0..INPUTS {
                grads[0][j * INPUTS + i] += dz * x[i];
            }
        }
    }
    (loss / SAMPLES as f32, grads)
}

/// FNV-1a over the bits of every parameter: equal checksums mean bit-identical weights.
pub fn checksum(params: &[Vec<f32>]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for value in params.iter().flatten() {
        for byte in value.to_bits().to_le_bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

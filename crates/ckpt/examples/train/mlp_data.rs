//! The network's sizes and the synthetic data of the MLP training examples of the framework
//! adapters (candle, burn): the same numbers in both, and in the PyTorch side of their interop
//! tests, so a run is a pure function of its seeds whatever trains it.

/// Inputs of the network.
pub const IN: usize = 16;
/// Width of its hidden layer.
pub const HIDDEN: usize = 64;
/// Outputs of the network.
pub const OUT: usize = 4;
/// Samples in the data set.
pub const SAMPLES: usize = 512;
/// Samples in a batch.
pub const BATCH: usize = 32;
/// The seed of the data and of its shuffles.
pub const DATA_SEED: u64 = 2024;
/// The seed of the initial weights.
pub const INIT_SEED: u64 = 7;

/// SplitMix64: the data and the initial weights come from it, so a run is a pure function of
/// its seeds (and the PyTorch side of the interop tests, `torch_mlp.py`, generates the same data).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), exactly representable in f32.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// The synthetic regression data: `x` uniform, `y[j] = x[j] * x[j + 4] + 0.5 * x[j + 8]`.
pub struct Data {
    /// `SAMPLES x IN` inputs, row-major.
    pub x: Vec<f32>,
    /// `SAMPLES x OUT` targets, row-major.
    pub y: Vec<f32>,
}

/// The data set (the same in every run).
pub fn synthetic_data() -> Data {
    let mut rng = SplitMix64(DATA_SEED);
    let x: Vec<f32> = (0..SAMPLES * IN).map(|_| rng.next_f32()).collect();
    let mut y = Vec::with_capacity(SAMPLES * OUT);
    for row in x.chunks_exact(IN) {
        for j in 0..OUT {
            y.push(row[j] * row[j + 4] + 0.5 * row[j + 8]);
        }
    }
    Data { x, y }
}

/// The sample indices of the batch trained at `iteration`: each epoch visits the samples in
/// a Fisher–Yates shuffle seeded by the epoch, so the data position needs no state.
pub fn batch_indices(iteration: u64) -> Vec<usize> {
    let per_epoch = (SAMPLES / BATCH) as u64;
    let epoch = iteration / per_epoch;
    let mut rng = SplitMix64(DATA_SEED ^ epoch.wrapping_mul(0x5851_F42D_4C95_7F2D));
    let mut order: Vec<usize> = (0..SAMPLES).collect();
    for i in (1..SAMPLES).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let start = (iteration % per_epoch) as usize * BATCH;
    order[start..start + BATCH].to_vec()
}

//! The workloads: names and shapes of every tensor, written to `spec.json` so that the Rust
//! and the Python contenders build exactly the same state.

use serde::{Deserialize, Serialize};

/// One tensor of a workload: its name and shape (all workloads are float32).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: impl Into<String>, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// Bytes of float32 data.
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * 4
    }
}

/// A tensor of the detection model: a parameter (trainable or frozen) or a buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelTensor {
    #[serde(flatten)]
    pub tensor: TensorSpec,
    /// Registered as a buffer (FrozenBatchNorm statistics and affine terms) or a parameter.
    pub buffer: bool,
    /// Gets a gradient, hence an SGD momentum buffer (detectron2 freezes the stem and res2).
    pub trainable: bool,
}

/// The training checkpoint of a ResNet-50-FPN detector as `Checkpointer.save` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detectron {
    pub model: Vec<ModelTensor>,
    pub iteration: i64,
    pub lr: f64,
    pub momentum: f64,
    /// File name (without `.pth`) the checkpoint is saved under.
    pub name: String,
}

/// Name matching: `keys` model keys against as many checkpoint keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matching {
    pub keys: usize,
    /// Sizes at which the quadratic Python rule is timed (it cannot run at `keys`).
    pub python_keys: Vec<usize>,
}

/// Every workload of one benchmark run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub quick: bool,
    pub big: Vec<TensorSpec>,
    pub small: Vec<TensorSpec>,
    pub detectron: Detectron,
    pub matching: Matching,
}

impl Spec {
    /// The full workloads (1 GiB, 50,000 tensors, R50-FPN, 100,000 keys), or small ones
    /// (`quick`) for a smoke test.
    pub fn new(quick: bool) -> Spec {
        let (big_count, big_shape, small_count, width, keys, python_keys) = if quick {
            (32, [128, 1024], 2_000, 8, 2_000, vec![300, 600])
        } else {
            (
                320,
                [1024, 819],
                50_000,
                1,
                100_000,
                vec![1_000, 2_000, 4_000],
            )
        };
        Spec {
            quick,
            big: big_tensors(big_count, &big_shape),
            small: (0..small_count)
                .map(|i| TensorSpec::new(format!("params.{i}"), &[1024]))
                .collect(),
            detectron: Detectron {
                model: resnet50_fpn(width),
                iteration: 89_999,
                lr: 0.02,
                momentum: 0.9,
                name: "model_0089999".to_string(),
            },
            matching: Matching { keys, python_keys },
        }
    }
}

/// Total float32 bytes of `tensors`.
pub fn total_bytes<'a>(tensors: impl IntoIterator<Item = &'a TensorSpec>) -> u64 {
    tensors.into_iter().map(TensorSpec::nbytes).sum()
}

/// Transformer-like weights of equal size: `blocks.<b>.<part>.weight`.
fn big_tensors(count: usize, shape: &[usize]) -> Vec<TensorSpec> {
    const PARTS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];
    (0..count)
        .map(|i| {
            let name = format!(
                "blocks.{}.{}.weight",
                i / PARTS.len(),
                PARTS[i % PARTS.len()]
            );
            TensorSpec::new(name, shape)
        })
        .collect()
}

/// The tensors of detectron2's R50-FPN Faster R-CNN (80 classes) in registration order;
/// channel counts divided by `width` for the quick run.
fn resnet50_fpn(width: usize) -> Vec<ModelTensor> {
    let c = |n: usize| (n / width).max(1);
    let mut out = Vec::new();
    let conv = |out: &mut Vec<ModelTensor>, prefix: &str, shape: [usize; 4], trainable| {
        out.push(ModelTensor {
            tensor: TensorSpec::new(format!("{prefix}.weight"), &shape),
            buffer: false,
            trainable,
        });
        for stat in ["weight", "bias", "running_mean", "running_var"] {
            out.push(ModelTensor {
                tensor: TensorSpec::new(format!("{prefix}.norm.{stat}"), &[shape[0]]),
                buffer: true,
                trainable: false,
            });
        }
    };
    let bottom_up = "backbone.bottom_up";
    conv(
        &mut out,
        &format!("{bottom_up}.stem.conv1"),
        [c(64), 3, 7, 7],
        false,
    );
    let mut in_channels = c(64);
    let stages = [
        (2, 3, 64, 256),
        (3, 4, 128, 512),
        (4, 6, 256, 1024),
        (5, 3, 512, 2048),
    ];
    for (stage, blocks, bottleneck, out_channels) in stages {
        let (b, o) = (c(bottleneck), c(out_channels));
        let trainable = stage > 2;
        for block in 0..blocks {
            let prefix = format!("{bottom_up}.res{stage}.{block}");
            if block == 0 {
                conv(
                    &mut out,
                    &format!("{prefix}.shortcut"),
                    [o, in_channels, 1, 1],
                    trainable,
                );
            }
            conv(
                &mut out,
                &format!("{prefix}.conv1"),
                [b, in_channels, 1, 1],
                trainable,
            );
            conv(
                &mut out,
                &format!("{prefix}.conv2"),
                [b, b, 3, 3],
                trainable,
            );
            conv(
                &mut out,
                &format!("{prefix}.conv3"),
                [o, b, 1, 1],
                trainable,
            );
            in_channels = o;
        }
    }
    let param = |name: String, shape: &[usize]| ModelTensor {
        tensor: TensorSpec::new(name, shape),
        buffer: false,
        trainable: true,
    };
    let fpn = c(256);
    for (level, lateral_in) in [(2, 256), (3, 512), (4, 1024), (5, 2048)] {
        for (kind, cin, k) in [("lateral", c(lateral_in), 1), ("output", fpn, 3)] {
            out.push(param(
                format!("backbone.fpn_{kind}{level}.weight"),
                &[fpn, cin, k, k],
            ));
            out.push(param(format!("backbone.fpn_{kind}{level}.bias"), &[fpn]));
        }
    }
    let rpn = "proposal_generator.rpn_head";
    for (name, cout, k) in [
        ("conv", fpn, 3),
        ("objectness_logits", 3, 1),
        ("anchor_deltas", 12, 1),
    ] {
        out.push(param(format!("{rpn}.{name}.weight"), &[cout, fpn, k, k]));
        out.push(param(format!("{rpn}.{name}.bias"), &[cout]));
    }
    let hidden = c(1024);
    let linears = [
        ("box_head.fc1", hidden, fpn * 7 * 7),
        ("box_head.fc2", hidden, hidden),
        ("box_predictor.cls_score", 81, hidden),
        ("box_predictor.bbox_pred", 320, hidden),
    ];
    for (name, cout, cin) in linears {
        out.push(param(format!("roi_heads.{name}.weight"), &[cout, cin]));
        out.push(param(format!("roi_heads.{name}.bias"), &[cout]));
    }
    out
}

const PARAMS: [&str; 5] = [
    "weight",
    "norm.weight",
    "norm.bias",
    "norm.running_mean",
    "norm.running_var",
];
const CONVS: [&str; 4] = ["conv1", "conv2", "conv3", "shortcut"];

/// `count` checkpoint keys `res<stage>.<block>.<conv>.<param>` and the model keys that end
/// with them (`backbone.bottom_up.` + key), as a deep detector names them. The Python
/// contender builds the same list.
pub fn matching_keys(count: usize) -> Vec<(String, String)> {
    let mut keys = Vec::with_capacity(count);
    'outer: for block in 0.. {
        for stage in 2..=5 {
            for conv in CONVS {
                for param in PARAMS {
                    if keys.len() == count {
                        break 'outer;
                    }
                    let key = format!("res{stage}.{block}.{conv}.{param}");
                    keys.push((format!("backbone.bottom_up.{key}"), key));
                }
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_workloads_have_the_documented_sizes() {
        let spec = Spec::new(false);
        assert_eq!(spec.big.len(), 320);
        let big = total_bytes(&spec.big) as f64 / (1u64 << 30) as f64;
        assert!((0.99..1.01).contains(&big), "{big} GiB");
        assert_eq!(spec.small.len(), 50_000);
        let params: u64 = spec
            .detectron
            .model
            .iter()
            .map(|t| t.tensor.nbytes() / 4)
            .sum();
        assert!((40_000_000..46_000_000).contains(&params), "{params}");
        assert!((250..350).contains(&spec.detectron.model.len()));
        let names: std::collections::HashSet<_> = spec
            .detectron
            .model
            .iter()
            .map(|t| &t.tensor.name)
            .collect();
        assert_eq!(names.len(), spec.detectron.model.len());
    }

    #[test]
    fn matching_keys_are_distinct_and_suffixes_of_model_keys() {
        let keys = matching_keys(1_000);
        let distinct: std::collections::HashSet<_> = keys.iter().map(|k| &k.1).collect();
        assert_eq!(distinct.len(), 1_000);
        assert!(keys.iter().all(|(m, c)| m.ends_with(&format!(".{c}"))));
    }
}

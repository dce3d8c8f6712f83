//! Times name matching on 100,000 model keys against 100,000 checkpoint keys.
//!
//! Run with `cargo run --release -p ckpt --example bench_matching`. detectron2 compares
//! every pair (10^10 string tests for this size); ckpt indexes the checkpoint keys by their
//! trailing segments.

use std::time::Instant;

use ckpt::matching::{align_and_update_state_dicts, format_match_table};
use ckpt::{DType, StateDict, Tensor};

const PARAMS: &[&str] = &[
    "weight",
    "norm.weight",
    "norm.bias",
    "norm.running_mean",
    "norm.running_var",
];
const CAFFE2_PARAMS: &[&str] = &["w", "bn_s", "bn_b", "bn_rm", "bn_riv"];
const BRANCHES: &[(&str, &str)] = &[
    ("conv1", "branch2a"),
    ("conv2", "branch2b"),
    ("conv3", "branch2c"),
    ("shortcut", "branch1"),
];

/// ResNet/FPN-like names: `res<stage>.<block>.<conv>.<param>` until `count` of them, with the
/// matching Caffe2 blob names.
fn resnet_names(count: usize) -> Vec<(String, String)> {
    let mut names = Vec::with_capacity(count);
    'outer: for block in 0.. {
        for stage in 2..=5 {
            for (conv, branch) in BRANCHES {
                for (param, c2_param) in PARAMS.iter().zip(CAFFE2_PARAMS) {
                    if names.len() == count {
                        break 'outer;
                    }
                    names.push((
                        format!("res{stage}.{block}.{conv}.{param}"),
                        format!("res{stage}_{block}_{branch}_{c2_param}"),
                    ));
                }
            }
        }
    }
    names
}

/// CPU time this thread has run, in nanoseconds (Linux), to see past a busy machine.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// A timing: wall-clock and (where the OS tells) CPU milliseconds.
struct Timing {
    wall_ms: f64,
    cpu_ms: Option<f64>,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} ms", self.wall_ms)?;
        if let Some(cpu) = self.cpu_ms {
            write!(f, " (cpu {cpu:.1} ms)")?;
        }
        Ok(())
    }
}

/// The fastest of `runs` timings of `f` on fresh input: the machine may be shared, and the
/// minimum is the least disturbed run.
fn fastest<I, O>(runs: usize, input: impl Fn() -> I, f: impl Fn(I) -> O) -> (Timing, O) {
    let mut best = Timing {
        wall_ms: f64::INFINITY,
        cpu_ms: None,
    };
    let mut output = None;
    for _ in 0..runs {
        let fresh = input();
        let cpu_start = thread_cpu_ns();
        let start = Instant::now();
        let out = f(fresh);
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        let cpu_ms = cpu_start
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e6);
        best.wall_ms = best.wall_ms.min(wall_ms);
        best.cpu_ms = match (best.cpu_ms, cpu_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        output = Some(out);
    }
    (best, output.expect("at least one run"))
}

fn main() -> ckpt::Result<()> {
    const N: usize = 100_000;
    const RUNS: usize = 7;
    let names = resnet_names(N);
    let tiny = Tensor::zeros(DType::Float32, &[4])?;
    let model: Vec<(String, Vec<usize>)> = names
        .iter()
        .map(|(name, _)| (format!("backbone.bottom_up.{name}"), vec![4]))
        .collect();
    let state_dict = |caffe2: bool| -> StateDict {
        names
            .iter()
            .map(|(name, c2)| (if caffe2 { c2 } else { name }.clone(), tiny.clone()))
            .collect()
    };

    let (ms, aligned) = fastest(
        RUNS,
        || state_dict(false),
        |sd| align_and_update_state_dicts(&model, sd, false),
    );
    let aligned = aligned?;
    assert_eq!(aligned.matched.len(), N);
    println!("align {N} model keys with {N} checkpoint keys: {ms}");

    let (ms, table) = fastest(RUNS, || (), |_| format_match_table(&aligned.matched));
    println!(
        "format the logged table of {N} matches ({} lines): {ms}",
        table.lines().count()
    );

    let (ms, aligned) = fastest(
        RUNS,
        || state_dict(true),
        |sd| align_and_update_state_dicts(&model, sd, true),
    );
    assert_eq!(aligned?.matched.len(), N);
    println!("rename {N} Caffe2 keys, then align them: {ms}");
    Ok(())
}

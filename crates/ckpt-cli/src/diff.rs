//! `ckpt diff A B [--key KEY] [--rtol R] [--atol T] [--match] [--json]`: what differs between
//! two checkpoints of any formats ckpt reads, with an exit code for scripts (0 equal within
//! tolerance, 1 different, 2 error).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ckpt::matching::align_and_update_state_dicts;
use ckpt::walk::leaves;
use ckpt::{cast_bytes, DType, StateDict, Tensor, Value};
use serde::Serialize;

use crate::diff_side::{self, Side};
use crate::error::CliError;
use crate::output::{print, printable, Align, JsonLines, Table};
use crate::plan::{python_shape, quiet};

/// Compare two checkpoints: keys, dtypes, shapes and values
///
/// A and B may be of any formats ckpt reads (torch zip or legacy, Detectron pickles,
/// safetensors). Entries are paired by their `.`-joined names (as safetensors names them, so a
/// torch file and its safetensors conversion pair up), or with --match by the suffix rule of
/// `ckpt plan` (a Caffe2/Detectron1 pickle renamed to detectron2 names first, its
/// background-class rows fixed, as `ckpt plan` and a detectron2 load do; its blob names are
/// shown). Lists the keys only in A, only in B, dtype and shape differences, and for each
/// pair of tensors the largest absolute and relative difference (|a - b| / |b|) and whether the
/// bytes are identical; other values (iteration, optimizer hyper-parameters) are compared as
/// values. Tensors of different dtypes are compared by value after conversion to float64.
/// Values other than tensors that one file has and the other cannot hold (a safetensors file,
/// Caffe2 weights under --match) are listed as not compared, not as differences: a
/// checkpoint equals its safetensors conversion when the tensors are equal; use --key model
/// to compare only the weights of any two files.
/// Elements are equal when |a - b| <= atol + rtol * |b| (torch.allclose's rule; NaN equals
/// NaN). Files are read through a memory map and compared a chunk at a time, so memory stays
/// small whatever their size.
///
/// Exit status: 0 when equal within tolerance, 1 when they differ, 2 on error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first checkpoint (its values are `a`).
    pub a: PathBuf,
    /// The second checkpoint (its values are `b`, the reference of the relative difference).
    pub b: PathBuf,
    /// Compare only this entry of both files: a top-level key (e.g. `model`) or a path as
    /// `ckpt inspect` prints it.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Relative tolerance.
    #[arg(long, default_value_t = 0.0, value_name = "RTOL")]
    pub rtol: f64,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 0.0, value_name = "ATOL")]
    pub atol: f64,
    /// Pair tensors whose names differ by the matching heuristics of `ckpt plan` (a name
    /// matches the longest name it ends with, at a `.`; a Caffe2 pickle's blobs are renamed
    /// to detectron2 names first); other values pair by name.
    #[arg(long = "match")]
    pub match_names: bool,
    /// Do not count a dtype difference as a difference when the values are equal within
    /// tolerance.
    #[arg(long)]
    pub ignore_dtype: bool,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Elements converted to float64 at a time: the memory a comparison needs.
const CHUNK_ELEMENTS: usize = 1 << 16;

/// How a pair of tensors compares.
#[derive(Debug, Clone, Serialize)]
pub struct TensorDiff {
    pub key_a: String,
    pub key_b: String,
    pub dtype_a: String,
    pub dtype_b: String,
    pub shape_a: Vec<usize>,
    pub shape_b: Vec<usize>,
    /// Same dtype, shape and bytes.
    pub bit_identical: bool,
    /// Largest |a - b| (null when the shapes differ).
    pub max_abs_diff: Option<f64>,
    /// Largest |a - b| / |b| (null when the shapes differ).
    pub max_rel_diff: Option<f64>,
    /// Flat index of the largest |a - b|.
    pub max_abs_index: Option<usize>,
    /// Elements outside the tolerance.
    pub mismatched: usize,
    /// Whether this pair counts as equal.
    pub equal: bool,
}

/// A pair of non-tensor values (or a tensor against a non-tensor) that differ.
#[derive(Debug, Clone, Serialize)]
pub struct ValueDiff {
    pub key: String,
    pub a: String,
    pub b: String,
}

/// An entry found in one file only.
#[derive(Debug, Clone, Serialize)]
pub struct OnlyIn {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub dtype: Option<String>,
    pub shape: Option<Vec<usize>>,
}

/// Everything `ckpt diff` found.
#[derive(Debug, Default)]
pub struct Report {
    pub only_in_a: Vec<OnlyIn>,
    pub only_in_b: Vec<OnlyIn>,
    pub tensors: Vec<TensorDiff>,
    pub values: Vec<ValueDiff>,
    pub equal_values: usize,
    /// Values other than tensors of one file that the other cannot hold (it is a
    /// safetensors file): listed, not counted as differences.
    pub not_compared: Vec<NotCompared>,
}

/// A value of one file that the other file cannot hold.
#[derive(Debug, Clone, Serialize)]
pub struct NotCompared {
    /// `a` or `b`: the file that has it.
    pub side: &'static str,
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// What the other file is (`a safetensors file`).
    pub because_other_is: &'static str,
}

impl Report {
    /// Names each entry as its file does (a Caffe2 blob name rather than its detectron2
    /// name) and moves the non-tensor values of one file that the other cannot hold out of
    /// the differences.
    fn settle(&mut self, a: &Side, b: &Side) {
        for (only, side, this, other) in [
            (&mut self.only_in_a, "a", a, b),
            (&mut self.only_in_b, "b", b, a),
        ] {
            for o in only.iter_mut() {
                o.key = this.file_name(&o.key).to_string();
            }
            let Some(because_other_is) = other.tensors_only else {
                continue;
            };
            only.retain(|o| {
                if o.dtype.is_some() {
                    return true;
                }
                self.not_compared.push(NotCompared {
                    side,
                    key: o.key.clone(),
                    kind: o.kind.clone(),
                    because_other_is,
                });
                false
            });
        }
        for t in &mut self.tensors {
            t.key_a = a.file_name(&t.key_a).to_string();
            t.key_b = b.file_name(&t.key_b).to_string();
        }
    }

    /// Whether the two files are equal within tolerance.
    pub fn equal(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.values.is_empty()
            && self.tensors.iter().all(|t| t.equal)
    }
}

/// Runs the command: `Ok(true)` when equal within tolerance.
pub fn run(args: &Args) -> Result<bool, CliError> {
    let valid = |x: f64| x.is_finite() && x >= 0.0;
    if !valid(args.rtol) || !valid(args.atol) {
        return Err(CliError::new(
            "--rtol and --atol must be finite non-negative numbers",
        ));
    }
    let a = diff_side::open(&args.a, args.key.as_deref(), args.match_names)?;
    let b = diff_side::open(&args.b, args.key.as_deref(), args.match_names)?;
    let mut report = compare(&a.value, &b.value, args)?;
    report.settle(&a, &b);
    if args.json {
        print(&to_json(&report)?)?;
    } else {
        print(&render(args, &report))?;
    }
    Ok(report.equal())
}

/// The leaves of `value` by `.`-joined name, in the file's order (the first of two leaves
/// with the same name wins).
fn flat_leaves(value: &Value) -> Vec<(String, &Value)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for leaf in leaves(value) {
        let name = leaf.flat_name();
        if seen.insert(name.clone()) {
            out.push((name, leaf.value));
        }
    }
    out
}

fn tensor_of(value: &Value) -> Option<&Tensor> {
    match value {
        Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => Some(t),
        _ => None,
    }
}

fn only_in(key: &str, value: &Value) -> OnlyIn {
    let tensor = tensor_of(value);
    OnlyIn {
        key: key.to_string(),
        kind: value.type_name(),
        dtype: tensor.map(|t| t.dtype().to_string()),
        shape: tensor.map(|t| t.shape().to_vec()),
    }
}

/// Pairs the leaves of `a` and `b` and compares each pair.
pub fn compare(a: &Value, b: &Value, args: &Args) -> Result<Report, CliError> {
    let leaves_a = flat_leaves(a);
    let leaves_b = flat_leaves(b);
    let by_name_b: HashMap<&str, &Value> = leaves_b.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if args.match_names {
        pairs = matched_tensor_names(&leaves_a, &leaves_b)?;
        // Values other than tensors pair by name.
        for (name, value) in &leaves_a {
            if tensor_of(value).is_none() && by_name_b.contains_key(name.as_str()) {
                pairs.push((name.clone(), name.clone()));
            }
        }
    } else {
        for (name, _) in &leaves_a {
            if by_name_b.contains_key(name.as_str()) {
                pairs.push((name.clone(), name.clone()));
            }
        }
    }
    let paired_a: HashSet<&str> = pairs.iter().map(|(x, _)| x.as_str()).collect();
    let paired_b: HashSet<&str> = pairs.iter().map(|(_, y)| y.as_str()).collect();
    let by_name_a: HashMap<&str, &Value> = leaves_a.iter().map(|(k, v)| (k.as_str(), *v)).collect();

    let mut report = Report {
        only_in_a: leaves_a
            .iter()
            .filter(|(k, _)| !paired_a.contains(k.as_str()))
            .map(|(k, v)| only_in(k, v))
            .collect(),
        only_in_b: leaves_b
            .iter()
            .filter(|(k, _)| !paired_b.contains(k.as_str()))
            .map(|(k, v)| only_in(k, v))
            .collect(),
        ..Report::default()
    };
    // Pairs in A's order, so the output follows the file.
    let order: HashMap<&str, usize> = leaves_a
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    pairs.sort_by_key(|(x, _)| order.get(x.as_str()).copied().unwrap_or(usize::MAX));
    for (key_a, key_b) in &pairs {
        let (Some(va), Some(vb)) = (by_name_a.get(key_a.as_str()), by_name_b.get(key_b.as_str()))
        else {
            continue;
        };
        match (tensor_of(va), tensor_of(vb)) {
            (Some(ta), Some(tb)) => {
                let diff = compare_tensors(key_a, key_b, ta, tb, args).map_err(|e| {
                    CliError::new(format!(
                        "comparing '{}' of {} with '{}' of {}: {e}",
                        printable(key_a),
                        printable(&args.a.display().to_string()),
                        printable(key_b),
                        printable(&args.b.display().to_string())
                    ))
                })?;
                report.tensors.push(diff);
            }
            (None, None) if same_value(va, vb) => report.equal_values += 1,
            _ => report.values.push(ValueDiff {
                key: if key_a == key_b {
                    key_a.clone()
                } else {
                    format!("{key_a} <- {key_b}")
                },
                a: describe(va),
                b: describe(vb),
            }),
        }
    }
    Ok(report)
}

/// Pairs of tensor names by the suffix rule of `ckpt plan`, tried both ways (A's names as the
/// model's, then B's) and keeping the way that pairs more tensors.
fn matched_tensor_names(
    leaves_a: &[(String, &Value)],
    leaves_b: &[(String, &Value)],
) -> Result<Vec<(String, String)>, CliError> {
    let a_as_model = suffix_pairs(leaves_a, leaves_b)?;
    let b_as_model: Vec<(String, String)> = suffix_pairs(leaves_b, leaves_a)?
        .into_iter()
        .map(|(b, a)| (a, b))
        .collect();
    Ok(if b_as_model.len() > a_as_model.len() {
        b_as_model
    } else {
        a_as_model
    })
}

/// `(model name, checkpoint name)` pairs, `model` giving the names and shapes.
fn suffix_pairs(
    model: &[(String, &Value)],
    checkpoint: &[(String, &Value)],
) -> Result<Vec<(String, String)>, CliError> {
    let shapes: Vec<(String, Vec<usize>)> = model
        .iter()
        .filter_map(|(k, v)| tensor_of(v).map(|t| (k.clone(), t.shape().to_vec())))
        .collect();
    let mut dict = StateDict::new();
    for (k, v) in checkpoint {
        if let Some(t) = tensor_of(v) {
            dict.insert(k.clone(), t.clone());
        }
    }
    let aligned = quiet(|| align_and_update_state_dicts(&shapes, dict, false))
        .map_err(|e| CliError::new(format!("--match: {e}")))?;
    let mut pairs: Vec<(String, String)> = aligned
        .matched
        .into_iter()
        .map(|m| (m.model_key, m.checkpoint_key))
        .collect();
    // A shape difference is still a pair to report.
    pairs.extend(
        aligned
            .shape_mismatches
            .into_iter()
            .map(|m| (m.model_key, m.checkpoint_key)),
    );
    Ok(pairs)
}

/// Non-tensor leaves are scalars, strings or empty containers: equal when Python would print
/// them alike (NaN equals NaN).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => a.type_name() == b.type_name() && full_repr(a) == full_repr(b),
    }
}

fn full_repr(value: &Value) -> String {
    value.short_repr(usize::MAX / 2)
}

fn describe(value: &Value) -> String {
    match tensor_of(value) {
        Some(t) => format!(
            "{} {} {}",
            value.type_name(),
            t.dtype(),
            python_shape(t.shape())
        ),
        None => value.short_repr(80),
    }
}

/// Compares two tensors element by element, `CHUNK_ELEMENTS` at a time.
fn compare_tensors(
    key_a: &str,
    key_b: &str,
    a: &Tensor,
    b: &Tensor,
    args: &Args,
) -> ckpt::Result<TensorDiff> {
    let mut diff = TensorDiff {
        key_a: key_a.to_string(),
        key_b: key_b.to_string(),
        dtype_a: a.dtype().to_string(),
        dtype_b: b.dtype().to_string(),
        shape_a: a.shape().to_vec(),
        shape_b: b.shape().to_vec(),
        bit_identical: false,
        max_abs_diff: None,
        max_rel_diff: None,
        max_abs_index: None,
        mismatched: 0,
        equal: false,
    };
    if a.shape() != b.shape() {
        return Ok(diff);
    }
    let bytes_a = a.try_contiguous_bytes()?;
    let bytes_b = b.try_contiguous_bytes()?;
    let stats = value_stats(&bytes_a, a.dtype(), &bytes_b, b.dtype(), args)?;
    // Each tensor is read once: its pages of the maps need not stay in the process.
    a.storage().release_mapped_pages();
    b.storage().release_mapped_pages();
    diff.bit_identical = a.dtype() == b.dtype() && stats.bytes_equal;
    diff.max_abs_diff = Some(stats.max_abs);
    diff.max_rel_diff = Some(stats.max_rel);
    diff.max_abs_index = stats.max_abs_index;
    diff.mismatched = stats.mismatched;
    diff.equal = stats.mismatched == 0 && (a.dtype() == b.dtype() || args.ignore_dtype);
    Ok(diff)
}

#[derive(Debug, Default)]
struct Stats {
    bytes_equal: bool,
    max_abs: f64,
    max_rel: f64,
    max_abs_index: Option<usize>,
    mismatched: usize,
}

/// The statistics of `a - b` over every element, both converted to float64 (complex128 when
/// either is complex, comparing the real and imaginary parts each) a chunk at a time.
fn value_stats(
    a: &[u8],
    dtype_a: DType,
    b: &[u8],
    dtype_b: DType,
    args: &Args,
) -> ckpt::Result<Stats> {
    let target = if dtype_a.is_complex() || dtype_b.is_complex() {
        DType::Complex128
    } else {
        DType::Float64
    };
    // Scalars per element of `target`: two for a complex number.
    let parts = target.size() / 8;
    let mut stats = Stats {
        bytes_equal: true,
        ..Stats::default()
    };
    let mut buf_a = Vec::new();
    let mut buf_b = Vec::new();
    let numel = a.len() / dtype_a.size();
    let mut start = 0;
    while start < numel {
        let end = (start + CHUNK_ELEMENTS).min(numel);
        let chunk_a = &a[start * dtype_a.size()..end * dtype_a.size()];
        let chunk_b = &b[start * dtype_b.size()..end * dtype_b.size()];
        if stats.bytes_equal && chunk_a != chunk_b {
            stats.bytes_equal = false;
        }
        let xs = as_target(chunk_a, dtype_a, target, &mut buf_a)?;
        let ys = as_target(chunk_b, dtype_b, target, &mut buf_b)?;
        for (i, (x, y)) in xs
            .chunks_exact(8)
            .map(f64_of)
            .zip(ys.chunks_exact(8).map(f64_of))
            .enumerate()
        {
            if x == y || (x.is_nan() && y.is_nan()) {
                continue;
            }
            let abs = (x - y).abs();
            // inf - inf of one sign against the other, or NaN against a number.
            let abs = if abs.is_nan() { f64::INFINITY } else { abs };
            let rel = abs / y.abs();
            if abs > stats.max_abs || stats.max_abs_index.is_none() {
                stats.max_abs = abs;
                stats.max_abs_index = Some(start + i / parts);
            }
            if rel > stats.max_rel {
                stats.max_rel = rel;
            }
            // False for a NaN bound (a NaN in b against a number in a): a mismatch.
            let within = abs <= args.atol + args.rtol * y.abs();
            if !within {
                stats.mismatched += 1;
            }
        }
        start = end;
    }
    Ok(stats)
}

/// `chunk` as little-endian values of `target`: itself, or converted into `buf`.
fn as_target<'a>(
    chunk: &'a [u8],
    from: DType,
    target: DType,
    buf: &'a mut Vec<u8>,
) -> ckpt::Result<Cow<'a, [u8]>> {
    if from == target {
        return Ok(Cow::Borrowed(chunk));
    }
    buf.clear();
    buf.resize(chunk.len() / from.size() * target.size(), 0);
    cast_bytes(chunk, from, buf, target)?;
    Ok(Cow::Borrowed(buf.as_slice()))
}

fn f64_of(bytes: &[u8]) -> f64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    f64::from_le_bytes(raw)
}

/// The `--json` output.
pub fn to_json(report: &Report) -> Result<String, CliError> {
    let different: Vec<&TensorDiff> = report.tensors.iter().filter(|t| !t.equal).collect();
    let equal: Vec<&TensorDiff> = report.tensors.iter().filter(|t| t.equal).collect();
    Ok(JsonLines::new()
        .field("equal", &report.equal())?
        .rows("only_in_a", &report.only_in_a)?
        .rows("only_in_b", &report.only_in_b)?
        .rows("different_tensors", &different)?
        .rows("different_values", &report.values)?
        .rows("equal_tensors", &equal)?
        .field("equal_values", &report.equal_values)?
        .rows("not_compared", &report.not_compared)?
        .render())
}

/// The text output: the differences, then a summary line.
pub fn render(args: &Args, report: &Report) -> String {
    let mut out = format!(
        "A: {}\nB: {}\n",
        printable(&args.a.display().to_string()),
        printable(&args.b.display().to_string())
    );
    for (title, list) in [
        ("only in A", &report.only_in_a),
        ("only in B", &report.only_in_b),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut table = Table::new(&["KEY", "TYPE", "DTYPE", "SHAPE"], &[Align::Left; 4]);
        for o in list {
            table.row(vec![
                printable(&o.key),
                o.kind.clone(),
                o.dtype.clone().unwrap_or_default(),
                o.shape.as_deref().map(python_shape).unwrap_or_default(),
            ]);
        }
        section(&mut out, title, list.len(), &table);
    }
    let different: Vec<&TensorDiff> = report.tensors.iter().filter(|t| !t.equal).collect();
    if !different.is_empty() {
        let mut table = Table::new(
            &["KEY", "DTYPE", "SHAPE", "MAX ABS", "MAX REL", "MISMATCHED"],
            &[
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Right,
            ],
        );
        for t in &different {
            let key = if t.key_a == t.key_b {
                printable(&t.key_a)
            } else {
                format!("{} <- {}", printable(&t.key_a), printable(&t.key_b))
            };
            let pair = |x: &str, y: &str| {
                if x == y {
                    x.to_string()
                } else {
                    format!("{x} vs {y}")
                }
            };
            table.row(vec![
                key,
                pair(&t.dtype_a, &t.dtype_b),
                pair(&python_shape(&t.shape_a), &python_shape(&t.shape_b)),
                t.max_abs_diff.map(number).unwrap_or_else(|| "-".into()),
                t.max_rel_diff.map(number).unwrap_or_else(|| "-".into()),
                t.max_abs_diff
                    .map(|_| t.mismatched.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        section(&mut out, "different tensors", different.len(), &table);
    }
    if !report.values.is_empty() {
        let mut table = Table::new(&["KEY", "A", "B"], &[Align::Left; 3]);
        for v in &report.values {
            table.row(vec![printable(&v.key), printable(&v.a), printable(&v.b)]);
        }
        section(&mut out, "different values", report.values.len(), &table);
    }
    if !report.not_compared.is_empty() {
        let mut table = Table::new(&["KEY", "IN", "TYPE", "THE OTHER IS"], &[Align::Left; 4]);
        for n in &report.not_compared {
            table.row(vec![
                printable(&n.key),
                n.side.to_uppercase(),
                n.kind.clone(),
                n.because_other_is.to_string(),
            ]);
        }
        section(
            &mut out,
            "not compared (the other file cannot hold them)",
            report.not_compared.len(),
            &table,
        );
    }
    let identical = report.tensors.iter().filter(|t| t.bit_identical).count();
    let close = report
        .tensors
        .iter()
        .filter(|t| t.equal && !t.bit_identical)
        .count();
    out.push_str(&format!(
        "\n{} tensors compared: {identical} bit-identical, {close} equal within tolerance \
         (rtol {}, atol {}), {} different; {} other values equal, {} different\n",
        report.tensors.len(),
        args.rtol,
        args.atol,
        different.len(),
        report.equal_values,
        report.values.len()
    ));
    out.push_str(if report.equal() {
        "result: equal\n"
    } else {
        "result: different\n"
    });
    out
}

fn number(x: f64) -> String {
    format!("{x:.6e}")
}

fn section(out: &mut String, title: &str, count: usize, table: &Table) {
    out.push_str(&format!("\n{title}: {count}\n"));
    for line in table.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

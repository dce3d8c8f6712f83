//! `ckpt plan --model MODEL_FILE CHECKPOINT [--json]`: what loading CHECKPOINT into a model
//! would do, computed exactly as `DetectionCheckpointer` loads, without writing anything.

use ckpt::detection::{plan_load, read_detection_file, LoadPlan};
use ckpt::format::load;
use ckpt::{StateDict, Value};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{print, printable, Align, JsonLines, Table};
use crate::source;

/// Show how a checkpoint would load into a model, without loading it
///
/// The model is described by MODEL_FILE: any checkpoint ckpt reads (its `model` entry when it
/// has one); its names and shapes are those of the model. CHECKPOINT is read as detectron2's
/// DetectionCheckpointer reads it (Caffe2/Detectron1 and model-zoo .pkl, pycls .pyth, torch,
/// safetensors; local paths, http(s):// URLs, detectron2:// and catalog:// names), renamed by
/// the matching heuristics when it asks for them (`?matching_heuristics=True` for a torch
/// file). Lists the matched pairs, Caffe2 renames and row edits, shape mismatches, missing and
/// unexpected keys. Exits with status 1 when the load would fail (an ambiguous match).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint whose state dict gives the model's names and shapes.
    #[arg(long, value_name = "MODEL_FILE")]
    pub model: String,
    /// The checkpoint to load: a path or URL, optionally with `?matching_heuristics=True`.
    pub checkpoint: String,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<(), CliError> {
    match quiet(|| plan_for(&args.model, &args.checkpoint))? {
        Ok(plan) => {
            if args.json {
                print(&to_json(&plan, None)?)?;
            } else {
                print(&render(&args.checkpoint, &plan))?;
            }
            Ok(())
        }
        Err(error) => {
            let error = error.report().to_string();
            if args.json {
                print(&to_json(&LoadPlan::default(), Some(&error))?)?;
            } else {
                print(&format!(
                    "checkpoint: {}\n\nerror: {}\n",
                    printable(&args.checkpoint),
                    printable(&error)
                ))?;
            }
            Err(CliError::new(format!("the load would fail: {error}")))
        }
    }
}

/// Runs `f` without the library's log messages (the output already says what they would),
/// unless `RUST_LOG` asks for them.
pub fn quiet<T>(f: impl FnOnce() -> T) -> T {
    if std::env::var_os("RUST_LOG").is_some() {
        return f();
    }
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

/// The plan of loading `checkpoint` into the model described by `model_file`, or why that
/// load would fail; the outer error is a file that cannot be read.
pub fn plan_for(
    model_file: &str,
    checkpoint: &str,
) -> Result<Result<LoadPlan, ckpt::Error>, CliError> {
    let shapes = model_shapes(model_file)?;
    let resolved = source::resolve_partial(checkpoint)?;
    let dict = read_detection_file(&resolved.path, resolved.options.matching_heuristics)?;
    Ok(plan_load(&shapes, dict))
}

/// The names and shapes of the state dict in `model_file` (its `model` entry if it has one).
pub fn model_shapes(model_file: &str) -> Result<Vec<(String, Vec<usize>)>, CliError> {
    let path = source::partial_input(std::path::Path::new(model_file))?;
    let value = load(&path)?;
    let state = match value.as_dict().and_then(|d| d.get("model")) {
        Some(model @ Value::Dict(_)) => model,
        _ => &value,
    };
    let state = StateDict::from_value(state).map_err(|e| {
        CliError::new(format!(
            "{}: not a model state dict: {}",
            printable(model_file),
            e.report()
        ))
    })?;
    Ok(state
        .iter()
        .map(|(name, t)| (name.to_string(), t.shape().to_vec()))
        .collect())
}

/// A row of `matched` in the `--json` output.
#[derive(Serialize)]
struct MatchRow<'a> {
    model_key: &'a str,
    /// As named in the checkpoint file.
    checkpoint_key: &'a str,
    shape: &'a [usize],
}

/// A row of `shape_mismatch` in the `--json` output.
#[derive(Serialize)]
struct MismatchRow<'a> {
    model_key: &'a str,
    /// As named in the checkpoint file.
    checkpoint_key: &'a str,
    model_shape: &'a [usize],
    checkpoint_shape: &'a [usize],
}

/// The `--json` output: exactly `matched`, `shape_mismatch`, `missing`, `unexpected`, `error`.
pub fn to_json(plan: &LoadPlan, error: Option<&str>) -> Result<String, CliError> {
    let matched: Vec<MatchRow> = plan
        .matched
        .iter()
        .map(|m| MatchRow {
            model_key: &m.model_key,
            checkpoint_key: &m.checkpoint_key,
            shape: &m.shape,
        })
        .collect();
    let mismatches: Vec<MismatchRow> = plan
        .shape_mismatches
        .iter()
        .map(|m| MismatchRow {
            model_key: &m.model_key,
            checkpoint_key: &m.checkpoint_key,
            model_shape: &m.model_shape,
            checkpoint_shape: &m.checkpoint_shape,
        })
        .collect();
    Ok(JsonLines::new()
        .rows("matched", &matched)?
        .rows("shape_mismatch", &mismatches)?
        .rows("missing", &plan.missing_keys)?
        .rows("unexpected", &plan.unexpected_keys)?
        .field("error", &error)?
        .render())
}

/// The text output: one section per list, each line one key.
pub fn render(checkpoint: &str, plan: &LoadPlan) -> String {
    let mut out = format!(
        "checkpoint: {}\nmatching:   {}\n",
        printable(checkpoint),
        match (plan.matching_heuristics, plan.caffe2) {
            (true, true) => "Caffe2 renaming, then name matching heuristics",
            (true, false) => "name matching heuristics",
            (false, _) => "exact names",
        }
    );

    let mut matched = Table::new(
        &["MODEL KEY", "", "CHECKPOINT KEY", "SHAPE"],
        &[Align::Left; 4],
    );
    for m in &plan.matched {
        matched.row(vec![
            printable(&m.model_key),
            "<-".to_string(),
            printable(&m.checkpoint_key),
            python_shape(&m.shape),
        ]);
    }
    section(&mut out, "matched", plan.matched.len(), &matched);

    if plan.caffe2 {
        let mut renames = Table::new(&["CAFFE2 NAME", "", "RENAMED TO"], &[Align::Left; 3]);
        for (old, new) in &plan.c2_renames {
            renames.row(vec![printable(old), "->".to_string(), printable(new)]);
        }
        section(&mut out, "Caffe2 renames", plan.c2_renames.len(), &renames);
        let mut edits = Table::new(
            &["KEY", "EDIT", "SHAPE BEFORE", "SHAPE AFTER"],
            &[Align::Left; 4],
        );
        for e in &plan.c2_edits {
            let what = match e.kind {
                ckpt::matching::ValueEditKind::DropLeadingRows(1) => {
                    "dropped the first row".to_string()
                }
                ckpt::matching::ValueEditKind::DropLeadingRows(n) => {
                    format!("dropped the first {n} rows")
                }
                ckpt::matching::ValueEditKind::MoveFirstRowToEnd => {
                    "moved the first row to the end".to_string()
                }
            };
            edits.row(vec![
                printable(&e.key),
                what,
                python_shape(&e.shape_before),
                python_shape(&e.shape_after),
            ]);
        }
        section(
            &mut out,
            "background-class edits",
            plan.c2_edits.len(),
            &edits,
        );
    }

    let mut mismatches = Table::new(
        &[
            "MODEL KEY",
            "",
            "CHECKPOINT KEY",
            "MODEL SHAPE",
            "CHECKPOINT SHAPE",
        ],
        &[Align::Left; 5],
    );
    for m in &plan.shape_mismatches {
        mismatches.row(vec![
            printable(&m.model_key),
            "<-".to_string(),
            printable(&m.checkpoint_key),
            python_shape(&m.model_shape),
            python_shape(&m.checkpoint_shape),
        ]);
    }
    section(
        &mut out,
        "shape mismatches (not loaded)",
        plan.shape_mismatches.len(),
        &mismatches,
    );
    section(
        &mut out,
        "missing (in the model, not loaded)",
        plan.missing_keys.len(),
        &list("MODEL KEY", &plan.missing_keys),
    );
    section(
        &mut out,
        "unexpected (in the checkpoint, not used)",
        plan.unexpected_keys.len(),
        &list("CHECKPOINT KEY", &plan.unexpected_keys),
    );
    out
}

/// A shape as Python prints a tuple: `()`, `(3,)`, `(2, 3)`.
pub fn python_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

fn list(header: &str, keys: &[String]) -> Table {
    let mut table = Table::new(&[header], &[Align::Left]);
    for key in keys {
        table.row(vec![printable(key)]);
    }
    table
}

fn section(out: &mut String, title: &str, count: usize, table: &Table) {
    out.push_str(&format!("\n{title}: {count}\n"));
    if !table.is_empty() {
        for line in table.render().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
}

//! `ckpt convert IN OUT [--tensors-only] [--key KEY] [--max-shard-size SIZE]`: any readable
//! checkpoint to a torch file or to safetensors, chosen by OUT's extension, or to a directory
//! of sharded safetensors.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ckpt::detection::{plan_load, read_detection_file};
use ckpt::format::{
    flatten_tensors, is_dcp, load_dcp, load_with, parse_size, save_safetensors_with,
    save_sharded_safetensors, save_torch, Format, LoadOptions, Loaded, SafetensorsOptions,
    SaveOptions, ShardedOptions, SourcePages,
};
use ckpt::nn_module::replace_modules;
use ckpt::walk::{self, leaves};
use ckpt::{StateDict, Value};

use crate::error::CliError;
use crate::output::{abbreviate, printable};
use crate::{plan, source};

/// Convert a checkpoint to a torch or safetensors file
///
/// The output format follows OUT's extension: .pth, .pt, .pyth, .bin (torch) or
/// .safetensors; with --max-shard-size, OUT is a directory of sharded safetensors. IN may be a
/// file, a sharded checkpoint (its *.index.json or its directory). Torch output keeps everything (key order, dict vs OrderedDict, int vs float
/// vs bool, tuples, storage sharing; numpy arrays become tensors). Safetensors output holds
/// only tensors; nested dicts are flattened with `.`-joined keys. A torch.nn.Module saved
/// whole (torch.save(model)) is written as its state dict, named as model.state_dict() names
/// it. OUT is written atomically: it is either the old file or the complete new one. Tensor
/// bytes go from the input's memory map straight into OUT a few MiB at a time, so memory
/// stays small whatever the size of the file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint to read (any format ckpt reads, detected from the content); a URL or a
    /// detectron2:// or catalog:// name is downloaded once into the cache.
    pub input: PathBuf,
    /// The file to write; its extension picks the format.
    pub output: PathBuf,
    /// Write only the tensors, under `.`-joined names as safetensors output names them (a
    /// flat state dict for torch output); the values dropped are listed on stderr.
    #[arg(long)]
    pub tensors_only: bool,
    /// Convert only this entry of the checkpoint: a top-level key (e.g. `model`), or a path
    /// as `ckpt inspect` prints it (`model.backbone`, `optimizer.state[0]`,
    /// `_modules.encoder` inside a pickled module).
    #[arg(long, value_name = "KEY", conflicts_with = "heuristics")]
    pub key: Option<String>,
    /// Rename the checkpoint's model weights to the names of the model in --model, as
    /// detectron2's DetectionCheckpointer does (Caffe2 renaming for Detectron1 files, then
    /// suffix matching), and write only what would load: a state dict ready for a strict load.
    #[arg(long, requires = "model")]
    pub heuristics: bool,
    /// With --heuristics: the checkpoint whose state dict gives the model's names and shapes.
    #[arg(long, value_name = "MODEL_FILE", requires = "heuristics")]
    pub model: Option<String>,
    /// Write OUT as a directory of sharded safetensors of at most SIZE bytes each (`100MB`,
    /// `2GiB`, `5GB`, as Hugging Face's max_shard_size), named and indexed as Hugging Face
    /// names them (model-00001-of-0000N.safetensors, model.safetensors.index.json).
    #[arg(long, value_name = "SIZE", value_parser = shard_size)]
    pub max_shard_size: Option<u64>,
}

fn shard_size(text: &str) -> Result<u64, String> {
    match parse_size(text) {
        Ok(0) => Err("a shard size must be more than 0 bytes".to_string()),
        Ok(size) => Ok(size),
        Err(e) => Err(e.to_string()),
    }
}

/// The formats `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Torch,
    Safetensors,
    /// A directory of safetensors shards of at most this many bytes, and their index.
    Sharded(u64),
}

const TORCH_EXTENSIONS: [&str; 4] = ["pth", "pt", "pyth", "bin"];

/// Most non-tensor values named in a message.
const LISTED: usize = 8;

impl OutputFormat {
    /// The format for `path`'s extension (case-insensitive); an error lists the known ones.
    pub fn for_path(path: &Path) -> Result<OutputFormat, CliError> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some(e) if TORCH_EXTENSIONS.contains(&e) => Ok(OutputFormat::Torch),
            Some("safetensors") => Ok(OutputFormat::Safetensors),
            other => Err(CliError::new(format!(
                "{}: {}; known: .pth, .pt, .pyth, .bin (torch) and .safetensors",
                printable(&path.display().to_string()),
                match other {
                    Some(e) => format!("unknown output extension '.{}'", printable(e)),
                    None => "the output file has no extension".to_string(),
                }
            ))),
        }
    }
}

/// The output format: sharded with --max-shard-size (OUT then must not name a torch file),
/// else by OUT's extension.
fn output_format(args: &Args) -> Result<OutputFormat, CliError> {
    let Some(size) = args.max_shard_size else {
        return OutputFormat::for_path(&args.output);
    };
    if OutputFormat::for_path(&args.output).is_ok_and(|f| f == OutputFormat::Torch) {
        return Err(CliError::new(format!(
            "{}: --max-shard-size writes a directory of safetensors shards, not a torch file",
            printable(&args.output.display().to_string())
        )));
    }
    Ok(OutputFormat::Sharded(size))
}

pub fn run(args: &Args) -> Result<(), CliError> {
    let format = output_format(args)?;
    if let Some(model) = args.model.as_deref().filter(|_| args.heuristics) {
        return convert_by_heuristics(args, model, format);
    }
    let input = source::local_input(&args.input)?;
    let options = LoadOptions::default().with_source_pages(SourcePages::Release);
    // From a DCP directory, only the records of the key are read.
    let loaded = match args.key.as_deref().filter(|_| is_dcp(&input)) {
        Some(key) => Loaded::new(Format::Dcp, load_dcp(&input, &options, Some(key))?),
        None => load_with(&input, &options)?,
    };
    let value = match &args.key {
        Some(key) => select_key(loaded.value, key, &args.input)?,
        None => loaded.value,
    };
    let (value, modules_note) = modules_as_state_dicts(value);
    match format {
        OutputFormat::Torch if args.tensors_only => {
            let tensors = tensors_to_write(args, &value)?;
            save_torch(&args.output, &tensors.to_value(), &streaming_save_options())?;
        }
        OutputFormat::Torch => save_torch(&args.output, &value, &streaming_save_options())?,
        OutputFormat::Safetensors => write_safetensors(args, &value)?,
        OutputFormat::Sharded(size) => {
            let tensors = tensors_to_write(args, &value)?;
            write_sharded(&args.output, &tensors, size)?;
        }
    }
    if let Some(note) = modules_note {
        eprintln!("{note}");
    }
    tracing::info!(
        "converted {} ({}) to {}",
        args.input.display(),
        loaded.format,
        args.output.display()
    );
    Ok(())
}

/// Writes the tensors a `DetectionCheckpointer` load with matching heuristics would load,
/// under the model's names; what is left out is listed on stderr.
fn convert_by_heuristics(args: &Args, model: &str, format: OutputFormat) -> Result<(), CliError> {
    let shapes = plan::model_shapes(model)?;
    let input = printable(&args.input.display().to_string());
    let path = source::checkpoint_input(&args.input)?;
    let mut checkpoint = read_detection_file(&path, true)?;
    checkpoint.insert("matching_heuristics", Value::Bool(true));
    let plan = plan::quiet(|| plan_load(&shapes, checkpoint))
        .map_err(|error| CliError::new(format!("{input}: {}", error.report())))?;
    if plan.loaded.is_empty() {
        return Err(CliError::new(format!(
            "{input}: no tensor matches a name and shape of the model in {}",
            printable(model)
        )));
    }
    let skipped: Vec<String> = plan.not_loaded.iter().map(|k| printable(k)).collect();
    if !skipped.is_empty() {
        eprintln!(
            "ckpt: note: {} checkpoint tensor{} not written (shape mismatch or not in the model): {}",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            abbreviate(&skipped, LISTED)
        );
    }
    if !plan.missing_keys.is_empty() {
        let missing: Vec<String> = plan.missing_keys.iter().map(|k| printable(k)).collect();
        eprintln!(
            "ckpt: note: {} model name{} not in the output: {}",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" },
            abbreviate(&missing, LISTED)
        );
    }
    match format {
        OutputFormat::Torch => save_torch(
            &args.output,
            &plan.loaded.to_value(),
            &streaming_save_options(),
        )?,
        OutputFormat::Safetensors => save_safetensors_with(
            &args.output,
            &plan.loaded,
            None,
            &streaming_safetensors_options(),
        )?,
        OutputFormat::Sharded(size) => write_sharded(&args.output, &plan.loaded, size)?,
    }
    tracing::info!(
        "wrote {} tensors renamed to the model's names to {}",
        plan.loaded.len(),
        args.output.display()
    );
    Ok(())
}

/// The entry `key`: a top-level key as it is (it may hold dots), else a path as `ckpt
/// inspect` prints it (see `ckpt::walk::find`). An error names the file and lists the keys
/// (or a pickled object's attributes) at the top level.
pub fn select_key(value: Value, key: &str, input: &Path) -> Result<Value, CliError> {
    let file = printable(&input.display().to_string());
    let value = match value {
        Value::Dict(mut dict) => match dict.remove(key) {
            Some(selected) => return Ok(selected),
            None => Value::Dict(dict),
        },
        other => other,
    };
    if let Some(found) = walk::find(&value, key) {
        return Ok(found.clone());
    }
    let what = match deepest_container(&value, key) {
        Some((prefix, container)) => {
            format!("'{}' holds: {}", printable(prefix), child_names(container))
        }
        None => match &value {
            Value::Dict(_) => format!("top-level keys: {}", child_names(&value)),
            Value::Object(object) => format!(
                "the top level is a {} object holding: {}",
                printable(&object.qualified_name()),
                child_names(&value)
            ),
            other => format!("the file holds a value of type {}", other.type_name()),
        },
    };
    Err(CliError::new(format!(
        "{file}: no key or path '{}' ({what})",
        printable(key)
    )))
}

/// The longest leading part of `path` (cut before a `.` or `[`) that leads to a container.
fn deepest_container<'a, 'p>(value: &'a Value, path: &'p str) -> Option<(&'p str, &'a Value)> {
    path.char_indices()
        .filter(|&(i, c)| i > 0 && (c == '.' || c == '['))
        .map(|(i, _)| &path[..i])
        .rev()
        .find_map(|prefix| {
            walk::find(value, prefix)
                .filter(|v| walk::children(v).is_some())
                .map(|v| (prefix, v))
        })
}

/// The steps to the children of a container, as paths write them (`none` if it has none).
fn child_names(value: &Value) -> String {
    let names: Vec<String> = walk::children(value)
        .into_iter()
        .flatten()
        .map(|(step, _)| printable(&step.to_string()))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        abbreviate(&names, 20)
    }
}

/// A pickled `torch.nn.Module` becomes its state dict (what a user converting a model saved
/// whole wants; torch files cannot hold the module object anyway), with a note to print once
/// the output is written.
fn modules_as_state_dicts(mut value: Value) -> (Value, Option<String>) {
    let replaced = replace_modules(&mut value);
    if replaced.is_empty() {
        return (value, None);
    }
    let listed: Vec<String> = replaced
        .iter()
        .map(|m| format!("{} ({})", printable(&m.path), printable(&m.class)))
        .collect();
    let note = format!(
        "ckpt: note: wrote the state dict of {} pickled torch.nn.Module{}: {}",
        replaced.len(),
        if replaced.len() == 1 { "" } else { "s" },
        abbreviate(&listed, LISTED)
    );
    (value, Some(note))
}

fn write_safetensors(args: &Args, value: &Value) -> Result<(), CliError> {
    let tensors = tensors_to_write(args, value)?;
    let metadata = safetensors_metadata(value);
    save_safetensors_with(
        &args.output,
        &tensors,
        metadata.as_deref(),
        &streaming_safetensors_options(),
    )?;
    Ok(())
}

/// Writes `tensors` into the directory `dir` as sharded safetensors, streaming.
fn write_sharded(dir: &Path, tensors: &StateDict, size: u64) -> Result<(), CliError> {
    let options = ShardedOptions::new(size).with_source_pages(SourcePages::Release);
    let written = save_sharded_safetensors(dir, tensors, &options)?;
    tracing::info!(
        "wrote {} tensors ({} bytes) in {} shard(s) to {}",
        tensors.len(),
        written.total_size,
        written.shards.len(),
        dir.display()
    );
    Ok(())
}

/// The tensors of `value` under `.`-joined names; the other values are an error, or with
/// --tensors-only dropped and listed on stderr.
fn tensors_to_write(args: &Args, value: &Value) -> Result<StateDict, CliError> {
    check_flat_names(value).map_err(|problem| {
        CliError::new(format!(
            "{}: {problem}",
            printable(&args.input.display().to_string())
        ))
    })?;
    let (tensors, others) = flatten_tensors(value);
    if !others.is_empty() {
        let listed = describe_non_tensors(&others);
        let count = others.len();
        let values = if count == 1 { "value" } else { "values" };
        if !args.tensors_only {
            return Err(CliError::new(format!(
                "{}: {count} non-tensor {values} cannot be written to safetensors ({listed}); \
                 pass --tensors-only to drop them",
                printable(&args.input.display().to_string())
            )));
        }
        eprintln!("ckpt: dropping {count} non-tensor {values}: {listed}");
    }
    Ok(tensors)
}

/// The input is read only to be written: its pages are released as they are written.
fn streaming_save_options() -> SaveOptions {
    SaveOptions::default().with_source_pages(SourcePages::Release)
}

fn streaming_safetensors_options() -> SafetensorsOptions {
    SafetensorsOptions::default().with_source_pages(SourcePages::Release)
}

/// Checks that every tensor gets its own non-empty safetensors name when nested keys are
/// joined with `.` (as [`flatten_tensors`] joins them): `{"a.b": x, "a": {"b": y}}` would
/// otherwise silently keep only one of the two.
pub fn check_flat_names(value: &Value) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut clashes = Vec::new();
    for leaf in leaves(value) {
        if leaf.value.as_tensor().is_none() {
            continue;
        }
        if leaf.path.is_empty() {
            return Err(
                "the value to convert is a single tensor without a name; safetensors stores named tensors"
                    .to_string(),
            );
        }
        let name = leaf.flat_name();
        if !seen.insert(name.clone()) {
            clashes.push(printable(&name));
        }
    }
    if clashes.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} tensor name{} would be written twice once nested keys are joined with '.' ({})",
            clashes.len(),
            if clashes.len() == 1 { "" } else { "s" },
            abbreviate(&clashes, LISTED)
        ))
    }
}

/// `iteration (int), cfg (str) and 3 more`.
pub fn describe_non_tensors(others: &[(String, Value)]) -> String {
    let described: Vec<String> = others
        .iter()
        .map(|(path, v)| format!("{} ({})", printable(path), printable(&v.type_name())))
        .collect();
    abbreviate(&described, LISTED)
}

/// The `__metadata__` of a safetensors input (kept as a dict attribute by the reader), so
/// that safetensors to safetensors keeps it.
fn safetensors_metadata(value: &Value) -> Option<Vec<(String, String)>> {
    let metadata = value.as_dict()?.attribute("__metadata__")?.as_dict()?;
    let pairs: Vec<(String, String)> = metadata
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    (!pairs.is_empty()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::Dict;

    #[test]
    fn output_format_follows_the_extension() {
        for name in ["a.pth", "a.pt", "a.PYTH", "dir.v1/a.bin"] {
            assert_eq!(
                OutputFormat::for_path(Path::new(name)).unwrap(),
                OutputFormat::Torch
            );
        }
        assert_eq!(
            OutputFormat::for_path(Path::new("a.safetensors")).unwrap(),
            OutputFormat::Safetensors
        );
        let err = OutputFormat::for_path(Path::new("a.pkl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown output extension '.pkl'"), "{err}");
        assert!(
            err.contains(".safetensors") && err.contains(".pth"),
            "{err}"
        );
        assert!(OutputFormat::for_path(Path::new("noext")).is_err());
    }

    #[test]
    fn missing_key_lists_the_top_level_keys() {
        let mut d = Dict::new();
        d.insert("model", Value::Int(1));
        d.insert("iteration", Value::Int(2));
        let err = select_key(Value::Dict(d.clone()), "state", Path::new("f.pth"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.pth: no key or path 'state' (top-level keys: model, iteration)"
        );
        let got = select_key(Value::Dict(d), "iteration", Path::new("f.pth")).unwrap();
        assert_eq!(got.as_int(), Some(2));
        let err = select_key(Value::Int(1), "model", Path::new("f.pth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds a value of type int"), "{err}");
    }

    #[test]
    fn key_paths_reach_into_dicts_lists_and_objects() {
        let mut layer = Dict::new();
        layer.insert("weight", Value::Int(1));
        let mut state = Dict::new();
        state.insert("layers", Value::List(vec![Value::Dict(layer)]));
        let object = Value::Object(Box::new(
            ckpt::Object::new("m", "Net", ckpt::ObjectBuild::New(vec![]))
                .with_state(Value::Dict(state)),
        ));
        let mut root = Dict::new();
        root.insert("model.v1", object);
        let root = Value::Dict(root);
        let file = Path::new("f.pth");
        let got = select_key(root.clone(), "model.v1.layers[0].weight", file).unwrap();
        assert_eq!(got.as_int(), Some(1));
        assert!(select_key(root.clone(), "model.v1", file).is_ok());
        let err = select_key(root.clone(), "model.v1.layers[0].bias", file)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.pth: no key or path 'model.v1.layers[0].bias' ('model.v1.layers[0]' holds: weight)"
        );
        let Ok(object) = select_key(root, "model.v1", file) else {
            unreachable!()
        };
        let err = select_key(object, "x", file).unwrap_err().to_string();
        assert_eq!(
            err,
            "f.pth: no key or path 'x' (the top level is a m.Net object holding: layers)"
        );
    }

    #[test]
    fn tensors_clashing_after_flattening_are_refused() {
        let t = || Value::Tensor(ckpt::Tensor::from_slice(&[1f32], &[1]).unwrap());
        let mut inner = Dict::new();
        inner.insert("b", t());
        let mut root = Dict::new();
        root.insert("a.b", t());
        root.insert("a", Value::Dict(inner));
        root.insert("list", Value::List(vec![t(), Value::Int(3)]));
        let err = check_flat_names(&Value::Dict(root.clone())).unwrap_err();
        assert!(
            err.contains("1 tensor name") && err.contains("(a.b)"),
            "{err}"
        );
        root.remove("a.b");
        assert_eq!(check_flat_names(&Value::Dict(root)), Ok(()));
        assert!(check_flat_names(&t())
            .unwrap_err()
            .contains("without a name"));
    }

    #[test]
    fn non_tensor_lists_are_abbreviated() {
        let others: Vec<(String, Value)> =
            (0..10).map(|i| (format!("v{i}"), Value::Int(i))).collect();
        assert_eq!(
            describe_non_tensors(&others),
            "v0 (int), v1 (int), v2 (int), v3 (int), v4 (int), v5 (int), v6 (int), v7 (int) and 2 more"
        );
    }

    #[test]
    fn safetensors_metadata_is_carried_over() {
        let mut meta = Dict::new();
        meta.insert("format", Value::Str("pt".into()));
        let mut d = Dict::ordered();
        d.set_attribute("__metadata__", Value::Dict(meta));
        assert_eq!(
            safetensors_metadata(&Value::Dict(d)),
            Some(vec![("format".to_string(), "pt".to_string())])
        );
        assert_eq!(safetensors_metadata(&Value::Dict(Dict::new())), None);
    }
}

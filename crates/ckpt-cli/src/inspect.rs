//! `ckpt inspect FILE [--json]`: the format, every tensor and every other value of a file.

use std::collections::hash_map::Entry as HashEntry;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ckpt::format::{load_with, LoadOptions, Loaded};
use ckpt::nn_module::module_entries;
use ckpt::walk::{children, path_string, Leaf, Step};
use ckpt::{Key, ObjectBuild, Value};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{human_bytes, print, printable, step_json, Align, JsonLines, Table};
use crate::subtrees::{Fingerprints, Subtree};

/// Show the format, tensors and other values of a checkpoint file
///
/// Lists every tensor (path, type, dtype, shape, bytes) and every other value (path, type,
/// short repr), then totals. Nothing in the file is executed: Python objects ckpt does not
/// know are listed as opaque globals, followed by what their arguments and state hold (a
/// model saved whole with torch.save(model) shows its parameters at paths such as
/// `_modules.fc._parameters.weight`, and the state-dict name `ckpt convert` gives them).
/// A container whose contents repeat those of one listed before (an object the file shares
/// in many places) is listed there once; each later place is one entry naming it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint file: torch (.pth/.pt, zip or legacy), Detectron pickle (.pkl),
    /// pycls (.pyth) or safetensors; the format is detected from the content. A URL or a
    /// detectron2:// or catalog:// name is downloaded once into the cache.
    pub file: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Longest value repr shown.
const REPR_CHARS: usize = 80;

pub fn run(args: &Args) -> Result<(), CliError> {
    let path = crate::source::partial_input(&args.file)?;
    let loaded = load_with(&path, &LoadOptions::default())?;
    let report = Report::new(&args.file.display().to_string(), &loaded);
    if args.json {
        print(&report.to_json()?)
    } else {
        print(&report.render())
    }
}

/// Everything `inspect` says about a file; serialised as the `--json` output.
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub format: &'static str,
    pub entries: Vec<Entry>,
    /// Pickled `torch.nn.Module`s (the outermost ones), whose state dicts `convert` writes.
    pub modules: Vec<ModuleInfo>,
    pub totals: Totals,
}

/// A pickled `torch.nn.Module` found in the file.
#[derive(Debug, Serialize)]
pub struct ModuleInfo {
    pub path: Vec<serde_json::Value>,
    /// Its class, `module.name`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Entries of its state dict.
    pub state_dict_entries: usize,
    #[serde(skip)]
    pub display_path: String,
}

/// One leaf of the checkpoint's tree: a tensor, or any other value (an empty container too).
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Tensor(TensorEntry),
    Value(ValueEntry),
}

#[derive(Debug, Serialize)]
pub struct TensorEntry {
    /// Keys and indices from the root (strings for str keys, numbers for int keys/indices).
    pub path: Vec<serde_json::Value>,
    /// `Tensor`, `Parameter` or `numpy.ndarray`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    /// Bytes of the elements (not of the storage).
    pub bytes: u64,
    pub contiguous: bool,
    pub requires_grad: bool,
    /// For a tensor of a pickled `torch.nn.Module`: its name in what `ckpt convert` writes
    /// (the module's `state_dict()` name, after the path to the module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dict_name: Option<String>,
    #[serde(skip)]
    pub display_path: String,
}

#[derive(Debug, Serialize)]
pub struct ValueEntry {
    pub path: Vec<serde_json::Value>,
    #[serde(rename = "type")]
    pub type_name: String,
    pub repr: String,
    /// A global ckpt does not interpret, kept verbatim and never executed.
    pub opaque: bool,
    /// For a container listed once already: the path where its contents are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    #[serde(skip)]
    pub display_path: String,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub tensors: usize,
    /// Sum of every tensor's element bytes (a shared storage counts once per tensor).
    pub tensor_bytes: u64,
    /// Distinct storages behind the tensors.
    pub storages: usize,
    /// Bytes of the distinct storages (what the tensors take in the file or in memory).
    pub storage_bytes: u64,
    pub values: usize,
    pub opaque: usize,
}

impl Report {
    /// Walks `loaded` twice (once to fingerprint its containers, once to list it); cost
    /// linear in the number of values plus the entries listed. A container whose contents
    /// equal those of one listed before (a sub-tree the file shares through its memo, copied
    /// at each place it is used) is listed once, later places as one entry referring to it.
    pub fn new(file: &str, loaded: &Loaded) -> Report {
        let fingerprints = Fingerprints::of(&loaded.value);
        let mut listing = Listing {
            entries: Vec::new(),
            totals: Totals::default(),
            storages: HashSet::new(),
            modules: ModuleNames::default(),
        };
        let root = &loaded.value;
        let mut path: Vec<Step<'_>> = Vec::new();
        let mut frames = Vec::new();
        match children(root) {
            None => listing.leaf(&path, root),
            Some(frame) => {
                listing.open(&path, root);
                frames.push(frame);
            }
        }
        let mut first_at: HashMap<(u64, usize), String> = HashMap::new();
        while let Some(frame) = frames.last_mut() {
            let Some((step, value)) = frame.next() else {
                frames.pop();
                path.pop();
                continue;
            };
            path.push(step);
            let Some(frame) = children(value) else {
                listing.leaf(&path, value);
                path.pop();
                continue;
            };
            if let Some(info) = fingerprints.shared(value, path.len()) {
                match first_at.entry((info.hash, info.entries)) {
                    HashEntry::Occupied(first) => {
                        listing.same_as(&path, value, first.get(), info);
                        path.pop();
                        continue;
                    }
                    HashEntry::Vacant(slot) => {
                        slot.insert(listed_path(&path));
                    }
                }
            }
            listing.open(&path, value);
            frames.push(frame);
        }
        Report {
            file: file.to_string(),
            format: loaded.format.name(),
            entries: listing.entries,
            modules: listing.modules.found,
            totals: listing.totals,
        }
    }

    /// The `--json` output: the fields of [`Report`], one entry per line.
    pub fn to_json(&self) -> Result<String, CliError> {
        Ok(JsonLines::new()
            .field("file", &self.file)?
            .field("format", self.format)?
            .rows("entries", &self.entries)?
            .rows("modules", &self.modules)?
            .field("totals", &self.totals)?
            .render())
    }

    /// Tables for people: the tensors, then the other values, then the totals.
    pub fn render(&self) -> String {
        let mut out = format!(
            "file:    {}\nformat:  {}\n",
            printable(&self.file),
            self.format
        );
        let mut tensors = Table::new(
            &["TENSOR", "TYPE", "DTYPE", "SHAPE", "BYTES", "NOTE"],
            &[
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Left,
            ],
        );
        let mut values = Table::new(
            &["VALUE", "TYPE", "REPR", "NOTE"],
            &[Align::Left, Align::Left, Align::Left, Align::Left],
        );
        for entry in &self.entries {
            match entry {
                Entry::Tensor(t) => {
                    let mut notes = Vec::new();
                    if !t.contiguous {
                        notes.push("non-contiguous".to_string());
                    }
                    if t.requires_grad {
                        notes.push("requires_grad".to_string());
                    }
                    if let Some(name) = &t.state_dict_name {
                        notes.push(format!("state dict: {}", printable(name)));
                    }
                    tensors.row(vec![
                        t.display_path.clone(),
                        t.type_name.clone(),
                        t.dtype.to_string(),
                        format!("{:?}", t.shape),
                        human_bytes(t.bytes),
                        notes.join(", "),
                    ]);
                }
                Entry::Value(v) => values.row(vec![
                    v.display_path.clone(),
                    printable(&v.type_name),
                    printable(&v.repr),
                    if v.opaque {
                        "opaque global (not executed)".to_string()
                    } else {
                        String::new()
                    },
                ]),
            }
        }
        if !tensors.is_empty() {
            out.push('\n');
            out.push_str(&tensors.render());
        }
        if !values.is_empty() {
            out.push('\n');
            out.push_str(&values.render());
        }
        if !self.modules.is_empty() {
            let mut modules = Table::new(
                &["MODULE", "TYPE", "STATE DICT"],
                &[Align::Left, Align::Left, Align::Right],
            );
            for m in &self.modules {
                modules.row(vec![
                    m.display_path.clone(),
                    printable(&m.type_name),
                    format!(
                        "{} entr{}",
                        m.state_dict_entries,
                        if m.state_dict_entries == 1 {
                            "y"
                        } else {
                            "ies"
                        }
                    ),
                ]);
            }
            out.push('\n');
            out.push_str(&modules.render());
            out.push_str("(pickled torch.nn.Module: `ckpt convert` writes its state dict)\n");
        }
        let t = &self.totals;
        out.push_str(&format!(
            "\ntotals:  {} tensor{}, {} ({} in {} storage{}); {} other value{}{}\n",
            t.tensors,
            plural(t.tensors),
            human_bytes(t.tensor_bytes),
            human_bytes(t.storage_bytes),
            t.storages,
            plural(t.storages),
            t.values,
            plural(t.values),
            if t.opaque > 0 {
                format!(" ({} opaque)", t.opaque)
            } else {
                String::new()
            }
        ));
        out
    }
}

/// What [`Report::new`] gathers as it walks.
struct Listing {
    entries: Vec<Entry>,
    totals: Totals,
    storages: HashSet<usize>,
    modules: ModuleNames,
}

impl Listing {
    /// A container the walk goes into: an opaque object is an entry of its own.
    fn open(&mut self, path: &[Step<'_>], value: &Value) {
        if matches!(value, Value::Object(_)) {
            let leaf = Leaf {
                path: path.to_vec(),
                value,
                opened: true,
            };
            self.modules.visit(&leaf, &listed_path(path));
            self.leaf(path, value);
        }
    }

    /// A tensor, a scalar, an empty container or an opened object.
    fn leaf(&mut self, path: &[Step<'_>], value: &Value) {
        let json_path = listed_json(path);
        let raw_path = listed_path(path);
        let display_path = printable(&raw_path);
        if let Some(tensor) = value.as_tensor() {
            let bytes = tensor.nbytes() as u64;
            self.totals.tensors += 1;
            // Expanded views can each declare up to isize::MAX bytes.
            self.totals.tensor_bytes = self.totals.tensor_bytes.saturating_add(bytes);
            if self.storages.insert(tensor.storage().id()) {
                self.totals.storages += 1;
                self.totals.storage_bytes += tensor.storage().len() as u64;
            }
            self.entries.push(Entry::Tensor(TensorEntry {
                path: json_path,
                type_name: value.type_name(),
                dtype: tensor.dtype().name(),
                shape: tensor.shape().to_vec(),
                bytes,
                contiguous: tensor.is_contiguous(),
                requires_grad: tensor.requires_grad(),
                state_dict_name: self.modules.names.remove(&raw_path),
                display_path,
            }));
        } else {
            let opaque = matches!(value, Value::Object(_));
            self.totals.values += 1;
            self.totals.opaque += usize::from(opaque);
            self.entries.push(Entry::Value(ValueEntry {
                path: json_path,
                type_name: value.type_name(),
                repr: repr(value),
                opaque,
                same_as: None,
                display_path,
            }));
        }
    }

    /// A container whose contents equal those listed at `first`: one entry, and its
    /// contents counted in the totals (their storages are the first place's).
    fn same_as(&mut self, path: &[Step<'_>], value: &Value, first: &str, info: &Subtree) {
        let t = &info.totals;
        self.totals.tensors += t.tensors;
        self.totals.tensor_bytes = self.totals.tensor_bytes.saturating_add(t.tensor_bytes);
        self.totals.values += t.values;
        self.totals.opaque += t.opaque;
        self.entries.push(Entry::Value(ValueEntry {
            path: listed_json(path),
            type_name: value.type_name(),
            repr: format!(
                "<same contents as {} ({} entries, listed there)>",
                printable(first),
                info.entries
            ),
            opaque: false,
            same_as: Some(first.to_string()),
            display_path: printable(&listed_path(path)),
        }));
    }
}

/// Bytes of a str key or attribute name shown in a path: a longer one shows its start and
/// its length, so that a huge key above many leaves is not written out once per leaf.
const KEY_BYTES: usize = 200;

/// `name` cut to [`KEY_BYTES`] with its length, if longer.
fn cut_name(name: &str) -> Option<String> {
    if name.len() <= KEY_BYTES {
        return None;
    }
    let mut end = KEY_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}...<{} bytes>", &name[..end], name.len()))
}

/// The path as `ckpt::walk::path_string` writes it, long names cut.
fn listed_path(path: &[Step<'_>]) -> String {
    if path.is_empty() {
        return path_string(path);
    }
    let mut out = String::new();
    for (i, step) in path.iter().enumerate() {
        let long = match step {
            Step::Key(Key::Str(name)) => cut_name(name),
            Step::Attr(name) => cut_name(name),
            _ => None,
        };
        let dotted = matches!(
            step,
            Step::Key(Key::Str(_)) | Step::Attr(_) | Step::Arg(_) | Step::State
        );
        if i > 0 && dotted {
            out.push('.');
        }
        match long {
            Some(cut) => out.push_str(&cut),
            None => out.push_str(&path_string(std::slice::from_ref(step))),
        }
    }
    out
}

/// The path for JSON, long names cut.
fn listed_json(path: &[Step<'_>]) -> Vec<serde_json::Value> {
    path.iter()
        .map(|step| match step {
            Step::Key(Key::Str(name)) => cut_name(name)
                .map(serde_json::Value::from)
                .unwrap_or_else(|| step_json(step)),
            Step::Attr(name) => cut_name(name)
                .map(|cut| serde_json::json!({ "attr": cut }))
                .unwrap_or_else(|| step_json(step)),
            _ => step_json(step),
        })
        .collect()
}

/// The state-dict names of the tensors of pickled modules, found as the walk opens them.
#[derive(Default)]
struct ModuleNames {
    /// The outermost modules, in order.
    found: Vec<ModuleInfo>,
    /// Path of the module being listed: modules inside it are in its state dict already.
    current: Option<String>,
    /// Path of each tensor of a module (as the walk writes it) to its state-dict name.
    names: HashMap<String, String>,
}

impl ModuleNames {
    /// Called for each opaque object the walk opens, before its contents.
    fn visit(&mut self, leaf: &Leaf<'_>, raw_path: &str) {
        let inside_current = self.current.as_deref().is_some_and(|outer| {
            outer == "(root)"
                || raw_path
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        });
        if inside_current {
            return;
        }
        let Some(entries) = module_entries(leaf.value) else {
            return;
        };
        let prefix = leaf.flat_name();
        for entry in &entries {
            let mut path = leaf.path.clone();
            path.extend_from_slice(&entry.path);
            let name = if prefix.is_empty() {
                entry.name.clone()
            } else {
                format!("{prefix}.{}", entry.name)
            };
            self.names.insert(listed_path(&path), name);
        }
        self.found.push(ModuleInfo {
            path: listed_json(&leaf.path),
            type_name: leaf.value.type_name(),
            state_dict_entries: entries.len(),
            display_path: printable(raw_path),
        });
        self.current = Some(raw_path.to_string());
    }
}

/// A short repr; for an opaque object also how the file built it (never by running it).
pub fn repr(value: &Value) -> String {
    let Value::Object(object) = value else {
        return value.short_repr(REPR_CHARS);
    };
    if object.is_recursive_reference() {
        return "<a reference back to an object containing it: the cycle is cut here>".into();
    }
    let args = |args: &[Value]| Value::Tuple(args.to_vec()).short_repr(REPR_CHARS);
    let mut text = match &object.build {
        ObjectBuild::Global => format!("<global {}>", object.qualified_name()),
        ObjectBuild::Call(a) => format!("{}{}", object.qualified_name(), args(a)),
        ObjectBuild::New(a) => format!("{}.__new__{}", object.qualified_name(), args(a)),
    };
    if let Some(state) = &object.state {
        text.push_str(" state=");
        text.push_str(&state.short_repr(REPR_CHARS));
    }
    if text.chars().count() > REPR_CHARS {
        let cut: String = text.chars().take(REPR_CHARS - 3).collect();
        text = format!("{cut}...");
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::format::Format;
    use ckpt::{Dict, Object, Tensor};

    fn sample() -> Loaded {
        let weight = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let tied = weight.view(&[3, 2], &[1, 3], 0).unwrap();
        let mut model = Dict::ordered();
        model.insert("fc.weight", Value::Parameter(weight));
        model.insert("head.weight", Value::Tensor(tied));
        let mut state = Dict::new();
        state.insert(
            0i64,
            Value::NdArray(Tensor::from_slice(&[7i64], &[]).unwrap()),
        );
        let mut root = Dict::new();
        root.insert("model", Value::Dict(model));
        root.insert("state", Value::Dict(state));
        root.insert("iteration", Value::Int(9));
        root.insert("extra", Value::List(vec![]));
        root.insert(
            "cfg",
            Value::Object(Box::new(
                Object::new("argparse", "Namespace", ObjectBuild::New(vec![])).with_state(
                    Value::Dict({
                        let mut d = Dict::new();
                        d.insert("lr", Value::Float(0.1));
                        d
                    }),
                ),
            )),
        );
        Loaded::new(Format::TorchZip, Value::Dict(root))
    }

    #[test]
    fn json_report_lists_every_leaf_with_its_path() {
        let report = Report::new("x.pth", &sample());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["format"], "torch-zip");
        let entries = json["entries"].as_array().unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e["path"].clone()).collect();
        assert_eq!(
            serde_json::Value::Array(paths),
            serde_json::json!([
                ["model", "fc.weight"],
                ["model", "head.weight"],
                ["state", 0],
                ["iteration"],
                ["extra"],
                ["cfg"],
                ["cfg", {"attr": "lr"}]
            ])
        );
        assert_eq!(entries[0]["kind"], "tensor");
        assert_eq!(entries[0]["type"], "Parameter");
        assert_eq!(entries[0]["dtype"], "float32");
        assert_eq!(entries[0]["shape"], serde_json::json!([2, 3]));
        assert_eq!(entries[0]["bytes"], 24);
        assert_eq!(entries[1]["contiguous"], false);
        assert_eq!(entries[2]["type"], "numpy.ndarray");
        assert_eq!(entries[2]["shape"], serde_json::json!([]));
        assert_eq!(entries[3]["kind"], "value");
        assert_eq!(entries[3]["repr"], "9");
        assert_eq!(entries[3]["opaque"], false);
        assert_eq!(entries[4]["repr"], "[]");
        assert_eq!(entries[5]["type"], "argparse.Namespace");
        assert_eq!(entries[5]["opaque"], true);
        assert_eq!(
            entries[5]["repr"],
            "argparse.Namespace.__new__() state={\"lr\": 0.1}"
        );
        // An opaque object is listed, then what its state holds.
        assert_eq!(entries[6]["type"], "float");
        assert_eq!(entries[6]["opaque"], false);
    }

    #[test]
    fn json_output_has_one_line_per_entry() {
        let report = Report::new("x.pth", &sample());
        let text = report.to_json().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, serde_json::to_value(&report).unwrap());
        // `{`, file, format, `"entries": [`, the entries, `],`, modules, totals, `}`.
        assert_eq!(text.lines().count(), report.entries.len() + 8);
        let entry_lines = text.lines().filter(|l| l.contains("\"kind\":")).count();
        assert_eq!(entry_lines, report.entries.len());
    }

    #[test]
    fn shared_storages_count_once_in_storage_bytes() {
        let report = Report::new("x.pth", &sample());
        assert_eq!(
            report.totals,
            Totals {
                tensors: 3,
                tensor_bytes: 24 + 24 + 8,
                storages: 2,
                storage_bytes: 24 + 8,
                values: 4,
                opaque: 1,
            }
        );
    }

    /// What the reader makes of a list shared 800 times, 190 levels deep: 800 copies.
    fn shared_deep_list() -> Value {
        let mut inner = Value::List((0..100).map(Value::Int).collect());
        for _ in 0..190 {
            inner = Value::List(vec![inner]);
        }
        Value::List(vec![inner; 800])
    }

    #[test]
    fn a_sub_tree_repeated_deep_down_is_listed_once() {
        let loaded = Loaded::new(Format::Pickle, shared_deep_list());
        let report = Report::new("x.pkl", &loaded);
        // The first copy's 100 leaves, then one entry per later copy (not 80,000 leaves
        // with 190-step paths).
        assert_eq!(report.entries.len(), 100 + 799);
        let path_steps: usize = report
            .entries
            .iter()
            .map(|e| match e {
                Entry::Tensor(t) => t.path.len(),
                Entry::Value(v) => v.path.len(),
            })
            .sum();
        assert!(path_steps < 100 * 192 + 799 * 2, "{path_steps}");
        let Entry::Value(second) = &report.entries[100] else {
            panic!("a value entry")
        };
        assert_eq!(second.same_as.as_deref(), Some("[0]"));
        assert_eq!(
            second.repr,
            "<same contents as [0] (100 entries, listed there)>"
        );
        // The totals still count every copy.
        assert_eq!(report.totals.values, 80_000);
    }

    #[test]
    fn a_huge_key_is_cut_in_every_path_under_it() {
        let key = "k".repeat(1 << 20);
        let mut inner = Dict::new();
        inner.insert(
            key.as_str(),
            Value::List((0..1000).map(Value::Int).collect()),
        );
        let loaded = Loaded::new(Format::Pickle, Value::Dict(inner));
        let report = Report::new("x.pkl", &loaded);
        assert_eq!(report.entries.len(), 1000);
        let Entry::Value(last) = &report.entries[999] else {
            panic!("a value entry")
        };
        let shown = format!("{}...<1048576 bytes>[999]", "k".repeat(200));
        assert_eq!(last.display_path, shown);
        assert_eq!(
            last.path,
            vec![
                serde_json::Value::from(format!("{}...<1048576 bytes>", "k".repeat(200))),
                serde_json::Value::from(999)
            ]
        );
    }

    #[test]
    fn small_repeated_containers_are_listed_in_place() {
        let pair = Value::List(vec![Value::Int(1), Value::Int(2)]);
        let loaded = Loaded::new(Format::Pickle, Value::List(vec![pair.clone(), pair]));
        let report = Report::new("x.pkl", &loaded);
        assert_eq!(report.entries.len(), 4);
    }

    #[test]
    fn table_shows_tensors_values_and_totals() {
        let text = Report::new("x.pth", &sample()).render();
        assert!(text.contains("format:  torch-zip"), "{text}");
        assert!(text.contains("model.fc.weight"), "{text}");
        assert!(text.contains("state[0]"), "{text}");
        assert!(text.contains("non-contiguous"), "{text}");
        assert!(text.contains("opaque global"), "{text}");
        assert!(
            text.contains(
                "totals:  3 tensors, 56 B (32 B in 2 storages); 4 other values (1 opaque)"
            ),
            "{text}"
        );
    }
}

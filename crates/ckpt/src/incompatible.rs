//! The report of a non-strict model load, and the warnings detectron2 prints for it, with
//! the same wording and grouping (`docs/behaviour.md#incompatible-keys`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;

use crate::dtype::DType;
use crate::value::Dict;

/// A checkpoint entry not loaded because its shape differs from the shape of the model's
/// parameter or buffer it would have been loaded into.
///
/// ```
/// use ckpt::ShapeMismatch;
/// let m = ShapeMismatch::new("fc.bias", vec![3], vec![2]);
/// assert_eq!((m.model_key.as_str(), m.checkpoint_key.as_str()), ("fc.bias", "fc.bias"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShapeMismatch {
    /// The model's name.
    pub model_key: String,
    /// The entry's name in the checkpoint (the model's name unless the load renamed it).
    pub checkpoint_key: String,
    /// The entry's shape in the checkpoint.
    pub checkpoint_shape: Vec<usize>,
    /// The shape the model has.
    pub model_shape: Vec<usize>,
}

impl ShapeMismatch {
    /// The mismatch of an entry whose name is `key` in the checkpoint and in the model.
    pub fn new(
        key: impl Into<String>,
        checkpoint_shape: Vec<usize>,
        model_shape: Vec<usize>,
    ) -> Self {
        let key = key.into();
        ShapeMismatch {
            checkpoint_key: key.clone(),
            model_key: key,
            checkpoint_shape,
            model_shape,
        }
    }
}

/// A checkpoint entry not loaded because its values cannot be converted into the dtype of
/// the model's parameter or buffer without a loss torch warns about (complex into real, see
/// [`can_cast`](crate::can_cast)).
///
/// ```
/// use ckpt::{DType, DTypeMismatch};
/// let m = DTypeMismatch::new("w", DType::Complex64, DType::Float32);
/// assert_eq!(m.model_dtype, DType::Float32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DTypeMismatch {
    /// The model's name (the same in the checkpoint).
    pub key: String,
    /// The entry's dtype in the checkpoint.
    pub checkpoint_dtype: DType,
    /// The dtype the model has.
    pub model_dtype: DType,
}

impl DTypeMismatch {
    /// The mismatch of the entry `key`.
    pub fn new(key: impl Into<String>, checkpoint_dtype: DType, model_dtype: DType) -> Self {
        DTypeMismatch {
            key: key.into(),
            checkpoint_dtype,
            model_dtype,
        }
    }
}

/// What a model load did not match, as torch's `load_state_dict(strict=False)` and
/// detectron2 report it.
///
/// ```
/// use ckpt::{IncompatibleKeys, ShapeMismatch};
/// let mut report = IncompatibleKeys::default();
/// assert!(report.is_empty());
/// report.missing_keys.push("fc.bias".to_string());
/// report.incorrect_shapes.push(ShapeMismatch::new("fc.weight", vec![3, 2], vec![2, 3]));
/// assert_eq!(report.warnings(&[]).len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncompatibleKeys {
    /// Names of the model not loaded (after dropping shape mismatches, which are missing too).
    pub missing_keys: Vec<String>,
    /// Names of the checkpoint the model does not have.
    pub unexpected_keys: Vec<String>,
    /// Entries skipped because the shapes differ.
    pub incorrect_shapes: Vec<ShapeMismatch>,
    /// Entries skipped because their values cannot be loaded into the model's dtype.
    pub incorrect_dtypes: Vec<DTypeMismatch>,
}

impl IncompatibleKeys {
    /// Whether everything matched.
    pub fn is_empty(&self) -> bool {
        self.missing_keys.is_empty()
            && self.unexpected_keys.is_empty()
            && self.incorrect_shapes.is_empty()
            && self.incorrect_dtypes.is_empty()
    }

    /// The warnings Python logs for this report, in order and in the same words: one per
    /// shape mismatch, one per dtype mismatch (Python has none), then the missing keys, then
    /// the unexpected keys, both grouped by module as detectron2 groups them. A name of an
    /// alias group (`aliases`, see [`Model::aliases`](crate::Model::aliases)) is not missing
    /// when another name of its group was loaded.
    ///
    /// The text is plain (no terminal colours) and key names, which come from files, have
    /// their control characters escaped, so the messages are safe to print.
    pub fn warnings(&self, aliases: &[Vec<String>]) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.incorrect_shapes {
            out.push(format!(
                "Skip loading parameter '{}' to the model due to incompatible shapes: {} in the checkpoint but {} in the model! You might want to double check if this is expected.",
                escape_controls(&m.model_key),
                python_shape(&m.checkpoint_shape),
                python_shape(&m.model_shape)
            ));
        }
        for m in &self.incorrect_dtypes {
            out.push(format!(
                "Skip loading parameter '{}' to the model due to incompatible dtypes: torch.{} in the checkpoint but torch.{} in the model (the imaginary part would be lost)! You might want to double check if this is expected.",
                escape_controls(&m.key),
                m.checkpoint_dtype,
                m.model_dtype
            ));
        }
        if !self.missing_keys.is_empty() {
            let missing = filter_reused_missing_keys(&self.missing_keys, aliases);
            if !missing.is_empty() {
                out.push(missing_keys_message(&missing));
            }
        }
        if !self.unexpected_keys.is_empty() {
            out.push(unexpected_keys_message(&self.unexpected_keys));
        }
        out
    }

    /// Logs each of [`IncompatibleKeys::warnings`] as a `tracing` warning.
    pub fn log(&self, aliases: &[Vec<String>]) {
        for message in self.warnings(aliases) {
            tracing::warn!("{message}");
        }
    }
}

/// What a checkpointer's load did, as a value a program can check (the same facts the load
/// logs as warnings): the file, which model names were loaded, what did not match, which
/// checkpointables were restored, and what is left of the checkpoint dict.
///
/// Its [`Display`](std::fmt::Display) is a readable summary:
///
/// ```
/// use ckpt::{shared, Checkpointables, Checkpointer, Dict, StateDict, StateDictModel, Tensor};
/// let dir = tempfile::tempdir()?;
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[1.0f32, 2.0], &[2])?);
/// let model = shared(StateDictModel::new(sd));
/// let checkpointer = Checkpointer::new(model, dir.path());
/// checkpointer.save("model_final", Dict::new())?;
/// let path = dir.path().join("model_final.pth");
/// let report = checkpointer.load_with_report(path, Checkpointables::All)?;
/// assert_eq!(report.loaded, vec!["fc.weight"]);
/// assert!(report.incompatible.is_empty() && !report.matched_nothing());
/// println!("{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadReport {
    /// The file loaded; `None` when the path was empty and nothing was loaded.
    pub path: Option<PathBuf>,
    /// How many parameters and buffers the model has.
    pub model_keys: usize,
    /// The model's names that were loaded from the checkpoint, in the checkpoint's order.
    pub loaded: Vec<String>,
    /// What did not match: missing and unexpected names, shape mismatches.
    pub incompatible: IncompatibleKeys,
    /// The checkpointables restored from the checkpoint, in the order they were loaded.
    pub checkpointables: Vec<String>,
    /// What is left of the checkpoint dict (`iteration`, user extras): what `load` returns.
    pub extra: Dict,
    /// The checkpoints a resume passed over because they could not be read (corrupt,
    /// truncated, missing), newest first: the one `last_checkpoint` names and any tried
    /// after it, before `path` loaded. Empty when the tagged checkpoint loaded.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// A checkpoint a resume passed over, and why ([`LoadReport::skipped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedCheckpoint {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Why it could not be loaded (the error and its causes, on one line).
    pub reason: String,
}

impl SkippedCheckpoint {
    /// `path` was passed over because of `reason`.
    pub fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> SkippedCheckpoint {
        SkippedCheckpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl LoadReport {
    /// Whether the model has names and none of them was loaded: almost always a wrong file or
    /// names that need matching (a `module.`-less prefix, Caffe2 names, another model entry).
    pub fn matched_nothing(&self) -> bool {
        self.path.is_some() && self.model_keys > 0 && self.loaded.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(path) = &self.path else {
            return f.write_str("nothing loaded (no checkpoint path)");
        };
        write!(
            f,
            "loaded {}: {} of the model's {} parameters and buffers",
            escape_controls(&path.display().to_string()),
            self.loaded.len(),
            self.model_keys
        )?;
        if !self.checkpointables.is_empty() {
            write!(f, "; restored {}", self.checkpointables.join(", "))?;
        }
        if !self.extra.is_empty() {
            let keys: Vec<String> = self
                .extra
                .iter()
                .map(|(k, _)| escape_controls(&k.to_string()).into_owned())
                .collect();
            write!(f, "; left over: {}", keys.join(", "))?;
        }
        for skipped in &self.skipped {
            write!(
                f,
                "\nskipped {}: {}",
                escape_controls(&skipped.path.display().to_string()),
                escape_controls(&skipped.reason)
            )?;
        }
        if self.matched_nothing() {
            write!(f, "\nNONE of the model's names was found in the checkpoint")?;
        }
        for message in self.incompatible.warnings(&[]) {
            write!(f, "\n{message}")?;
        }
        Ok(())
    }
}

/// Logs `message` as a warning and, when nothing would show that log (no `tracing`
/// subscriber and no `log` logger is installed, the usual case in a small program), also
/// prints it on stderr: some warnings must not be missed.
pub(crate) fn warn_unmissable(message: &str) {
    warn_unmissable_to(message, &mut std::io::stderr());
}

fn warn_unmissable_to(message: &str, unlogged: &mut dyn std::io::Write) {
    tracing::warn!("{message}");
    let no_subscriber =
        tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if no_subscriber && log::max_level() == log::LevelFilter::Off {
        // Nothing else can be done about a stderr that cannot be written.
        let _ = writeln!(unlogged, "ckpt: warning: {message}");
    }
}

/// A shape as Python prints a tuple: `()`, `(3,)`, `(2, 3)`.
pub(crate) fn python_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Removes from `missing` every name of an alias group of which some name was loaded (is not
/// missing); a group missing entirely stays reported. Order is kept.
pub(crate) fn filter_reused_missing_keys(
    missing: &[String],
    aliases: &[Vec<String>],
) -> Vec<String> {
    let missing_set: HashSet<&str> = missing.iter().map(String::as_str).collect();
    let mut drop: HashSet<&str> = HashSet::new();
    for group in aliases {
        let any_missing = group.iter().any(|n| missing_set.contains(n.as_str()));
        let all_missing = group.iter().all(|n| missing_set.contains(n.as_str()));
        if any_missing && !all_missing {
            drop.extend(group.iter().map(String::as_str));
        }
    }
    missing
        .iter()
        .filter(|k| !drop.contains(k.as_str()))
        .cloned()
        .collect()
}

/// Groups keys by the part before their last `.`: `head -> [tails]`, in first-seen order.
/// A key without a dot is its own head with no tail.
pub(crate) fn group_checkpoint_keys(keys: &[String]) -> IndexMap<String, Vec<String>> {
    let mut groups: IndexMap<String, Vec<String>> = IndexMap::new();
    for key in keys {
        match key.rfind('.') {
            Some(pos) => groups
                .entry(key[..pos].to_string())
                .or_default()
                .push(key[pos + 1..].to_string()),
            None => {
                groups.entry(key.clone()).or_default();
            }
        }
    }
    groups
}

/// `text` with control characters (terminal escape sequences included) written as `\u{..}`.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// One group as Python shows it: `head`, `head.tail` or `head.{a, b}` (tails sorted), with
/// control characters escaped.
pub(crate) fn group_to_string(head: &str, tails: &[String]) -> String {
    escape_controls(&group_to_string_raw(head, tails)).into_owned()
}

fn group_to_string_raw(head: &str, tails: &[String]) -> String {
    match tails {
        [] => head.to_string(),
        [one] => format!("{head}.{one}"),
        many => {
            let mut sorted = many.to_vec();
            sorted.sort();
            format!("{head}.{{{}}}", sorted.join(", "))
        }
    }
}

/// `Some model parameters or buffers are not found in the checkpoint:` then one line per
/// group, lines sorted (detectron2 colours them blue on a terminal; colours are left to the
/// program that shows the log).
pub(crate) fn missing_keys_message(keys: &[String]) -> String {
    let mut lines: Vec<String> = group_checkpoint_keys(keys)
        .iter()
        .map(|(head, tails)| group_to_string(head, tails))
        .collect();
    lines.sort();
    format!(
        "Some model parameters or buffers are not found in the checkpoint:\n{}",
        lines.join("\n")
    )
}

/// `The checkpoint state_dict contains keys that are not used by the model:` then one
/// indented line per group, in first-seen order.
pub(crate) fn unexpected_keys_message(keys: &[String]) -> String {
    let lines: Vec<String> = group_checkpoint_keys(keys)
        .iter()
        .map(|(head, tails)| format!("  {}", group_to_string(head, tails)))
        .collect();
    format!(
        "The checkpoint state_dict contains keys that are not used by the model:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unmissable_warnings_reach_stderr_only_when_no_subscriber_shows_them() {
        let mut unlogged = Vec::new();
        warn_unmissable_to("nothing matched", &mut unlogged);
        assert_eq!(
            String::from_utf8(unlogged).unwrap(),
            "ckpt: warning: nothing matched\n"
        );

        let mut unlogged = Vec::new();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            warn_unmissable_to("nothing matched", &mut unlogged);
        });
        assert!(unlogged.is_empty(), "a subscriber shows the warning");
    }

    #[test]
    fn missing_keys_are_grouped_and_sorted_like_python() {
        let msg = missing_keys_message(&keys(&[
            "b.weight",
            "a.bias",
            "a.weight",
            "c",
            "b.running_mean",
        ]));
        assert_eq!(
            msg,
            "Some model parameters or buffers are not found in the checkpoint:\n\
             a.{bias, weight}\nb.{running_mean, weight}\nc"
        );
    }

    #[test]
    fn unexpected_keys_keep_first_seen_order_and_indent() {
        let msg = unexpected_keys_message(&keys(&["z.w", "a.b", "z.a"]));
        assert_eq!(
            msg,
            "The checkpoint state_dict contains keys that are not used by the model:\n  z.{a, w}\n  a.b"
        );
    }

    #[test]
    fn aliases_of_loaded_names_are_not_missing() {
        let aliases = vec![keys(&["enc.w", "dec.w"]), keys(&["x", "y"])];
        let missing = keys(&["dec.w", "x", "y", "z"]);
        assert_eq!(
            filter_reused_missing_keys(&missing, &aliases),
            keys(&["x", "y", "z"])
        );
    }

    #[test]
    fn terminal_escapes_in_key_names_are_neutralised() {
        let msg = unexpected_keys_message(&keys(&["evil\x1b[2J.weight"]));
        assert!(!msg.contains('\x1b'), "{msg:?}");
        assert!(msg.contains("evil\\u{1b}[2J.weight"), "{msg:?}");
    }

    #[test]
    fn dtype_warning_follows_the_shape_warning() {
        let report = IncompatibleKeys {
            incorrect_shapes: vec![ShapeMismatch::new("a", vec![1], vec![2])],
            incorrect_dtypes: vec![DTypeMismatch::new(
                "fc.weight",
                DType::Complex64,
                DType::Float32,
            )],
            ..Default::default()
        };
        assert!(!report.is_empty());
        let warnings = report.warnings(&[]);
        assert_eq!(
            warnings[1],
            "Skip loading parameter 'fc.weight' to the model due to incompatible dtypes: torch.complex64 in the checkpoint but torch.float32 in the model (the imaginary part would be lost)! You might want to double check if this is expected."
        );
    }

    #[test]
    fn shape_warning_prints_python_tuples() {
        let report = IncompatibleKeys {
            incorrect_shapes: vec![ShapeMismatch::new("fc.bias", vec![3], vec![2, 1])],
            ..Default::default()
        };
        assert_eq!(
            report.warnings(&[]),
            vec!["Skip loading parameter 'fc.bias' to the model due to incompatible shapes: (3,) in the checkpoint but (2, 1) in the model! You might want to double check if this is expected."]
        );
    }
}

//! The report of a non-strict model load, and the warnings detectron2 prints for it, with
//! the same wording and grouping (`docs/behaviour.md#incompatible-keys`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;

use indexmap::IndexMap;

use crate::dtype::DType;
use crate::value::Dict;

/// `(name, shape in the checkpoint, shape in the model)`.
pub type ShapeMismatch = (String, Vec<usize>, Vec<usize>);

/// `(name, dtype in the checkpoint, dtype in the model)`.
pub type DTypeMismatch = (String, DType, DType);

/// What a model load did not match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// Names of the model not loaded (after dropping shape mismatches, which are missing too).
    pub missing_keys: Vec<String>,
    /// Names of the checkpoint the model does not have.
    pub unexpected_keys: Vec<String>,
    /// `(name, shape in the checkpoint, shape in the model)` of entries skipped because the
    /// shapes differ.
    pub incorrect_shapes: Vec<ShapeMismatch>,
    /// `(name, dtype in the checkpoint, dtype in the model)` of entries skipped because
    /// their values cannot be loaded into the model's dtype without a loss torch warns
    /// about (complex into real, see [`crate::cast::can_cast`]).
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

    /// The warnings Python logs for this report, in order: one per shape mismatch, one per
    /// dtype mismatch (in the same words; Python has none), then the missing keys (without names whose alias was loaded, see [`filter_reused_missing_keys`]),
    /// then the unexpected keys. `colour` adds the terminal colours Python uses.
    pub fn warnings(&self, aliases: &[Vec<String>], colour: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (key, in_checkpoint, in_model) in &self.incorrect_shapes {
            out.push(format!(
                "Skip loading parameter '{}' to the model due to incompatible shapes: {} in the checkpoint but {} in the model! You might want to double check if this is expected.",
                escape_controls(key),
                python_shape(in_checkpoint),
                python_shape(in_model)
            ));
        }
        for (key, in_checkpoint, in_model) in &self.incorrect_dtypes {
            out.push(format!(
                "Skip loading parameter '{}' to the model due to incompatible dtypes: torch.{} in the checkpoint but torch.{} in the model (the imaginary part would be lost)! You might want to double check if this is expected.",
                escape_controls(key),
                in_checkpoint,
                in_model
            ));
        }
        if !self.missing_keys.is_empty() {
            let missing = filter_reused_missing_keys(&self.missing_keys, aliases);
            if !missing.is_empty() {
                out.push(missing_keys_message(&missing, colour));
            }
        }
        if !self.unexpected_keys.is_empty() {
            out.push(unexpected_keys_message(&self.unexpected_keys, colour));
        }
        out
    }

    /// Logs [`IncompatibleKeys::warnings`] through `tracing`, coloured when stderr is a
    /// terminal and `NO_COLOR` is not set.
    ///
    /// Key names come from files and have their control characters escaped, so the messages
    /// are safe to print. A subscriber that escapes ANSI codes itself (tracing-subscriber's
    /// default since 0.3.20) shows the colour codes as text: build it with
    /// `with_ansi_sanitization(false)` or set `NO_COLOR`.
    pub fn log(&self, aliases: &[Vec<String>]) {
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        for message in self.warnings(aliases, colour) {
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
/// use ckpt::{shared, Checkpointer, Dict, StateDict, StateDictModel, Tensor};
/// let dir = tempfile::tempdir()?;
/// let mut sd = StateDict::new();
/// sd.insert("fc.weight", Tensor::from_slice(&[1.0f32, 2.0], &[2])?);
/// let model = shared(StateDictModel::new(sd));
/// let checkpointer = Checkpointer::new(model, dir.path());
/// checkpointer.save("model_final", Dict::new())?;
/// let report = checkpointer.load_with_report(dir.path().join("model_final.pth"), None)?;
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
        if self.matched_nothing() {
            write!(f, "\nNONE of the model's names was found in the checkpoint")?;
        }
        for message in self.incompatible.warnings(&[], false) {
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

/// Removes from `missing` every name of an alias group of which some name was loaded (is not
/// missing); a group missing entirely stays reported. Order is kept.
pub fn filter_reused_missing_keys(missing: &[String], aliases: &[Vec<String>]) -> Vec<String> {
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
pub fn group_checkpoint_keys(keys: &[String]) -> IndexMap<String, Vec<String>> {
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
pub fn escape_controls(text: &str) -> Cow<'_, str> {
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
pub fn group_to_string(head: &str, tails: &[String]) -> String {
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

const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

fn paint(text: &str, colour: Option<&str>) -> String {
    match colour {
        Some(code) => format!("{code}{text}{RESET}"),
        None => text.to_string(),
    }
}

/// `Some model parameters or buffers are not found in the checkpoint:` then one line per
/// group, lines sorted (blue on a terminal).
pub fn missing_keys_message(keys: &[String], colour: bool) -> String {
    let mut lines: Vec<String> = group_checkpoint_keys(keys)
        .iter()
        .map(|(head, tails)| group_to_string(head, tails))
        .collect();
    lines.sort();
    let painted: Vec<String> = lines
        .iter()
        .map(|l| paint(l, colour.then_some(BLUE)))
        .collect();
    format!(
        "Some model parameters or buffers are not found in the checkpoint:\n{}",
        painted.join("\n")
    )
}

/// `The checkpoint state_dict contains keys that are not used by the model:` then one
/// indented line per group, in first-seen order (magenta on a terminal).
pub fn unexpected_keys_message(keys: &[String], colour: bool) -> String {
    let lines: Vec<String> = group_checkpoint_keys(keys)
        .iter()
        .map(|(head, tails)| {
            format!(
                "  {}",
                paint(&group_to_string(head, tails), colour.then_some(MAGENTA))
            )
        })
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
        let msg = missing_keys_message(
            &keys(&["b.weight", "a.bias", "a.weight", "c", "b.running_mean"]),
            false,
        );
        assert_eq!(
            msg,
            "Some model parameters or buffers are not found in the checkpoint:\n\
             a.{bias, weight}\nb.{running_mean, weight}\nc"
        );
    }

    #[test]
    fn unexpected_keys_keep_first_seen_order_and_indent() {
        let msg = unexpected_keys_message(&keys(&["z.w", "a.b", "z.a"]), false);
        assert_eq!(
            msg,
            "The checkpoint state_dict contains keys that are not used by the model:\n  z.{a, w}\n  a.b"
        );
        let coloured = unexpected_keys_message(&keys(&["a.b"]), true);
        assert!(coloured.contains("\x1b[35ma.b\x1b[0m"));
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
        let msg = unexpected_keys_message(&keys(&["evil\x1b[2J.weight"]), false);
        assert!(!msg.contains('\x1b'), "{msg:?}");
        assert!(msg.contains("evil\\u{1b}[2J.weight"), "{msg:?}");
    }

    #[test]
    fn dtype_warning_follows_the_shape_warning() {
        let report = IncompatibleKeys {
            incorrect_shapes: vec![("a".into(), vec![1], vec![2])],
            incorrect_dtypes: vec![("fc.weight".into(), DType::Complex64, DType::Float32)],
            ..Default::default()
        };
        assert!(!report.is_empty());
        let warnings = report.warnings(&[], false);
        assert_eq!(
            warnings[1],
            "Skip loading parameter 'fc.weight' to the model due to incompatible dtypes: torch.complex64 in the checkpoint but torch.float32 in the model (the imaginary part would be lost)! You might want to double check if this is expected."
        );
    }

    #[test]
    fn shape_warning_prints_python_tuples() {
        let report = IncompatibleKeys {
            incorrect_shapes: vec![("fc.bias".into(), vec![3], vec![2, 1])],
            ..Default::default()
        };
        assert_eq!(
            report.warnings(&[], false),
            vec!["Skip loading parameter 'fc.bias' to the model due to incompatible shapes: (3,) in the checkpoint but (2, 1) in the model! You might want to double check if this is expected."]
        );
    }
}

//! Lists of names in messages, and checks on lists of names.

use std::collections::HashSet;

/// At most ten items, comma-separated, then how many more: a model has hundreds of names,
/// a message shows enough to recognise them.
pub(crate) fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut shown = Vec::new();
    let mut total = 0usize;
    for item in items {
        if total < 10 {
            shown.push(item.as_ref().to_string());
        }
        total += 1;
    }
    let shown = shown.join(", ");
    match total {
        n if n > 10 => format!("{shown} and {} more", n - 10),
        _ => shown,
    }
}

/// The names listed more than once, each once, in order of their second appearance.
pub(crate) fn duplicates(names: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    names
        .iter()
        .filter(|n| !seen.insert(n.as_str()) && reported.insert(n.as_str()))
        .map(String::as_str)
        .collect()
}

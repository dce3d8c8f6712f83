//! The table of matches detectron2 logs after aligning names, and its helpers.
//!
//! Matched parameters of one submodule are shown as one row: the model names by their common
//! prefix and `*`, the checkpoint names compressed as `common{a,b,c}`, and the shapes.

use std::ops::Range;

use crate::matching::{shape_tuple, MatchedKey};

/// The longest common prefix of dot-separated names, in whole segments, with a trailing
/// dot: `["abc.zfg", "abc.zef"]` gives `"abc."`, a single name `"a.b"` gives `"a.b."`; no
/// common segment (or no name) gives `""`.
///
/// detectron2 keeps every segment position where the smallest and largest names agree,
/// even after a difference (`["a.b.c", "a.x.c"]` would give `"a.c."`, not a prefix); this
/// keeps only the leading run, so it is always a prefix of every name plus `"."`.
pub(crate) fn longest_common_prefix<S: AsRef<str>>(names: &[S]) -> String {
    let by_segments = |a: &&str, b: &&str| a.split('.').cmp(b.split('.'));
    let names = names.iter().map(AsRef::as_ref);
    let (Some(first), Some(last)) = (names.clone().min_by(by_segments), names.max_by(by_segments))
    else {
        return String::new();
    };
    let common: Vec<&str> = first
        .split('.')
        .zip(last.split('.'))
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    if common.is_empty() {
        String::new()
    } else {
        format!("{}.", common.join("."))
    }
}

/// The longest common prefix of strings, by characters: `["classA", "classB", "clab"]`
/// gives `"cla"`; no name gives `""`.
pub(crate) fn longest_common_prefix_str<S: AsRef<str>>(names: &[S]) -> String {
    let (Some(first), Some(last)) = (
        names.iter().map(AsRef::as_ref).min(),
        names.iter().map(AsRef::as_ref).max(),
    ) else {
        return String::new();
    };
    // Every name sorts between the smallest and the largest, so it shares their prefix.
    first
        .chars()
        .zip(last.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect()
}

/// Compresses names sharing a prefix: `["common1", "common2", "common3"]` gives
/// `"common{1,2,3}"`; the four batch-norm statistics become `bn_*`.
pub(crate) fn group_str<S: AsRef<str>>(names: &[S]) -> String {
    let lcp = longest_common_prefix_str(names);
    let rest: Vec<&str> = names.iter().map(|n| &n.as_ref()[lcp.len()..]).collect();
    format!("{lcp}{{{}}}", rest.join(","))
        .replace("bn_{beta,running_mean,running_var,gamma}", "bn_*")
        .replace("bn_beta,bn_running_mean,bn_running_var,bn_gamma", "bn_*")
}

/// For each of the sorted `keys`, the range of keys in its submodule group, if grouped.
///
/// detectron2's rule: the submodules are the prefixes up to each key's last `.`, tried
/// shortest first; a prefix with at least two keys whose checkpoint names share a prefix
/// claims those of its keys no earlier group claimed. Keys with a prefix are contiguous in
/// sorted order, so each group is a range found by binary search.
fn group_by_module(keys: &[&str], originals: &[&str]) -> Vec<Option<Range<usize>>> {
    let mut prefixes: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if let Some(pos) = key.rfind('.') {
            let prefix = &key[..=pos];
            if seen.insert(prefix) {
                prefixes.push(prefix);
            }
        }
    }
    prefixes.sort_by_key(|p| p.chars().count());

    let mut groups: Vec<Option<Range<usize>>> = vec![None; keys.len()];
    for prefix in prefixes {
        let start = keys.partition_point(|k| *k < prefix);
        let end = start + keys[start..].partition_point(|k| k.starts_with(prefix));
        if end - start <= 1 || groups[start].is_some() {
            // A group claimed earlier contains all of this one.
            continue;
        }
        if longest_common_prefix_str(&originals[start..end]).is_empty() {
            continue;
        }
        for slot in &mut groups[start..end] {
            if slot.is_none() {
                *slot = Some(start..end);
            }
        }
    }
    groups
}

/// The message detectron2 logs after matching: `Following weights matched with submodule
/// <prefix>:` (or `with model:`) and a Markdown ("pipe") table of model names, checkpoint
/// names and shapes, in model-key order.
pub fn format_match_table(matched: &[MatchedKey]) -> String {
    let mut matched: Vec<&MatchedKey> = matched.iter().collect();
    // Already sorted when it comes from `align_and_update_state_dicts`; grouping needs it.
    matched.sort_by(|a, b| a.model_key.cmp(&b.model_key));
    let keys: Vec<&str> = matched.iter().map(|m| m.model_key.as_str()).collect();
    let originals: Vec<&str> = matched.iter().map(|m| m.checkpoint_key.as_str()).collect();
    let common_prefix = longest_common_prefix(&keys);
    // Python slicing: a single key gives a "prefix" one dot longer than itself.
    let strip = |k: &str| k.get(common_prefix.len()..).unwrap_or_default().to_string();
    let groups = group_by_module(&keys, &originals);

    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut i = 0;
    while i < matched.len() {
        match &groups[i] {
            Some(range) => {
                let members: Vec<String> = keys[range.clone()].iter().map(|k| strip(k)).collect();
                let shapes: Vec<String> = matched[range.clone()]
                    .iter()
                    .map(|m| shape_tuple(&m.shape).replace(' ', ""))
                    .collect();
                rows.push([
                    format!("{}*", longest_common_prefix(&members)),
                    group_str(&originals[range.clone()]),
                    shapes.join(" "),
                ]);
                i = range.end.max(i + 1);
            }
            None => {
                rows.push([
                    strip(keys[i]),
                    originals[i].to_string(),
                    shape_tuple(&matched[i].shape),
                ]);
                i += 1;
            }
        }
    }
    let scope = match common_prefix.strip_suffix('.') {
        Some(submodule) => format!("submodule {submodule}"),
        None => "model".to_string(),
    };
    format!(
        "Following weights matched with {scope}:\n{}",
        pipe_table(["Names in Model", "Names in Checkpoint", "Shapes"], &rows)
    )
}

/// A left-aligned Markdown table, laid out as Python's `tabulate(tablefmt="pipe")` does.
fn pipe_table(headers: [&str; 3], rows: &[[String; 3]]) -> String {
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .chain([headers[col].chars().count() + 2])
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let line = |cells: [&str; 3]| {
        let mut out = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            out.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
        }
        out
    };
    let mut out = vec![line(headers)];
    let rule: Vec<String> = widths
        .iter()
        .map(|w| format!(":{}", "-".repeat(w + 1)))
        .collect();
    out.push(format!("|{}|", rule.join("|")));
    for row in rows {
        out.push(line([&row[0], &row[1], &row[2]]));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_common_prefix_helpers_behave_like_detectron2() {
        assert_eq!(longest_common_prefix(&["abc.zfg", "abc.zef"]), "abc.");
        assert_eq!(longest_common_prefix(&["a.b.c", "a.b.d", "a.x"]), "a.");
        assert_eq!(longest_common_prefix(&["abc", "abd"]), "");
        assert_eq!(longest_common_prefix(&["a.b.c"]), "a.b.c.");
        assert_eq!(longest_common_prefix::<&str>(&[]), "");

        assert_eq!(longest_common_prefix_str(&["class", "dlaps"]), "");
        assert_eq!(longest_common_prefix_str(&["classA", "classB"]), "class");
        assert_eq!(
            longest_common_prefix_str(&["classA", "classB", "clab"]),
            "cla"
        );

        assert_eq!(
            group_str(&["common1", "common2", "common3"]),
            "common{1,2,3}"
        );
        assert_eq!(
            group_str(&[
                "res2_0_bn_beta",
                "res2_0_bn_running_mean",
                "res2_0_bn_running_var",
                "res2_0_bn_gamma"
            ]),
            "res2_0_bn_*"
        );
    }

    #[test]
    fn longest_common_prefix_helpers_agree_with_the_reference() {
        assert_eq!(longest_common_prefix_str(&["class", "dlaps"]), "");
        assert_eq!(longest_common_prefix_str(&["classA", "classB"]), "class");
        assert_eq!(
            longest_common_prefix_str(&["classA", "classB", "clab"]),
            "cla"
        );
        assert_eq!(longest_common_prefix(&["abc.zfg", "abc.zef"]), "abc.");
        assert_eq!(longest_common_prefix(&["a.b.c", "a.b.d", "a.x"]), "a.");
        assert_eq!(longest_common_prefix(&["x.y", "z.y"]), "");
    }
}

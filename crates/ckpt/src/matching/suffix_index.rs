//! Finding, for a model name, the longest checkpoint name it ends with.
//!
//! `c` matches `m` when `m == c` or `m` ends with `"." + c`: the candidates are `m` itself
//! and the text after each of its dots, longest first. The checkpoint names sit in one hash
//! map, so a query costs one lookup per dot of the model name and stops at the first (the
//! longest) hit. Candidates longer than the longest checkpoint name are not even hashed.
//!
//! The cost is bounded by the model's names (written by the model's author), never by the
//! checkpoint's (from a file): each checkpoint name is hashed once, with std's randomly
//! keyed hasher, so no file can make the lookups collide.

use std::collections::HashMap;

/// Names indexed for longest-dot-suffix queries.
pub(crate) struct SuffixIndex<'a> {
    ids: HashMap<&'a str, usize>,
    longest: usize,
}

impl<'a> SuffixIndex<'a> {
    /// Indexes `names` by their position in the iterator. Empty names are left out: a match
    /// of length 0 counts as no match in detectron2.
    pub(crate) fn new(names: impl IntoIterator<Item = &'a str>) -> SuffixIndex<'a> {
        let names = names.into_iter();
        let mut ids = HashMap::with_capacity(names.size_hint().0);
        let mut longest = 0;
        for (id, name) in names.enumerate() {
            if !name.is_empty() {
                longest = longest.max(name.len());
                ids.insert(name, id);
            }
        }
        SuffixIndex { ids, longest }
    }

    /// The id of the longest indexed name that `query` equals or ends with after a `.`.
    pub(crate) fn longest_match(&self, query: &str) -> Option<usize> {
        let candidates = std::iter::once(query)
            .chain(query.match_indices('.').map(|(dot, _)| &query[dot + 1..]));
        candidates
            .filter(|c| !c.is_empty() && c.len() <= self.longest)
            .find_map(|c| self.ids.get(c).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_dot_suffix_wins() {
        let names = [
            "conv1.weight",
            "res2.conv1.weight",
            "weight",
            "",
            "v1.weight",
        ];
        let index = SuffixIndex::new(names);
        assert_eq!(index.longest_match("body.res2.conv1.weight"), Some(1));
        assert_eq!(index.longest_match("body.res3.conv1.weight"), Some(0));
        assert_eq!(index.longest_match("body.xconv1.weight"), Some(2));
        assert_eq!(index.longest_match("weight"), Some(2));
        assert_eq!(index.longest_match("res2.conv1.weight"), Some(1));
        assert_eq!(index.longest_match("bias"), None);
        assert_eq!(index.longest_match("a."), None);
        assert_eq!(index.longest_match(""), None);
    }
}

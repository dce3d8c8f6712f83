//! An index of names by their dot-separated segments, read from the end.
//!
//! `c` matches `m` when `m == c` or `m` ends with `"." + c`, which is exactly "the segments
//! of `c` are the last segments of `m`". Storing every indexed name as a path of segments
//! from its last one to its first (a trie) finds, for a query, every indexed name that
//! matches it by walking the query's segments once: the deepest name on the walk is the
//! longest match. Cost: one hash lookup per segment of the query, one insert per segment of
//! each indexed name.

use std::collections::HashMap;

/// Names indexed by their trailing segments.
pub(crate) struct SuffixIndex<'a> {
    /// `(parent node, segment) -> child node`; node 0 is the root (no segment).
    edges: HashMap<(usize, &'a str), usize>,
    /// The id of the name that ends at each node, if any.
    terminal: Vec<Option<usize>>,
}

impl<'a> SuffixIndex<'a> {
    /// Indexes `names` by their position in the iterator. Empty names are left out: a match
    /// of length 0 counts as no match in detectron2.
    pub(crate) fn new(names: impl IntoIterator<Item = &'a str>) -> SuffixIndex<'a> {
        let mut index = SuffixIndex {
            edges: HashMap::new(),
            terminal: vec![None],
        };
        for (id, name) in names.into_iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let mut node = 0usize;
            for segment in name.rsplit('.') {
                let next = index.terminal.len();
                node = *index.edges.entry((node, segment)).or_insert_with(|| next);
                if node == next {
                    index.terminal.push(None);
                }
            }
            index.terminal[node] = Some(id);
        }
        index
    }

    /// The id of the longest indexed name that `query` equals or ends with after a `.`.
    pub(crate) fn longest_match(&self, query: &str) -> Option<usize> {
        let mut node = 0usize;
        let mut best = None;
        for segment in query.rsplit('.') {
            match self.edges.get(&(node, segment)) {
                Some(&child) => node = child,
                None => break,
            }
            if let Some(id) = self.terminal[node] {
                best = Some(id);
            }
        }
        best
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
        assert_eq!(index.longest_match("bias"), None);
        assert_eq!(index.longest_match("a."), None);
    }
}

//! Depth-first walks over a [`Value`] tree.
//!
//! [`leaves`] visits every value that is not a non-empty container, with the path of keys and
//! indices that leads to it, in the tree's own order (dict insertion order, list order). Empty
//! containers are leaves too, so a listing of the leaves loses nothing of the tree's shape.
//!
//! ```
//! use ckpt::walk::{leaves, Step};
//! use ckpt::{Dict, Tensor, Value};
//! let mut model = Dict::new();
//! model.insert("fc.weight", Value::Tensor(Tensor::from_slice(&[0f32; 6], &[2, 3]).unwrap()));
//! let mut root = Dict::new();
//! root.insert("model", Value::Dict(model));
//! root.insert("iteration", Value::Int(9));
//! let root = Value::Dict(root);
//! let paths: Vec<String> = leaves(&root).map(|leaf| leaf.path_string()).collect();
//! assert_eq!(paths, ["model.fc.weight", "iteration"]);
//! ```

use std::fmt::{self, Write};

use crate::value::{Key, Value};

/// One step down a container: a dict key, or an index into a list or tuple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// The key of a `dict`, `OrderedDict` or `Counter` item.
    Key(&'a Key),
    /// The position of an item in a `list` or `tuple`.
    Index(usize),
}

impl fmt::Display for Step<'_> {
    /// A string key as is; an index or any other key in brackets (`[0]`, `['a', 1]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Key(Key::Str(s)) => f.write_str(s),
            Step::Key(Key::Int(i)) => write!(f, "[{i}]"),
            Step::Key(other) => write!(f, "[{}]", other.to_value().short_repr(60)),
            Step::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A value that is not a non-empty container, and the path from the root to it.
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    /// Keys and indices from the root; empty for the root itself.
    pub path: Vec<Step<'a>>,
    pub value: &'a Value,
}

impl Leaf<'_> {
    /// The path for people: string keys joined with `.`, indices and other keys in
    /// brackets (`optimizer.state[0].momentum_buffer`); `(root)` for the root itself.
    pub fn path_string(&self) -> String {
        if self.path.is_empty() {
            return "(root)".to_string();
        }
        let mut out = String::new();
        for (i, step) in self.path.iter().enumerate() {
            if i > 0 && matches!(step, Step::Key(Key::Str(_))) {
                out.push('.');
            }
            let _ = write!(out, "{step}");
        }
        out
    }
}

/// Every leaf of `root` in depth-first order (see the module docs). The walk keeps its own
/// stack, so arbitrarily deep trees do not overflow the call stack; the cost is linear in the
/// number of values times the depth of the paths returned.
pub fn leaves(root: &Value) -> Leaves<'_> {
    Leaves {
        root: Some(root),
        frames: Vec::new(),
        path: Vec::new(),
    }
}

/// Iterator returned by [`leaves`].
pub struct Leaves<'a> {
    root: Option<&'a Value>,
    /// Open containers, outermost first; `path` holds one step per frame after the first.
    frames: Vec<Frame<'a>>,
    path: Vec<Step<'a>>,
}

enum Frame<'a> {
    Dict(indexmap::map::Iter<'a, Key, Value>),
    Seq(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
}

/// The frame to descend into, if `value` is a container with at least one item.
fn open(value: &Value) -> Option<Frame<'_>> {
    match value {
        Value::Dict(d) if !d.is_empty() => Some(Frame::Dict(d.items.iter())),
        Value::List(items) | Value::Tuple(items) if !items.is_empty() => {
            Some(Frame::Seq(items.iter().enumerate()))
        }
        _ => None,
    }
}

impl<'a> Iterator for Leaves<'a> {
    type Item = Leaf<'a>;

    fn next(&mut self) -> Option<Leaf<'a>> {
        if let Some(root) = self.root.take() {
            match open(root) {
                Some(frame) => self.frames.push(frame),
                None => {
                    return Some(Leaf {
                        path: Vec::new(),
                        value: root,
                    })
                }
            }
        }
        loop {
            let item = match self.frames.last_mut()? {
                Frame::Dict(items) => items.next().map(|(k, v)| (Step::Key(k), v)),
                Frame::Seq(items) => items.next().map(|(i, v)| (Step::Index(i), v)),
            };
            let Some((step, value)) = item else {
                self.frames.pop();
                if !self.frames.is_empty() {
                    self.path.pop();
                }
                continue;
            };
            match open(value) {
                Some(frame) => {
                    self.path.push(step);
                    self.frames.push(frame);
                }
                None => {
                    let mut path = Vec::with_capacity(self.path.len() + 1);
                    path.extend_from_slice(&self.path);
                    path.push(step);
                    return Some(Leaf { path, value });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Dict;

    fn paths(v: &Value) -> Vec<String> {
        leaves(v).map(|l| l.path_string()).collect()
    }

    #[test]
    fn nested_containers_are_walked_in_order() {
        let mut state = Dict::new();
        let mut zero = Dict::new();
        zero.insert("momentum_buffer", Value::Float(1.0));
        state.insert(0i64, Value::Dict(zero));
        let mut opt = Dict::new();
        opt.insert("state", Value::Dict(state));
        opt.insert(
            "param_groups",
            Value::List(vec![Value::Dict({
                let mut g = Dict::new();
                g.insert("lr", Value::Float(0.1));
                g.insert("params", Value::List(vec![Value::Int(0)]));
                g
            })]),
        );
        let mut root = Dict::new();
        root.insert("optimizer", Value::Dict(opt));
        root.insert(
            "pair",
            Value::Tuple(vec![Value::None, Value::Str("x".into())]),
        );
        assert_eq!(
            paths(&Value::Dict(root)),
            [
                "optimizer.state[0].momentum_buffer",
                "optimizer.param_groups[0].lr",
                "optimizer.param_groups[0].params[0]",
                "pair[0]",
                "pair[1]",
            ]
        );
    }

    #[test]
    fn empty_containers_and_scalars_are_leaves() {
        let mut root = Dict::new();
        root.insert("empty", Value::Dict(Dict::new()));
        root.insert("none", Value::List(vec![]));
        let root = Value::Dict(root);
        let got: Vec<_> = leaves(&root)
            .map(|l| (l.path_string(), l.value.type_name()))
            .collect();
        assert_eq!(
            got,
            [
                ("empty".to_string(), "dict".to_string()),
                ("none".to_string(), "list".to_string())
            ]
        );
        assert_eq!(paths(&Value::Int(3)), ["(root)"]);
        assert_eq!(paths(&Value::Dict(Dict::new())), ["(root)"]);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut v = Value::Int(1);
        for _ in 0..200_000 {
            v = Value::List(vec![v]);
        }
        let leaf = leaves(&v).next().map(|l| l.path.len());
        assert_eq!(leaf, Some(200_000));
        // Dropping a deeply nested Value recurses; keep the test about the walk.
        std::mem::forget(v);
    }

    #[test]
    fn non_string_keys_are_bracketed() {
        let mut root = Dict::new();
        root.insert(
            Key::Tuple(vec![Key::Str("a".into()), Key::Int(1)]),
            Value::None,
        );
        assert_eq!(paths(&Value::Dict(root)), ["[(\"a\", 1)]"]);
    }
}

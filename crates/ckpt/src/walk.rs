//! Depth-first walks over a [`Value`] tree, into opaque objects too.
//!
//! [`leaves`] visits every value that is not a non-empty container, with the path of keys and
//! indices that leads to it, in the tree's own order (dict insertion order, list order). Empty
//! containers are leaves too, so a listing of the leaves loses nothing of the tree's shape.
//!
//! An opaque [`Object`] (a Python object ckpt does not interpret, such as a
//! whole `torch.nn.Module` saved with `torch.save(model)`) is a container here: the walk goes
//! into the arguments of the call that built it and into its state, so tensors kept inside
//! objects are reached. Nothing is executed: the object is only what the file says. The tree
//! holds no cycles (the reader refuses them) and an object shared in the file is a copy at
//! each place it is used, its tensors sharing their storages.
//!
//! # Paths
//!
//! [`Leaf::path_string`] writes a path for people, and [`find`] reads it back:
//!
//! | step | written | example |
//! |---|---|---|
//! | str dict key | `.key` | `model.fc.weight` (keys may hold dots) |
//! | list/tuple index, int key | `[i]` | `optimizer.state[0].momentum_buffer` |
//! | other dict key | `[repr]` | `[("a", 1)]` |
//! | attribute set by an object's state | `.name` | `_modules.fc._parameters.weight` |
//! | argument of the call that built an object | `.__args__[i]` | `path.__args__[0]` |
//! | an object's state that is not a dict of attributes | `.__state__` | `x.__state__[1]` |
//!
//! So the weight of a module saved whole is `_modules.fc._parameters.weight`, and under
//! `{"model": model}` it is `model._modules.fc._parameters.weight`.
//! [`crate::nn_module`] gives the names `model.state_dict()` would give instead.
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
//! assert!(ckpt::walk::find(&root, "model.fc.weight").is_some());
//! ```

use std::fmt::{self, Write};

use crate::value::{Key, Object, Value};

/// One step down a container: a dict key, an index into a list or tuple, or a part of an
/// opaque object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// The key of a `dict`, `OrderedDict` or `Counter` item.
    Key(&'a Key),
    /// The position of an item in a `list` or `tuple`.
    Index(usize),
    /// An attribute set by an opaque object's state (see [`Object::attributes`]).
    Attr(&'a str),
    /// The position of an argument of the call that built an opaque object.
    Arg(usize),
    /// An opaque object's state, when it is not a dict of attributes.
    State,
}

impl fmt::Display for Step<'_> {
    /// A string key or attribute as is; an index or any other key in brackets (`[0]`,
    /// `['a', 1]`); `__args__[i]` and `__state__` for the parts of an object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Key(Key::Str(s)) => f.write_str(s),
            Step::Attr(name) => f.write_str(name),
            Step::Key(Key::Int(i)) => write!(f, "[{i}]"),
            Step::Key(other) => write!(f, "[{}]", other.to_value().short_repr(60)),
            Step::Index(i) => write!(f, "[{i}]"),
            Step::Arg(i) => write!(f, "__args__[{i}]"),
            Step::State => f.write_str("__state__"),
        }
    }
}

impl Step<'_> {
    /// Whether a `.` separates this step from the one before it in a path string.
    fn dotted(&self) -> bool {
        matches!(
            self,
            Step::Key(Key::Str(_)) | Step::Attr(_) | Step::Arg(_) | Step::State
        )
    }

    /// This step as one part of a flat name (safetensors keys): keys, attributes and
    /// indices as text, `__args__.i`, `__state__`.
    pub fn flat_part(&self) -> String {
        match self {
            Step::Key(Key::Str(s)) => s.clone(),
            Step::Attr(name) => name.to_string(),
            Step::Key(key) => key.to_string(),
            Step::Index(i) => i.to_string(),
            Step::Arg(i) => format!("__args__.{i}"),
            Step::State => "__state__".to_string(),
        }
    }
}

/// The path for people (see the module docs); `(root)` for an empty path.
pub fn path_string(path: &[Step<'_>]) -> String {
    if path.is_empty() {
        return "(root)".to_string();
    }
    let mut out = String::new();
    for (i, step) in path.iter().enumerate() {
        if i > 0 && step.dotted() {
            out.push('.');
        }
        let _ = write!(out, "{step}");
    }
    out
}

/// The path as one flat name, parts joined with `.` (`model.0.weight`,
/// `optimizer.state.0.momentum_buffer`), as safetensors output names tensors.
pub fn flat_name(path: &[Step<'_>]) -> String {
    path.iter()
        .map(Step::flat_part)
        .collect::<Vec<_>>()
        .join(".")
}

/// A value the walk reached, and the path from the root to it.
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    /// Keys, indices and object parts from the root; empty for the root itself.
    pub path: Vec<Step<'a>>,
    /// The value at the end of the path.
    pub value: &'a Value,
    /// Whether `value` is an opaque object whose arguments and state the walk visits next
    /// (only [`leaves_and_objects`] yields these).
    pub opened: bool,
}

impl Leaf<'_> {
    /// The path for people: string keys and attributes joined with `.`, indices and other
    /// keys in brackets (`optimizer.state[0].momentum_buffer`); `(root)` for the root itself.
    pub fn path_string(&self) -> String {
        path_string(&self.path)
    }

    /// The path as one `.`-joined name (see [`flat_name`]).
    pub fn flat_name(&self) -> String {
        flat_name(&self.path)
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
        objects: false,
    }
}

/// [`leaves`], and also every opaque object the walk goes into, just before its contents
/// (with [`Leaf::opened`] set): what a listing needs to name the objects' classes.
pub fn leaves_and_objects(root: &Value) -> Leaves<'_> {
    Leaves {
        objects: true,
        ..leaves(root)
    }
}

/// Iterator returned by [`leaves`] and [`leaves_and_objects`].
pub struct Leaves<'a> {
    root: Option<&'a Value>,
    /// Open containers, outermost first; `path` holds one step per frame after the first.
    frames: Vec<Children<'a>>,
    path: Vec<Step<'a>>,
    objects: bool,
}

/// The children of a container, in order.
pub struct Children<'a>(ChildIter<'a>);

enum ChildIter<'a> {
    Dict(indexmap::map::Iter<'a, Key, Value>),
    Seq(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    Object(std::vec::IntoIter<(Step<'a>, &'a Value)>),
}

impl<'a> Iterator for Children<'a> {
    type Item = (Step<'a>, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            ChildIter::Dict(items) => items.next().map(|(k, v)| (Step::Key(k), v)),
            ChildIter::Seq(items) => items.next().map(|(i, v)| (Step::Index(i), v)),
            ChildIter::Object(parts) => parts.next(),
        }
    }
}

/// The children of `value` with the step to each, if it is a container with at least one:
/// a dict, list or tuple, or an opaque object with arguments or state. Sets are not walked
/// (their items are hashable scalars).
pub fn children(value: &Value) -> Option<Children<'_>> {
    let iter = match value {
        Value::Dict(d) if !d.is_empty() => ChildIter::Dict(d.items.iter()),
        Value::List(items) | Value::Tuple(items) if !items.is_empty() => {
            ChildIter::Seq(items.iter().enumerate())
        }
        Value::Object(object) => {
            let parts = object_parts(object);
            if parts.is_empty() {
                return None;
            }
            ChildIter::Object(parts.into_iter())
        }
        _ => return None,
    };
    Some(Children(iter))
}

/// An object's arguments, then its attributes (or its state as a whole).
fn object_parts(object: &Object) -> Vec<(Step<'_>, &Value)> {
    let mut parts: Vec<(Step<'_>, &Value)> = object
        .args()
        .iter()
        .enumerate()
        .map(|(i, v)| (Step::Arg(i), v))
        .collect();
    match object.attributes() {
        Some(attributes) => parts.extend(attributes.map(|(key, value)| match key {
            Key::Str(name) => (Step::Attr(name), value),
            other => (Step::Key(other), value),
        })),
        None => match &object.state {
            None | Some(Value::None) => {}
            Some(state) => parts.push((Step::State, state)),
        },
    }
    parts
}

impl<'a> Iterator for Leaves<'a> {
    type Item = Leaf<'a>;

    fn next(&mut self) -> Option<Leaf<'a>> {
        if let Some(root) = self.root.take() {
            match children(root) {
                Some(frame) => {
                    self.frames.push(frame);
                    if self.objects && matches!(root, Value::Object(_)) {
                        return Some(Leaf {
                            path: Vec::new(),
                            value: root,
                            opened: true,
                        });
                    }
                }
                None => {
                    return Some(Leaf {
                        path: Vec::new(),
                        value: root,
                        opened: false,
                    })
                }
            }
        }
        loop {
            let Some((step, value)) = self.frames.last_mut()?.next() else {
                self.frames.pop();
                if !self.frames.is_empty() {
                    self.path.pop();
                }
                continue;
            };
            match children(value) {
                Some(frame) => {
                    self.path.push(step);
                    self.frames.push(frame);
                    if self.objects && matches!(value, Value::Object(_)) {
                        return Some(Leaf {
                            path: self.path.clone(),
                            value,
                            opened: true,
                        });
                    }
                }
                None => {
                    let mut path = Vec::with_capacity(self.path.len() + 1);
                    path.extend_from_slice(&self.path);
                    path.push(step);
                    return Some(Leaf {
                        path,
                        value,
                        opened: false,
                    });
                }
            }
        }
    }
}

/// The value at `path`, written as [`Leaf::path_string`] writes it (`(root)` or an empty
/// path is the root). Keys may hold dots: at each level a child whose step matches the whole
/// rest of the path wins, then children whose step is a prefix of it are tried in order.
/// Each value is looked at once at most (the tree has one path to each), so the cost is
/// linear in the size of the tree.
pub fn find<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() || path == "(root)" {
        return Some(root);
    }
    let mut pending = vec![(root, path, true)];
    while let Some((value, rest, first)) = pending.pop() {
        let mut deeper = Vec::new();
        for (step, child) in children(value).into_iter().flatten() {
            let text = step.to_string();
            let after = if first || !step.dotted() {
                rest.strip_prefix(text.as_str())
            } else {
                rest.strip_prefix('.')
                    .and_then(|tail| tail.strip_prefix(text.as_str()))
            };
            match after {
                Some("") => return Some(child),
                Some(after) if after.starts_with(['.', '[']) => deeper.push((child, after, false)),
                _ => {}
            }
        }
        // The first matching child is tried first.
        pending.extend(deeper.into_iter().rev());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Dict, ObjectBuild};

    fn object(build: ObjectBuild, state: Option<Value>) -> Value {
        Value::Object(Box::new(Object {
            module: "m".into(),
            name: "C".into(),
            build,
            state,
        }))
    }

    fn attrs(items: Vec<(&str, Value)>) -> Value {
        let mut d = Dict::new();
        for (k, v) in items {
            d.insert(k, v);
        }
        Value::Dict(d)
    }

    /// `{"model": C.__new__() with state {"_modules": {"fc": C(1.5) with state
    /// {"weight": 2}}, "pair": (None, {"slot": 3})}, "x.y": [C(), C(state=(4, 5))]}`.
    fn objects_tree() -> Value {
        let fc = object(
            ObjectBuild::Call(vec![Value::Float(1.5)]),
            Some(attrs(vec![("weight", Value::Int(2))])),
        );
        let slots = Value::Tuple(vec![Value::None, attrs(vec![("slot", Value::Int(3))])]);
        let model = object(
            ObjectBuild::New(vec![]),
            Some(attrs(vec![
                ("_modules", attrs(vec![("fc", fc)])),
                ("pair", object(ObjectBuild::New(vec![]), Some(slots))),
            ])),
        );
        let odd_state = Value::Tuple(vec![Value::Int(4), Value::Int(5)]);
        attrs(vec![
            ("model", model),
            (
                "x.y",
                Value::List(vec![
                    object(ObjectBuild::Global, None),
                    object(ObjectBuild::New(vec![]), Some(odd_state)),
                ]),
            ),
        ])
    }

    #[test]
    fn objects_are_walked_into_their_arguments_and_state() {
        assert_eq!(
            paths(&objects_tree()),
            [
                "model._modules.fc.__args__[0]",
                "model._modules.fc.weight",
                "model.pair.slot",
                "x.y[0]",
                "x.y[1].__state__[0]",
                "x.y[1].__state__[1]",
            ]
        );
        let flat: Vec<String> = leaves(&objects_tree()).map(|l| l.flat_name()).collect();
        assert_eq!(flat[0], "model._modules.fc.__args__.0");
        assert_eq!(flat[4], "x.y.1.__state__.0");
    }

    #[test]
    fn opened_objects_are_listed_before_their_contents() {
        let tree = objects_tree();
        let listed: Vec<(String, bool)> = leaves_and_objects(&tree)
            .map(|l| (l.path_string(), l.opened))
            .collect();
        let opened: Vec<&str> = listed
            .iter()
            .filter(|(_, opened)| *opened)
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(
            opened,
            ["model", "model._modules.fc", "model.pair", "x.y[1]"]
        );
        assert_eq!(listed.len(), 6 + opened.len());
        // A bare global has nothing to open: it is a leaf.
        assert!(listed.contains(&("x.y[0]".to_string(), false)));
        let root = object(ObjectBuild::New(vec![Value::Int(1)]), None);
        let got: Vec<(String, bool)> = leaves_and_objects(&root)
            .map(|l| (l.path_string(), l.opened))
            .collect();
        assert_eq!(
            got,
            [
                ("(root)".to_string(), true),
                ("__args__[0]".to_string(), false)
            ]
        );
    }

    #[test]
    fn find_reads_back_every_path_written() {
        let tree = objects_tree();
        for leaf in leaves_and_objects(&tree) {
            let found = find(&tree, &leaf.path_string()).unwrap();
            assert!(std::ptr::eq(found, leaf.value), "{}", leaf.path_string());
        }
        assert!(std::ptr::eq(find(&tree, "(root)").unwrap(), &tree));
        assert!(find(&tree, "model._modules.fc.weight.x").is_none());
        assert!(find(&tree, "model._modules.f").is_none());
        assert!(find(&tree, "x.y[2]").is_none());
    }

    #[test]
    fn find_prefers_the_whole_key_then_tries_each_prefix() {
        let mut inner = Dict::new();
        inner.insert("b", Value::Int(1));
        inner.insert("c", Value::Int(2));
        let mut root = Dict::new();
        root.insert("a", Value::Dict(inner));
        root.insert("a.b", Value::Int(3));
        let mut deeper = Dict::new();
        deeper.insert("d", Value::Int(4));
        root.insert("a.b.c", Value::Dict(deeper));
        let root = Value::Dict(root);
        assert_eq!(find(&root, "a.b").and_then(Value::as_int), Some(3));
        assert_eq!(find(&root, "a.c").and_then(Value::as_int), Some(2));
        assert_eq!(find(&root, "a.b.c.d").and_then(Value::as_int), Some(4));
    }

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

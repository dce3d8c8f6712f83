//! The state dict of a `torch.nn.Module` saved whole (`torch.save(model)`), read without
//! running anything.
//!
//! `torch.save(model)` pickles the module object itself: its class by name, and its instance
//! `__dict__` as state. ckpt keeps such an object opaque (it never imports the class), but the
//! state of every module has the same recognisable shape, and the state dict follows from it
//! as `model.state_dict()` computes it:
//!
//! - **recognised**: an opaque object whose state sets the attributes `_parameters`,
//!   `_buffers` and `_modules`, all three dicts (every `nn.Module` since torch 1.0 has them,
//!   whatever its class; the class name is not looked at);
//! - **named**: the module's parameters in `_parameters` order, then its buffers in `_buffers`
//!   order without the names in `_non_persistent_buffers_set`, then each child of `_modules`
//!   in order under `child.`; a parameter, buffer or child that is `None` is left out, as torch
//!   leaves it out;
//! - **valued**: plain tensors without `requires_grad`, as `state_dict()` detaches them; a
//!   weight tied between two modules appears under both names, sharing its storage.
//!
//! What only running the class's code could add is not there: `get_extra_state()`
//! (`_extra_state` entries), state-dict hooks, and the `_metadata` versions (`_version` is a
//! class attribute, not saved with the instance). A `_modules` child that is not a module
//! itself is kept under its name as it is.
//!
//! ```
//! use ckpt::nn_module::{is_module, module_state_dict};
//! use ckpt::{Dict, Object, ObjectBuild, Tensor, Value};
//!
//! let mut parameters = Dict::ordered();
//! let weight = Tensor::from_slice(&[1f32, 2.], &[1, 2]).unwrap().with_requires_grad(true);
//! parameters.insert("weight", Value::Parameter(weight));
//! parameters.insert("bias", Value::None);
//! let mut state = Dict::new();
//! state.insert("_parameters", Value::Dict(parameters));
//! state.insert("_buffers", Value::Dict(Dict::ordered()));
//! state.insert("_modules", Value::Dict(Dict::ordered()));
//! let linear = Object::new("torch.nn.modules.linear", "Linear", ObjectBuild::New(vec![]));
//! let linear = Value::Object(Box::new(linear.with_state(Value::Dict(state))));
//! assert!(is_module(&linear));
//! let sd = module_state_dict(&linear).unwrap().unwrap();
//! assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight"]);
//! assert!(!sd.get("weight").unwrap().requires_grad());
//! ```

use crate::error::Result;
use crate::value::{Dict, Key, Object, ObjectBuild, StateDict, Value};
use crate::walk::Step;

/// The dicts of a module's state that the state dict comes from.
struct ModuleParts<'a> {
    parameters: &'a Dict,
    buffers: &'a Dict,
    modules: &'a Dict,
    non_persistent: Vec<&'a str>,
}

/// The parts of `value` if it is a pickled module (see the module docs).
fn module_parts(value: &Value) -> Option<ModuleParts<'_>> {
    let Value::Object(object) = value else {
        return None;
    };
    let dict = |name: &str| object.attribute(name).and_then(Value::as_dict);
    Some(ModuleParts {
        parameters: dict("_parameters")?,
        buffers: dict("_buffers")?,
        modules: dict("_modules")?,
        non_persistent: non_persistent_buffers(object),
    })
}

/// The names in `_non_persistent_buffers_set` (a set of str).
fn non_persistent_buffers(object: &Object) -> Vec<&str> {
    match object.attribute("_non_persistent_buffers_set") {
        Some(Value::Set(names) | Value::FrozenSet(names) | Value::List(names)) => {
            names.iter().filter_map(Value::as_str).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether `value` is a pickled `torch.nn.Module`: an opaque object whose state sets the
/// dicts `_parameters`, `_buffers` and `_modules`.
pub fn is_module(value: &Value) -> bool {
    module_parts(value).is_some()
}

/// One entry of a pickled module's state dict.
#[derive(Debug, Clone)]
pub struct ModuleEntry<'a> {
    /// The name `state_dict()` gives it (`0.weight`, `encoder.layers.3.norm.bias`).
    pub name: String,
    /// Where it is inside the module object, as [`crate::walk`] spells paths
    /// (`_modules.0._parameters.weight`).
    pub path: Vec<Step<'a>>,
    /// The saved value: a tensor or parameter, or for a `_modules` child that is not a
    /// module, that child.
    pub value: &'a Value,
}

/// The entries of the state dict of `module`, in `state_dict()` order; `None` if it is not a
/// pickled module. Iterative, linear in the size of the module's state.
pub fn module_entries<'a>(module: &'a Value) -> Option<Vec<ModuleEntry<'a>>> {
    /// What is left to list, in order: a module with its name prefix and path, or an entry.
    enum Pending<'a> {
        Module(ModuleParts<'a>, String, Vec<Step<'a>>),
        Entry(ModuleEntry<'a>),
    }
    let mut entries = Vec::new();
    let mut pending = vec![Pending::Module(
        module_parts(module)?,
        String::new(),
        Vec::new(),
    )];
    while let Some(next) = pending.pop() {
        let (parts, prefix, path) = match next {
            Pending::Module(parts, prefix, path) => (parts, prefix, path),
            Pending::Entry(entry) => {
                entries.push(entry);
                continue;
            }
        };
        let entry = |attribute: &'static str, key: &'a Key, value: &'a Value| {
            let (Key::Str(name), false) = (key, matches!(value, Value::None)) else {
                return None;
            };
            let mut entry_path = path.clone();
            entry_path.extend([Step::Attr(attribute), Step::Key(key)]);
            Some(ModuleEntry {
                name: format!("{prefix}{name}"),
                path: entry_path,
                value,
            })
        };
        for (key, value) in parts.parameters.iter() {
            entries.extend(entry("_parameters", key, value));
        }
        for (key, value) in parts.buffers.iter() {
            if !key
                .as_str()
                .is_some_and(|k| parts.non_persistent.contains(&k))
            {
                entries.extend(entry("_buffers", key, value));
            }
        }
        let mut children = Vec::new();
        for (key, child) in parts.modules.iter() {
            let Some(child_entry) = entry("_modules", key, child) else {
                continue;
            };
            children.push(match module_parts(child) {
                Some(child_parts) => Pending::Module(
                    child_parts,
                    format!("{}.", child_entry.name),
                    child_entry.path,
                ),
                // Not a module: kept under its name as it is.
                None => Pending::Entry(child_entry),
            });
        }
        // The first child is listed first.
        pending.extend(children.into_iter().rev());
    }
    Some(entries)
}

/// The state dict of a pickled module as `model.state_dict()` returns it: an `OrderedDict`
/// of plain tensors (a value that is not a tensor is kept as it is, so that nothing is
/// silently dropped). `None` if `value` is not a pickled module.
pub fn module_state_dict_value(value: &Value) -> Option<Value> {
    let mut dict = Dict::ordered();
    for entry in module_entries(value)? {
        let value = match entry.value {
            Value::Tensor(t) | Value::Parameter(t) => {
                Value::Tensor(t.clone().with_requires_grad(false))
            }
            other => other.clone(),
        };
        dict.insert(entry.name, value);
    }
    Some(Value::Dict(dict))
}

/// The state dict of a pickled module; `Ok(None)` if `value` is not one, an error naming the
/// entry if one is not a tensor.
pub fn module_state_dict(value: &Value) -> Result<Option<StateDict>> {
    match module_state_dict_value(value) {
        Some(dict) => StateDict::from_value(&dict).map(Some),
        None => Ok(None),
    }
}

/// A pickled module replaced by its state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedModule {
    /// Where the module was, as [`crate::walk`] spells paths (`(root)`, `model`).
    pub path: String,
    /// Its class, `module.name`.
    pub class: String,
    /// Entries in its state dict.
    pub entries: usize,
}

/// Replaces every pickled module in `value` by its state dict ([`module_state_dict_value`]),
/// the outermost ones (a module's children are in its state dict already), wherever they are:
/// in dicts, lists, tuples, or the arguments and state of other objects. Returns what was
/// replaced, in tree order. Iterative; linear in the size of the tree.
pub fn replace_modules(value: &mut Value) -> Vec<ReplacedModule> {
    let mut replaced = Vec::new();
    let mut pending: Vec<(&mut Value, String)> = vec![(value, String::new())];
    while let Some((value, path)) = pending.pop() {
        if let Some(state_dict) = module_state_dict_value(value) {
            let entries = state_dict.as_dict().map_or(0, Dict::len);
            replaced.push(ReplacedModule {
                path: if path.is_empty() {
                    "(root)".to_string()
                } else {
                    path
                },
                class: match &*value {
                    Value::Object(o) => o.qualified_name(),
                    other => other.type_name(),
                },
                entries,
            });
            *value = state_dict;
            continue;
        }
        let join = |step: &str| -> String {
            match (path.is_empty(), step.starts_with('[')) {
                (true, _) | (false, true) => format!("{path}{step}"),
                (false, false) => format!("{path}.{step}"),
            }
        };
        let mut children: Vec<(&mut Value, String)> = Vec::new();
        match value {
            Value::Dict(d) => {
                for (key, child) in d.items.iter_mut() {
                    let step = match key {
                        Key::Str(s) => s.clone(),
                        other => format!("[{}]", other.to_value().short_repr(60)),
                    };
                    children.push((child, join(&step)));
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    children.push((child, join(&format!("[{i}]"))));
                }
            }
            Value::Object(object) => {
                let object = &mut **object;
                let attributes = object.attributes().is_some();
                if let ObjectBuild::Call(args) | ObjectBuild::New(args) = &mut object.build {
                    for (i, child) in args.iter_mut().enumerate() {
                        children.push((child, join(&format!("__args__[{i}]"))));
                    }
                }
                // Attributes read as `path.name` (see crate::walk), another state as
                // `path.__state__`.
                if let Some(state) = object.state.as_mut() {
                    if !attributes {
                        children.push((state, join("__state__")));
                    } else if let Value::Tuple(parts) = state {
                        children.extend(parts.iter_mut().map(|part| (part, path.clone())));
                    } else {
                        children.push((state, path.clone()));
                    }
                }
            }
            _ => {}
        }
        pending.extend(children.into_iter().rev());
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn dict(items: Vec<(&str, Value)>) -> Dict {
        let mut d = Dict::ordered();
        for (k, v) in items {
            d.insert(k, v);
        }
        d
    }

    fn module(
        class: &str,
        parameters: Vec<(&str, Value)>,
        buffers: Vec<(&str, Value)>,
        modules: Vec<(&str, Value)>,
        non_persistent: &[&str],
    ) -> Value {
        let mut state = dict(vec![
            ("training", Value::Bool(true)),
            ("_parameters", Value::Dict(dict(parameters))),
            ("_buffers", Value::Dict(dict(buffers))),
            (
                "_non_persistent_buffers_set",
                Value::Set(
                    non_persistent
                        .iter()
                        .map(|n| Value::Str(n.to_string()))
                        .collect(),
                ),
            ),
            ("_modules", Value::Dict(dict(modules))),
        ]);
        state.kind = crate::value::DictKind::Dict;
        Value::Object(Box::new(Object {
            module: "torch.nn".into(),
            name: class.into(),
            build: ObjectBuild::New(vec![]),
            state: Some(Value::Dict(state)),
        }))
    }

    fn t(x: f32) -> Tensor {
        Tensor::from_slice(&[x], &[1]).unwrap()
    }

    fn net() -> Value {
        let shared = t(1.0).with_requires_grad(true);
        let linear = module(
            "Linear",
            vec![
                ("weight", Value::Parameter(shared.clone())),
                ("bias", Value::None),
            ],
            vec![],
            vec![],
            &[],
        );
        let norm = module(
            "BatchNorm1d",
            vec![("weight", Value::Parameter(t(2.0)))],
            vec![
                ("running_mean", Value::Tensor(t(3.0))),
                ("scratch", Value::Tensor(t(4.0))),
                ("missing", Value::None),
            ],
            vec![],
            &["scratch"],
        );
        let inner = module(
            "Sequential",
            vec![],
            vec![],
            vec![("0", linear), ("skip", Value::None), ("odd", Value::Int(7))],
            &[],
        );
        let head = module(
            "Linear",
            vec![("weight", Value::Parameter(shared))],
            vec![],
            vec![],
            &[],
        );
        module(
            "Sequential",
            vec![("scale", Value::Parameter(t(5.0)))],
            vec![],
            vec![("body", inner), ("norm", norm), ("head", head)],
            &[],
        )
    }

    #[test]
    fn entries_are_named_and_ordered_as_state_dict_names_them() {
        let model = net();
        let entries = module_entries(&model).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "scale",
                "body.0.weight",
                "body.odd",
                "norm.weight",
                "norm.running_mean",
                "head.weight"
            ]
        );
        let paths: Vec<String> = entries
            .iter()
            .map(|e| crate::walk::path_string(&e.path))
            .collect();
        assert_eq!(paths[1], "_modules.body._modules.0._parameters.weight");
        assert_eq!(paths[4], "_modules.norm._buffers.running_mean");
        // Every path leads to the entry's value.
        for entry in &entries {
            let path = crate::walk::path_string(&entry.path);
            let found = crate::walk::find(&model, &path).unwrap();
            assert!(std::ptr::eq(found, entry.value), "{path}");
        }
    }

    #[test]
    fn the_state_dict_holds_detached_tensors_and_keeps_tied_weights_shared() {
        let model = net();
        let err = module_state_dict(&model).unwrap_err().to_string();
        assert!(err.contains("body.odd"), "{err}");
        let value = module_state_dict_value(&model).unwrap();
        let sd = value.as_dict().unwrap();
        assert_eq!(sd.kind, crate::value::DictKind::OrderedDict);
        let tensor = |name: &str| match sd.get(name) {
            Some(Value::Tensor(t)) => t.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert!(!tensor("body.0.weight").requires_grad());
        assert!(tensor("body.0.weight")
            .storage()
            .same_as(tensor("head.weight").storage()));
        assert!(matches!(sd.get("body.odd"), Some(Value::Int(7))));
        assert!(module_state_dict(&Value::Int(1)).unwrap().is_none());
        assert!(!is_module(&Value::Dict(Dict::new())));
    }

    #[test]
    fn modules_anywhere_in_a_tree_are_replaced_outermost_first() {
        let wrapper = Value::Object(Box::new(Object {
            module: "trainer".into(),
            name: "Trainer".into(),
            build: ObjectBuild::Call(vec![net()]),
            state: Some(Value::Dict(dict(vec![("ema", net())]))),
        }));
        let mut root = Value::Dict(dict(vec![
            ("model", net()),
            ("list", Value::List(vec![Value::Int(1), net()])),
            ("trainer", wrapper),
            ("epoch", Value::Int(3)),
        ]));
        let replaced = replace_modules(&mut root);
        let paths: Vec<&str> = replaced.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            ["model", "list[1]", "trainer.__args__[0]", "trainer.ema"]
        );
        assert_eq!(replaced[0].class, "torch.nn.Sequential");
        assert_eq!(replaced[0].entries, 6);
        for path in paths {
            let sd = crate::walk::find(&root, path).unwrap().as_dict().unwrap();
            assert!(sd.get("norm.running_mean").is_some(), "{path}");
        }
        let mut whole = net();
        assert_eq!(replace_modules(&mut whole)[0].path, "(root)");
        assert!(whole.as_dict().is_some());
    }
}

//! The parts of the pickle machine that build containers and interpret globals: `APPENDS`/
//! `SETITEMS` targets, `REDUCE`/`NEWOBJ` of known globals, `BUILD`, persistent ids.

use crate::error::Result;
use crate::pickle::arena::{Handle, Mode, Node};
use crate::pickle::globals::{self, Known};
use crate::pickle::machine::Machine;
use crate::pickle::numpy::{self, ArrayBytes};
use crate::tensor::{Storage, Tensor};
use crate::value::{DictKind, Value};

/// Where in an argument tuple a numpy buffer is.
#[derive(Clone, Copy)]
enum ViewAt {
    First,
    Last,
}

impl Machine<'_> {
    // ---- containers -------------------------------------------------------------------

    pub(super) fn pairs(&self, items: Vec<Handle>) -> Result<Vec<(Handle, Handle)>> {
        if items.len() & 1 == 1 {
            return Err(self.err(format!(
                "expected key/value pairs, found {} objects",
                items.len()
            )));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    /// An instance of a `list`/`dict` subclass (e.g. yacs' `CfgNode`) receives its items
    /// through `APPENDS`/`SETITEMS` after `NEWOBJ`: it is read as a plain list or dict
    /// (with its instance state as dict attributes), since its class is never imported.
    pub(super) fn as_builtin_container(&mut self, top: Handle, dict: bool) {
        let Some(node) = self.arena.nodes.get_mut(top) else {
            return;
        };
        if let Node::Object {
            module,
            name,
            state,
            ..
        } = node
        {
            tracing::debug!(class = %format!("{module}.{name}"), "container subclass read as a builtin container");
            *node = if dict {
                Node::Dict {
                    kind: DictKind::Dict,
                    items: Vec::new(),
                    states: state.take().into_iter().collect(),
                }
            } else {
                Node::List(Vec::new())
            };
        }
    }

    pub(super) fn extend_list(&mut self, items: Vec<Handle>) -> Result<()> {
        let top = self.top()?;
        self.as_builtin_container(top, false);
        match self.arena.nodes.get_mut(top) {
            Some(Node::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => {
                let kind = self.kind(top);
                Err(self.err(format!("expected a list to append to, found a {kind}")))
            }
        }
    }

    pub(super) fn set_items(&mut self, pairs: Vec<(Handle, Handle)>) -> Result<()> {
        let top = self.top()?;
        self.as_builtin_container(top, true);
        match self.arena.nodes.get_mut(top) {
            Some(Node::Dict { items, .. }) => {
                items.extend(pairs);
                Ok(())
            }
            _ => {
                let kind = self.kind(top);
                Err(self.err(format!("expected a dict to set items in, found a {kind}")))
            }
        }
    }

    // ---- globals, calls, build --------------------------------------------------------

    pub(super) fn global_node(&mut self, module: &str, name: &str) -> Handle {
        let (module, name) = globals::map_py2_name(module, name);
        let node = match globals::global_value(&module, &name) {
            Some(value) => Node::leaf(value),
            None => Node::Global { module, name },
        };
        self.arena.add(node)
    }

    pub(super) fn push_global(&mut self, module: &str, name: &str) {
        let handle = self.global_node(module, name);
        self.stack.push(handle);
    }

    pub(super) fn persistent_load(&mut self, pid: &Value) -> Result<()> {
        let typed = self.persistent.persistent_load(pid)?;
        self.arena.storages.push(typed);
        let index = self.arena.storages.len() - 1;
        self.push(Node::Storage(index));
        Ok(())
    }

    /// The handles inside a tuple/list/set argument, charged to the value budget because
    /// they are copied.
    pub(super) fn items_of(&self, handle: Handle) -> Result<Vec<Handle>> {
        let items = match self.arena.node(handle).map_err(|m| self.err(m))? {
            Node::Tuple(items) | Node::List(items) | Node::Set { items, .. } => items.clone(),
            other => {
                return Err(self.err(format!(
                    "expected a tuple or list, found a {}",
                    other.kind()
                )))
            }
        };
        self.arena.charge(items.len()).map_err(|m| self.err(m))?;
        Ok(items)
    }

    /// The items of `OrderedDict(...)`/`dict(...)`/`Counter(...)` arguments: nothing, a
    /// mapping, or an iterable of key/value pairs.
    pub(super) fn dict_items(&self, args: Handle) -> Result<Vec<(Handle, Handle)>> {
        let args = self.items_of(args)?;
        let Some(&source) = args.first() else {
            return Ok(Vec::new());
        };
        if let Node::Dict { items, .. } = self.arena.node(source).map_err(|m| self.err(m))? {
            self.arena.charge(items.len()).map_err(|m| self.err(m))?;
            return Ok(items.clone());
        }
        self.items_of(source)?
            .into_iter()
            .map(|pair| {
                let kv = self.items_of(pair)?;
                match kv.as_slice() {
                    [k, v] => Ok((*k, *v)),
                    _ => Err(self.err("expected (key, value) pairs")),
                }
            })
            .collect()
    }

    pub(super) fn call(&mut self, callable: Handle, args: Handle, new: bool) -> Result<Node> {
        let (module, name) = match self.arena.node(callable).map_err(|m| self.err(m))? {
            Node::Global { module, name } => (module.clone(), name.clone()),
            other => {
                return Err(self.err(format!(
                    "expected a global to call, found a {}",
                    other.kind()
                )))
            }
        };
        if !new && module == "torch._utils" && name == "_rebuild_tensor_v2" {
            if let Some(tensor) = self.rebuild_tensor_v2_direct(args)? {
                return Ok(Node::leaf(Value::Tensor(tensor)));
            }
        }
        Ok(match globals::classify(&module, &name) {
            Known::Dict(kind) => Node::Dict {
                kind,
                items: self.dict_items(args)?,
                states: Vec::new(),
            },
            Known::DefaultDict => Node::Dict {
                kind: DictKind::Dict,
                items: Vec::new(),
                states: Vec::new(),
            },
            Known::Reconstructor => self.reconstructor(args)?,
            Known::Set { frozen } => {
                let args = self.items_of(args)?;
                let items = match args.first() {
                    Some(&iterable) => self.items_of(iterable)?,
                    None => Vec::new(),
                };
                Node::Set { frozen, items }
            }
            Known::Call { raw } if !new => {
                let mode = Mode {
                    raw_py2: raw,
                    storage_refs: true,
                };
                if name == "_frombuffer" && numpy::is_numeric_module(&module) {
                    if let Some((rest, buffer)) = self.split_view(args, ViewAt::First, mode)? {
                        let array = numpy::frombuffer_with(rest, ArrayBytes::Shared(buffer))
                            .map_err(|m| self.err(format!("{module}.{name}: {m}")))?;
                        return Ok(Node::leaf(array));
                    }
                }
                let args = match self.convert(args, mode)? {
                    Value::Tuple(items) => items,
                    other => {
                        return Err(self.err(format!(
                            "{module}.{name}: expected an argument tuple, found a {}",
                            other.type_name()
                        )))
                    }
                };
                let mut storages = globals::Storages {
                    loaded: &self.arena.storages,
                    resolved: &mut self.arena.resolved,
                };
                let value = globals::call(&module, &name, args, &mut storages)
                    .map_err(|m| self.err(format!("{module}.{name}: {m}")))?;
                Node::leaf(value)
            }
            _ => Node::Object {
                module,
                name,
                new,
                args,
                state: None,
            },
        })
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride[, requires_grad[, hooks]])` read
    /// straight from the arena when every argument has the form torch writes, which spares
    /// converting the arguments to values (one call per tensor of a checkpoint). `None`
    /// sends anything else, errors included, through the general path.
    fn rebuild_tensor_v2_direct(&self, args: Handle) -> Result<Option<Tensor>> {
        let Ok(Node::Tuple(items)) = self.arena.node(args) else {
            return Ok(None);
        };
        if !(4..=6).contains(&items.len()) {
            return Ok(None);
        }
        let node = |i: usize| items.get(i).and_then(|&h| self.arena.node(h).ok());
        let (Some(Node::Storage(index)), Some(Node::Int(offset))) = (node(0), node(1)) else {
            return Ok(None);
        };
        let (Some(typed), Ok(offset)) = (self.arena.storages.get(*index), usize::try_from(*offset))
        else {
            return Ok(None);
        };
        let (Some(shape), Some(strides)) = (self.usize_tuple(node(2)), self.usize_tuple(node(3)))
        else {
            return Ok(None);
        };
        // The same flag truthiness as the general path.
        let requires_grad = match node(4) {
            Some(Node::Bool(b)) => *b,
            Some(Node::Int(i)) => *i != 0,
            _ => false,
        };
        // Charged as the general path's conversion would (a memoized shape reused by many
        // tensors is copied each time).
        self.arena
            .charge(shape.len() + strides.len())
            .map_err(|m| self.err(m))?;
        Ok(
            Tensor::new(typed.dtype, shape, strides, offset, typed.storage.clone())
                .ok()
                .map(|t| t.with_requires_grad(requires_grad)),
        )
    }

    /// The ints of a tuple node, when all are non-negative ints.
    fn usize_tuple(&self, node: Option<&Node>) -> Option<Vec<usize>> {
        let Some(Node::Tuple(items)) = node else {
            return None;
        };
        items
            .iter()
            .map(|&h| match self.arena.node(h) {
                Ok(Node::Int(i)) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    /// `copyreg._reconstructor(cls, base, state)`: `base(state)` for builtin containers,
    /// else `cls.__new__(cls)` kept opaque.
    pub(super) fn reconstructor(&mut self, args: Handle) -> Result<Node> {
        let args = self.items_of(args)?;
        let global = |h: Option<&Handle>| match h.and_then(|&h| self.arena.node(h).ok()) {
            Some(Node::Global { module, name }) => Some((module.clone(), name.clone())),
            _ => None,
        };
        let class = global(args.first())
            .ok_or_else(|| self.err("copyreg._reconstructor: expected a class"))?;
        let base = global(args.get(1));
        let state = args.get(2).copied();
        Ok(match base.as_ref().map(|(m, n)| (m.as_str(), n.as_str())) {
            Some(("builtins", "dict")) => {
                let items = match state.map(|h| self.arena.node(h)) {
                    Some(Ok(Node::Dict { items, .. })) => {
                        self.arena.charge(items.len()).map_err(|m| self.err(m))?;
                        items.clone()
                    }
                    _ => Vec::new(),
                };
                Node::Dict {
                    kind: DictKind::Dict,
                    items,
                    states: Vec::new(),
                }
            }
            Some(("builtins", "list")) => match state {
                Some(h) => Node::List(self.items_of(h)?),
                None => Node::List(Vec::new()),
            },
            _ => {
                let no_args = self.arena.add(Node::Tuple(Vec::new()));
                Node::Object {
                    module: class.0,
                    name: class.1,
                    new: true,
                    args: no_args,
                    state: None,
                }
            }
        })
    }

    /// When the tuple `handle` has a byte string left in the file (a [`Node::View`]) at
    /// `at`, the other items as values and the view's storage: a numpy array is then made
    /// over the file's bytes instead of a copy.
    fn split_view(
        &mut self,
        handle: Handle,
        at: ViewAt,
        mode: Mode,
    ) -> Result<Option<(Vec<Value>, Storage)>> {
        let Ok(Node::Tuple(items)) = self.arena.node(handle) else {
            return Ok(None);
        };
        let (view, rest) = match at {
            ViewAt::First => match items.split_first() {
                Some((&view, rest)) => (view, rest.to_vec()),
                None => return Ok(None),
            },
            ViewAt::Last => match items.split_last() {
                Some((&view, rest)) => (view, rest.to_vec()),
                None => return Ok(None),
            },
        };
        let Ok(Node::View(storage, _)) = self.arena.node(view) else {
            return Ok(None);
        };
        let storage = storage.clone();
        let values = rest
            .into_iter()
            .map(|h| self.convert(h, mode))
            .collect::<Result<Vec<Value>>>()?;
        Ok(Some((values, storage)))
    }

    pub(super) fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        let target = self.top()?;
        let reconstruct = match self.arena.node(target).map_err(|m| self.err(m))? {
            Node::Object { module, name, .. } => numpy::is_reconstruct(module, name),
            _ => false,
        };
        if reconstruct {
            let raw = Mode {
                raw_py2: true,
                storage_refs: false,
            };
            let array = match self.split_view(state, ViewAt::Last, raw)? {
                Some((items, data)) => numpy::ndarray_from_items(items, ArrayBytes::Shared(data)),
                None => {
                    let state = self.convert(state, raw)?;
                    numpy::ndarray_from_state(state)
                }
            }
            .map_err(|m| self.err(m))?;
            if let Some(node) = self.arena.nodes.get_mut(target) {
                *node = Node::leaf(array);
            }
            return Ok(());
        }
        match self.arena.nodes.get_mut(target) {
            Some(Node::Dict { states, .. }) => states.push(state),
            Some(Node::Object { state: slot, .. }) => *slot = Some(state),
            // Legacy `Tensor.set_` state and `Parameter.__setstate__`: the tensor is complete.
            Some(Node::Tensor(_)) => {}
            Some(Node::Leaf(v)) if matches!(**v, Value::Parameter(_)) => {}
            _ => {
                let kind = self.kind(target);
                return Err(self.err(format!("cannot apply a state to a {kind}")));
            }
        }
        Ok(())
    }
}

//! The objects a pickle builds, held in an arena and referred to by handle, so that the memo
//! shares objects by reference (a dict memoized before `SETITEMS` is seen filled by every
//! later `BINGET`; `BUILD` mutates the memoized object). Conversion to [`Value`] counts every
//! value produced (memo-bomb defence) and bounds the depth (deep nesting); a reference cycle
//! through an opaque object is cut where it closes, any other cycle is an error.

use std::cell::Cell;
use std::collections::HashMap;

use crate::pickle::globals::{object, STORAGE_REF};
use crate::pickle::invalid::Invalid;
use crate::pickle::tensor_metadata::ResolvedStorages;
use crate::pickle::{Limits, Py2Strings, TypedStorage};
use crate::tensor::{Storage, Tensor};
use crate::value::{Dict, DictKind, Key, Object, ObjectBuild, Value};

/// Index of a node in the arena.
pub(super) type Handle = usize;

/// One object built by the pickle.
#[derive(Debug)]
pub(super) enum Node {
    /// A finished value: scalars and the results of interpreted globals (boxed: a `Value`
    /// is large, and a checkpoint's pickle has several nodes per tensor).
    Leaf(Box<Value>),
    /// An int (the most common leaf: sizes, strides, offsets).
    Int(i64),
    /// A str (names, storage keys).
    Text(String),
    /// A bool (`requires_grad` of every tensor).
    Bool(bool),
    /// A tensor (one per tensor record; unboxed, it fits the node's size).
    Tensor(Tensor),
    /// `None`.
    None,
    /// A Python 2 `str`: raw bytes, text or buffer depending on where it is used.
    Py2Str(Vec<u8>),
    /// A large byte string left where it is in the input file (a view of its buffer): a
    /// numpy array's buffer becomes a tensor over it without a copy; any other use copies.
    View(Storage, RawKind),
    List(Vec<Handle>),
    Tuple(Vec<Handle>),
    Set {
        frozen: bool,
        items: Vec<Handle>,
    },
    /// Key/value pairs in insertion order (a repeated key replaces, as in Python), and the
    /// states `BUILD` applied (instance attributes of an `OrderedDict`).
    Dict {
        kind: DictKind,
        items: Vec<(Handle, Handle)>,
        states: Vec<Handle>,
    },
    /// A global (class or function) by name.
    Global {
        module: String,
        name: String,
    },
    /// A call (`REDUCE`) or `__new__` (`NEWOBJ`) of a global that is not interpreted.
    Object {
        module: String,
        name: String,
        new: bool,
        args: Handle,
        state: Option<Handle>,
    },
    /// A storage from a persistent id, by index in [`Arena::storages`].
    Storage(usize),
}

/// What kind of byte string a [`Node::View`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawKind {
    Bytes,
    ByteArray,
    /// A Python 2 `str` (see [`Node::Py2Str`]).
    Py2Str,
}

impl Node {
    /// The node of a finished value.
    pub(super) fn leaf(value: Value) -> Node {
        match value {
            Value::Int(i) => Node::Int(i),
            Value::Str(s) => Node::Text(s),
            Value::Bool(b) => Node::Bool(b),
            Value::Tensor(t) => Node::Tensor(t),
            Value::None => Node::None,
            other => Node::Leaf(Box::new(other)),
        }
    }

    /// Calls `f` with every node this one holds.
    fn for_each_child(&self, mut f: impl FnMut(Handle)) {
        match self {
            Node::List(items) | Node::Tuple(items) | Node::Set { items, .. } => {
                items.iter().for_each(|&h| f(h))
            }
            Node::Dict { items, states, .. } => {
                for &(k, v) in items {
                    f(k);
                    f(v);
                }
                states.iter().for_each(|&h| f(h));
            }
            Node::Object { args, state, .. } => {
                f(*args);
                state.iter().for_each(|&h| f(h));
            }
            _ => {}
        }
    }

    /// Whether the node holds no other nodes.
    pub(super) fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Node::List(_)
                | Node::Tuple(_)
                | Node::Set { .. }
                | Node::Dict { .. }
                | Node::Object { .. }
        )
    }

    /// A short name for error messages.
    pub(super) fn kind(&self) -> String {
        match self {
            Node::Leaf(v) => v.type_name(),
            Node::Int(_) => "int".into(),
            Node::Text(_) => "str".into(),
            Node::Bool(_) => "bool".into(),
            Node::Tensor(_) => "Tensor".into(),
            Node::None => "NoneType".into(),
            Node::Py2Str(_) | Node::View(_, RawKind::Py2Str) => "str (Python 2)".into(),
            Node::View(_, RawKind::Bytes) => "bytes".into(),
            Node::View(_, RawKind::ByteArray) => "bytearray".into(),
            Node::List(_) => "list".into(),
            Node::Tuple(_) => "tuple".into(),
            Node::Set { .. } => "set".into(),
            Node::Dict { .. } => "dict".into(),
            Node::Global { module, name } => format!("global {module}.{name}"),
            Node::Object { module, name, .. } => format!("{module}.{name} object"),
            Node::Storage(_) => "storage".into(),
        }
    }
}

/// How Python 2 strings and storages convert.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    /// Python 2 strings become `Bytes` (numpy buffers) instead of text.
    pub raw_py2: bool,
    /// Storages become placeholder objects for the rebuild functions.
    pub storage_refs: bool,
}

impl Mode {
    /// How values of the final result convert.
    pub const TEXT: Mode = Mode {
        raw_py2: false,
        storage_refs: false,
    };
}

/// Values a pickle may produce beyond [`VALUES_PER_OP`] per opcode: room for honest sharing
/// (a memoized tuple used by every tensor) in a small pickle. A copied value costs up to
/// about 220 bytes (a dict of one item), so this is a constant of about 2 MB: a few KB of
/// pickle sharing a dict of dicts used to reach 28 MB with 2^17 here.
const VALUE_SLACK: usize = 1 << 13;
/// Values each opcode read may produce. Without memo references an opcode yields at most
/// one value, so this admits honest sharing while a memo bomb (a small object referenced
/// thousands of times) stops after a few times the values its opcodes could make.
const VALUES_PER_OP: usize = 2;
/// String bytes a pickle may produce beyond [`BYTES_PER_INPUT_BYTE`] per byte read.
const BYTES_SLACK: usize = 1 << 20;
/// String bytes each byte read may produce: copies made by memo references may not
/// exceed a few times the part of the input read so far.
const BYTES_PER_INPUT_BYTE: usize = 4;
/// Most nodes reserved up front: a reader may be handed far more input than its pickle
/// (the rest of a legacy file, raw storages included), so the arena grows from there.
const RESERVED_NODES: usize = 1 << 14;

/// The arena, the storages from persistent ids, and the conversion budget.
///
/// The budget grows with the work the machine has done (opcodes read, bytes read), never
/// with the length of the input it was handed: bytes a pickle skips over (popped strings,
/// raw storages after it) buy no room for copies.
pub(super) struct Arena {
    pub nodes: Vec<Node>,
    pub storages: Vec<TypedStorage>,
    /// Copies of storages made for lazily conjugated or negated tensors.
    pub resolved: ResolvedStorages,
    /// Opcodes read so far (a tensor record read by the fast path counts its length in
    /// bytes): what the value budget grows with.
    pub ops: usize,
    /// Bytes of input read so far: what the string-byte budget grows with.
    pub read: usize,
    py2_strings: Py2Strings,
    max_depth: usize,
    max_values: usize,
    values_used: Cell<usize>,
    bytes_used: Cell<usize>,
}

impl Arena {
    pub fn new(py2_strings: Py2Strings, limits: Limits, input_len: usize) -> Arena {
        Arena {
            // Each node takes at least two bytes of pickle; torch's state dicts average about
            // six. Reserving up front spares the first copies of a growing vector.
            nodes: Vec::with_capacity((input_len / 6).min(RESERVED_NODES)),
            storages: Vec::new(),
            resolved: ResolvedStorages::default(),
            ops: 0,
            read: 0,
            py2_strings,
            max_depth: limits.max_depth,
            max_values: limits.max_values,
            values_used: Cell::new(0),
            bytes_used: Cell::new(0),
        }
    }

    /// Values the pickle may have produced so far.
    fn value_allowance(&self) -> usize {
        self.max_values
            .min(VALUE_SLACK.saturating_add(self.ops.saturating_mul(VALUES_PER_OP)))
    }

    /// Adds a node and returns its handle.
    pub fn add(&mut self, node: Node) -> Handle {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node of a handle made by [`Arena::add`].
    pub fn node(&self, handle: Handle) -> Result<&Node, Invalid> {
        self.nodes
            .get(handle)
            .ok_or_else(|| Invalid::Internal(format!("no object {handle}")))
    }

    /// Charges `n` produced values to the budget.
    pub fn charge(&self, n: usize) -> Result<(), Invalid> {
        let used = self.values_used.get().saturating_add(n);
        let allowance = self.value_allowance();
        if used > allowance {
            return Err(Invalid::Limit(if allowance == self.max_values {
                format!(
                    "the pickle expands to more than {} values (limit; memo references copy values)",
                    self.max_values
                )
            } else {
                format!(
                    "the pickle expands to more than {allowance} values from {} opcodes (memo references copy shared objects; at most {VALUES_PER_OP} values per opcode beyond {VALUE_SLACK})",
                    self.ops
                )
            }));
        }
        self.values_used.set(used);
        Ok(())
    }

    fn charge_bytes(&self, n: usize) -> Result<(), Invalid> {
        let used = self.bytes_used.get().saturating_add(n);
        let allowance = BYTES_SLACK.saturating_add(self.read.saturating_mul(BYTES_PER_INPUT_BYTE));
        if used > allowance {
            return Err(Invalid::Limit(format!(
                "the pickle expands to more than {allowance} string bytes from {} bytes read (memo references copy strings)",
                self.read
            )));
        }
        self.bytes_used.set(used);
        Ok(())
    }

    /// Charges the bytes of a string or bytes value (copies made by memo references).
    fn charge_value_bytes(&self, value: &Value) -> Result<(), Invalid> {
        match value {
            Value::Str(s) => self.charge_bytes(s.len()),
            Value::Bytes(b) | Value::ByteArray(b) => self.charge_bytes(b.len()),
            _ => Ok(()),
        }
    }

    /// Text of a Python 2 string.
    pub fn py2_text(&self, bytes: &[u8]) -> String {
        if self.py2_strings == Py2Strings::Utf8OrLatin1 {
            if let Ok(s) = std::str::from_utf8(bytes) {
                return s.to_string();
            }
        }
        bytes.iter().map(|&b| char::from(b)).collect()
    }

    /// The value of a node. Iterative (an explicit task stack), so a hostile nesting
    /// depth cannot overflow the call stack; every value produced is charged before its
    /// task is queued, so pending work never exceeds the value limit.
    pub fn value(&mut self, root: Handle, mode: Mode) -> Result<Value, Invalid> {
        self.convert_tree(root, mode, None)
    }

    /// The value of the pickle's result. Strings and finished values (tensors) that no
    /// other node refers to are moved out of their nodes rather than copied: the arena is
    /// not used after this.
    pub fn take_value(&mut self, root: Handle) -> Result<Value, Invalid> {
        let mut refs = self.reference_counts();
        if let Some(r) = refs.get_mut(root) {
            *r = r.saturating_add(1);
        }
        self.convert_tree(root, Mode::TEXT, Some(&refs))
    }

    /// How many nodes refer to each node (saturating; dead nodes count too, which only
    /// makes a copy where a move would have done). Everything inside a node referred to
    /// twice counts as referred to twice: it is converted twice.
    fn reference_counts(&self) -> Vec<u8> {
        let mut refs = vec![0u8; self.nodes.len()];
        for node in &self.nodes {
            node.for_each_child(|h| {
                if let Some(r) = refs.get_mut(h) {
                    *r = r.saturating_add(1);
                }
            });
        }
        let mut shared: Vec<Handle> = (0..refs.len()).filter(|&h| refs[h] >= 2).collect();
        while let Some(handle) = shared.pop() {
            if let Some(node) = self.nodes.get(handle) {
                node.for_each_child(|h| {
                    if let Some(r) = refs.get_mut(h).filter(|r| **r < 2) {
                        *r = 2;
                        shared.push(h);
                    }
                });
            }
        }
        refs
    }

    /// The conversion; `refs` (reference counts) when leaves referred to once may be moved.
    fn convert_tree(
        &mut self,
        root: Handle,
        mode: Mode,
        refs: Option<&[u8]>,
    ) -> Result<Value, Invalid> {
        self.charge(1)?;
        let mut tasks = vec![Task::Visit(root, mode, 0)];
        let mut done: Vec<Value> = Vec::new();
        // The containers being converted, outermost first, and where each is in the list.
        let mut open: Vec<Handle> = Vec::new();
        let mut open_at: HashMap<Handle, usize> = HashMap::new();
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit(handle, mode, depth) => {
                    if depth > self.max_depth {
                        return Err(Invalid::Limit(format!(
                            "objects nested deeper than {} levels (limit)",
                            self.max_depth
                        )));
                    }
                    if let Some(&at) = open_at.get(&handle) {
                        done.push(self.cut_cycle(&open[at..])?);
                        continue;
                    }
                    match self.expand(handle, mode, depth, refs, &mut tasks)? {
                        Some(value) => done.push(value),
                        None => {
                            open_at.insert(handle, open.len());
                            open.push(handle);
                        }
                    }
                }
                Task::Finish(build) => {
                    if let Some(handle) = open.pop() {
                        open_at.remove(&handle);
                    }
                    let value = self.finish(build, &mut done)?;
                    done.push(value);
                }
            }
        }
        match (done.pop(), done.is_empty()) {
            (Some(value), true) => Ok(value),
            _ => Err(Invalid::Internal("unbalanced conversion".into())),
        }
    }

    /// What a reference back to a container being converted reads as: `cycle` holds that
    /// container and the ones inside it down to the reference. Through an opaque object (a
    /// module holding a bound method of itself, `getattr(module, 'hook')`), the cycle is cut
    /// there and the reference is the [`Object::recursive_reference`] placeholder; a cycle of
    /// plain containers (a list that contains itself) is no checkpoint and an error.
    fn cut_cycle(&self, cycle: &[Handle]) -> Result<Value, Invalid> {
        let through_object = cycle
            .iter()
            .any(|&h| matches!(self.nodes.get(h), Some(Node::Object { .. })));
        if !through_object {
            return Err(Invalid::Malformed(
                "a container that contains itself (a reference cycle)".into(),
            ));
        }
        self.charge(1)?;
        Ok(Value::Object(Box::new(Object::recursive_reference())))
    }

    /// Converts a leaf, or queues the children of a container followed by the step that
    /// assembles them.
    fn expand(
        &mut self,
        handle: Handle,
        mode: Mode,
        depth: usize,
        refs: Option<&[u8]>,
        tasks: &mut Vec<Task>,
    ) -> Result<Option<Value>, Invalid> {
        if let Some(value) = self.scalar(handle, mode, refs)? {
            return Ok(Some(value));
        }
        if let Some(dict) = self.flat_dict(handle, mode, depth, refs)? {
            return Ok(Some(dict));
        }
        let mut queue = |build: Build, children: &mut dyn Iterator<Item = (Handle, Mode)>| {
            tasks.push(Task::Finish(build));
            let start = tasks.len();
            for (child, child_mode) in children {
                tasks.push(Task::Visit(child, child_mode, depth + 1));
            }
            self.charge(tasks.len() - start)?;
            // Children run in order: the first child must be on top of the stack.
            tasks[start..].reverse();
            Ok::<_, Invalid>(None)
        };
        match self.node(handle)? {
            Node::List(items) => queue(
                Build::List(items.len()),
                &mut items.iter().map(|&h| (h, mode)),
            ),
            Node::Tuple(items) => queue(
                Build::Tuple(items.len()),
                &mut items.iter().map(|&h| (h, mode)),
            ),
            Node::Set { frozen, items } => queue(
                Build::Set(items.len(), *frozen),
                &mut items.iter().map(|&h| (h, mode)),
            ),
            Node::Dict {
                kind,
                items,
                states,
            } => queue(
                Build::Dict(*kind, items.len(), states.len()),
                &mut items
                    .iter()
                    .flat_map(|&(k, v)| [(k, Mode::TEXT), (v, mode)])
                    .chain(states.iter().map(|&s| (s, mode))),
            ),
            Node::Object { args, state, .. } => queue(
                Build::Object(handle, state.is_some()),
                &mut std::iter::once(*args).chain(*state).map(|h| (h, mode)),
            ),
            other => Err(Invalid::Internal(format!(
                "{} is not a container",
                other.kind()
            ))),
        }
    }

    /// A dict whose keys and values are all scalars (a state dict), built at once rather
    /// than through the task stack, so its values are never held twice.
    fn flat_dict(
        &mut self,
        handle: Handle,
        mode: Mode,
        depth: usize,
        refs: Option<&[u8]>,
    ) -> Result<Option<Value>, Invalid> {
        let Node::Dict {
            kind,
            items,
            states,
        } = self.node(handle)?
        else {
            return Ok(None);
        };
        let is_scalar = |h: Handle| self.nodes.get(h).is_some_and(Node::is_scalar);
        if depth >= self.max_depth
            || !states.is_empty()
            || !items.iter().all(|&(k, v)| is_scalar(k) && is_scalar(v))
        {
            return Ok(None);
        }
        let (kind, items) = (*kind, items.clone());
        self.charge(2 * items.len())?;
        let mut dict = Dict {
            kind,
            ..Dict::default()
        };
        dict.items.reserve(items.len());
        for (k, v) in items {
            let (Some(key), Some(value)) = (
                self.scalar(k, Mode::TEXT, refs)?,
                self.scalar(v, mode, refs)?,
            ) else {
                return Err(Invalid::Internal("a scalar did not convert".into()));
            };
            let key = Key::from_owned(key).map_err(Invalid::rejected)?;
            dict.items.insert(key, value);
        }
        Ok(Some(Value::Dict(dict)))
    }

    /// The value of a node that holds no other nodes (`None` for a container), moved out
    /// of it when `refs` says nothing else refers to it.
    fn scalar(
        &mut self,
        handle: Handle,
        mode: Mode,
        refs: Option<&[u8]>,
    ) -> Result<Option<Value>, Invalid> {
        if refs.is_some_and(|r| r.get(handle).is_some_and(|&n| n <= 1)) {
            if let Some(value) = self.take_leaf(handle)? {
                return Ok(Some(value));
            }
        }
        Ok(Some(match self.node(handle)? {
            Node::Leaf(v) => {
                self.charge_value_bytes(v)?;
                (**v).clone()
            }
            Node::Int(i) => Value::Int(*i),
            Node::Bool(b) => Value::Bool(*b),
            Node::Tensor(t) => Value::Tensor(t.clone()),
            Node::None => Value::None,
            Node::Text(s) => {
                self.charge_bytes(s.len())?;
                Value::Str(s.clone())
            }
            Node::Py2Str(bytes) => {
                self.charge_bytes(bytes.len())?;
                if mode.raw_py2 {
                    Value::Bytes(bytes.clone())
                } else {
                    Value::Str(self.py2_text(bytes))
                }
            }
            Node::View(storage, kind) => {
                let bytes = storage.as_bytes();
                self.charge_bytes(bytes.len())?;
                match kind {
                    RawKind::Bytes => Value::Bytes(bytes.to_vec()),
                    RawKind::ByteArray => Value::ByteArray(bytes.to_vec()),
                    RawKind::Py2Str if mode.raw_py2 => Value::Bytes(bytes.to_vec()),
                    RawKind::Py2Str => Value::Str(self.py2_text(bytes)),
                }
            }
            Node::Global { module, name } => object(module, name, ObjectBuild::Global),
            Node::Storage(index) => {
                if mode.storage_refs {
                    return Ok(Some(object(
                        STORAGE_REF,
                        &index.to_string(),
                        ObjectBuild::Global,
                    )));
                }
                // A storage saved by itself reads as a flat tensor over all its bytes.
                let typed = self
                    .storages
                    .get(*index)
                    .ok_or_else(|| Invalid::Internal("dangling storage".into()))?;
                let numel = typed.storage.len() / typed.dtype.size();
                let tensor =
                    Tensor::new(typed.dtype, vec![numel], vec![1], 0, typed.storage.clone())
                        .map_err(Invalid::rejected)?;
                Value::Tensor(tensor)
            }
            Node::List(_)
            | Node::Tuple(_)
            | Node::Set { .. }
            | Node::Dict { .. }
            | Node::Object { .. } => return Ok(None),
        }))
    }

    /// The value of a leaf or str node, moved out of it (a node referred to once).
    fn take_leaf(&mut self, handle: Handle) -> Result<Option<Value>, Invalid> {
        let Some(node) = self.nodes.get_mut(handle) else {
            return Ok(None);
        };
        if !matches!(node, Node::Leaf(_) | Node::Text(_) | Node::Tensor(_)) {
            return Ok(None);
        }
        let value = match std::mem::replace(node, Node::None) {
            Node::Leaf(v) => *v,
            Node::Tensor(t) => Value::Tensor(t),
            Node::Text(s) => Value::Str(s),
            _ => return Ok(None),
        };
        self.charge_value_bytes(&value)?;
        Ok(Some(value))
    }

    /// Assembles a container from its converted children (the last values of `done`).
    fn finish(&self, build: Build, done: &mut Vec<Value>) -> Result<Value, Invalid> {
        let mut take = |n: usize| -> Result<Vec<Value>, Invalid> {
            let at = done
                .len()
                .checked_sub(n)
                .ok_or_else(|| Invalid::Internal("missing converted values".into()))?;
            Ok(done.split_off(at))
        };
        Ok(match build {
            Build::List(n) => Value::List(take(n)?),
            Build::Tuple(n) => Value::Tuple(take(n)?),
            Build::Set(n, frozen) => {
                let items = take(n)?;
                if frozen {
                    Value::FrozenSet(items)
                } else {
                    Value::Set(items)
                }
            }
            Build::Dict(kind, pairs, states) => {
                // Drained in place: a state dict's values are not copied into a second vector.
                let at = done
                    .len()
                    .checked_sub(2 * pairs + states)
                    .ok_or_else(|| Invalid::Internal("missing converted values".into()))?;
                let mut values = done.drain(at..);
                let mut dict = Dict {
                    kind,
                    ..Dict::default()
                };
                dict.items.reserve(pairs);
                // Once a key is an object (hashable in Python, not a ckpt `Key`), the pairs.
                let mut object_keyed: Option<Vec<Value>> = None;
                for _ in 0..pairs {
                    let (Some(key), Some(value)) = (values.next(), values.next()) else {
                        break;
                    };
                    if object_keyed.is_none() && matches!(key, Value::Object(_)) {
                        let earlier = std::mem::take(&mut dict.items).into_iter();
                        let earlier = earlier.map(|(k, v)| Value::Tuple(vec![k.to_value(), v]));
                        object_keyed = Some(earlier.collect());
                    }
                    if let Some(pairs) = object_keyed.as_mut() {
                        pairs.push(Value::Tuple(vec![key, value]));
                        continue;
                    }
                    let key = Key::from_owned(key).map_err(Invalid::rejected)?;
                    dict.items.insert(key, value);
                }
                if let Some(pairs) = object_keyed {
                    let states: Vec<Value> = values.collect();
                    object_keyed_dict(kind, pairs, states)?
                } else {
                    for state in values {
                        set_attributes(&mut dict, state)?;
                    }
                    Value::Dict(dict)
                }
            }
            Build::Object(handle, has_state) => {
                let mut parts = take(1 + usize::from(has_state))?.into_iter();
                let args = match parts.next() {
                    Some(Value::Tuple(items)) => items,
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                let Node::Object {
                    module, name, new, ..
                } = self.node(handle)?
                else {
                    return Err(Invalid::Internal("object changed during conversion".into()));
                };
                Value::Object(Box::new(Object {
                    module: module.clone(),
                    name: name.clone(),
                    build: if *new {
                        ObjectBuild::New(args)
                    } else {
                        ObjectBuild::Call(args)
                    },
                    state: parts.next(),
                }))
            }
        })
    }
}

/// A step of the iterative conversion.
enum Task {
    Visit(Handle, Mode, usize),
    Finish(Build),
}

/// How to assemble a container from its converted children.
enum Build {
    List(usize),
    Tuple(usize),
    Set(usize, bool),
    /// Kind, number of key/value pairs, number of `BUILD` states.
    Dict(DictKind, usize, usize),
    /// The object node, and whether a state follows its arguments.
    Object(Handle, bool),
}

/// `BUILD` on an `OrderedDict`: `__dict__.update(state)`, where the state may be a dict or
/// a `(dict, slots)` pair.
/// A dict whose keys include objects (DCP's `MetadataIndex`, any object Python hashes by
/// identity): kept opaque as the call that would rebuild it, `dict([(key, value), ...])`
/// (`collections.OrderedDict(...)`, `collections.Counter(...)`), since a [`Key`] holds only
/// values ckpt can hash. Attributes set on such a dict are refused rather than dropped.
fn object_keyed_dict(
    kind: DictKind,
    pairs: Vec<Value>,
    states: Vec<Value>,
) -> Result<Value, Invalid> {
    if !states.is_empty() {
        return Err(Invalid::rejected(crate::error::Error::invalid(
            "a dict with object keys and attributes cannot be read by ckpt",
        )));
    }
    let (module, name) = match kind {
        DictKind::Dict => ("builtins", "dict"),
        DictKind::OrderedDict => ("collections", "OrderedDict"),
        DictKind::Counter => ("collections", "Counter"),
    };
    let call = ObjectBuild::Call(vec![Value::List(pairs)]);
    Ok(Value::Object(Box::new(Object::new(module, name, call))))
}

fn set_attributes(dict: &mut Dict, state: Value) -> Result<(), Invalid> {
    let parts = match state {
        Value::Tuple(parts) if parts.len() == 2 => parts,
        other => vec![other],
    };
    for part in parts {
        match part {
            Value::None => {}
            Value::Dict(d) => {
                for (key, value) in d.items {
                    match key {
                        Key::Str(name) => {
                            dict.attributes.insert(name, value);
                        }
                        other => {
                            return Err(Invalid::Malformed(format!(
                                "BUILD: attribute names must be strings, found {other}"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(Invalid::Malformed(format!(
                    "BUILD: the state of a {} must be a dict, found a {}",
                    match dict.kind {
                        DictKind::Dict => "dict",
                        DictKind::OrderedDict => "OrderedDict",
                        DictKind::Counter => "Counter",
                    },
                    other.type_name()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Node;

    #[test]
    fn a_node_stays_small() {
        // Several nodes per object of a pickle: a tensor node must not make them all grow.
        assert!(
            std::mem::size_of::<Node>() <= 80,
            "{}",
            std::mem::size_of::<Node>()
        );
    }
}

//! The pickle virtual machine (protocols 0-5). It builds values; it never imports or calls.
//!
//! Objects live in an [`Arena`] so the memo shares them by reference; known globals are
//! interpreted when called ([`globals`]), anything else stays an opaque object. Every length
//! read from the stream is checked against the remaining input before anything is allocated.

use std::collections::HashMap;

use num_bigint::BigInt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::arena::{Arena, Handle, Mode, Node};
use crate::pickle::globals::{self, Known};
use crate::pickle::{numpy, text, Limits};
use crate::tensor::Storage;
use crate::value::{DictKind, Value};

/// How Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Py2Strings {
    /// Each byte is one code point, as `pickle.load(encoding="latin1")` (Detectron files).
    #[default]
    Latin1,
    /// UTF-8 when valid, else latin1, as `torch.load` decodes its py2 strings.
    Utf8OrLatin1,
}

/// Options of [`read_pickle`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PickleOptions {
    pub py2_strings: Py2Strings,
    pub limits: Limits,
}

/// A storage resolved from a persistent id, with the dtype its storage class names.
#[derive(Debug, Clone)]
pub struct TypedStorage {
    pub storage: Storage,
    pub dtype: DType,
}

/// Resolves persistent ids (`BINPERSID`), e.g. torch's `('storage', FloatStorage, '0', 'cpu', 6)`.
pub trait PersistentLoad {
    /// The storage a persistent id refers to. `pid` is the id as a value (storage classes
    /// appear as `Value::Object` globals with module `torch` and a name ending in `Storage`,
    /// or `torch.storage.UntypedStorage`).
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage>;
}

/// Reads one pickle from the start of `data`. Returns the value and the number of bytes the
/// pickle took (up to and including `STOP`). `base_offset` is added to offsets in errors so
/// they are offsets in the file.
///
/// Nothing is imported or executed: unknown globals become opaque [`crate::Object`]s. Nesting
/// depth and the number of values produced are bounded by `options.limits`.
pub fn read_pickle(
    data: &[u8],
    base_offset: u64,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize)> {
    Machine {
        data,
        pos: 0,
        op_start: 0,
        op: 0,
        base: base_offset,
        persistent,
        arena: Arena::new(options.py2_strings, options.limits, data.len()),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    op: u8,
    base: u64,
    persistent: &'a mut dyn PersistentLoad,
    arena: Arena,
    stack: Vec<Handle>,
    marks: Vec<usize>,
    memo: HashMap<u64, Handle>,
}

impl<'a> Machine<'a> {
    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::pickle(
            self.base + self.op_start as u64,
            format!("{} (0x{:02x}): {message}", opcode_name(self.op), self.op),
        )
    }

    fn run(mut self) -> Result<(Value, usize)> {
        loop {
            self.op_start = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(Error::pickle(
                    self.base + self.pos as u64,
                    "truncated pickle: expected an opcode (no STOP)",
                ));
            };
            self.op = op;
            self.pos += 1;
            if op == b'.' {
                let top = self.pop()?;
                let value = self.convert(top, Mode::TEXT)?;
                return Ok((value, self.pos));
            }
            self.step(op)?;
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(self.err(format!("unsupported protocol {proto} (0-5)")));
                }
            }
            0x95 => {
                let len = self.u64()?;
                if len > (self.data.len() - self.pos) as u64 {
                    return Err(self.err(format!(
                        "frame of {len} bytes runs past the end of the input"
                    )));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            b'F' => {
                let line = self.line()?;
                let f =
                    text::parse_float(line).ok_or_else(|| self.err("expected a decimal float"))?;
                self.push(Node::Leaf(Value::Float(f)));
            }
            b'G' => {
                let bytes = self.take(8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                self.push(Node::Leaf(Value::Float(f64::from_be_bytes(raw))));
            }
            b'I' => {
                let line = self.line()?;
                let v = text::parse_int_opcode(line)
                    .ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::Leaf(v));
            }
            b'L' => {
                let line = self.line()?;
                let v = text::parse_int(line).ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::Leaf(v));
            }
            b'J' => {
                let v = i64::from(self.i32()?);
                self.push(Node::Leaf(Value::Int(v)));
            }
            b'K' => {
                let v = i64::from(self.u8()?);
                self.push(Node::Leaf(Value::Int(v)));
            }
            b'M' => {
                let v = i64::from(self.u16()?);
                self.push(Node::Leaf(Value::Int(v)));
            }
            0x8A => {
                let n = usize::from(self.u8()?);
                let bytes = self.take(n)?;
                self.push(Node::Leaf(long_value(bytes)));
            }
            0x8B => {
                let n = self.len_i32()?;
                let bytes = self.take(n)?;
                self.push(Node::Leaf(long_value(bytes)));
            }
            b'N' => self.push(Node::Leaf(Value::None)),
            0x88 => self.push(Node::Leaf(Value::Bool(true))),
            0x89 => self.push(Node::Leaf(Value::Bool(false))),
            b'S' => {
                let line = self.line()?;
                let bytes = text::unquote_string(line)
                    .ok_or_else(|| self.err("expected a quoted string"))?;
                self.push(Node::Py2Str(bytes));
            }
            b'T' => {
                let n = self.len_i32()?;
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Py2Str(bytes));
            }
            b'U' => {
                let n = usize::from(self.u8()?);
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Py2Str(bytes));
            }
            b'V' => {
                let line = self.line()?;
                let s = text::raw_unicode_escape(line)
                    .ok_or_else(|| self.err("expected raw-unicode-escape text"))?;
                self.push(Node::Leaf(Value::Str(s)));
            }
            b'X' => {
                let n = self.len_u32()?;
                self.push_text(n)?;
            }
            0x8C => {
                let n = usize::from(self.u8()?);
                self.push_text(n)?;
            }
            0x8D => {
                let n = self.len_u64()?;
                self.push_text(n)?;
            }
            b'B' | b'C' | 0x8E | 0x96 => {
                let n = match op {
                    b'B' => self.len_u32()?,
                    b'C' => usize::from(self.u8()?),
                    _ => self.len_u64()?,
                };
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Leaf(if op == 0x96 {
                    Value::ByteArray(bytes)
                } else {
                    Value::Bytes(bytes)
                }));
            }
            b']' => self.push(Node::List(Vec::new())),
            b')' => self.push(Node::Tuple(Vec::new())),
            b'}' => self.push(Node::Dict {
                kind: DictKind::Dict,
                items: Vec::new(),
                states: Vec::new(),
            }),
            0x8F => self.push(Node::Set {
                frozen: false,
                items: Vec::new(),
            }),
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Node::List(items));
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = self.pop_n(n)?;
                self.push(Node::Tuple(items));
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Node::Set {
                    frozen: true,
                    items,
                });
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Node::Dict {
                    kind: DictKind::Dict,
                    items: pairs,
                    states: Vec::new(),
                });
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![(key, value)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.set_items(pairs)?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                let top = self.top()?;
                match self.arena.nodes.get_mut(top) {
                    Some(Node::Set {
                        frozen: false,
                        items: set,
                    }) => set.extend(items),
                    _ => {
                        let kind = self.kind(top);
                        return Err(self.err(format!("expected a set to add to, found a {kind}")));
                    }
                }
            }
            b'c' => {
                let module = self.line_text()?;
                let name = self.line_text()?;
                self.push_global(&module, &name);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let name = self.str_of(name)?;
                let module = self.str_of(module)?;
                self.push_global(&module, &name);
            }
            b'g' => {
                let line = self.line()?;
                let index = text::parse_index(line)
                    .ok_or_else(|| self.err("expected a decimal memo index"))?;
                self.get(index)?;
            }
            b'h' => {
                let index = u64::from(self.u8()?);
                self.get(index)?;
            }
            b'j' => {
                let index = u64::from(self.u32()?);
                self.get(index)?;
            }
            b'p' => {
                let line = self.line()?;
                let index = text::parse_index(line)
                    .ok_or_else(|| self.err("expected a decimal memo index"))?;
                self.put(index)?;
            }
            b'q' => {
                let index = u64::from(self.u8()?);
                self.put(index)?;
            }
            b'r' => {
                let index = u64::from(self.u32()?);
                self.put(index)?;
            }
            0x94 => {
                let index = self.memo.len() as u64;
                self.put(index)?;
            }
            b'P' => {
                let line = self.line()?;
                let pid = Value::Str(String::from_utf8_lossy(line).into_owned());
                self.persistent_load(&pid)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let pid = self.convert(pid, Mode::TEXT)?;
                self.persistent_load(&pid)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let node = self.call(callable, args, false)?;
                self.push(node);
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                let node = self.call(class, args, true)?;
                self.push(node);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let node = self.call(class, args, true)?;
                self.push(node);
            }
            b'i' => {
                let module = self.line_text()?;
                let name = self.line_text()?;
                let items = self.pop_mark()?;
                let class = self.global_node(&module, &name);
                let args = self.arena.add(Node::Tuple(items));
                let node = self.call(class, args, false)?;
                self.push(node);
            }
            b'o' => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.err("expected a class after MARK"));
                }
                let class = items.remove(0);
                let args = self.arena.add(Node::Tuple(items));
                let node = self.call(class, args, false)?;
                self.push(node);
            }
            b'b' => self.build()?,
            0x82..=0x84 => {
                return Err(self.err(
                    "unsupported: copyreg extension codes are not allowed in checkpoint files",
                ))
            }
            0x97 => {
                return Err(self.err(
                    "unsupported: out-of-band buffers (pickle protocol 5) are not stored in files",
                ))
            }
            0x98 => {}
            other => {
                return Err(Error::pickle(
                    self.base + self.op_start as u64,
                    format!("unknown opcode 0x{other:02x}"),
                ))
            }
        }
        Ok(())
    }

    // ---- input ------------------------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data = self.data;
        let left = data.len() - self.pos;
        if n > left {
            return Err(self.err(format!(
                "argument of {n} bytes runs past the end of the input ({left} bytes left)"
            )));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&data[start..start + n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut raw = [0u8; N];
        raw.copy_from_slice(self.take(N)?);
        Ok(raw)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length that must fit in the remaining input (checked again by `take`).
    fn checked_len(&self, n: u64) -> Result<usize> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!(
                "declared length {n} runs past the end of the input ({left} bytes left)"
            )));
        }
        Ok(n as usize)
    }

    fn len_u32(&mut self) -> Result<usize> {
        let n = self.u32()?;
        self.checked_len(u64::from(n))
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        self.checked_len(n)
    }

    fn len_i32(&mut self) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Err(self.err(format!("negative length {n}")));
        }
        self.checked_len(n as u64)
    }

    /// The text up to the next newline (protocol-0 arguments), without the newline.
    fn line(&mut self) -> Result<&'a [u8]> {
        let data = self.data;
        let rest = &data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("expected a newline-terminated argument"));
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line_text(&mut self) -> Result<String> {
        let line = self.line()?;
        Ok(String::from_utf8_lossy(line).into_owned())
    }

    fn push_text(&mut self, n: usize) -> Result<()> {
        // Python writes lone surrogates with `surrogatepass`; they become U+FFFD here.
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.push(Node::Leaf(Value::Str(s)));
        Ok(())
    }

    // ---- stack and memo ---------------------------------------------------------------

    fn push(&mut self, node: Node) {
        let handle = self.arena.add(node);
        self.stack.push(handle);
    }

    fn pop(&mut self) -> Result<Handle> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("expected an object on the stack, found a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("expected an object on the stack, found none"))
    }

    fn top(&self) -> Result<Handle> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("expected an object on the stack, found a MARK"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("expected an object on the stack, found none"))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Handle>> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.err(format!("expected {n} objects on the stack")));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Handle>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("expected a MARK on the stack"))?;
        if mark > self.stack.len() {
            return Err(self.err("MARK above the top of the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn get(&mut self, index: u64) -> Result<()> {
        let handle = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(format!("memo entry {index} was never stored")))?;
        self.stack.push(handle);
        Ok(())
    }

    fn put(&mut self, index: u64) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn kind(&self, handle: Handle) -> String {
        self.arena
            .node(handle)
            .map(Node::kind)
            .unwrap_or_else(|e| e)
    }

    fn convert(&self, handle: Handle, mode: Mode) -> Result<Value> {
        self.arena.value(handle, mode).map_err(|m| self.err(m))
    }

    /// A string argument (`STACK_GLOBAL` names).
    fn str_of(&self, handle: Handle) -> Result<String> {
        match self.arena.node(handle).map_err(|m| self.err(m))? {
            Node::Leaf(Value::Str(s)) => Ok(s.clone()),
            Node::Py2Str(b) => Ok(self.arena.py2_text(b)),
            other => Err(self.err(format!("expected a str, found a {}", other.kind()))),
        }
    }

    // ---- containers -------------------------------------------------------------------

    fn pairs(&self, items: Vec<Handle>) -> Result<Vec<(Handle, Handle)>> {
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
    fn as_builtin_container(&mut self, top: Handle, dict: bool) {
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

    fn extend_list(&mut self, items: Vec<Handle>) -> Result<()> {
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

    fn set_items(&mut self, pairs: Vec<(Handle, Handle)>) -> Result<()> {
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

    fn global_node(&mut self, module: &str, name: &str) -> Handle {
        let (module, name) = globals::map_py2_name(module, name);
        let node = match globals::global_value(&module, &name) {
            Some(value) => Node::Leaf(value),
            None => Node::Global { module, name },
        };
        self.arena.add(node)
    }

    fn push_global(&mut self, module: &str, name: &str) {
        let handle = self.global_node(module, name);
        self.stack.push(handle);
    }

    fn persistent_load(&mut self, pid: &Value) -> Result<()> {
        let typed = self.persistent.persistent_load(pid)?;
        self.arena.storages.push(typed);
        let index = self.arena.storages.len() - 1;
        self.push(Node::Storage(index));
        Ok(())
    }

    /// The handles inside a tuple/list/set argument, charged to the value budget because
    /// they are copied.
    fn items_of(&self, handle: Handle) -> Result<Vec<Handle>> {
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
    fn dict_items(&self, args: Handle) -> Result<Vec<(Handle, Handle)>> {
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

    fn call(&mut self, callable: Handle, args: Handle, new: bool) -> Result<Node> {
        let (module, name) = match self.arena.node(callable).map_err(|m| self.err(m))? {
            Node::Global { module, name } => (module.clone(), name.clone()),
            other => {
                return Err(self.err(format!(
                    "expected a global to call, found a {}",
                    other.kind()
                )))
            }
        };
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
                let args = match self.convert(args, mode)? {
                    Value::Tuple(items) => items,
                    other => {
                        return Err(self.err(format!(
                            "{module}.{name}: expected an argument tuple, found a {}",
                            other.type_name()
                        )))
                    }
                };
                let value = globals::call(&module, &name, args, &self.arena.storages)
                    .map_err(|m| self.err(format!("{module}.{name}: {m}")))?;
                Node::Leaf(value)
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

    /// `copyreg._reconstructor(cls, base, state)`: `base(state)` for builtin containers,
    /// else `cls.__new__(cls)` kept opaque.
    fn reconstructor(&mut self, args: Handle) -> Result<Node> {
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

    fn build(&mut self) -> Result<()> {
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
            let state = self.convert(state, raw)?;
            let array = numpy::ndarray_from_state(state).map_err(|m| self.err(m))?;
            if let Some(node) = self.arena.nodes.get_mut(target) {
                *node = Node::Leaf(array);
            }
            return Ok(());
        }
        match self.arena.nodes.get_mut(target) {
            Some(Node::Dict { states, .. }) => states.push(state),
            Some(Node::Object { state: slot, .. }) => *slot = Some(state),
            // Legacy `Tensor.set_` state and `Parameter.__setstate__`: the tensor is complete.
            Some(Node::Leaf(Value::Tensor(_) | Value::Parameter(_))) => {}
            _ => {
                let kind = self.kind(target);
                return Err(self.err(format!("cannot apply a state to a {kind}")));
            }
        }
        Ok(())
    }
}

/// A `LONG1`/`LONG4` argument: little-endian two's complement.
fn long_value(bytes: &[u8]) -> Value {
    if bytes.len() <= 8 {
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xFF
        } else {
            0
        };
        let mut raw = [fill; 8];
        raw[..bytes.len()].copy_from_slice(bytes);
        return Value::Int(i64::from_le_bytes(raw));
    }
    text::int_value(BigInt::from_signed_bytes_le(bytes))
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8A => "LONG1",
        0x8B => "LONG4",
        0x8C => "SHORT_BINUNICODE",
        0x8D => "BINUNICODE8",
        0x8E => "BINBYTES8",
        0x8F => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown opcode",
    }
}

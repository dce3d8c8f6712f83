//! The pickle virtual machine (protocols 0-5): the dispatch over opcodes. It builds values;
//! it never imports or calls.
//!
//! Objects live in an arena so the memo shares them by reference; known globals are
//! interpreted when called (`globals.rs`), anything else stays an opaque object. Every length
//! read from the stream is checked against the remaining input before anything is allocated.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pickle::arena::{Handle, Mode, Node, RawKind};
use crate::pickle::machine::{Machine, Memo, Slot};
use crate::pickle::{long, opcode, text, PersistentLoad, PickleOptions};
use crate::tensor::Buffer;
use crate::value::{DictKind, Value};

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
    read_pickle_with(data, base_offset, options, persistent, true)
}

/// [`read_pickle`] of the pickle in `range` of a file buffer (errors give offsets in the
/// buffer): byte strings of at least [`VIEW_MIN_BYTES`](crate::pickle::machine::VIEW_MIN_BYTES) stay views of `buffer` instead of
/// copies, so that numpy arrays (Detectron pickles) are tensors over the file as torch
/// records are.
pub(crate) fn read_pickle_in(
    buffer: &Arc<Buffer>,
    range: std::ops::Range<usize>,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize)> {
    let data = buffer.as_bytes().get(range.clone()).unwrap_or_default();
    Machine::new(data, range.start as u64, options, persistent, true)
        .with_source(buffer, range.start)
        .run()
}

/// [`read_pickle`], with the fast path for tensor records on or off (tests compare both).
pub(super) fn read_pickle_with(
    data: &[u8],
    base_offset: u64,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
    tensor_records: bool,
) -> Result<(Value, usize)> {
    Machine::new(data, base_offset, options, persistent, tensor_records).run()
}

/// Deepest chain of memo parts replayed inside one another (a hand-made file can make a
/// part refer to itself).
const MAX_REPLAY_DEPTH: usize = 32;

impl<'a> Machine<'a> {
    fn run(mut self) -> Result<(Value, usize)> {
        loop {
            self.op_start = self.pos;
            self.arena.ops += 1;
            self.arena.read = self.arena.read.max(self.pos);
            let Some(&op) = self.data.get(self.pos) else {
                return Err(Error::pickle(
                    self.base + self.pos as u64,
                    "truncated pickle: expected an opcode (no STOP)",
                ));
            };
            self.op = op;
            self.pos += 1;
            if op == opcode::STOP {
                let top = self.pop()?;
                // The memo is done with: free it before the result is built beside the arena.
                self.memo = Memo::default();
                let value = self.arena.take_value(top).map_err(|m| self.err(m))?;
                return Ok((value, self.pos));
            }
            self.step(op)?;
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            opcode::PROTO => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(self.err(format!("unsupported protocol {proto} (0-5)")));
                }
            }
            opcode::FRAME => {
                let len = self.u64()?;
                if len > (self.data.len() - self.pos) as u64 {
                    return Err(self.err(format!(
                        "frame of {len} bytes runs past the end of the input"
                    )));
                }
            }
            opcode::MARK => {
                if !(self.tensor_records && self.tensor_record(Machine::fetch)?) {
                    self.marks.push(self.stack.len());
                }
            }
            opcode::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            opcode::POP_MARK => {
                self.pop_mark()?;
            }
            opcode::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }
            opcode::FLOAT => {
                let line = self.line()?;
                let f =
                    text::parse_float(line).ok_or_else(|| self.err("expected a decimal float"))?;
                self.push(Node::leaf(Value::Float(f)));
            }
            opcode::BINFLOAT => {
                let bytes = self.take(8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                self.push(Node::leaf(Value::Float(f64::from_be_bytes(raw))));
            }
            opcode::INT => {
                let line = self.int_line()?;
                let v = text::parse_int_opcode(line)
                    .ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::leaf(v));
            }
            opcode::LONG => {
                let line = self.int_line()?;
                let v = text::parse_int(line).ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::leaf(v));
            }
            opcode::BININT => {
                let v = i64::from(self.i32()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            opcode::BININT1 => {
                let v = i64::from(self.u8()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            opcode::BININT2 => {
                let v = i64::from(self.u16()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            opcode::LONG1 => {
                let n = usize::from(self.u8()?);
                let bytes = self.take(n)?;
                self.push(Node::leaf(long::decode(bytes)));
            }
            opcode::LONG4 => {
                let n = self.len_i32()?;
                let bytes = self.take(n)?;
                self.push(Node::leaf(long::decode(bytes)));
            }
            opcode::NONE => self.push(Node::leaf(Value::None)),
            opcode::NEWTRUE => self.push(Node::leaf(Value::Bool(true))),
            opcode::NEWFALSE => self.push(Node::leaf(Value::Bool(false))),
            opcode::STRING => {
                let line = self.line()?;
                let bytes = text::unquote_string(line)
                    .ok_or_else(|| self.err("expected a quoted string"))?;
                self.push(Node::Py2Str(bytes));
            }
            opcode::BINSTRING => {
                let n = self.len_i32()?;
                let node = self.raw_bytes(n, RawKind::Py2Str)?;
                self.push(node);
            }
            opcode::SHORT_BINSTRING => {
                let n = usize::from(self.u8()?);
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Py2Str(bytes));
            }
            opcode::UNICODE => {
                let line = self.line()?;
                let s = text::raw_unicode_escape(line)
                    .ok_or_else(|| self.err("expected raw-unicode-escape text"))?;
                self.push(Node::leaf(Value::Str(s)));
            }
            opcode::BINUNICODE => {
                let n = self.len_u32()?;
                self.push_text(n)?;
            }
            opcode::SHORT_BINUNICODE => {
                let n = usize::from(self.u8()?);
                self.push_text(n)?;
            }
            opcode::BINUNICODE8 => {
                let n = self.len_u64()?;
                self.push_text(n)?;
            }
            opcode::BINBYTES | opcode::SHORT_BINBYTES | opcode::BINBYTES8 | opcode::BYTEARRAY8 => {
                let n = match op {
                    opcode::BINBYTES => self.len_u32()?,
                    opcode::SHORT_BINBYTES => usize::from(self.u8()?),
                    _ => self.len_u64()?,
                };
                let kind = if op == opcode::BYTEARRAY8 {
                    RawKind::ByteArray
                } else {
                    RawKind::Bytes
                };
                let node = self.raw_bytes(n, kind)?;
                self.push(node);
            }
            opcode::EMPTY_LIST => self.push(Node::List(Vec::new())),
            opcode::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new())),
            opcode::EMPTY_DICT => self.push(Node::Dict {
                kind: DictKind::Dict,
                items: Vec::new(),
                states: Vec::new(),
            }),
            opcode::EMPTY_SET => self.push(Node::Set {
                frozen: false,
                items: Vec::new(),
            }),
            opcode::LIST => {
                let items = self.pop_mark()?;
                self.push(Node::List(items));
            }
            opcode::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items));
            }
            opcode::TUPLE1..=opcode::TUPLE3 => {
                let n = usize::from(op - opcode::TUPLE1) + 1;
                let items = self.pop_n(n)?;
                self.push(Node::Tuple(items));
            }
            opcode::FROZENSET => {
                let items = self.pop_mark()?;
                self.push(Node::Set {
                    frozen: true,
                    items,
                });
            }
            opcode::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Node::Dict {
                    kind: DictKind::Dict,
                    items: pairs,
                    states: Vec::new(),
                });
            }
            opcode::APPEND => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            opcode::APPENDS => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            opcode::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![(key, value)])?;
            }
            opcode::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.set_items(pairs)?;
            }
            opcode::ADDITEMS => {
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
            opcode::GLOBAL => {
                let module = self.line_text()?;
                let name = self.line_text()?;
                self.push_global(&module, &name);
            }
            opcode::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let name = self.str_of(name)?;
                let module = self.str_of(module)?;
                self.push_global(&module, &name);
            }
            opcode::GET => {
                let line = self.line()?;
                let index = text::parse_index(line)
                    .ok_or_else(|| self.err("expected a decimal memo index"))?;
                self.get(index)?;
            }
            opcode::BINGET => {
                let index = u64::from(self.u8()?);
                self.get(index)?;
            }
            opcode::LONG_BINGET => {
                let index = u64::from(self.u32()?);
                self.get(index)?;
            }
            opcode::PUT => {
                let line = self.line()?;
                let index = text::parse_index(line)
                    .ok_or_else(|| self.err("expected a decimal memo index"))?;
                self.put(index)?;
            }
            opcode::BINPUT => {
                let index = u64::from(self.u8()?);
                self.put(index)?;
            }
            opcode::LONG_BINPUT => {
                let index = u64::from(self.u32()?);
                self.put(index)?;
            }
            opcode::MEMOIZE => {
                let index = self.memo.len() as u64;
                self.put(index)?;
            }
            opcode::PERSID => {
                let line = self.line()?;
                let pid = Value::Str(text::utf8_lossy(line));
                self.persistent_load(&pid)?;
            }
            opcode::BINPERSID => {
                let pid = self.pop()?;
                let pid = self.convert(pid, Mode::TEXT)?;
                self.persistent_load(&pid)?;
            }
            opcode::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let node = self.call(callable, args, false)?;
                self.push(node);
            }
            opcode::NEWOBJ => {
                let args = self.pop()?;
                let class = self.pop()?;
                let node = self.call(class, args, true)?;
                self.push(node);
            }
            opcode::NEWOBJ_EX => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let node = self.call(class, args, true)?;
                self.push(node);
            }
            opcode::INST => {
                let module = self.line_text()?;
                let name = self.line_text()?;
                let items = self.pop_mark()?;
                let class = self.global_node(&module, &name);
                let args = self.arena.add(Node::Tuple(items));
                let node = self.call(class, args, false)?;
                self.push(node);
            }
            opcode::OBJ => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.err("expected a class after MARK"));
                }
                let class = items.remove(0);
                let args = self.arena.add(Node::Tuple(items));
                let node = self.call(class, args, false)?;
                self.push(node);
            }
            opcode::BUILD => self.build()?,
            opcode::EXT1..=opcode::EXT4 => {
                return Err(self.err(
                    "unsupported: copyreg extension codes are not allowed in checkpoint files",
                ))
            }
            opcode::NEXT_BUFFER => {
                return Err(self.err(
                    "unsupported: out-of-band buffers (pickle protocol 5) are not stored in files",
                ))
            }
            opcode::READONLY_BUFFER => {}
            other => {
                return Err(Error::pickle(
                    self.base + self.op_start as u64,
                    format!("unknown opcode 0x{other:02x}"),
                ))
            }
        }
        Ok(())
    }

    pub(super) fn get(&mut self, index: u64) -> Result<()> {
        let handle = self.fetch(index)?;
        self.stack.push(handle);
        Ok(())
    }

    /// The node of memo entry `index`, built first when it is a deferred part.
    pub(super) fn fetch(&mut self, index: u64) -> Result<Handle> {
        let slot = self
            .memo
            .get(index)
            .ok_or_else(|| self.err(format!("memo entry {index} was never stored")))?;
        match slot.get() {
            Ok(handle) => Ok(handle),
            Err((start, len)) => {
                let handle = self.replay(start, len)?;
                self.memo.insert(index, Slot::node(handle));
                Ok(handle)
            }
        }
    }

    /// Runs the machine over `len` bytes of input at `start` (a part of a tensor record
    /// the fast path skipped) and returns the one object they make.
    fn replay(&mut self, start: usize, len: usize) -> Result<Handle> {
        if self.replaying >= MAX_REPLAY_DEPTH {
            return Err(self.err(format!(
                "memo references nested deeper than {MAX_REPLAY_DEPTH} levels"
            )));
        }
        let saved = (
            self.pos,
            self.op_start,
            self.op,
            std::mem::take(&mut self.stack),
            std::mem::take(&mut self.marks),
        );
        self.replaying += 1;
        self.pos = start;
        let end = start.saturating_add(len).min(self.data.len());
        let mut result = Ok(());
        while self.pos < end && result.is_ok() {
            self.op_start = self.pos;
            self.op = self.data[self.pos];
            self.pos += 1;
            self.arena.ops += 1;
            result = self.step(self.op);
        }
        let made = match (result, self.stack.as_slice(), self.marks.is_empty()) {
            (Err(e), _, _) => Err(e),
            (Ok(()), &[handle], true) if self.pos == end => Ok(handle),
            _ => Err(self.err("a memoized part of a tensor record does not make one object")),
        };
        self.replaying -= 1;
        (self.pos, self.op_start, self.op, self.stack, self.marks) = saved;
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::TypedStorage;

    /// Refuses every persistent id (the pickles below have none).
    struct NoIds;

    impl PersistentLoad for NoIds {
        fn persistent_load(&mut self, _pid: &Value) -> Result<TypedStorage> {
            Err(Error::format("no persistent ids here"))
        }
    }

    /// `GLOBAL torch Size`, then `args` and `REDUCE`: where the `REDUCE` is and the error.
    fn size_of(args: &[u8]) -> (u64, Error) {
        let mut p = vec![opcode::PROTO, 2, opcode::GLOBAL];
        p.extend_from_slice(b"torch\nSize\n");
        p.extend_from_slice(args);
        let reduce_at = p.len() as u64;
        p.extend_from_slice(&[opcode::REDUCE, opcode::STOP]);
        let err = read_pickle(&p, 1000, &PickleOptions::default(), &mut NoIds).unwrap_err();
        (1000 + reduce_at, err)
    }

    #[test]
    fn a_bad_argument_is_reported_at_its_opcode_with_what_was_expected() {
        // torch.Size('x')
        let (at, err) = size_of(&[opcode::SHORT_BINUNICODE, 1, b'x', opcode::TUPLE1]);
        assert!(
            matches!(&err, Error::Pickle { offset, message }
                if *offset == at
                    && message.starts_with("REDUCE (0x52): ")
                    && message.contains("torch.Size: expected a tuple of ints, found a str")),
            "{err:?}"
        );
        // torch.Size() has no argument to read.
        let (at, err) = size_of(&[opcode::EMPTY_TUPLE]);
        assert!(
            matches!(&err, Error::Pickle { offset, message }
                if *offset == at && message.contains("expected 1 arguments, found 0")),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_argument_is_reported_at_its_opcode() {
        // SHORT_BINUNICODE declares 5 bytes; 2 follow.
        let p = [opcode::PROTO, 2, opcode::SHORT_BINUNICODE, 5, b'a', b'b'];
        let err = read_pickle(&p, 0, &PickleOptions::default(), &mut NoIds).unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { offset: 2, message }
                if message.starts_with("SHORT_BINUNICODE (0x8c): ")
                    && message.contains("runs past the end of the input")),
            "{err:?}"
        );
    }
}

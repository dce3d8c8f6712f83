//! The state of the pickle machine and the operations every opcode is made of: reading
//! arguments from the input, the stack and its marks, the memo, and errors that say at which
//! opcode (byte offset) what was expected. The dispatch over opcodes is in
//! [`crate::pickle::reader`]; the opcodes that build objects are in [`crate::pickle::reduce`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pickle::arena::{Arena, Handle, Mode, Node, RawKind};
use crate::pickle::{opcode, text, PersistentLoad, PickleOptions};
use crate::tensor::{Buffer, Storage};
use crate::value::Value;

/// Byte strings from this size on stay views of the file (smaller ones share their pages
/// with the pickle's opcodes anyway).
pub(crate) const VIEW_MIN_BYTES: usize = 4096;

/// A memo entry: a node, or (top bit set) a part of a tensor record that the fast path read
/// without building it: its offset and length in the input, replayed when fetched
/// (see [`crate::pickle::tensor_record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot(u64);

const DEFERRED: u64 = 1 << 63;

impl Slot {
    pub(super) fn node(handle: Handle) -> Slot {
        Slot(handle as u64 & !DEFERRED)
    }

    /// A part of the input to replay: `None` when it does not fit the packing (offsets up
    /// to 2^47, lengths up to 65,535 bytes), so the caller reads the record the slow way.
    pub(super) fn deferred(start: usize, len: usize) -> Option<Slot> {
        let start = u64::try_from(start).ok().filter(|&s| s < 1 << 47)?;
        let len = u64::try_from(len).ok().filter(|&l| l <= 0xFFFF)?;
        Some(Slot(DEFERRED | start << 16 | len))
    }

    /// The node, or the input range to replay.
    pub(super) fn get(self) -> std::result::Result<Handle, (usize, usize)> {
        if self.0 & DEFERRED == 0 {
            Ok(self.0 as Handle)
        } else {
            let start = ((self.0 & !DEFERRED) >> 16) as usize;
            Err((start, (self.0 & 0xFFFF) as usize))
        }
    }
}

/// The memo. Picklers number entries 0, 1, 2, ... in order, so those live in a vector;
/// any other index (a hand-made file) goes to a hash map, so a huge index costs nothing.
#[derive(Default)]
pub(super) struct Memo {
    dense: Vec<Slot>,
    sparse: HashMap<u64, Slot>,
    len: usize,
}

impl Memo {
    /// Number of entries (what `MEMOIZE` uses as the next index).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, index: u64) -> Option<Slot> {
        match usize::try_from(index).ok().and_then(|i| self.dense.get(i)) {
            Some(&slot) => Some(slot),
            None => self.sparse.get(&index).copied(),
        }
    }

    pub(super) fn contains(&self, index: u64) -> bool {
        self.get(index).is_some()
    }

    pub(super) fn insert(&mut self, index: u64, slot: Slot) {
        let dense_len = self.dense.len() as u64;
        if let Some(entry) = usize::try_from(index)
            .ok()
            .and_then(|i| self.dense.get_mut(i))
        {
            *entry = slot;
        } else if index == dense_len && !self.sparse.contains_key(&index) {
            self.dense.push(slot);
            self.len += 1;
        } else if self.sparse.insert(index, slot).is_none() {
            self.len += 1;
        }
    }
}

pub(super) struct Machine<'a> {
    pub(super) data: &'a [u8],
    /// The file buffer `data` lies in and where in it `data` starts, when large byte
    /// strings may stay views of it.
    pub(super) source: Option<(&'a Arc<Buffer>, usize)>,
    pub(super) pos: usize,
    pub(super) op_start: usize,
    pub(super) op: u8,
    pub(super) base: u64,
    pub(super) persistent: &'a mut dyn PersistentLoad,
    pub(super) arena: Arena,
    pub(super) stack: Vec<Handle>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Memo,
    /// How many memo parts are being replayed (memo stores are skipped while replaying:
    /// the entries exist already).
    pub(super) replaying: usize,
    /// Whether tensor records take the fast path.
    pub(super) tensor_records: bool,
}

impl<'a> Machine<'a> {
    pub(super) fn new(
        data: &'a [u8],
        base_offset: u64,
        options: &PickleOptions,
        persistent: &'a mut dyn PersistentLoad,
        tensor_records: bool,
    ) -> Machine<'a> {
        Machine {
            data,
            source: None,
            pos: 0,
            op_start: 0,
            op: 0,
            base: base_offset,
            persistent,
            arena: Arena::new(options.py2_strings, options.limits, data.len()),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Memo::default(),
            replaying: 0,
            tensor_records,
        }
    }

    pub(super) fn with_source(mut self, buffer: &'a Arc<Buffer>, start: usize) -> Machine<'a> {
        self.source = Some((buffer, start));
        self
    }

    /// The error for the opcode being run: its byte offset in the file, its name and what was
    /// wrong (a sentence, or an [`Invalid`](crate::pickle::invalid::Invalid) that the code
    /// below the machine returned without knowing where it was).
    pub(super) fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::pickle(
            self.base + self.op_start as u64,
            format!("{} (0x{:02x}): {message}", opcode::name(self.op), self.op),
        )
    }

    // ---- input ------------------------------------------------------------------------

    /// The node of an `n`-byte string argument: a view of the input file when the pickle
    /// lies in one and the string is large (numpy arrays' buffers), else a copy.
    pub(super) fn raw_bytes(&mut self, n: usize, kind: RawKind) -> Result<Node> {
        let start = self.pos;
        let bytes = self.take(n)?;
        if let Some((buffer, offset)) = self.source.filter(|_| n >= VIEW_MIN_BYTES) {
            if let Ok(storage) = Storage::slice(buffer.clone(), offset + start, n) {
                return Ok(Node::View(storage, kind));
            }
        }
        let bytes = bytes.to_vec();
        Ok(match kind {
            RawKind::Bytes => Node::leaf(Value::Bytes(bytes)),
            RawKind::ByteArray => Node::leaf(Value::ByteArray(bytes)),
            RawKind::Py2Str => Node::Py2Str(bytes),
        })
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
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

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut raw = [0u8; N];
        raw.copy_from_slice(self.take(N)?);
        Ok(raw)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length that must fit in the remaining input (checked again by `take`).
    pub(super) fn checked_len(&self, n: u64) -> Result<usize> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!(
                "declared length {n} runs past the end of the input ({left} bytes left)"
            )));
        }
        Ok(n as usize)
    }

    pub(super) fn len_u32(&mut self) -> Result<usize> {
        let n = self.u32()?;
        self.checked_len(u64::from(n))
    }

    pub(super) fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        self.checked_len(n)
    }

    pub(super) fn len_i32(&mut self) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Err(self.err(format!("negative length {n}")));
        }
        self.checked_len(n as u64)
    }

    /// The text up to the next newline (protocol-0 arguments), without the newline.
    pub(super) fn line(&mut self) -> Result<&'a [u8]> {
        let data = self.data;
        let rest = &data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("expected a newline-terminated argument"));
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// The argument of `INT`/`LONG`, refused past Python's limit on decimal digits.
    pub(super) fn int_line(&mut self) -> Result<&'a [u8]> {
        let line = self.line()?;
        if line.len() > text::MAX_INT_DIGITS + 3 {
            return Err(self.err(format!(
                "an int of {} characters exceeds the limit of {} decimal digits (Python's own limit on int conversions)",
                line.len(),
                text::MAX_INT_DIGITS
            )));
        }
        Ok(line)
    }

    pub(super) fn line_text(&mut self) -> Result<String> {
        let line = self.line()?;
        Ok(text::utf8_lossy(line))
    }

    pub(super) fn push_text(&mut self, n: usize) -> Result<()> {
        // Python writes lone surrogates with `surrogatepass`; they become U+FFFD here.
        let s = text::utf8_lossy(self.take(n)?);
        self.push(Node::leaf(Value::Str(s)));
        Ok(())
    }

    // ---- stack and memo ---------------------------------------------------------------

    pub(super) fn push(&mut self, node: Node) {
        let handle = self.arena.add(node);
        self.stack.push(handle);
    }

    pub(super) fn pop(&mut self) -> Result<Handle> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("expected an object on the stack, found a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("expected an object on the stack, found none"))
    }

    pub(super) fn top(&self) -> Result<Handle> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("expected an object on the stack, found a MARK"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("expected an object on the stack, found none"))
    }

    pub(super) fn pop_n(&mut self, n: usize) -> Result<Vec<Handle>> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.err(format!("expected {n} objects on the stack")));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    pub(super) fn pop_mark(&mut self) -> Result<Vec<Handle>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("expected a MARK on the stack"))?;
        if mark > self.stack.len() {
            return Err(self.err("MARK above the top of the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    pub(super) fn put(&mut self, index: u64) -> Result<()> {
        let top = self.top()?;
        if self.replaying == 0 {
            self.memo.insert(index, Slot::node(top));
        }
        Ok(())
    }

    pub(super) fn kind(&self, handle: Handle) -> String {
        self.arena
            .node(handle)
            .map(Node::kind)
            .unwrap_or_else(|e| e.to_string())
    }

    pub(super) fn convert(&mut self, handle: Handle, mode: Mode) -> Result<Value> {
        let converted = self.arena.value(handle, mode);
        converted.map_err(|m| self.err(m))
    }

    /// A string argument (`STACK_GLOBAL` names).
    pub(super) fn str_of(&self, handle: Handle) -> Result<String> {
        match self.arena.node(handle).map_err(|m| self.err(m))? {
            Node::Text(s) => Ok(s.clone()),
            Node::Py2Str(b) => Ok(self.arena.py2_text(b)),
            Node::View(storage, RawKind::Py2Str) => Ok(self.arena.py2_text(storage.as_bytes())),
            other => Err(self.err(format!("expected a str, found a {}", other.kind()))),
        }
    }
}

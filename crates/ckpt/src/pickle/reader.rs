//! The pickle virtual machine (protocols 0-5). It builds values; it never imports or calls.
//!
//! Objects live in an [`Arena`] so the memo shares them by reference; known globals are
//! interpreted when called ([`globals`]), anything else stays an opaque object. Every length
//! read from the stream is checked against the remaining input before anything is allocated.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::arena::{Arena, Handle, Mode, Node, RawKind};
use crate::pickle::globals::object;
use crate::pickle::opcodes::{long_value, opcode_name};
use crate::pickle::{text, Limits};
use crate::tensor::{Buffer, Storage};
use crate::value::{DictKind, ObjectBuild, Value};

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
///
/// ```
/// use ckpt::pickle::{PickleOptions, Py2Strings};
/// let options = PickleOptions::default().with_py2_strings(Py2Strings::Utf8OrLatin1);
/// assert_eq!(options.py2_strings, Py2Strings::Utf8OrLatin1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct PickleOptions {
    /// How Python 2 strings become text.
    pub py2_strings: Py2Strings,
    /// Bounds on nesting depth and on the number of values produced.
    pub limits: Limits,
}

impl PickleOptions {
    /// Sets [`PickleOptions::py2_strings`].
    pub fn with_py2_strings(mut self, py2_strings: Py2Strings) -> PickleOptions {
        self.py2_strings = py2_strings;
        self
    }

    /// Sets [`PickleOptions::limits`].
    pub fn with_limits(mut self, limits: Limits) -> PickleOptions {
        self.limits = limits;
        self
    }
}

/// A storage resolved from a persistent id, with the dtype its storage class names.
#[derive(Debug, Clone)]
pub struct TypedStorage {
    /// The bytes (shared by every tensor that refers to the same persistent id).
    pub storage: Storage,
    /// The element type the storage class names (`UInt8` for `UntypedStorage`).
    pub dtype: DType,
}

/// Resolves persistent ids (`BINPERSID`), e.g. torch's `('storage', FloatStorage, '0', 'cpu', 6)`.
pub trait PersistentLoad {
    /// The storage a persistent id refers to. `pid` is the id as a value (storage classes
    /// appear as `Value::Object` globals with module `torch` and a name ending in `Storage`,
    /// or `torch.storage.UntypedStorage`).
    fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage>;

    /// torch's usual persistent id, by parts: what the reader's fast path for tensor
    /// records passes, so no tuple is built per tensor. The default builds the tuple and
    /// calls [`PersistentLoad::persistent_load`].
    fn torch_storage(&mut self, id: &PersistentStorageId<'_>) -> Result<TypedStorage> {
        self.persistent_load(&id.to_value())
    }
}

/// A persistent id `('storage', class, key, location, numel)` as torch writes it for each
/// storage, by parts.
#[derive(Debug, Clone, Copy)]
pub struct PersistentStorageId<'a> {
    /// Module of the storage class (`torch`, `torch.cuda`).
    pub class_module: &'a str,
    /// Name of the storage class (`FloatStorage`, `UntypedStorage`).
    pub class_name: &'a str,
    /// The storage key (the record `data/<key>` of a zip archive).
    pub key: &'a str,
    /// Where the storage lived (`cpu`, `cuda:0`).
    pub location: &'a str,
    /// Number of elements.
    pub numel: i64,
}

impl PersistentStorageId<'_> {
    /// The id as the tuple value [`PersistentLoad::persistent_load`] receives.
    pub fn to_value(&self) -> Value {
        Value::Tuple(vec![
            Value::Str("storage".into()),
            object(self.class_module, self.class_name, ObjectBuild::Global),
            Value::Str(self.key.into()),
            Value::Str(self.location.into()),
            Value::Int(self.numel),
        ])
    }
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
    read_pickle_with(data, base_offset, options, persistent, true)
}

/// [`read_pickle`] of the pickle in `range` of a file buffer (errors give offsets in the
/// buffer): byte strings of at least [`VIEW_MIN_BYTES`] stay views of `buffer` instead of
/// copies, so that numpy arrays (Detectron pickles) are tensors over the file as torch
/// records are.
pub(crate) fn read_pickle_in(
    buffer: &Arc<Buffer>,
    range: std::ops::Range<usize>,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize)> {
    let data = buffer.as_bytes().get(range.clone()).unwrap_or_default();
    machine(data, range.start as u64, options, persistent, true)
        .with_source(buffer, range.start)
        .run()
}

/// Byte strings from this size on stay views of the file (smaller ones share their pages
/// with the pickle's opcodes anyway).
pub(crate) const VIEW_MIN_BYTES: usize = 4096;

/// [`read_pickle`], with the fast path for tensor records on or off (tests compare both).
pub(super) fn read_pickle_with(
    data: &[u8],
    base_offset: u64,
    options: &PickleOptions,
    persistent: &mut dyn PersistentLoad,
    tensor_records: bool,
) -> Result<(Value, usize)> {
    machine(data, base_offset, options, persistent, tensor_records).run()
}

fn machine<'a>(
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
    fn get(self) -> std::result::Result<Handle, (usize, usize)> {
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

/// Deepest chain of memo parts replayed inside one another (a hand-made file can make a
/// part refer to itself).
const MAX_REPLAY_DEPTH: usize = 32;

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
    fn with_source(mut self, buffer: &'a Arc<Buffer>, start: usize) -> Machine<'a> {
        self.source = Some((buffer, start));
        self
    }

    pub(super) fn err(&self, message: impl std::fmt::Display) -> Error {
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
            b'(' => {
                if !(self.tensor_records && self.tensor_record()?) {
                    self.marks.push(self.stack.len());
                }
            }
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
                self.push(Node::leaf(Value::Float(f)));
            }
            b'G' => {
                let bytes = self.take(8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                self.push(Node::leaf(Value::Float(f64::from_be_bytes(raw))));
            }
            b'I' => {
                let line = self.line()?;
                let v = text::parse_int_opcode(line)
                    .ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::leaf(v));
            }
            b'L' => {
                let line = self.line()?;
                let v = text::parse_int(line).ok_or_else(|| self.err("expected a decimal int"))?;
                self.push(Node::leaf(v));
            }
            b'J' => {
                let v = i64::from(self.i32()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            b'K' => {
                let v = i64::from(self.u8()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            b'M' => {
                let v = i64::from(self.u16()?);
                self.push(Node::leaf(Value::Int(v)));
            }
            0x8A => {
                let n = usize::from(self.u8()?);
                let bytes = self.take(n)?;
                self.push(Node::leaf(long_value(bytes)));
            }
            0x8B => {
                let n = self.len_i32()?;
                let bytes = self.take(n)?;
                self.push(Node::leaf(long_value(bytes)));
            }
            b'N' => self.push(Node::leaf(Value::None)),
            0x88 => self.push(Node::leaf(Value::Bool(true))),
            0x89 => self.push(Node::leaf(Value::Bool(false))),
            b'S' => {
                let line = self.line()?;
                let bytes = text::unquote_string(line)
                    .ok_or_else(|| self.err("expected a quoted string"))?;
                self.push(Node::Py2Str(bytes));
            }
            b'T' => {
                let n = self.len_i32()?;
                let node = self.raw_bytes(n, RawKind::Py2Str)?;
                self.push(node);
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
                self.push(Node::leaf(Value::Str(s)));
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
                let kind = if op == 0x96 {
                    RawKind::ByteArray
                } else {
                    RawKind::Bytes
                };
                let node = self.raw_bytes(n, kind)?;
                self.push(node);
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
                let pid = Value::Str(text::utf8_lossy(line));
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

    /// The node of an `n`-byte string argument: a view of the input file when the pickle
    /// lies in one and the string is large (numpy arrays' buffers), else a copy.
    fn raw_bytes(&mut self, n: usize, kind: RawKind) -> Result<Node> {
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
            .unwrap_or_else(|e| e)
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

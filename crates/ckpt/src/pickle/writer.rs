//! The pickle writer: protocol 2, only the opcodes and globals `torch.load(weights_only=True)`
//! accepts, laid out as CPython's pickler lays them out (memo included), so that a state dict
//! pickles to the same bytes as `torch.save` writes (`docs/formats.md#weights-only`).
//!
//! Choices where a [`Value`] has no weights-only form:
//! * `frozenset` is not in torch's weights-only allowlist: an error (no silent change of type).
//! * `Value::Object` (an opaque global kept by the reader): an error naming its qualified name.
//! * Attributes on a plain `dict` or a `Counter`: an error (only `OrderedDict` may carry them).
//! * Empty `bytes`: CPython writes `bytes()` (a global torch does not allow); we write
//!   `_codecs.encode('', 'latin1')`, which loads as `b''`.

use std::borrow::Cow;

use num_bigint::BigInt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{long, opcode};
use crate::tensor::Tensor;
use crate::value::{Dict, DictKind, Key, Value};

mod memo;

use memo::{Memo, SavedStorage};

/// Where the writer sends tensor storages: it returns the persistent key for a storage
/// (the same key for the same storage, so sharing survives).
pub trait StorageSink {
    /// The key (`"0"`, `"1"`, ...) under which `tensor`'s storage is saved. The sink saves
    /// the whole storage (`tensor.storage()`), whose length is a multiple of the dtype size.
    /// The writer asks once per distinct storage (later tensors of it reuse the key) and
    /// keys must be distinct.
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String>;
}

/// Deepest nesting of containers the writer accepts: deeper values get an error instead of
/// overflowing the stack (500 levels fit a 2 MiB thread stack with room to spare, even in
/// debug builds; real checkpoints nest a few levels).
pub const MAX_DEPTH: usize = 500;

/// Items per `SETITEMS`/`APPENDS` batch, as CPython.
const BATCH: usize = 1_000;

/// When streaming, the buffered pickle is handed on once it holds this many bytes.
const FLUSH_AT: usize = 64 << 10;

/// Where a streaming writer hands its bytes.
pub(crate) type PickleDest<'d> = &'d mut dyn FnMut(&[u8]) -> Result<()>;

/// A protocol-2 pickler into a byte buffer, with CPython's memo conventions: strings and
/// globals written once and referenced by `BINGET` afterwards.
///
/// The memo borrows the strings of the value written (`'v`) instead of copying them: a
/// state dict of 100,000s of keys would otherwise be held twice while saving.
pub struct PickleWriter<'s, 'v> {
    out: Vec<u8>,
    /// Where `out` is emptied to while writing; `None` keeps the whole pickle in `out`.
    dest: Option<PickleDest<'s>>,
    /// Bytes handed to `dest` so far.
    written: u64,
    sink: &'s mut dyn StorageSink,
    memo: Memo<'v>,
}

/// Pickles `value` (tensors become `_rebuild_tensor_v2`/`_v3` calls over persistent ids
/// from `sink`; numpy arrays are written as tensors).
pub fn write_pickle(value: &Value, sink: &mut dyn StorageSink) -> Result<Vec<u8>> {
    let mut writer = PickleWriter::new(sink);
    writer.write(value)?;
    Ok(writer.finish())
}

/// A pickle of `value` measured by a first pass (bytes counted, not kept), ready to be
/// streamed by a second that reuses the first's memo.
pub(crate) struct MeasuredPickle<'v> {
    value: &'v Value,
    memo: Memo<'v>,
    /// The pickle's length in bytes.
    pub len: u64,
}

/// The first pass: fails on anything [`write_pickle`] fails on, before any byte goes
/// anywhere. `sink` must give the keys the second pass's sink will give.
pub(crate) fn measure_pickle<'v>(
    value: &'v Value,
    sink: &mut dyn StorageSink,
) -> Result<MeasuredPickle<'v>> {
    let mut discard = |_: &[u8]| Ok(());
    let mut writer = PickleWriter::new(sink);
    writer.dest = Some(&mut discard);
    writer.write(value)?;
    let len = writer.end_stream()?;
    Ok(MeasuredPickle {
        value,
        memo: writer.memo,
        len,
    })
}

impl MeasuredPickle<'_> {
    /// The second pass: hands the pickle to `dest` in pieces of about 64 KiB. Fails if it
    /// is not the length measured.
    pub(crate) fn stream(mut self, sink: &mut dyn StorageSink, dest: PickleDest<'_>) -> Result<()> {
        self.memo.rewind();
        let mut writer = PickleWriter::new(sink);
        writer.memo = self.memo;
        writer.dest = Some(dest);
        writer.write(self.value)?;
        let len = writer.end_stream()?;
        if len != self.len {
            return Err(Error::invalid(format!(
                "the pickle was {} bytes when measured, {len} when written",
                self.len
            )));
        }
        Ok(())
    }
}

impl<'s, 'v> PickleWriter<'s, 'v> {
    /// A writer whose output starts with `PROTO 2`.
    pub fn new(sink: &'s mut dyn StorageSink) -> PickleWriter<'s, 'v> {
        PickleWriter {
            out: vec![opcode::PROTO, 2],
            dest: None,
            written: 0,
            sink,
            memo: Memo::default(),
        }
    }

    /// Writes one value (call once per pickle, then [`PickleWriter::finish`]).
    pub fn write(&mut self, value: &'v Value) -> Result<()> {
        self.value(value, 0)
    }

    /// Appends `STOP` and returns the pickle.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(opcode::STOP);
        self.out
    }

    /// Appends `STOP`, hands the rest to `dest` and returns the pickle's length.
    fn end_stream(&mut self) -> Result<u64> {
        self.out.push(opcode::STOP);
        self.flush()?;
        Ok(self.written)
    }

    /// Hands the buffered bytes to `dest` (when streaming).
    fn flush(&mut self) -> Result<()> {
        if let Some(dest) = self.dest.as_mut() {
            dest(&self.out)?;
            self.written += self.out.len() as u64;
            self.out.clear();
        }
        Ok(())
    }

    fn put(&mut self) -> u32 {
        let index = self.memo.len;
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[opcode::BINPUT, i]),
            Err(_) => {
                self.out.push(opcode::LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        self.memo.len += 1;
        index
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[opcode::BINGET, i]),
            Err(_) => {
                self.out.push(opcode::LONG_BINGET);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &'static str, name: &'static str) {
        let known = self.memo.global(module, name);
        if let Some(index) = self.memo.written(known) {
            return self.get(index);
        }
        self.out.push(opcode::GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let index = self.put();
        if known.is_none() {
            self.memo.add_global(module, name, index);
        }
    }

    /// A string of the value (or a constant): memoized by reference.
    fn string(&mut self, s: &'v str) -> Result<()> {
        let known = self.memo.string(s);
        if let Some(index) = self.memo.written(known) {
            self.get(index);
        } else {
            let index = self.unicode(s)?;
            if known.is_none() {
                self.memo.add_string(s, index);
            }
        }
        Ok(())
    }

    /// A string made while writing: memoized by a copy.
    fn owned_string(&mut self, s: String) -> Result<()> {
        let known = self.memo.string(&s);
        if let Some(index) = self.memo.written(known) {
            self.get(index);
        } else {
            let index = self.unicode(&s)?;
            if known.is_none() {
                self.memo.add_owned_string(s, index);
            }
        }
        Ok(())
    }

    /// `BINUNICODE` and its memo entry; returns the memo index.
    fn unicode(&mut self, s: &str) -> Result<u32> {
        let len = u32::try_from(s.len()).map_err(|_| {
            Error::unsupported(format!(
                "a string of {} bytes (protocol 2 strings are limited to 4 GiB)",
                s.len()
            ))
        })?;
        self.out.push(opcode::BINUNICODE);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        Ok(self.put())
    }

    /// A string of a persistent id whose memo index is `known` once written (see
    /// `Memo::pid_storage`); returns that index.
    fn pid_string(&mut self, s: &str, known: Option<u32>) -> Result<u32> {
        match self.memo.written(known) {
            Some(index) => {
                self.get(index);
                Ok(index)
            }
            None => self.unicode(s),
        }
    }

    fn int(&mut self, i: i64) {
        if (0..=0xFF).contains(&i) {
            self.out.extend_from_slice(&[opcode::BININT1, i as u8]);
        } else if (0..=0xFFFF).contains(&i) {
            self.out.push(opcode::BININT2);
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(small) = i32::try_from(i) {
            self.out.push(opcode::BININT);
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            let le = i.to_le_bytes();
            let bytes = long::shortest(&le);
            self.out
                .extend_from_slice(&[opcode::LONG1, bytes.len() as u8]);
            self.out.extend_from_slice(bytes);
        }
    }

    fn big_int(&mut self, i: &BigInt) -> Result<()> {
        if let Ok(small) = i64::try_from(i) {
            self.int(small);
            return Ok(());
        }
        let bytes = i.to_signed_bytes_le();
        let len = u8::try_from(bytes.len()).map_err(|_| {
            Error::unsupported(format!(
                "an int of {} bytes (weights-only pickles allow LONG1 only, up to 255 bytes)",
                bytes.len()
            ))
        })?;
        self.out.extend_from_slice(&[opcode::LONG1, len]);
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn float(&mut self, f: f64) {
        self.out.push(opcode::BINFLOAT);
        self.out.extend_from_slice(&f.to_bits().to_be_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.out
            .push(if b { opcode::NEWTRUE } else { opcode::NEWFALSE });
    }

    /// A tuple of `n` items already written after a `MARK` (if `n > 3`); memoized as CPython.
    fn close_tuple(&mut self, n: usize) {
        match n {
            0 => return self.out.push(opcode::EMPTY_TUPLE),
            1 => self.out.push(opcode::TUPLE1),
            2 => self.out.push(opcode::TUPLE2),
            3 => self.out.push(opcode::TUPLE3),
            _ => self.out.push(opcode::TUPLE),
        }
        self.put();
    }

    fn tuple(&mut self, items: &'v [Value], depth: usize) -> Result<()> {
        if items.len() > 3 {
            self.out.push(opcode::MARK);
        }
        for item in items {
            self.value(item, depth + 1)?;
        }
        self.close_tuple(items.len());
        Ok(())
    }

    fn int_tuple(&mut self, items: impl ExactSizeIterator<Item = i64>) {
        let n = items.len();
        if n > 3 {
            self.out.push(opcode::MARK);
        }
        for i in items {
            self.int(i);
        }
        self.close_tuple(n);
    }

    fn list(&mut self, items: &'v [Value], depth: usize) -> Result<()> {
        self.out.push(opcode::EMPTY_LIST);
        self.put();
        for batch in items.chunks(BATCH) {
            if let [single] = batch {
                self.value(single, depth + 1)?;
                self.out.push(opcode::APPEND);
            } else {
                self.out.push(opcode::MARK);
                for item in batch {
                    self.value(item, depth + 1)?;
                }
                self.out.push(opcode::APPENDS);
            }
        }
        Ok(())
    }

    fn key(&mut self, key: &'v Key, depth: usize) -> Result<()> {
        match key {
            Key::Str(s) => self.string(s),
            Key::Int(i) => {
                self.int(*i);
                Ok(())
            }
            other => self.key_value(other, depth + 1),
        }
    }

    /// What `self.value(&key.to_value(), depth)` writes, without building that value (its
    /// strings could not be borrowed by the memo).
    fn key_value(&mut self, key: &'v Key, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        match key {
            Key::None => self.out.push(opcode::NONE),
            Key::Bool(b) => self.bool(*b),
            Key::Int(i) => self.int(*i),
            Key::BigInt(i) => self.big_int(i)?,
            Key::Float(bits) => self.float(f64::from_bits(*bits)),
            Key::Str(s) => self.string(s)?,
            Key::Bytes(b) => self.bytes(b)?,
            Key::Tuple(items) => {
                if items.len() > 3 {
                    self.out.push(opcode::MARK);
                }
                for item in items {
                    self.key_value(item, depth + 1)?;
                }
                self.close_tuple(items.len());
            }
            Key::DType(d) => self.global("torch", d.name()),
        }
        Ok(())
    }

    /// `SETITEM` for a lone item, else `MARK ... SETITEMS` by batches (as CPython); the
    /// items are walked in place, not collected.
    fn dict_items(&mut self, dict: &'v Dict, depth: usize) -> Result<()> {
        let mut items = dict.items.iter();
        for size in batches(dict.items.len()) {
            if size > 1 {
                self.out.push(opcode::MARK);
            }
            for (k, v) in items.by_ref().take(size) {
                self.key(k, depth)?;
                self.value(v, depth + 1)?;
            }
            self.out.push(if size > 1 {
                opcode::SETITEMS
            } else {
                opcode::SETITEM
            });
        }
        Ok(())
    }

    fn dict(&mut self, dict: &'v Dict, depth: usize) -> Result<()> {
        match dict.kind {
            DictKind::Dict => {
                self.out.push(opcode::EMPTY_DICT);
                self.put();
            }
            // `OrderedDict.__reduce__`: the class called with no arguments, items added
            // afterwards; a `Counter` is written the same way (torch allows SETITEMS on it).
            DictKind::OrderedDict | DictKind::Counter => {
                let name = if dict.kind == DictKind::Counter {
                    "Counter"
                } else {
                    "OrderedDict"
                };
                self.global("collections", name);
                self.out.push(opcode::EMPTY_TUPLE);
                self.out.push(opcode::REDUCE);
                self.put();
            }
        }
        self.dict_items(dict, depth)?;
        if dict.attributes.is_empty() {
            return Ok(());
        }
        if dict.kind != DictKind::OrderedDict {
            return Err(attributes_error(dict));
        }
        // The instance `__dict__`, applied by BUILD after the items (as CPython does).
        self.out.push(opcode::EMPTY_DICT);
        self.put();
        let mut state = dict.attributes.iter();
        for size in batches(dict.attributes.len()) {
            if size > 1 {
                self.out.push(opcode::MARK);
            }
            for (k, v) in state.by_ref().take(size) {
                self.string(k)?;
                self.value(v, depth + 1)?;
            }
            self.out.push(if size > 1 {
                opcode::SETITEMS
            } else {
                opcode::SETITEM
            });
        }
        self.out.push(opcode::BUILD);
        Ok(())
    }

    /// `module.name(*args)` where the arguments are written by `args` (which returns how
    /// many it wrote, at most 3: longer tuples need the MARK before them).
    fn reduce(
        &mut self,
        module: &'static str,
        name: &'static str,
        args: impl FnOnce(&mut Self) -> Result<usize>,
    ) -> Result<()> {
        self.global(module, name);
        let n = args(self)?;
        self.close_tuple(n);
        self.out.push(opcode::REDUCE);
        self.put();
        Ok(())
    }

    /// `_codecs.encode(text, 'latin1')`: protocol 2's way to write `bytes` (one code point
    /// per byte).
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        self.reduce("_codecs", "encode", |w| {
            w.owned_string(text)?;
            w.string("latin1")?;
            Ok(2)
        })
    }

    /// Containers recurse here; everything else is a leaf, written by [`Self::leaf`] in a
    /// frame of its own so that the recursive frames stay small.
    fn value(&mut self, value: &'v Value, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        if self.dest.is_some() && self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        match value {
            Value::List(items) => self.list(items, depth),
            Value::Tuple(items) => self.tuple(items, depth),
            Value::Dict(dict) => self.dict(dict, depth),
            Value::Set(items) => self.set(items, depth),
            leaf => self.leaf(leaf),
        }
    }

    /// `set(list)`, as `set.__reduce__` (protocol 2 has no set opcodes).
    fn set(&mut self, items: &'v [Value], depth: usize) -> Result<()> {
        self.global("__builtin__", "set");
        self.list(items, depth)?;
        self.close_tuple(1);
        self.out.push(opcode::REDUCE);
        self.put();
        Ok(())
    }

    #[inline(never)]
    fn leaf(&mut self, value: &'v Value) -> Result<()> {
        match value {
            Value::None => self.out.push(opcode::NONE),
            Value::Bool(b) => self.bool(*b),
            Value::Int(i) => self.int(*i),
            Value::BigInt(i) => self.big_int(i)?,
            Value::Float(f) => self.float(*f),
            Value::Complex(re, im) => self.reduce("__builtin__", "complex", |w| {
                w.float(*re);
                w.float(*im);
                Ok(2)
            })?,
            Value::Str(s) => self.string(s)?,
            Value::Bytes(b) => self.bytes(b)?,
            Value::ByteArray(b) => {
                let text: String = b.iter().map(|&c| char::from(c)).collect();
                self.reduce("__builtin__", "bytearray", |w| {
                    w.owned_string(text)?;
                    w.string("latin-1")?;
                    Ok(2)
                })?
            }
            Value::FrozenSet(_) => {
                return Err(Error::unsupported(
                    "a frozenset: torch.load(weights_only=True) does not allow builtins.frozenset (convert it to a set or tuple)",
                ))
            }
            Value::Tensor(t) | Value::NdArray(t) => self.tensor(t)?,
            Value::Parameter(t) => {
                let requires_grad = t.requires_grad() && can_require_grad(t.dtype());
                self.reduce("torch._utils", "_rebuild_parameter", |w| {
                    w.tensor(&t.clone().with_requires_grad(false))?;
                    w.bool(requires_grad);
                    w.empty_ordered_dict();
                    Ok(3)
                })?
            }
            Value::DType(d) => self.global("torch", d.name()),
            Value::Device { kind, index } => self.reduce("torch", "device", |w| {
                w.string(kind)?;
                match index {
                    Some(i) => {
                        w.int(*i);
                        Ok(2)
                    }
                    None => Ok(1),
                }
            })?,
            Value::Size(dims) => self.reduce("torch", "Size", |w| {
                w.int_tuple(dims.iter().copied());
                Ok(1)
            })?,
            Value::Object(object) => {
                return Err(Error::unsupported(format!(
                    "an object of type {} cannot be written to a weights-only torch file",
                    object.qualified_name()
                )))
            }
            Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Set(_) => {
                unreachable!("containers are written by PickleWriter::value")
            }
        }
        Ok(())
    }

    /// `OrderedDict()`: torch's empty backward hooks.
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(opcode::EMPTY_TUPLE);
        self.out.push(opcode::REDUCE);
        self.put();
    }

    /// A contiguous copy of `t` in a storage of its own (always valid for torch), for a
    /// tensor whose storage cannot be saved whole with its dtype.
    fn own_copy(&mut self, t: &Tensor) -> Result<Tensor> {
        self.memo.copy(|| {
            let dtype = t.dtype();
            tracing::debug!(
                "writing a {dtype} tensor {:?} into a storage of its own (its storage is shared with another dtype or not a whole number of elements)",
                t.shape()
            );
            // Fallible: an expanded view (zero strides) may declare more bytes than it has.
            let bytes = t.try_contiguous_bytes()?.into_owned();
            Ok(Tensor::from_bytes(dtype, t.shape(), bytes)?.with_requires_grad(t.requires_grad()))
        })
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())`, or
    /// `_rebuild_tensor_v3(..., dtype)` over an `UntypedStorage` for dtypes without a typed
    /// storage class.
    fn tensor(&mut self, tensor: &Tensor) -> Result<()> {
        let dtype = tensor.dtype();
        // `is_multiple_of` needs Rust 1.87; the workspace's minimum is 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        let whole_elements = tensor.storage().len() % dtype.size() == 0;
        // The storage is saved whole with the dtype it is first seen with.
        let (t, saved) = match self.memo.storage(tensor.storage().id()) {
            Some(saved) if saved.dtype == dtype => (Cow::Borrowed(tensor), Some(saved)),
            None if whole_elements => (Cow::Borrowed(tensor), None),
            _ => (Cow::Owned(self.own_copy(tensor)?), None),
        };
        let storage_bytes = t.storage().len();
        let requires_grad = t.requires_grad() && can_require_grad(dtype);
        let class = dtype.storage_class();
        let function = if class.is_some() {
            "_rebuild_tensor_v2"
        } else {
            "_rebuild_tensor_v3"
        };
        self.global("torch._utils", function);
        self.out.push(opcode::MARK);
        // Persistent id: ('storage', class, key, 'cpu', numel).
        self.out.push(opcode::MARK);
        self.memo.pid_storage = Some(self.pid_string("storage", self.memo.pid_storage)?);
        let numel = match class {
            Some(class) => {
                self.global("torch", class);
                storage_bytes / dtype.size()
            }
            None => {
                self.global("torch.storage", "UntypedStorage");
                storage_bytes
            }
        };
        match self.memo.written(saved.map(|s| s.key_memo)) {
            Some(index) => self.get(index),
            None => {
                let key = self.sink.storage_key(&t)?;
                let key_memo = self.unicode(&key)?;
                if saved.is_none() {
                    let saved = SavedStorage { dtype, key_memo };
                    self.memo.add_storage(t.storage().id(), saved);
                }
            }
        }
        self.memo.pid_cpu = Some(self.pid_string("cpu", self.memo.pid_cpu)?);
        self.int(to_i64(numel)?);
        self.out.push(opcode::TUPLE);
        self.put();
        self.out.push(opcode::BINPERSID);
        self.int(to_i64(t.storage_offset())?);
        self.dims(t.shape())?;
        self.dims(t.strides())?;
        self.bool(requires_grad);
        self.empty_ordered_dict();
        if class.is_none() {
            self.global("torch", dtype.name());
        }
        self.out.push(opcode::TUPLE);
        self.put();
        self.out.push(opcode::REDUCE);
        self.put();
        Ok(())
    }

    /// A shape or strides as a tuple of ints.
    fn dims(&mut self, dims: &[usize]) -> Result<()> {
        // Checked first: nothing is written for a tuple that fails.
        for &d in dims {
            to_i64(d)?;
        }
        self.int_tuple(dims.iter().map(|&d| d as i64));
        Ok(())
    }
}

#[cold]
fn too_deep() -> Error {
    Error::unsupported(format!("a value nested more than {MAX_DEPTH} levels deep"))
}

/// Sizes of CPython's batches of `len` items.
fn batches(len: usize) -> impl Iterator<Item = usize> {
    (0..len)
        .step_by(BATCH)
        .map(move |start| (len - start).min(BATCH))
}

#[cold]
fn attributes_error(dict: &Dict) -> Error {
    let names: Vec<&str> = dict.attributes.keys().map(String::as_str).collect();
    let kind = match dict.kind {
        DictKind::Dict => "dict",
        DictKind::OrderedDict => "OrderedDict",
        DictKind::Counter => "Counter",
    };
    Error::unsupported(format!(
        "attributes {names:?} on a {kind}: torch.load(weights_only=True) only accepts attributes on an OrderedDict"
    ))
}

/// torch raises when a tensor of an integer or bool dtype requires grad.
fn can_require_grad(dtype: DType) -> bool {
    dtype.is_float() || dtype.is_complex()
}

fn to_i64(n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::unsupported(format!("a tensor dimension of {n}")))
}

#[cfg(test)]
mod tests;

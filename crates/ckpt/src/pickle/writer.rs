//! The pickle writer: protocol 2, only the opcodes and globals `torch.load(weights_only=True)`
//! accepts, laid out as CPython's pickler lays them out (memo included), so that a state dict
//! pickles to the same bytes as `torch.save` writes (FORMATS.md §2, §3.5).
//!
//! Choices where a [`Value`] has no weights-only form:
//! * `frozenset` is not in torch's weights-only allowlist: an error (no silent change of type).
//! * `Value::Object` (an opaque global kept by the reader): an error naming its qualified name.
//! * Attributes on a plain `dict` or a `Counter`: an error (only `OrderedDict` may carry them).
//! * Empty `bytes`: CPython writes `bytes()` (a global torch does not allow); we write
//!   `_codecs.encode('', 'latin1')`, which loads as `b''`.

use std::collections::HashMap;

use num_bigint::BigInt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::value::{Dict, DictKind, Key, Value};

/// Where the writer sends tensor storages: it returns the persistent key for a storage
/// (the same key for the same storage, so sharing survives).
pub trait StorageSink {
    /// The key (`"0"`, `"1"`, ...) under which `tensor`'s storage is saved. The sink saves
    /// the whole storage (`tensor.storage()`), whose length is a multiple of the dtype size.
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String>;
}

/// Deepest nesting of containers the writer accepts: deeper values get an error instead of
/// overflowing the stack (500 levels fit a 2 MiB thread stack with room to spare, even in
/// debug builds; real checkpoints nest a few levels).
pub const MAX_DEPTH: usize = 500;

/// Items per `SETITEMS`/`APPENDS` batch, as CPython.
const BATCH: usize = 1_000;

mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const GLOBAL: u8 = b'c';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const BINUNICODE: u8 = b'X';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8A;
    pub const BINFLOAT: u8 = b'G';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const BINPERSID: u8 = b'Q';
}

/// A protocol-2 pickler into a byte buffer, with CPython's memo conventions: strings and
/// globals written once and referenced by `BINGET` afterwards.
pub struct PickleWriter<'s> {
    out: Vec<u8>,
    sink: &'s mut dyn StorageSink,
    memo_len: u32,
    globals: HashMap<(&'static str, &'static str), u32>,
    strings: HashMap<String, u32>,
    /// Strings of persistent ids ('storage', 'cpu', storage keys): torch reuses these
    /// objects, but they are distinct from equal strings elsewhere (a `_metadata` prefix
    /// `'0'` is written again after storage key `'0'`), so they have their own memo.
    pid_strings: HashMap<String, u32>,
    /// The dtype each storage (by `Storage::id`) was first saved with.
    storage_dtypes: HashMap<usize, DType>,
    /// Contiguous copies made for tensors that could not share their storage; kept alive so
    /// their storage ids stay unique while the sink refers to them.
    copies: Vec<Tensor>,
}

/// Pickles `value` (tensors become `_rebuild_tensor_v2`/`_v3` calls over persistent ids
/// from `sink`; numpy arrays are written as tensors).
pub fn write_pickle(value: &Value, sink: &mut dyn StorageSink) -> Result<Vec<u8>> {
    let mut writer = PickleWriter::new(sink);
    writer.write(value)?;
    Ok(writer.finish())
}

impl<'s> PickleWriter<'s> {
    /// A writer whose output starts with `PROTO 2`.
    pub fn new(sink: &'s mut dyn StorageSink) -> PickleWriter<'s> {
        PickleWriter {
            out: vec![op::PROTO, 2],
            sink,
            memo_len: 0,
            globals: HashMap::new(),
            strings: HashMap::new(),
            pid_strings: HashMap::new(),
            storage_dtypes: HashMap::new(),
            copies: Vec::new(),
        }
    }

    /// Writes one value (call once per pickle, then [`PickleWriter::finish`]).
    pub fn write(&mut self, value: &Value) -> Result<()> {
        self.value(value, 0)
    }

    /// Appends `STOP` and returns the pickle.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(op::STOP);
        self.out
    }

    fn put(&mut self) -> u32 {
        let index = self.memo_len;
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[op::BINPUT, i]),
            Err(_) => {
                self.out.push(op::LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        self.memo_len += 1;
        index
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[op::BINGET, i]),
            Err(_) => {
                self.out.push(op::LONG_BINGET);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &'static str, name: &'static str) {
        if let Some(&index) = self.globals.get(&(module, name)) {
            return self.get(index);
        }
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let index = self.put();
        self.globals.insert((module, name), index);
    }

    fn string(&mut self, s: &str) -> Result<()> {
        self.memo_string(s, false)
    }

    fn memo_string(&mut self, s: &str, in_pid: bool) -> Result<()> {
        let memo = if in_pid {
            &self.pid_strings
        } else {
            &self.strings
        };
        if let Some(&index) = memo.get(s) {
            self.get(index);
            return Ok(());
        }
        let len = u32::try_from(s.len()).map_err(|_| {
            Error::unsupported(format!(
                "a string of {} bytes (protocol 2 strings are limited to 4 GiB)",
                s.len()
            ))
        })?;
        self.out.push(op::BINUNICODE);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        let index = self.put();
        let memo = if in_pid {
            &mut self.pid_strings
        } else {
            &mut self.strings
        };
        memo.insert(s.to_string(), index);
        Ok(())
    }

    fn int(&mut self, i: i64) {
        if (0..=0xFF).contains(&i) {
            self.out.extend_from_slice(&[op::BININT1, i as u8]);
        } else if (0..=0xFFFF).contains(&i) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(small) = i32::try_from(i) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            let le = i.to_le_bytes();
            let bytes = minimal_twos_complement(&le);
            self.out.extend_from_slice(&[op::LONG1, bytes.len() as u8]);
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
        self.out.extend_from_slice(&[op::LONG1, len]);
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn float(&mut self, f: f64) {
        self.out.push(op::BINFLOAT);
        self.out.extend_from_slice(&f.to_bits().to_be_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.out.push(if b { op::NEWTRUE } else { op::NEWFALSE });
    }

    /// A tuple of `n` items already written after a `MARK` (if `n > 3`); memoized as CPython.
    fn close_tuple(&mut self, n: usize) {
        match n {
            0 => return self.out.push(op::EMPTY_TUPLE),
            1 => self.out.push(op::TUPLE1),
            2 => self.out.push(op::TUPLE2),
            3 => self.out.push(op::TUPLE3),
            _ => self.out.push(op::TUPLE),
        }
        self.put();
    }

    fn tuple(&mut self, items: &[Value], depth: usize) -> Result<()> {
        if items.len() > 3 {
            self.out.push(op::MARK);
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
            self.out.push(op::MARK);
        }
        for i in items {
            self.int(i);
        }
        self.close_tuple(n);
    }

    fn list(&mut self, items: &[Value], depth: usize) -> Result<()> {
        self.out.push(op::EMPTY_LIST);
        self.put();
        for batch in items.chunks(BATCH) {
            if let [single] = batch {
                self.value(single, depth + 1)?;
                self.out.push(op::APPEND);
            } else {
                self.out.push(op::MARK);
                for item in batch {
                    self.value(item, depth + 1)?;
                }
                self.out.push(op::APPENDS);
            }
        }
        Ok(())
    }

    fn key(&mut self, key: &Key, depth: usize) -> Result<()> {
        match key {
            Key::Str(s) => self.string(s),
            Key::Int(i) => {
                self.int(*i);
                Ok(())
            }
            other => self.value(&other.to_value(), depth + 1),
        }
    }

    fn dict_items(&mut self, dict: &Dict, depth: usize) -> Result<()> {
        let items: Vec<(&Key, &Value)> = dict.items.iter().collect();
        for batch in items.chunks(BATCH) {
            if let [(k, v)] = batch {
                self.key(k, depth)?;
                self.value(v, depth + 1)?;
                self.out.push(op::SETITEM);
            } else {
                self.out.push(op::MARK);
                for (k, v) in batch {
                    self.key(k, depth)?;
                    self.value(v, depth + 1)?;
                }
                self.out.push(op::SETITEMS);
            }
        }
        Ok(())
    }

    fn dict(&mut self, dict: &Dict, depth: usize) -> Result<()> {
        match dict.kind {
            DictKind::Dict => {
                self.out.push(op::EMPTY_DICT);
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
                self.out.push(op::EMPTY_TUPLE);
                self.out.push(op::REDUCE);
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
        self.out.push(op::EMPTY_DICT);
        self.put();
        let state: Vec<(&String, &Value)> = dict.attributes.iter().collect();
        for batch in state.chunks(BATCH) {
            if let [(k, v)] = batch {
                self.string(k)?;
                self.value(v, depth + 1)?;
                self.out.push(op::SETITEM);
            } else {
                self.out.push(op::MARK);
                for (k, v) in batch {
                    self.string(k)?;
                    self.value(v, depth + 1)?;
                }
                self.out.push(op::SETITEMS);
            }
        }
        self.out.push(op::BUILD);
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
        self.out.push(op::REDUCE);
        self.put();
        Ok(())
    }

    /// `_codecs.encode(text, 'latin1')`: protocol 2's way to write `bytes` (one code point
    /// per byte).
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        self.reduce("_codecs", "encode", |w| {
            w.string(&text)?;
            w.string("latin1")?;
            Ok(2)
        })
    }

    /// Containers recurse here; everything else is a leaf, written by [`Self::leaf`] in a
    /// frame of its own so that the recursive frames stay small.
    fn value(&mut self, value: &Value, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::unsupported(format!(
                "a value nested more than {MAX_DEPTH} levels deep"
            )));
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
    fn set(&mut self, items: &[Value], depth: usize) -> Result<()> {
        self.global("__builtin__", "set");
        self.list(items, depth)?;
        self.close_tuple(1);
        self.out.push(op::REDUCE);
        self.put();
        Ok(())
    }

    #[inline(never)]
    fn leaf(&mut self, value: &Value) -> Result<()> {
        match value {
            Value::None => self.out.push(op::NONE),
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
                    w.string(&text)?;
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
        self.out.push(op::EMPTY_TUPLE);
        self.out.push(op::REDUCE);
        self.put();
    }

    /// The tensor to save for `t`: `t` itself when its storage can be saved as a whole with
    /// its dtype, else a contiguous copy in a storage of its own (always valid for torch).
    fn shareable(&mut self, t: &Tensor) -> Result<Tensor> {
        let dtype = t.dtype();
        let id = t.storage().id();
        // `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
        #[allow(clippy::manual_is_multiple_of)]
        let whole_elements = t.storage().len() % dtype.size() == 0;
        match self.storage_dtypes.get(&id) {
            Some(&first) if first == dtype => return Ok(t.clone()),
            None if whole_elements => {
                self.storage_dtypes.insert(id, dtype);
                return Ok(t.clone());
            }
            _ => {}
        }
        tracing::debug!(
            "writing a {dtype} tensor {:?} into a storage of its own (its storage is shared with another dtype or not a whole number of elements)",
            t.shape()
        );
        // Fallible: an expanded view (zero strides) may declare far more bytes than it has.
        let bytes = t.try_contiguous_bytes()?.into_owned();
        let copy =
            Tensor::from_bytes(dtype, t.shape(), bytes)?.with_requires_grad(t.requires_grad());
        self.storage_dtypes.insert(copy.storage().id(), dtype);
        self.copies.push(copy.clone());
        Ok(copy)
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())`, or
    /// `_rebuild_tensor_v3(..., dtype)` over an `UntypedStorage` for dtypes without a typed
    /// storage class.
    fn tensor(&mut self, tensor: &Tensor) -> Result<()> {
        let t = self.shareable(tensor)?;
        let dtype = t.dtype();
        let key = self.sink.storage_key(&t)?;
        let storage_bytes = t.storage().len();
        let requires_grad = t.requires_grad() && can_require_grad(dtype);
        let class = dtype.storage_class();
        let function = if class.is_some() {
            "_rebuild_tensor_v2"
        } else {
            "_rebuild_tensor_v3"
        };
        self.global("torch._utils", function);
        self.out.push(op::MARK);
        // Persistent id: ('storage', class, key, 'cpu', numel).
        self.out.push(op::MARK);
        self.memo_string("storage", true)?;
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
        self.memo_string(&key, true)?;
        self.memo_string("cpu", true)?;
        self.int(to_i64(numel)?);
        self.out.push(op::TUPLE);
        self.put();
        self.out.push(op::BINPERSID);
        self.int(to_i64(t.storage_offset())?);
        let shape = t
            .shape()
            .iter()
            .map(|&d| to_i64(d))
            .collect::<Result<Vec<_>>>()?;
        self.int_tuple(shape.into_iter());
        let strides = t
            .strides()
            .iter()
            .map(|&d| to_i64(d))
            .collect::<Result<Vec<_>>>()?;
        self.int_tuple(strides.into_iter());
        self.bool(requires_grad);
        self.empty_ordered_dict();
        if class.is_none() {
            self.global("torch", dtype.name());
        }
        self.out.push(op::TUPLE);
        self.put();
        self.out.push(op::REDUCE);
        self.put();
        Ok(())
    }
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

/// The shortest little-endian two's-complement encoding of the same number (as pickle's
/// `encode_long`).
fn minimal_twos_complement(bytes: &[u8]) -> &[u8] {
    let mut len = bytes.len();
    while len > 1 {
        let last = bytes[len - 1];
        let sign_of_next = bytes[len - 2] & 0x80;
        if (last == 0x00 && sign_of_next == 0) || (last == 0xFF && sign_of_next != 0) {
            len -= 1;
        } else {
            break;
        }
    }
    &bytes[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys(HashMap<usize, String>);

    impl StorageSink for Keys {
        fn storage_key(&mut self, tensor: &Tensor) -> Result<String> {
            let n = self.0.len();
            Ok(self
                .0
                .entry(tensor.storage().id())
                .or_insert_with(|| n.to_string())
                .clone())
        }
    }

    fn pickle(value: &Value) -> Vec<u8> {
        write_pickle(value, &mut Keys(HashMap::new())).unwrap()
    }

    #[test]
    fn ints_use_the_smallest_opcode() {
        assert_eq!(pickle(&Value::Int(5)), b"\x80\x02K\x05.");
        assert_eq!(pickle(&Value::Int(300)), b"\x80\x02M\x2c\x01.");
        assert_eq!(pickle(&Value::Int(-1)), b"\x80\x02J\xff\xff\xff\xff.");
        assert_eq!(
            pickle(&Value::Int(1 << 31)),
            b"\x80\x02\x8a\x05\x00\x00\x00\x80\x00."
        );
        assert_eq!(
            pickle(&Value::Int(-(1 << 39))),
            b"\x80\x02\x8a\x05\x00\x00\x00\x00\x80."
        );
        assert_eq!(
            pickle(&Value::Int(i64::MIN)),
            b"\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."
        );
        let big: BigInt = BigInt::from(1) << 70;
        assert_eq!(
            pickle(&Value::BigInt(big)),
            b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40."
        );
    }

    #[test]
    fn floats_are_big_endian() {
        assert_eq!(
            pickle(&Value::Float(1.5)),
            b"\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00."
        );
    }

    #[test]
    fn repeated_strings_are_memo_references() {
        let v = Value::List(vec![Value::Str("a".into()), Value::Str("a".into())]);
        assert_eq!(pickle(&v), b"\x80\x02]q\x00(X\x01\x00\x00\x00aq\x01h\x01e.");
    }

    #[test]
    fn single_item_dict_uses_setitem() {
        let mut d = Dict::new();
        d.insert(0i64, Value::None);
        assert_eq!(pickle(&Value::Dict(d)), b"\x80\x02}q\x00K\x00Ns.");
    }

    #[test]
    fn large_lists_are_batched_by_a_thousand() {
        let v = Value::List(vec![Value::None; 1001]);
        let bytes = pickle(&v);
        assert_eq!(bytes.iter().filter(|&&b| b == op::APPENDS).count(), 1);
        assert_eq!(&bytes[bytes.len() - 3..], b"Na.");
    }

    #[test]
    fn unsupported_values_are_named_in_the_error() {
        let mut keys = Keys(HashMap::new());
        let err = write_pickle(&Value::FrozenSet(vec![]), &mut keys).unwrap_err();
        assert!(err.to_string().contains("frozenset"), "{err}");
        let object = Value::Object(Box::new(crate::value::Object {
            module: "argparse".into(),
            name: "Namespace".into(),
            build: crate::value::ObjectBuild::Global,
            state: None,
        }));
        let err = write_pickle(&object, &mut keys).unwrap_err();
        assert!(err.to_string().contains("argparse.Namespace"), "{err}");
        let mut d = Dict::new();
        d.attributes.insert("_metadata".into(), Value::None);
        let err = write_pickle(&Value::Dict(d), &mut keys).unwrap_err();
        assert!(err.to_string().contains("_metadata"), "{err}");
    }

    #[test]
    fn too_deep_values_are_an_error_not_a_stack_overflow() {
        let mut v = Value::None;
        for _ in 0..(MAX_DEPTH + 5) {
            v = Value::List(vec![v]);
        }
        let err = write_pickle(&v, &mut Keys(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // Dropping a deep value recurses too; unwind it iteratively.
        while let Value::List(mut items) = v {
            v = items.pop().unwrap_or(Value::None);
        }
    }

    #[test]
    fn tensors_sharing_a_storage_with_another_dtype_get_their_own() {
        let t = Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let as_int = Tensor::new(DType::Int32, vec![2], vec![1], 0, t.storage().clone()).unwrap();
        let mut keys = Keys(HashMap::new());
        let v = Value::List(vec![Value::Tensor(t), Value::Tensor(as_int)]);
        write_pickle(&v, &mut keys).unwrap();
        assert_eq!(keys.0.len(), 2);
    }
}

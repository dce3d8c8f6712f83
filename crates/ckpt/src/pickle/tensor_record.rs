//! The fast path for the record torch's pickler writes for every tensor:
//!
//! ```text
//! _rebuild_tensor_v2 ( ('storage', <class>, <key>, <location>, <numel>) BINPERSID
//!                      <offset> (<size>...) (<stride>...) <requires_grad>
//!                      OrderedDict() ) REDUCE
//! ```
//!
//! A state dict is mostly these records; the general machine spends about fifteen objects
//! and twenty allocations on each. Here the opcodes Python's pickler emits for them
//! (protocols 2 to 5, with or without frames) are read straight from the input, and the
//! record becomes one tensor node. Any other shape makes [`Machine::tensor_record`] return
//! `false` having changed nothing, and the general machine reads the record instead.
//!
//! The memo entries a record stores for its parts (the persistent id, the size tuple, a
//! string, ...) are kept as deferred slots: the part's bytes, replayed through the general
//! machine only if a later `BINGET` fetches them (torch's files fetch the strings
//! `'storage'` and `'cpu'`, the storage class and the `OrderedDict` global).

use crate::error::Result;
use crate::pickle::arena::{Arena, Handle, Node};
use crate::pickle::machine::{Machine, Slot};
use crate::pickle::PersistentStorageId;
use crate::pickle::{long, opcode};
use crate::tensor::Tensor;
use crate::value::Value;

/// Most memo stores one record may make (torch writes nine or ten).
const MAX_PUTS: usize = 16;

/// A string of the record: text in the input, or a memoized str node.
#[derive(Clone, Copy)]
enum Text<'a> {
    Literal(&'a str),
    Node(Handle),
}

/// A global of the record: its module and name, or a memoized global node.
#[derive(Clone, Copy)]
enum Global<'a> {
    Named(Text<'a>, Text<'a>),
    Node(Handle),
}

/// What a memo store of the record holds.
#[derive(Clone, Copy)]
enum Stored {
    Slot(Slot),
    /// The tensor the record makes (its handle is known only at the end).
    Result,
}

/// A record read from the input, before anything is made of it.
struct Record<'a> {
    class: Global<'a>,
    key: Text<'a>,
    location: Text<'a>,
    numel: i64,
    offset: i64,
    shape: Vec<usize>,
    strides: Vec<usize>,
    requires_grad: bool,
}

/// Reads a record from the input without changing the machine, except that memo entries
/// it fetches are built (which the general machine would do as well).
struct Reader<'m, 'a> {
    machine: &'m mut Machine<'a>,
    fetch: FetchMemo<'a>,
    data: &'a [u8],
    pos: usize,
    puts: [(u64, Stored); MAX_PUTS],
    put_count: usize,
}

/// How the fast path gets the node of a memo entry it refers to: the general machine's
/// fetch, which builds a deferred entry by replaying its bytes. The general machine's
/// dispatch calls the fast path, so it hands its fetch in rather than the fast path calling
/// up into the dispatch.
pub(super) type FetchMemo<'a> = fn(&mut Machine<'a>, u64) -> Result<Handle>;

impl<'a> Machine<'a> {
    /// Called at a `MARK`: when the object below it is `torch._utils._rebuild_tensor_v2`
    /// and the input holds a record of the usual form, reads the whole record, pushes the
    /// tensor and returns `true`. Errors are those the general machine would report (a
    /// storage the archive lacks, the value limit).
    pub(super) fn tensor_record(&mut self, fetch: FetchMemo<'a>) -> Result<bool> {
        let Some(&callable) = self.stack.last() else {
            return Ok(false);
        };
        if self.marks.last().is_some_and(|&m| m >= self.stack.len())
            || !matches!(
                self.arena.nodes.get(callable),
                Some(Node::Global { module, name })
                    if name == "_rebuild_tensor_v2" && module == "torch._utils"
            )
        {
            return Ok(false);
        }
        let args_start = self.pos - 1;
        let data = self.data;
        let mut reader = Reader {
            machine: self,
            fetch,
            data,
            pos: args_start + 1,
            puts: [(0, Stored::Result); MAX_PUTS],
            put_count: 0,
        };
        let Some(record) = reader.record(args_start) else {
            return Ok(false);
        };
        let Reader {
            pos: end,
            puts,
            put_count,
            ..
        } = reader;
        let Some(tensor) = self.make_tensor(record)? else {
            return Ok(false);
        };
        let handle = self.arena.add(Node::leaf(Value::Tensor(tensor)));
        if self.replaying == 0 {
            for &(index, stored) in &puts[..put_count] {
                let slot = match stored {
                    Stored::Slot(slot) => slot,
                    Stored::Result => Slot::node(handle),
                };
                self.memo.insert(index, slot);
            }
        }
        self.stack.pop();
        self.stack.push(handle);
        // The record's opcodes, read without the general loop, still earn value budget.
        self.arena.ops = self.arena.ops.saturating_add(end.saturating_sub(self.pos));
        self.pos = end;
        Ok(true)
    }

    /// The tensor of a record, or `None` when the general machine must decide (a view
    /// outside its storage, a negative offset).
    fn make_tensor(&mut self, record: Record<'_>) -> Result<Option<Tensor>> {
        let arena = &self.arena;
        let str_of = |t| text_of(arena, t);
        let class = global_of(arena, record.class);
        let (Some((module, name)), Some(key), Some(location), Ok(offset)) = (
            class,
            str_of(record.key),
            str_of(record.location),
            usize::try_from(record.offset),
        ) else {
            return Ok(None);
        };
        let id = PersistentStorageId {
            class_module: module,
            class_name: name,
            key,
            location,
            numel: record.numel,
        };
        let typed = self.persistent.torch_storage(&id)?;
        // Charged as the general path's conversion would be.
        self.arena
            .charge(record.shape.len() + record.strides.len())
            .map_err(|m| self.err(m))?;
        Ok(Tensor::new(
            typed.dtype,
            record.shape,
            record.strides,
            offset,
            typed.storage,
        )
        .ok()
        .map(|t| t.with_requires_grad(record.requires_grad)))
    }
}

/// The text of a record string.
fn text_of<'x>(arena: &'x Arena, text: Text<'x>) -> Option<&'x str> {
    match text {
        Text::Literal(s) => Some(s),
        Text::Node(h) => match arena.nodes.get(h)? {
            Node::Text(s) => Some(s),
            _ => None,
        },
    }
}

/// The module and name of a record global.
fn global_of<'x>(arena: &'x Arena, global: Global<'x>) -> Option<(&'x str, &'x str)> {
    match global {
        Global::Named(module, name) => Some((text_of(arena, module)?, text_of(arena, name)?)),
        Global::Node(h) => match arena.nodes.get(h)? {
            Node::Global { module, name } => Some((module, name)),
            _ => None,
        },
    }
}

impl<'a> Reader<'_, 'a> {
    /// The record after its opening `MARK` (at `args_start`), up to and including the memo
    /// store of its result.
    fn record(&mut self, args_start: usize) -> Option<Record<'a>> {
        let pid_start = self.pos;
        self.expect(opcode::MARK)?;
        let storage = self.text()?;
        if self.text_str(storage)? != "storage" {
            return None;
        }
        let class = self.global()?;
        let key = self.text()?;
        let location = self.text()?;
        let numel = self.int()?;
        self.expect(opcode::TUPLE)?;
        self.put_part(pid_start)?;
        self.expect(opcode::BINPERSID)?;
        let offset = self.int()?;
        let shape = self.int_tuple()?;
        let strides = self.int_tuple()?;
        let requires_grad = match self.op()? {
            opcode::NEWTRUE => true,
            opcode::NEWFALSE => false,
            _ => return None,
        };
        let hooks_start = self.pos;
        let hooks = self.global()?;
        if self.global_names(hooks)? != ("collections", "OrderedDict") {
            return None;
        }
        self.expect(opcode::EMPTY_TUPLE)?;
        self.expect(opcode::REDUCE)?;
        self.put_part(hooks_start)?;
        self.expect(opcode::TUPLE)?;
        self.put_part(args_start)?;
        self.expect(opcode::REDUCE)?;
        self.put(Stored::Result)?;
        Some(Record {
            class,
            key,
            location,
            numel,
            offset,
            shape,
            strides,
            requires_grad,
        })
    }

    /// The next opcode, past any `FRAME`s.
    fn op(&mut self) -> Option<u8> {
        loop {
            let op = *self.data.get(self.pos)?;
            if op != opcode::FRAME {
                self.pos += 1;
                return Some(op);
            }
            let len = u64::from_le_bytes(self.bytes(self.pos + 1, 8)?.try_into().ok()?);
            if len > (self.data.len() - self.pos - 9) as u64 {
                return None;
            }
            self.pos += 9;
        }
    }

    fn expect(&mut self, op: u8) -> Option<()> {
        (self.op()? == op).then_some(())
    }

    fn bytes(&self, at: usize, n: usize) -> Option<&'a [u8]> {
        self.data.get(at..at.checked_add(n)?)
    }

    /// `n` bytes of argument.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes(self.pos, n)?;
        self.pos += n;
        Some(bytes)
    }

    /// An `n`-byte little-endian unsigned argument (`n` ≤ 8).
    fn uint(&mut self, n: usize) -> Option<u64> {
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(self.take(n)?);
        Some(u64::from_le_bytes(raw))
    }

    /// An int opcode (`BININT1`, `BININT2`, `BININT`, or a `LONG1` of up to 8 bytes).
    fn int(&mut self) -> Option<i64> {
        Some(match self.op()? {
            opcode::BININT1 => self.uint(1)? as i64,
            opcode::BININT2 => self.uint(2)? as i64,
            opcode::BININT => i64::from(self.uint(4)? as u32 as i32),
            opcode::LONG1 => {
                let n = usize::from(*self.take(1)?.first()?);
                if n == 0 || n > 8 {
                    return None;
                }
                long::decode_small(self.take(n)?)?
            }
            _ => return None,
        })
    }

    /// A tuple of non-negative ints (`EMPTY_TUPLE`, `TUPLE1`-`TUPLE3`, or `MARK` ... `TUPLE`),
    /// and its memo store.
    fn int_tuple(&mut self) -> Option<Vec<usize>> {
        let start = self.pos;
        let mut items = Vec::new();
        let mut item = |reader: &mut Self| -> Option<()> {
            items.push(usize::try_from(reader.int()?).ok()?);
            Some(())
        };
        match self.peek_op()? {
            opcode::EMPTY_TUPLE => {
                self.op()?;
            }
            opcode::MARK => {
                self.op()?;
                while self.peek_op()? != opcode::TUPLE {
                    item(self)?;
                }
                self.op()?;
            }
            _ => {
                let mut n = 0u8;
                loop {
                    match self.peek_op()? {
                        op @ opcode::TUPLE1..=opcode::TUPLE3 => {
                            self.op()?;
                            if op - opcode::TUPLE1 + 1 != n {
                                return None;
                            }
                            break;
                        }
                        _ if n < 3 => {
                            item(self)?;
                            n += 1;
                        }
                        _ => return None,
                    }
                }
            }
        }
        self.put_part(start)?;
        Some(items)
    }

    fn peek_op(&mut self) -> Option<u8> {
        let at = self.pos;
        let op = self.op();
        self.pos = at;
        op
    }

    /// A str (a `BINUNICODE` opcode or a memo reference to a str), and its memo store.
    fn text(&mut self) -> Option<Text<'a>> {
        let start = self.pos;
        let text = match self.op()? {
            op @ (opcode::BINUNICODE | opcode::SHORT_BINUNICODE | opcode::BINUNICODE8) => {
                let n = match op {
                    opcode::BINUNICODE => self.uint(4)?,
                    opcode::SHORT_BINUNICODE => self.uint(1)?,
                    _ => self.uint(8)?,
                };
                let bytes = self.take(usize::try_from(n).ok()?)?;
                // Lone surrogates (invalid UTF-8) are left to the general machine.
                Text::Literal(std::str::from_utf8(bytes).ok()?)
            }
            op @ (opcode::BINGET | opcode::LONG_BINGET) => {
                let handle = self.memo_ref(op)?;
                match self.machine.arena.nodes.get(handle)? {
                    Node::Text(_) => Text::Node(handle),
                    _ => return None,
                }
            }
            _ => return None,
        };
        match text {
            Text::Literal(_) => self.put_part(start)?,
            Text::Node(handle) => self.put(Stored::Slot(Slot::node(handle)))?,
        }
        Some(text)
    }

    fn text_str(&self, text: Text<'a>) -> Option<&str> {
        text_of(&self.machine.arena, text)
    }

    /// A global (`GLOBAL`, `STACK_GLOBAL` of two strs, or a memo reference to a global),
    /// and its memo store.
    fn global(&mut self) -> Option<Global<'a>> {
        let start = self.pos;
        let global = match self.peek_op()? {
            opcode::GLOBAL => {
                self.op()?;
                let module = self.line()?;
                let name = self.line()?;
                Global::Named(Text::Literal(module), Text::Literal(name))
            }
            op @ (opcode::BINGET | opcode::LONG_BINGET) => {
                self.op()?;
                let handle = self.memo_ref(op)?;
                match self.machine.arena.nodes.get(handle)? {
                    Node::Global { .. } => Global::Node(handle),
                    _ => return None,
                }
            }
            _ => {
                let module = self.text()?;
                let name = self.text()?;
                self.expect(opcode::STACK_GLOBAL)?;
                Global::Named(module, name)
            }
        };
        match global {
            Global::Named(..) => self.put_part(start)?,
            Global::Node(handle) => self.put(Stored::Slot(Slot::node(handle)))?,
        }
        Some(global)
    }

    fn global_names(&self, global: Global<'a>) -> Option<(&str, &str)> {
        global_of(&self.machine.arena, global)
    }

    /// A newline-terminated ASCII argument of `GLOBAL`.
    fn line(&mut self) -> Option<&'a str> {
        let rest = self.data.get(self.pos..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.pos += end + 1;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        line.is_ascii().then_some(line)
    }

    /// The node of a `BINGET`/`LONG_BINGET`, built first when it is deferred.
    fn memo_ref(&mut self, op: u8) -> Option<Handle> {
        let index = if op == opcode::BINGET {
            self.uint(1)?
        } else {
            self.uint(4)?
        };
        // A failure is left for the general machine to report.
        (self.fetch)(self.machine, index).ok()
    }

    /// The memo store that may follow a part which began at `start`.
    fn put_part(&mut self, start: usize) -> Option<()> {
        let at = self.pos;
        if !matches!(
            self.peek_op()?,
            opcode::BINPUT | opcode::LONG_BINPUT | opcode::MEMOIZE
        ) {
            return Some(());
        }
        self.put(Stored::Slot(Slot::deferred(start, at - start)?))
    }

    /// Records the memo store (`BINPUT`, `LONG_BINPUT` or `MEMOIZE`) that may come next.
    fn put(&mut self, stored: Stored) -> Option<()> {
        let index = match self.peek_op()? {
            opcode::BINPUT => {
                self.op()?;
                self.uint(1)?
            }
            opcode::LONG_BINPUT => {
                self.op()?;
                self.uint(4)?
            }
            opcode::MEMOIZE => {
                self.op()?;
                // MEMOIZE numbers entries by the memo's size, counting this record's.
                let mut len = self.machine.memo.len() as u64;
                for (i, &(index, _)) in self.puts[..self.put_count].iter().enumerate() {
                    let earlier = self.puts[..i].iter().any(|&(e, _)| e == index);
                    if !earlier && !self.machine.memo.contains(index) {
                        len += 1;
                    }
                }
                len
            }
            _ => return Some(()),
        };
        let slot = self.puts.get_mut(self.put_count)?;
        *slot = (index, stored);
        self.put_count += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::error::Result;
    use crate::pickle::opcode::*;
    use crate::pickle::reader::read_pickle_with;
    use crate::pickle::{PersistentLoad, PersistentStorageId};
    use crate::pickle::{PickleOptions, TypedStorage};
    use crate::tensor::Storage;
    use crate::value::Value;

    /// Storages of `numel` float32 values, counting the loads (and, apart, those the fast
    /// path asked for).
    #[derive(Default)]
    struct Zeros {
        loads: usize,
        fast: usize,
    }

    impl PersistentLoad for Zeros {
        fn torch_storage(&mut self, id: &PersistentStorageId<'_>) -> Result<TypedStorage> {
            self.fast += 1;
            self.persistent_load(&id.to_value())
        }

        fn persistent_load(&mut self, pid: &Value) -> Result<TypedStorage> {
            self.loads += 1;
            let numel = match pid {
                Value::Tuple(f) => match f.get(4) {
                    Some(Value::Int(n)) => *n as usize,
                    _ => 0,
                },
                _ => 0,
            };
            Ok(TypedStorage {
                storage: Storage::from_vec((0..numel * 4).map(|i| i as u8).collect()),
                dtype: DType::Float32,
            })
        }
    }

    /// Builds a pickle opcode by opcode.
    #[derive(Default)]
    struct Pickle(Vec<u8>);

    impl Pickle {
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn text(self, s: &str) -> Self {
            let mut op = vec![BINUNICODE];
            op.extend_from_slice(&(s.len() as u32).to_le_bytes());
            op.extend_from_slice(s.as_bytes());
            self.op(&op)
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(&[GLOBAL])
                .op(format!("{module}\n{name}\n").as_bytes())
        }
        fn put(self, i: u8) -> Self {
            self.op(&[BINPUT, i])
        }
        fn get(self, i: u8) -> Self {
            self.op(&[BINGET, i])
        }
        fn int(self, i: u8) -> Self {
            self.op(&[BININT1, i])
        }
        /// One tensor record as torch's pickler writes it at protocol 2 (memo from `m`; a
        /// record that is not the first fetches the strings and globals of one at memo 1).
        fn record(self, key: &str, m: u8, first: bool) -> Self {
            let p = self.text(key).put(m);
            let p = if first {
                p.global("torch._utils", "_rebuild_tensor_v2").put(m + 1)
            } else {
                p.get(2)
            };
            let p = p.op(&[MARK, MARK]);
            let p = if first {
                p.text("storage")
                    .put(m + 2)
                    .global("torch", "FloatStorage")
                    .put(m + 3)
            } else {
                p.get(3).get(4)
            };
            let p = p.text(&format!("{m}")).put(m + 4);
            let p = if first {
                p.text("cpu").put(m + 5)
            } else {
                p.get(6)
            };
            let p = p.int(6).op(&[TUPLE]).put(m + 6).op(&[BINPERSID]).int(0);
            let p = p.int(2).int(3).op(&[TUPLE2]).put(m + 7);
            let p = p.int(3).int(1).op(&[TUPLE2]).put(m + 8).op(&[NEWFALSE]);
            let p = if first {
                p.global("collections", "OrderedDict").put(m + 9)
            } else {
                p.get(10)
            };
            p.op(&[EMPTY_TUPLE, REDUCE])
                .put(m + 10)
                .op(&[TUPLE])
                .put(m + 11)
                .op(&[REDUCE])
                .put(m + 12)
        }
    }

    fn read(bytes: &[u8], fast: bool) -> (String, Zeros) {
        let mut loads = Zeros::default();
        let (value, _) =
            read_pickle_with(bytes, 0, &PickleOptions::default(), &mut loads, fast).unwrap();
        (format!("{value:?}"), loads)
    }

    /// Two records, then a list of every part a later `BINGET` may fetch.
    fn state_dict_with_references() -> Vec<u8> {
        let p = Pickle::default()
            .op(&[PROTO, 2, EMPTY_DICT])
            .put(0)
            .op(&[MARK]);
        let p = p.record("a", 1, true).record("b", 20, false);
        // Fetch the first record's size tuple, persistent id, hooks, arguments, storage
        // key and tensor; and the second's storage key and stride tuple.
        let p = p.text("parts").put(40).op(&[MARK]);
        let p = p
            .get(8)
            .get(7)
            .get(11)
            .get(12)
            .get(5)
            .get(13)
            .get(24)
            .get(28);
        p.op(&[LIST]).put(41).op(&[SETITEMS, STOP]).0
    }

    #[test]
    fn the_fast_path_reads_what_the_general_machine_reads() {
        let bytes = state_dict_with_references();
        let (fast, loads) = read(&bytes, true);
        let (general, general_loads) = read(&bytes, false);
        assert_eq!(fast, general);
        assert!(fast.contains("FloatStorage"), "{fast}");
        assert!(fast.contains("OrderedDict"), "{fast}");
        // Both records took the fast path; the replayed arguments loaded the storage again.
        assert_eq!((loads.fast, general_loads.fast), (2, 0));
        assert_eq!(loads.loads, 3);
    }

    #[test]
    fn protocol_4_frames_and_memoize_take_the_fast_path_too() {
        // The same record with MEMOIZE, SHORT_BINUNICODE and STACK_GLOBAL, split by frames.
        let mut p: Vec<u8> = vec![0x80, 4, 0x95];
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(b"}\x94(\x8c\x01a\x94");
        p.extend_from_slice(b"\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94");
        p.extend_from_slice(
            b"((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0cFloatStorage\x94\x93\x94",
        );
        p.push(0x95);
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(b"\x8c\x010\x94\x8c\x03cpu\x94K\x06t\x94QK\x00K\x02K\x03\x86\x94");
        p.extend_from_slice(b"K\x03K\x01\x86\x94\x88\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94t\x94R\x94");
        // Fetch the size tuple (memo 12) and the tensor (memo 19).
        p.extend_from_slice(b"\x8c\x01s\x94(h\x0ch\x13lu.");
        let (fast, loads) = read(&p, true);
        let (general, _) = read(&p, false);
        assert_eq!(fast, general);
        assert_eq!(loads.fast, 1);
        for fast in [true, false] {
            let (value, _) = read_pickle_with(
                &p,
                0,
                &PickleOptions::default(),
                &mut Zeros::default(),
                fast,
            )
            .unwrap();
            match value.get("a") {
                Some(Value::Tensor(t)) => assert!(t.requires_grad()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unusual_records_fall_back_to_the_general_machine() {
        let base = state_dict_with_references();
        // Every truncation and every single-byte change must read the same both ways (or
        // fail both ways).
        for cut in 0..base.len() {
            let mut bytes = base.clone();
            bytes.truncate(cut);
            compare(&bytes);
        }
        for at in 0..base.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut bytes = base.clone();
                bytes[at] = bytes[at].wrapping_add(delta);
                compare(&bytes);
            }
        }
    }

    fn compare(bytes: &[u8]) {
        let read = |fast| {
            read_pickle_with(
                bytes,
                0,
                &PickleOptions::default(),
                &mut Zeros::default(),
                fast,
            )
            .map(|(v, _)| format!("{v:?}"))
            .map_err(|e| e.to_string())
        };
        match (read(true), read(false)) {
            (Ok(fast), Ok(general)) => assert_eq!(fast, general, "{bytes:?}"),
            (Err(_), Err(_)) => {}
            (fast, general) => panic!("fast {fast:?} but general {general:?} for {bytes:?}"),
        }
    }
}

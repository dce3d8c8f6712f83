//! Torch zip archives built from parts that libFuzzer mutates through `arbitrary`: the
//! tensors of `data.pkl` (storage keys, classes, sizes, offsets, shapes, strides, sharing),
//! bytes spliced into the pickle, the storage records, extra records, `byteorder`, names
//! given to one record many times in the central directory, and damage to the headers
//! (local names that differ, methods, crc, sizes, offsets, flags, extra fields, the end
//! record). Most inputs are well-formed archives with something unusual inside, which a
//! byte-level mutator seldom produces.

use arbitrary::Arbitrary;

/// A whole archive.
#[derive(Arbitrary, Debug)]
pub struct TorchZip {
    archive: Name,
    pickle: Pickle,
    storages: Vec<StorageRecord>,
    extra_records: Vec<(Name, Vec<u8>)>,
    byteorder: ByteOrder,
    version: Option<u8>,
    /// Central-directory entries naming the local header of another record.
    aliases: Vec<(u8, Name)>,
    /// Tensors `f0`, `f1`, ... added to `data.pkl`, like the first tensor record but each
    /// with a storage key of its own, `data/f<i>`, which the central directory gives to the
    /// first storage record: many names for one record, at scale.
    fan_out: u8,
    damage: Vec<Damage>,
    zip64_end: bool,
}

/// A record or archive name: mostly a plausible one, sometimes any text.
#[derive(Arbitrary, Debug)]
enum Name {
    Number(u8),
    Text(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Number(n) => n.to_string(),
            Name::Text(t) => t.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Pickle {
    /// A state dict of tensor records, with bytes spliced in at chosen places.
    Tensors {
        tensors: Vec<TensorRecord>,
        splices: Vec<(u16, Vec<u8>)>,
        protocol: u8,
    },
    /// Any bytes.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct TensorRecord {
    name: Name,
    key: Name,
    class: u8,
    location: Name,
    numel: Int,
    offset: Int,
    shape: Vec<Int>,
    stride: Vec<Int>,
    requires_grad: bool,
    rebuild: u8,
    /// Refer to the previous tensor's storage id through the memo instead of a new one.
    memo_storage: bool,
}

/// An integer field: mostly small, sometimes extreme.
#[derive(Arbitrary, Debug)]
enum Int {
    Small(u8),
    Any(i64),
}

impl Int {
    fn get(&self) -> i64 {
        match self {
            Int::Small(v) => i64::from(*v),
            Int::Any(v) => *v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct StorageRecord {
    key: Name,
    /// Length of a zero-filled record, or the record's bytes.
    content: Content,
}

#[derive(Arbitrary, Debug)]
enum Content {
    Zeros(u16),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ByteOrder {
    None,
    Little,
    Big,
    Other(Vec<u8>),
}

/// Damage done to the archive once it is laid out; record indices wrap around.
#[derive(Arbitrary, Debug)]
enum Damage {
    LocalName(u8, String),
    CentralName(u8, String),
    Method(u8, u16),
    Crc(u8, u32),
    CompressedSize(u8, u64),
    Size(u8, u64),
    LocalOffset(u8, u64),
    Flags(u8, u16),
    LocalExtra(u8, Vec<u8>),
    CentralExtra(u8, Vec<u8>),
    EntryCount(u64),
    CentralOffset(u64),
    CentralSize(u64),
    Comment(Vec<u8>),
    Truncate(u16),
    Overwrite(u16, Vec<u8>),
}

const STORAGE_CLASSES: &[&str] = &[
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexFloatStorage",
    "UntypedStorage",
    "NotAStorage",
];

const REBUILDS: &[&str] = &[
    "_rebuild_tensor_v2",
    "_rebuild_tensor",
    "_rebuild_parameter",
    "_rebuild_tensor_v3",
];

/// One record as laid out: every header field the damage can change.
struct Entry {
    local_name: Vec<u8>,
    central_name: Vec<u8>,
    data: Vec<u8>,
    method: u16,
    crc: u32,
    compressed_size: u64,
    size: u64,
    flags: u16,
    local_extra: Vec<u8>,
    central_extra: Vec<u8>,
    /// Index of the entry whose local header this central entry names (itself, or the
    /// record of an alias).
    target: usize,
    local_offset: Option<u64>,
}

impl TorchZip {
    /// The archive's bytes.
    pub fn build(&self) -> Vec<u8> {
        let archive = self.archive.text();
        let mut pickle = self.pickle.bytes();
        if let Pickle::Tensors { tensors, .. } = &self.pickle {
            if let (Some(first), true) = (tensors.first(), self.fan_out > 0) {
                pickle = fan_out_pickle(first, self.fan_out);
            }
        }
        let mut records = vec![(format!("{archive}/data.pkl"), pickle)];
        for storage in &self.storages {
            let data = match &storage.content {
                Content::Zeros(n) => vec![0; usize::from(*n)],
                Content::Bytes(b) => b.clone(),
            };
            records.push((format!("{archive}/data/{}", storage.key.text()), data));
        }
        match &self.byteorder {
            ByteOrder::None => {}
            ByteOrder::Little => records.push((format!("{archive}/byteorder"), b"little".to_vec())),
            ByteOrder::Big => records.push((format!("{archive}/byteorder"), b"big".to_vec())),
            ByteOrder::Other(b) => records.push((format!("{archive}/byteorder"), b.clone())),
        }
        if let Some(v) = self.version {
            records.push((format!("{archive}/version"), format!("{v}\n").into_bytes()));
        }
        for (name, data) in &self.extra_records {
            records.push((format!("{archive}/{}", name.text()), data.clone()));
        }
        let mut entries: Vec<Entry> = records
            .into_iter()
            .enumerate()
            .map(|(i, (name, data))| Entry {
                local_name: name.clone().into_bytes(),
                central_name: name.into_bytes(),
                crc: crc32fast::hash(&data),
                compressed_size: data.len() as u64,
                size: data.len() as u64,
                data,
                method: 0,
                flags: 0,
                local_extra: Vec::new(),
                central_extra: Vec::new(),
                target: i,
                local_offset: None,
            })
            .collect();
        let real = entries.len();
        if !self.storages.is_empty() {
            for i in 0..self.fan_out {
                let alias = Name::Text(format!("f{i}"));
                entries.push(alias_entry(&entries[1], 1, &archive, &alias));
            }
        }
        for (target, name) in &self.aliases {
            let target = usize::from(*target) % real;
            let alias = alias_entry(&entries[target], target, &archive, name);
            entries.push(alias);
        }
        let mut end = End::default();
        let mut after = Vec::new();
        for damage in &self.damage {
            let n = entries.len();
            let at = |i: &u8| usize::from(*i) % n;
            match damage {
                Damage::LocalName(i, s) => entries[at(i)].local_name = s.clone().into_bytes(),
                Damage::CentralName(i, s) => entries[at(i)].central_name = s.clone().into_bytes(),
                Damage::Method(i, m) => entries[at(i)].method = *m,
                Damage::Crc(i, c) => entries[at(i)].crc = *c,
                Damage::CompressedSize(i, s) => entries[at(i)].compressed_size = *s,
                Damage::Size(i, s) => entries[at(i)].size = *s,
                Damage::LocalOffset(i, o) => entries[at(i)].local_offset = Some(*o),
                Damage::Flags(i, f) => entries[at(i)].flags = *f,
                Damage::LocalExtra(i, e) => entries[at(i)].local_extra = e.clone(),
                Damage::CentralExtra(i, e) => entries[at(i)].central_extra = e.clone(),
                Damage::EntryCount(c) => end.count = Some(*c),
                Damage::CentralOffset(o) => end.offset = Some(*o),
                Damage::CentralSize(s) => end.size = Some(*s),
                Damage::Comment(c) => end.comment = c.clone(),
                other => after.push(other),
            }
        }
        let mut out = lay_out(&entries, real, &end, self.zip64_end);
        for damage in after {
            match damage {
                Damage::Truncate(n) => out.truncate(out.len().saturating_sub(usize::from(*n))),
                Damage::Overwrite(at, bytes) => {
                    let at = usize::from(*at) % out.len().max(1);
                    for (slot, b) in out.iter_mut().skip(at).zip(bytes) {
                        *slot = *b;
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A central-directory entry `data/<name>` for the local header of `t` (entry `target`).
fn alias_entry(t: &Entry, target: usize, archive: &str, name: &Name) -> Entry {
    Entry {
        local_name: Vec::new(),
        central_name: format!("{archive}/data/{}", name.text()).into_bytes(),
        data: Vec::new(),
        method: t.method,
        crc: t.crc,
        compressed_size: t.compressed_size,
        size: t.size,
        flags: 0,
        local_extra: Vec::new(),
        central_extra: Vec::new(),
        target,
        local_offset: None,
    }
}

/// A state dict of `n` tensors like `first`, tensor `f<i>` over storage key `f<i>`.
fn fan_out_pickle(first: &TensorRecord, n: u8) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for i in 0..n {
        let record = TensorRecord {
            name: Name::Text(format!("f{i}")),
            key: Name::Text(format!("f{i}")),
            class: first.class,
            location: Name::Text("cpu".into()),
            numel: Int::Any(first.numel.get()),
            offset: Int::Any(first.offset.get()),
            shape: first.shape.iter().map(|d| Int::Any(d.get())).collect(),
            stride: first.stride.iter().map(|d| Int::Any(d.get())).collect(),
            requires_grad: first.requires_grad,
            rebuild: first.rebuild,
            memo_storage: false,
        };
        record.write(&mut p, usize::from(i));
    }
    p.extend_from_slice(b"u.");
    p
}

impl Pickle {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Pickle::Raw(bytes) => bytes.clone(),
            Pickle::Tensors {
                tensors,
                splices,
                protocol,
            } => {
                let mut p = vec![0x80, 2 + protocol % 4, b'}', b'('];
                for (i, t) in tensors.iter().enumerate() {
                    t.write(&mut p, i);
                }
                p.extend_from_slice(b"u.");
                for (at, bytes) in splices {
                    let at = usize::from(*at) % (p.len() + 1);
                    p.splice(at..at, bytes.iter().copied());
                }
                p
            }
        }
    }
}

impl TensorRecord {
    fn write(&self, p: &mut Vec<u8>, index: usize) {
        text(p, &self.name.text());
        let rebuild = REBUILDS[usize::from(self.rebuild) % REBUILDS.len()];
        if rebuild == "_rebuild_parameter" {
            p.extend_from_slice(b"ctorch._utils\n_rebuild_parameter\n");
        }
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        if self.memo_storage && index > 0 {
            // The storage id memoized by the previous tensor.
            p.push(b'h');
            p.push((index - 1) as u8);
        } else {
            p.push(b'(');
            text(p, "storage");
            let class = STORAGE_CLASSES[usize::from(self.class) % STORAGE_CLASSES.len()];
            p.extend_from_slice(format!("ctorch\n{class}\n").as_bytes());
            text(p, &self.key.text());
            text(p, &self.location.text());
            int(p, self.numel.get());
            p.extend_from_slice(b"tQ");
        }
        // Memoize the storage for the next tensor (index wraps at 256 like BINPUT).
        p.push(b'q');
        p.push(index as u8);
        int(p, self.offset.get());
        tuple(p, &self.shape);
        tuple(p, &self.stride);
        p.push(if self.requires_grad { 0x88 } else { 0x89 });
        p.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        if rebuild == "_rebuild_tensor" {
            // A wrong arity for the rebuild call.
            p.extend_from_slice(b"N");
        }
        p.extend_from_slice(b"tR");
        if rebuild == "_rebuild_parameter" {
            p.extend_from_slice(if self.requires_grad { b"\x88" } else { b"\x89" });
            p.extend_from_slice(b"ccollections\nOrderedDict\n)R\x87R");
        }
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    if let Ok(small) = i32::try_from(v) {
        out.push(b'J');
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        out.extend_from_slice(&[0x8a, 8]);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn tuple(out: &mut Vec<u8>, items: &[Int]) {
    out.push(b'(');
    for i in items {
        int(out, i.get());
    }
    out.push(b't');
}

/// Fields of the end record that the damage overrides.
#[derive(Default)]
struct End {
    count: Option<u64>,
    offset: Option<u64>,
    size: Option<u64>,
    comment: Vec<u8>,
}

/// Lays out the local headers and data of the first `real` entries, then the central
/// directory of every entry and the end record(s).
fn lay_out(entries: &[Entry], real: usize, end: &End, zip64_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::with_capacity(real);
    for e in &entries[..real] {
        offsets.push(out.len() as u64);
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&(e.compressed_size as u32).to_le_bytes());
        out.extend_from_slice(&(e.size as u32).to_le_bytes());
        out.extend_from_slice(&(e.local_name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(e.local_extra.len() as u16).to_le_bytes());
        out.extend_from_slice(&e.local_name);
        out.extend_from_slice(&e.local_extra);
        out.extend_from_slice(&e.data);
    }
    let cd_offset = out.len() as u64;
    for e in entries {
        let offset = e.local_offset.unwrap_or(offsets[e.target]);
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&e.crc.to_le_bytes());
        // Fields that do not fit 32 bits go to a zip64 extra field.
        let mut zip64 = Vec::new();
        let mut field32 = |v: u64| -> u32 {
            u32::try_from(v).unwrap_or_else(|_| {
                zip64.extend_from_slice(&v.to_le_bytes());
                u32::MAX
            })
        };
        let size = field32(e.size);
        let compressed = field32(e.compressed_size);
        let offset32 = field32(offset);
        let mut extra = Vec::new();
        if !zip64.is_empty() {
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
            extra.extend_from_slice(&zip64);
        }
        extra.extend_from_slice(&e.central_extra);
        out.extend_from_slice(&compressed.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(e.central_name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // comment length
        out.extend_from_slice(&0u16.to_le_bytes()); // disk
        out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        out.extend_from_slice(&offset32.to_le_bytes());
        out.extend_from_slice(&e.central_name);
        out.extend_from_slice(&extra);
    }
    let count = end.count.unwrap_or(entries.len() as u64);
    let cd_size = end.size.unwrap_or(out.len() as u64 - cd_offset);
    let cd_at = end.offset.unwrap_or(cd_offset);
    if zip64_end {
        let zip64_at = out.len() as u64;
        out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&cd_size.to_le_bytes());
        out.extend_from_slice(&cd_at.to_le_bytes());
        out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&zip64_at.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    let clip16 = |v: u64| if zip64_end { u16::MAX } else { v as u16 };
    let clip32 = |v: u64| if zip64_end { u32::MAX } else { v as u32 };
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&clip16(count).to_le_bytes());
    out.extend_from_slice(&clip16(count).to_le_bytes());
    out.extend_from_slice(&clip32(cd_size).to_le_bytes());
    out.extend_from_slice(&clip32(cd_at).to_le_bytes());
    out.extend_from_slice(&(end.comment.len() as u16).to_le_bytes());
    out.extend_from_slice(&end.comment);
    out
}

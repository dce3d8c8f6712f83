//! Writing torch zip archives that `torch.load(weights_only=True)` and `mmap=True` read.
//!
//! The records and their order are those of `torch.save` in torch 2.15,
//! laid out by [`ZipWriter`] exactly as miniz does, so the output is byte-identical to
//! `torch.save` apart from the `.data/serialization_id` payload.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::stream::Copier;
use crate::format::zip_write::ZipWriter;
use crate::format::SaveOptions;
use crate::pickle::{measure_pickle, StorageSink};
use crate::tensor::{Storage, Tensor};
use crate::value::Value;

/// Storages in order of first appearance while pickling; the key of a storage is its index
/// (the pickle writer asks once per storage).
#[derive(Default)]
struct Storages(Vec<Storage>);

impl StorageSink for Storages {
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String> {
        self.0.push(tensor.storage().clone());
        Ok((self.0.len() - 1).to_string())
    }
}

/// The keys again, for the second pass over the same value (same storages, same order).
#[derive(Default)]
struct Keys(usize);

impl StorageSink for Keys {
    fn storage_key(&mut self, _: &Tensor) -> Result<String> {
        self.0 += 1;
        Ok((self.0 - 1).to_string())
    }
}

/// Streams `value` as a torch zip archive into `out`: records `data.pkl`, `.format_version`,
/// `.storage_alignment`, `byteorder`, `data/0..N-1` (one per distinct storage, written
/// straight from the storage's memory), `version`, `.data/serialization_id`.
///
/// As `torch.save`, each distinct storage is saved whole, so views and tied weights stay
/// shared (a small view of a large storage saves the whole storage). Output is
/// deterministic: the same value gives the same bytes.
///
/// Memory: neither the pickle nor the archive is built in memory; besides the pickle memo
/// (a reference per distinct string, as CPython's), a save keeps a few dozen bytes per
/// record. Storages that are views of a memory-mapped file are streamed with their pages
/// released behind the writer when `options.source_pages` says so (see
/// [`crate::format::SourcePages`]).
///
/// Fails (before writing anything) on values a weights-only torch file cannot hold: see
/// [`crate::pickle::write_pickle`].
pub fn write_torch(out: &mut dyn Write, value: &Value, options: &SaveOptions) -> Result<()> {
    let archive = options.archive_name.as_deref().unwrap_or("archive");
    if archive.is_empty() || archive.contains(['/', '\\']) {
        return Err(Error::InvalidName {
            name: archive.to_string(),
            reason: "an archive name must be non-empty and contain no path separator",
        });
    }
    // Measured first: a value torch cannot hold fails before anything is written, and the
    // pickle's length is known for its header. It is then written as it is made.
    let mut storages = Storages::default();
    let pickle = measure_pickle(value, &mut storages)?;

    let mut zip = ZipWriter::new(out, options.alignment, options.crc32)?;
    let mut pickle_hash = Fnv::new();
    let mut name = String::new();
    let mut records = Records {
        archive,
        storages: 0,
    };
    records.name(0, &mut name);
    zip.begin(&name, pickle.len)?;
    let mut keys = Keys::default();
    pickle.stream(&mut keys, &mut |bytes| {
        pickle_hash.update(bytes);
        zip.data(bytes)
    })?;
    zip.end()?;
    pickle_hash.end_part();
    if keys.0 != storages.0.len() {
        return Err(Error::invalid(format!(
            "the pickle named {} storages when measured, {} when written",
            storages.0.len(),
            keys.0
        )));
    }

    records.storages = storages.0.len();
    let alignment = options.alignment.to_string();
    // The serialization id hashes the names of the records before it.
    let mut names_hash = Fnv::new();
    let mut id = String::new();
    let mut copier = Copier::new(options.source_pages);
    for i in 0..records.count() {
        records.name(i, &mut name);
        let kind = records.kind(i);
        let data: &[u8] = match kind {
            Record::Pickle => &[], // written above
            Record::FormatVersion => b"1",
            Record::StorageAlignment => alignment.as_bytes(),
            Record::ByteOrder => b"little",
            Record::Storage(key) => {
                let storage = &storages.0[key];
                zip.begin(&name, storage.len() as u64)?;
                copier.storage(storage, &mut |chunk| zip.data(chunk))?;
                zip.end()?;
                &[] // written here
            }
            Record::Version => b"3\n",
            Record::SerializationId => {
                id.clear();
                // Writing to a String cannot fail.
                let _ = write!(
                    id,
                    "{:020}{:020}",
                    names_hash.finish(),
                    pickle_hash.finish()
                );
                id.as_bytes()
            }
        };
        if !matches!(kind, Record::Pickle | Record::Storage(_)) {
            zip.add(&name, data)?;
        }
        names_hash.update(&name.as_bytes()[archive.len() + 1..]);
        names_hash.end_part();
    }
    copier.finish();
    let len = zip.finish(&mut |i, name| records.name(i, name))?;
    tracing::debug!(
        "wrote torch archive '{archive}': {} storages, {len} bytes",
        records.storages
    );
    Ok(())
}

/// The records of a torch archive, in order.
enum Record {
    Pickle,
    FormatVersion,
    StorageAlignment,
    ByteOrder,
    Storage(usize),
    Version,
    SerializationId,
}

/// Names the records of an archive of `storages` storages (so that they need not be kept).
struct Records<'a> {
    archive: &'a str,
    storages: usize,
}

impl Records<'_> {
    fn count(&self) -> usize {
        self.storages + 6
    }

    fn kind(&self, i: usize) -> Record {
        match i {
            0 => Record::Pickle,
            1 => Record::FormatVersion,
            2 => Record::StorageAlignment,
            3 => Record::ByteOrder,
            i if i - 4 < self.storages => Record::Storage(i - 4),
            i if i - 4 == self.storages => Record::Version,
            _ => Record::SerializationId,
        }
    }

    /// Puts `<archive>/<record name>` in `out`.
    fn name(&self, i: usize, out: &mut String) {
        out.clear();
        out.push_str(self.archive);
        out.push('/');
        match self.kind(i) {
            Record::Pickle => out.push_str("data.pkl"),
            Record::FormatVersion => out.push_str(".format_version"),
            Record::StorageAlignment => out.push_str(".storage_alignment"),
            Record::ByteOrder => out.push_str("byteorder"),
            Record::Storage(key) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "data/{key}");
            }
            Record::Version => out.push_str("version"),
            Record::SerializationId => out.push_str(".data/serialization_id"),
        }
    }
}

/// The serialization id: 40 decimal digits, like torch's (which hashes record names and
/// CRCs with a hash that is not reproducible across processes). Ours is a deterministic
/// FNV-1a of the record names and of the pickle, so the same value always gives the same
/// file. Each part hashed (a name, the whole pickle) ends with a `0xFF` mix.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn end_part(&mut self) {
        self.0 ^= 0xFF;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The archive folder torch would use for `path`: the file name up to its last `.`, when it
/// is non-empty ASCII; else `archive`.
pub(crate) fn archive_name_for(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .map(|n| match n.rfind('.') {
            Some(dot) => n[..dot].to_string(),
            None => n,
        })
        .unwrap_or_default();
    if !stem.is_empty() && stem.is_ascii() && !stem.contains(['/', '\\']) {
        stem
    } else {
        "archive".to_string()
    }
}

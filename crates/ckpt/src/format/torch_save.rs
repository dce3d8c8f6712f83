//! Writing torch zip archives that `torch.load(weights_only=True)` and `mmap=True` read.
//!
//! The records and their order are those of `torch.save` in torch 2.15 (FORMATS.md §1.1),
//! laid out by [`ZipWriter`] exactly as miniz does, so the output is byte-identical to
//! `torch.save` apart from the `.data/serialization_id` payload.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::zip_write::ZipWriter;
use crate::format::SaveOptions;
use crate::pickle::{write_pickle, StorageSink};
use crate::tensor::{Storage, Tensor};
use crate::value::Value;

/// Storages in order of first appearance while pickling; the key of a storage is its index.
#[derive(Default)]
struct Storages {
    keys: HashMap<usize, usize>,
    storages: Vec<Storage>,
}

impl StorageSink for Storages {
    fn storage_key(&mut self, tensor: &Tensor) -> Result<String> {
        let storage = tensor.storage();
        let next = self.storages.len();
        let key = *self.keys.entry(storage.id()).or_insert(next);
        if key == next {
            self.storages.push(storage.clone());
        }
        Ok(key.to_string())
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
/// Fails (before writing anything) on values a weights-only torch file cannot hold: see
/// [`crate::pickle::write_pickle`].
pub fn write_torch(out: &mut dyn Write, value: &Value, options: &SaveOptions) -> Result<()> {
    let archive = options.archive_name.as_deref().unwrap_or("archive");
    if archive.is_empty() || archive.contains(['/', '\\']) {
        return Err(Error::invalid(format!(
            "archive name {archive:?} must be non-empty and contain no path separator"
        )));
    }
    let mut storages = Storages::default();
    let pickle = write_pickle(value, &mut storages)?;

    let alignment = options.alignment.to_string();
    let storage_names: Vec<String> = (0..storages.storages.len())
        .map(|key| format!("data/{key}"))
        .collect();
    let mut records: Vec<(&str, &[u8])> = Vec::with_capacity(storage_names.len() + 7);
    records.push(("data.pkl", &pickle));
    records.push((".format_version", b"1"));
    records.push((".storage_alignment", alignment.as_bytes()));
    records.push(("byteorder", b"little"));
    for (name, storage) in storage_names.iter().zip(&storages.storages) {
        records.push((name, storage.as_bytes()));
    }
    records.push(("version", b"3\n"));
    let id = serialization_id(records.iter().map(|(name, _)| *name), &pickle);
    records.push((".data/serialization_id", id.as_bytes()));

    let mut zip = ZipWriter::new(out, options.alignment, options.crc32)?;
    let mut full_name = String::new();
    for (name, data) in records {
        full_name.clear();
        full_name.push_str(archive);
        full_name.push('/');
        full_name.push_str(name);
        zip.add(&full_name, data)?;
    }
    let len = zip.finish()?;
    tracing::debug!(
        "wrote torch archive '{archive}': {} storages, {len} bytes",
        storages.storages.len()
    );
    Ok(())
}

/// 40 decimal digits, like torch's (which hashes record names and CRCs with a hash that is
/// not reproducible across processes). Ours is a deterministic FNV-1a of the record names
/// and the pickle, so the same value always gives the same file.
fn serialization_id<'a>(names: impl Iterator<Item = &'a str>, pickle: &[u8]) -> String {
    let fnv = |parts: &mut dyn Iterator<Item = &[u8]>| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for &b in part {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h ^= 0xFF;
        }
        h
    };
    let names_hash = fnv(&mut names.map(str::as_bytes));
    let content_hash = fnv(&mut std::iter::once(pickle));
    format!("{names_hash:020}{content_hash:020}")
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

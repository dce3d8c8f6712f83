//! Reading zip archives: the central directory is parsed once into an index of records
//! (name, data offset, size, method, crc32), checked against the file size.
//!
//! Only the end records, the central directory and, per record looked up, that record's
//! local header are read; lookups by name are hash-map lookups.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::format::zip_signatures::{
    CENTRAL_SIG, EOCD_SIG, LOCAL_SIG, ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG,
};

/// Compression method of a stored (uncompressed) record.
pub(crate) const STORED: u16 = 0;

/// One record of the central directory.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub name: String,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    local_header: u64,
}

impl Record {
    /// Offset of the record's local header in the file.
    pub fn local_header(&self) -> u64 {
        self.local_header
    }
}

/// The central directory of an archive held in memory.
#[derive(Debug)]
pub(crate) struct ZipIndex {
    records: Vec<Record>,
    /// Built on the first lookup by name: torch's storages are found by number instead.
    by_name: OnceLock<HashMap<String, usize>>,
    /// Where the central directory starts.
    directory_start: u64,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([raw[0], raw[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(raw);
    Some(u64::from_le_bytes(a))
}

/// `what`, `needed` bytes long at byte `at`, runs past the end of the `len` bytes there are.
fn truncated(what: &str, at: usize, needed: usize, len: usize) -> Error {
    Error::truncated(
        format!("zip {what}"),
        at as u64,
        needed as u64,
        len.saturating_sub(at) as u64,
    )
}

/// Sizes of the fixed parts of the zip structures.
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_HEADER_LEN: usize = 46;

impl ZipIndex {
    /// Parses the end records and the central directory of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<ZipIndex> {
        let eocd = find_eocd(bytes)?;
        let (count, cd_offset, cd_size) = directory_extent(bytes, eocd)?;
        let cd = &bytes[cd_offset as usize..(cd_offset + cd_size) as usize];
        let mut records = Vec::with_capacity(count as usize);
        let mut pos = 0usize;
        for _ in 0..count {
            let (record, next) = central_record(cd, pos, cd_offset as usize)?;
            pos = next;
            records.push(record);
        }
        Ok(ZipIndex {
            records,
            by_name: OnceLock::new(),
            directory_start: cd_offset,
        })
    }

    /// Makes present, in a partial copy of `bytes` (see [`crate::partial`]), what
    /// [`ZipIndex::parse`] reads: the end records (a few KiB at the end of the file, more
    /// when an archive comment hides them) and then the central directory.
    pub fn fetch_directory(
        bytes: &[u8],
        ensure: &dyn Fn(Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let len = bytes.len();
        ensure(len.saturating_sub(TAIL_GUESS)..len)?;
        let eocd = match find_eocd(bytes) {
            Ok(at) => at,
            Err(_) => {
                let window = EOCD_LEN + 0xFFFF + ZIP64_LOCATOR_LEN + ZIP64_EOCD_LEN;
                ensure(len.saturating_sub(window)..len)?;
                find_eocd(bytes)?
            }
        };
        if let Some(at) = zip64_end_offset(bytes, eocd) {
            ensure(at.min(len)..at.saturating_add(ZIP64_EOCD_LEN).min(len))?;
        }
        let (_, cd_offset, cd_size) = directory_extent(bytes, eocd)?;
        ensure(cd_offset as usize..(cd_offset + cd_size) as usize)
    }

    /// Where the central directory starts: the end of the last record.
    pub fn directory_start(&self) -> u64 {
        self.directory_start
    }
}

/// The end of the file first fetched for the end records of a partial copy: they are the
/// last 22 bytes (98 for zip64) of an archive without a comment, as torch writes them.
const TAIL_GUESS: usize = 4096;

/// The offset of the zip64 end record, when a zip64 locator precedes the end record at
/// `eocd`.
fn zip64_end_offset(bytes: &[u8], eocd: usize) -> Option<usize> {
    if eocd < ZIP64_LOCATOR_LEN
        || u32_at(bytes, eocd - ZIP64_LOCATOR_LEN) != Some(ZIP64_LOCATOR_SIG)
    {
        return None;
    }
    usize::try_from(u64_at(bytes, eocd - 12)?).ok()
}

/// The entry count, offset and size of the central directory, from the end record at `eocd`
/// (and the zip64 end record it points to), checked against the file's size.
fn directory_extent(bytes: &[u8], eocd: usize) -> Result<(u64, u64, u64)> {
    let len = bytes.len();
    let end_record = || truncated("end record", eocd, EOCD_LEN, len);
    let mut count = u64::from(u16_at(bytes, eocd + 10).ok_or_else(end_record)?);
    let mut cd_size = u64::from(u32_at(bytes, eocd + 12).ok_or_else(end_record)?);
    let mut cd_offset = u64::from(u32_at(bytes, eocd + 16).ok_or_else(end_record)?);
    if eocd >= ZIP64_LOCATOR_LEN
        && u32_at(bytes, eocd - ZIP64_LOCATOR_LEN) == Some(ZIP64_LOCATOR_SIG)
    {
        let locator = eocd - ZIP64_LOCATOR_LEN;
        let at = u64_at(bytes, eocd - 12)
            .ok_or_else(|| truncated("zip64 locator", locator, ZIP64_LOCATOR_LEN, len))?;
        let at = usize::try_from(at)
            .ok()
            .filter(|&a| a < bytes.len())
            .ok_or_else(|| {
                Error::format(format!(
                    "zip archive: zip64 end record offset {at} is outside the file"
                ))
            })?;
        if u32_at(bytes, at) != Some(ZIP64_EOCD_SIG) {
            return Err(Error::format(format!(
                "zip archive: no zip64 end record at byte {at}"
            )));
        }
        let zip64_end = || truncated("zip64 end record", at, ZIP64_EOCD_LEN, len);
        count = u64_at(bytes, at + 32).ok_or_else(zip64_end)?;
        cd_size = u64_at(bytes, at + 40).ok_or_else(zip64_end)?;
        cd_offset = u64_at(bytes, at + 48).ok_or_else(zip64_end)?;
    }
    let end = cd_offset.checked_add(cd_size);
    if !matches!(end, Some(e) if e <= len as u64) {
        return Err(Error::truncated(
            "zip central directory",
            cd_offset,
            cd_size,
            (len as u64).saturating_sub(cd_offset),
        ));
    }
    // Each central header takes at least 46 bytes: a larger count is a lie.
    if count > cd_size / CENTRAL_HEADER_LEN as u64 {
        return Err(Error::format(format!(
            "zip archive: {count} entries cannot fit in a central directory of {cd_size} bytes"
        )));
    }
    Ok((count, cd_offset, cd_size))
}

impl ZipIndex {
    /// Records in central-directory order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Where the record called `name` is in [`ZipIndex::records`] (a hash lookup).
    pub fn position(&self, name: &str) -> Option<usize> {
        let by_name = self.by_name.get_or_init(|| {
            let mut by_name = HashMap::with_capacity(self.records.len());
            for (i, record) in self.records.iter().enumerate() {
                // The first record of a duplicated name wins, as in miniz's lookup.
                by_name.entry(record.name.clone()).or_insert(i);
            }
            by_name
        });
        by_name.get(name).copied()
    }

    /// The record called `name`, found by a scan (for the few lookups of an archive that
    /// are not worth a hash index).
    pub fn find(&self, name: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.name == name)
    }

    /// Where the (possibly compressed) data of `record` lies in `bytes`, read from the
    /// record's local header.
    pub fn data_range(&self, bytes: &[u8], record: &Record) -> Result<Range<usize>> {
        let at = usize::try_from(record.local_header).unwrap_or(usize::MAX);
        let header = at
            .checked_add(LOCAL_HEADER_LEN)
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| local_header_truncated(record, at, bytes.len()))?;
        data_range_from_header(bytes.len(), record, header)
    }

    /// [`ZipIndex::stored_range`] from the first 30 bytes of the record's local header,
    /// read by the caller, in a file of `file_len` bytes.
    pub fn stored_range_from_header(
        &self,
        file_len: usize,
        record: &Record,
        header: &[u8],
    ) -> Result<Range<usize>> {
        check_stored(record)?;
        data_range_from_header(file_len, record, header)
    }

    /// The bytes of a STORED record (compressed records are an error naming the record).
    pub fn stored_bytes<'b>(&self, bytes: &'b [u8], record: &Record) -> Result<&'b [u8]> {
        let range = self.stored_range(bytes, record)?;
        Ok(&bytes[range])
    }

    /// [`ZipIndex::data_range`] of a record that must be stored (uncompressed).
    pub fn stored_range(&self, bytes: &[u8], record: &Record) -> Result<Range<usize>> {
        check_stored(record)?;
        self.data_range(bytes, record)
    }
}

/// Length of a local header before its name and extra field.
pub(crate) const LOCAL_HEADER_LEN: usize = 30;

fn local_header_truncated(record: &Record, at: usize, file_len: usize) -> Error {
    let what = format!("local header of '{}'", record.name);
    truncated(&what, at, LOCAL_HEADER_LEN, file_len)
}

fn missing_local_header(record: &Record, at: usize) -> Error {
    Error::format(format!(
        "zip archive: no local header for '{}' at byte {at}",
        record.name
    ))
}

fn check_stored(record: &Record) -> Result<()> {
    if record.method != STORED {
        return Err(Error::unsupported(format!(
            "zip record '{}' is compressed (method {}); only stored records can be read (re-save the checkpoint with torch.save)",
            record.name, record.method
        )));
    }
    Ok(())
}

/// The data range of `record` given its local header's first 30 bytes.
fn data_range_from_header(file_len: usize, record: &Record, header: &[u8]) -> Result<Range<usize>> {
    let at = usize::try_from(record.local_header).unwrap_or(usize::MAX);
    if header.len() < LOCAL_HEADER_LEN {
        return Err(local_header_truncated(
            record,
            at,
            at.saturating_add(header.len()),
        ));
    }
    if u32_at(header, 0) != Some(LOCAL_SIG) {
        return Err(missing_local_header(record, at));
    }
    let name_len =
        u16_at(header, 26).ok_or_else(|| local_header_truncated(record, at, file_len))?;
    let extra_len =
        u16_at(header, 28).ok_or_else(|| local_header_truncated(record, at, file_len))?;
    let start = at
        .checked_add(LOCAL_HEADER_LEN + usize::from(name_len) + usize::from(extra_len))
        .ok_or_else(|| local_header_truncated(record, at, file_len))?;
    let end = usize::try_from(record.compressed_size)
        .ok()
        .and_then(|n| start.checked_add(n))
        .filter(|&e| e <= file_len)
        .ok_or_else(|| {
            Error::truncated(
                format!("zip record '{}' data", record.name),
                start as u64,
                record.compressed_size,
                file_len.saturating_sub(start) as u64,
            )
        })?;
    Ok(start..end)
}

/// The classic end-of-central-directory record: the last signature within the final
/// 22 + 65535 bytes whose comment length reaches the end of the file.
fn find_eocd(bytes: &[u8]) -> Result<usize> {
    if bytes.len() < EOCD_LEN {
        return Err(truncated("end record", 0, EOCD_LEN, bytes.len()));
    }
    let lowest = bytes.len().saturating_sub(EOCD_LEN + 0xFFFF);
    let mut at = bytes.len() - EOCD_LEN;
    loop {
        if u32_at(bytes, at) == Some(EOCD_SIG) {
            let comment = u16_at(bytes, at + 20).map(usize::from);
            if comment.is_some_and(|c| at + 22 + c <= bytes.len()) {
                return Ok(at);
            }
        }
        if at == lowest {
            return Err(Error::format(
                "zip archive: no end-of-central-directory record (truncated or not a zip file)",
            ));
        }
        at -= 1;
    }
}

/// One central header at `pos` of the central directory `cd` (which starts at `base` in the
/// file); returns the record and the position of the next header.
fn central_record(cd: &[u8], pos: usize, base: usize) -> Result<(Record, usize)> {
    let at = base + pos;
    if u32_at(cd, pos) != Some(CENTRAL_SIG) {
        return Err(Error::format(format!(
            "zip archive: expected a central directory header at byte {at}"
        )));
    }
    // A header running past the directory's declared end (which lies in the file).
    let past_end = || {
        Error::format(format!(
            "zip archive: the central header at byte {at} runs past the end of the central directory"
        ))
    };
    let field16 = |off: usize| u16_at(cd, pos + off).ok_or_else(past_end);
    let field32 = |off: usize| u32_at(cd, pos + off).ok_or_else(past_end);
    let method = field16(10)?;
    let crc32 = field32(16)?;
    let mut compressed_size = u64::from(field32(20)?);
    let mut size = u64::from(field32(24)?);
    let name_len = usize::from(field16(28)?);
    let extra_len = usize::from(field16(30)?);
    let comment_len = usize::from(field16(32)?);
    let mut local_header = u64::from(field32(42)?);
    let name_start = pos + CENTRAL_HEADER_LEN;
    let extra_start = name_start + name_len;
    let next = extra_start + extra_len + comment_len;
    if next > cd.len() {
        return Err(past_end());
    }
    let name = crate::pickle::text::utf8_lossy(&cd[name_start..extra_start]);
    // zip64 extended information: present fields follow the order uncompressed size,
    // compressed size, local header offset, each only when the 32-bit field is saturated.
    let mut extra = &cd[extra_start..extra_start + extra_len];
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let body = extra.get(4..4 + len).ok_or_else(|| {
            Error::format(format!(
                "zip archive: bad extra field in the header of '{name}'"
            ))
        })?;
        if id == 1 {
            let mut fields = body.chunks_exact(8).map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            });
            let missing = || Error::format(format!("zip archive: short zip64 field for '{name}'"));
            if size == 0xFFFF_FFFF {
                size = fields.next().ok_or_else(missing)?;
            }
            if compressed_size == 0xFFFF_FFFF {
                compressed_size = fields.next().ok_or_else(missing)?;
            }
            if local_header == 0xFFFF_FFFF {
                local_header = fields.next().ok_or_else(missing)?;
            }
        }
        extra = &extra[4 + len..];
    }
    Ok((
        Record {
            name,
            method,
            crc32,
            compressed_size,
            size,
            local_header,
        },
        next,
    ))
}

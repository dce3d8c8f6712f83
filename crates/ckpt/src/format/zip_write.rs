//! Writing zip archives exactly as torch's writer (miniz) lays them out: STORED records,
//! 64-byte aligned data through an `FB` padding field, data descriptors, zip64 when needed
//! (the layout is described in `docs/formats.md#torch-zip-layout`).
//!
//! The writer streams: it only tracks the current offset, writes each record's bytes
//! straight to the output and nothing is patched afterwards. torch's offset-calculation
//! loader (`mmap=True` + `calculate_storage_offsets`) relies on this exact layout.

use std::io::Write;

use crate::error::{Error, Result};
use crate::format::zip_signatures::{
    CENTRAL_SIG, DATA_DESCRIPTOR_SIG, EOCD_SIG, LOCAL_SIG, ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG,
};

/// Sizes and offsets at or above this need zip64 fields (miniz compares with `>=`).
const ZIP64_LIMIT: u64 = 0xFFFF_FFFF;
/// "data descriptor follows" + "UTF-8 name".
const FLAGS_WITH_DESCRIPTOR: u16 = 0x0808;
const FLAGS_UTF8: u16 = 0x0800;
/// Largest alignment whose padding still fits the u16 extra length next to a zip64 field.
pub(crate) const MAX_ALIGNMENT: u64 = 65_504;

/// One finished record, for the central directory. Its name is asked for again when the
/// directory is written (archives may hold 100,000s of records whose names the caller can
/// regenerate): only its length is kept, as a check.
struct Entry {
    local_offset: u64,
    size: u64,
    crc32: u32,
    name_len: u16,
}

/// The record being written, between [`ZipWriter::begin`] and [`ZipWriter::end`].
struct OpenRecord {
    local_offset: u64,
    size: u64,
    name_len: u16,
    zip64: Zip64,
    written: u64,
    hasher: crc32fast::Hasher,
}

/// A streaming writer of miniz-identical zip archives.
pub(crate) struct ZipWriter<'w> {
    out: &'w mut dyn Write,
    offset: u64,
    alignment: u64,
    crc32: bool,
    entries: Vec<Entry>,
    open: Option<OpenRecord>,
    /// The open record's name, for errors (reused).
    open_name: String,
    /// Reused for every header and descriptor (archives may hold 100,000s of records).
    scratch: Vec<u8>,
}

/// The local header's zip64 decisions for a record of `size` bytes whose header starts at
/// `offset` (miniz: sizes if the size needs 64 bits, the offset if it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Zip64 {
    pub sizes: bool,
    pub offset: bool,
}

impl Zip64 {
    pub(crate) fn for_record(offset: u64, size: u64) -> Zip64 {
        Zip64 {
            sizes: size >= ZIP64_LIMIT,
            offset: offset >= ZIP64_LIMIT,
        }
    }

    fn any(self) -> bool {
        self.sizes || self.offset
    }

    /// Length of the zip64 extra field, header included (0 when absent).
    fn extra_len(self) -> u64 {
        if !self.any() {
            return 0;
        }
        4 + if self.sizes { 16 } else { 0 } + if self.offset { 8 } else { 0 }
    }
}

/// Bytes of `'Z'` padding in the `FB` field so that the data of a record whose local header
/// starts at `offset` lands on a multiple of `alignment` (torch's `getPadding`).
pub(crate) fn fb_padding(offset: u64, name_len: u64, size: u64, alignment: u64) -> u64 {
    let start = offset + 30 + name_len + 4 + Zip64::for_record(offset, size).extra_len();
    (alignment - start % alignment) % alignment
}

impl<'w> ZipWriter<'w> {
    /// A writer at the start of `out`. `alignment` must be in `1..=65504`.
    pub(crate) fn new(out: &'w mut dyn Write, alignment: u64, crc32: bool) -> Result<Self> {
        Self::starting_at(out, 0, alignment, crc32)
    }

    /// A writer whose first byte is at `offset` of the archive (the caller wrote the bytes
    /// before it).
    pub(crate) fn starting_at(
        out: &'w mut dyn Write,
        offset: u64,
        alignment: u64,
        crc32: bool,
    ) -> Result<Self> {
        if !(1..=MAX_ALIGNMENT).contains(&alignment) {
            return Err(Error::invalid(format!(
                "storage alignment {alignment} is out of range (1 to {MAX_ALIGNMENT})"
            )));
        }
        Ok(ZipWriter {
            out,
            offset,
            alignment,
            crc32,
            entries: Vec::new(),
            open: None,
            open_name: String::new(),
            scratch: Vec::with_capacity(256),
        })
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(write_error)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes the scratch buffer (a header or descriptor built in it).
    fn emit_scratch(&mut self) -> Result<()> {
        let scratch = std::mem::take(&mut self.scratch);
        let result = self.emit(&scratch);
        self.scratch = scratch;
        result
    }

    /// Adds a record holding `data`.
    pub(crate) fn add(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.add_chunks(name, data.len() as u64, std::iter::once(data))
    }

    /// Adds a record of `size` bytes given as consecutive chunks (checked to add up).
    pub(crate) fn add_chunks<'d>(
        &mut self,
        name: &str,
        size: u64,
        chunks: impl IntoIterator<Item = &'d [u8]>,
    ) -> Result<()> {
        self.begin(name, size)?;
        for chunk in chunks {
            self.data(chunk)?;
        }
        self.end()
    }

    /// Starts a record of `size` bytes: its local header. The bytes follow by
    /// [`ZipWriter::data`], then [`ZipWriter::end`].
    pub(crate) fn begin(&mut self, name: &str, size: u64) -> Result<()> {
        if self.open.is_some() {
            return Err(Error::invalid(format!(
                "zip record {name} started before record {} ended",
                self.open_name
            )));
        }
        let local_offset = self.offset;
        let name_len = u16::try_from(name.len())
            .map_err(|_| Error::invalid(format!("zip record name too long: {name}")))?;
        let zip64 = Zip64::for_record(local_offset, size);
        let padding = fb_padding(local_offset, name.len() as u64, size, self.alignment);
        let extra_len = u16::try_from(zip64.extra_len() + 4 + padding)
            .map_err(|_| Error::invalid("zip extra field too long"))?;
        let flags = if size > 0 {
            FLAGS_WITH_DESCRIPTOR
        } else {
            FLAGS_UTF8
        };

        let mut header = std::mem::take(&mut self.scratch);
        header.clear();
        header.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // version needed
        header.extend_from_slice(&flags.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // STORED
        header.extend_from_slice(&0u32.to_le_bytes()); // DOS time + date
        header.extend_from_slice(&[0; 12]); // crc32 and sizes: in the descriptor
        header.extend_from_slice(&name_len.to_le_bytes());
        header.extend_from_slice(&extra_len.to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        if zip64.any() {
            header.extend_from_slice(&1u16.to_le_bytes());
            header.extend_from_slice(&((zip64.extra_len() - 4) as u16).to_le_bytes());
            if zip64.sizes {
                // miniz: the real uncompressed size, 0 for the not-yet-known compressed size.
                header.extend_from_slice(&size.to_le_bytes());
                header.extend_from_slice(&0u64.to_le_bytes());
            }
            if zip64.offset {
                header.extend_from_slice(&local_offset.to_le_bytes());
            }
        }
        header.extend_from_slice(b"FB");
        header.extend_from_slice(&(padding as u16).to_le_bytes());
        header.resize(header.len() + padding as usize, b'Z');
        self.scratch = header;
        self.emit_scratch()?;
        debug_assert_eq!(self.offset % self.alignment, 0);

        self.open_name.clear();
        self.open_name.push_str(name);
        self.open = Some(OpenRecord {
            local_offset,
            size,
            name_len,
            zip64,
            written: 0,
            hasher: crc32fast::Hasher::new(),
        });
        Ok(())
    }

    /// Writes bytes of the open record.
    pub(crate) fn data(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Err(Error::invalid("zip record data written outside a record"));
        };
        if self.crc32 {
            open.hasher.update(chunk);
        }
        open.written += chunk.len() as u64;
        self.emit(chunk)
    }

    /// Ends the open record: checks its size and writes its data descriptor.
    pub(crate) fn end(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Err(Error::invalid("zip record ended before it started"));
        };
        if open.written != open.size {
            return Err(Error::invalid(format!(
                "zip record {}: announced {} bytes, got {}",
                self.open_name, open.size, open.written
            )));
        }
        let size = open.size;
        let crc32 = if self.crc32 {
            open.hasher.finalize()
        } else {
            0
        };
        if size > 0 {
            let mut descriptor = std::mem::take(&mut self.scratch);
            descriptor.clear();
            descriptor.extend_from_slice(&DATA_DESCRIPTOR_SIG.to_le_bytes());
            descriptor.extend_from_slice(&crc32.to_le_bytes());
            if open.zip64.any() {
                descriptor.extend_from_slice(&size.to_le_bytes());
                descriptor.extend_from_slice(&size.to_le_bytes());
            } else {
                descriptor.extend_from_slice(&(size as u32).to_le_bytes());
                descriptor.extend_from_slice(&(size as u32).to_le_bytes());
            }
            self.scratch = descriptor;
            self.emit_scratch()?;
        }
        self.entries.push(Entry {
            local_offset: open.local_offset,
            size,
            crc32,
            name_len: open.name_len,
        });
        Ok(())
    }

    /// The central directory and the end records (zip64 end record and locator always, as
    /// torch's writer). `name_of(i, name)` puts the name of the `i`-th record (from 0) in
    /// `name`. Returns the total archive length.
    pub(crate) fn finish(mut self, name_of: &mut dyn FnMut(usize, &mut String)) -> Result<u64> {
        if self.open.is_some() {
            return Err(Error::invalid(format!(
                "zip archive finished before record {} ended",
                self.open_name
            )));
        }
        let cd_offset = self.offset;
        let entries = std::mem::take(&mut self.entries);
        let mut record = Vec::new();
        let mut name = String::new();
        for (i, entry) in entries.iter().enumerate() {
            name.clear();
            name_of(i, &mut name);
            if name.len() != usize::from(entry.name_len) {
                return Err(Error::invalid(format!(
                    "zip record {i} was named with {} bytes, now {name:?}",
                    entry.name_len
                )));
            }
            record.clear();
            let zip64 = Zip64::for_record(entry.local_offset, entry.size);
            let extra_len = if zip64.any() { zip64.extra_len() } else { 0 } as u16;
            let flags = if entry.size > 0 {
                FLAGS_WITH_DESCRIPTOR
            } else {
                FLAGS_UTF8
            };
            let size32 = entry.size.min(ZIP64_LIMIT) as u32;
            record.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            record.extend_from_slice(&0u16.to_le_bytes()); // version made by
            record.extend_from_slice(&0u16.to_le_bytes()); // version needed
            record.extend_from_slice(&flags.to_le_bytes());
            record.extend_from_slice(&0u16.to_le_bytes()); // STORED
            record.extend_from_slice(&0u32.to_le_bytes()); // DOS time + date
            record.extend_from_slice(&entry.crc32.to_le_bytes());
            record.extend_from_slice(&size32.to_le_bytes());
            record.extend_from_slice(&size32.to_le_bytes());
            record.extend_from_slice(&entry.name_len.to_le_bytes());
            record.extend_from_slice(&extra_len.to_le_bytes());
            record.extend_from_slice(&0u16.to_le_bytes()); // comment length
            record.extend_from_slice(&0u16.to_le_bytes()); // disk
            record.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            record.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            record.extend_from_slice(&(entry.local_offset.min(ZIP64_LIMIT) as u32).to_le_bytes());
            record.extend_from_slice(name.as_bytes());
            if zip64.any() {
                record.extend_from_slice(&1u16.to_le_bytes());
                record.extend_from_slice(&(extra_len - 4).to_le_bytes());
                if zip64.sizes {
                    record.extend_from_slice(&entry.size.to_le_bytes());
                    record.extend_from_slice(&entry.size.to_le_bytes());
                }
                if zip64.offset {
                    record.extend_from_slice(&entry.local_offset.to_le_bytes());
                }
            }
            self.emit(&record)?;
        }
        let cd_size = self.offset - cd_offset;
        let count = entries.len() as u64;

        let zip64_eocd_offset = self.offset;
        record.clear();
        record.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        record.extend_from_slice(&44u64.to_le_bytes());
        record.extend_from_slice(&0x031Eu16.to_le_bytes()); // made by: unix, 3.0
        record.extend_from_slice(&0x002Du16.to_le_bytes()); // needed: 4.5 (zip64)
        record.extend_from_slice(&0u32.to_le_bytes()); // this disk
        record.extend_from_slice(&0u32.to_le_bytes()); // disk of the central directory
        record.extend_from_slice(&count.to_le_bytes());
        record.extend_from_slice(&count.to_le_bytes());
        record.extend_from_slice(&cd_size.to_le_bytes());
        record.extend_from_slice(&cd_offset.to_le_bytes());
        record.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&zip64_eocd_offset.to_le_bytes());
        record.extend_from_slice(&1u32.to_le_bytes());
        let count16 = count.min(0xFFFF) as u16;
        record.extend_from_slice(&EOCD_SIG.to_le_bytes());
        record.extend_from_slice(&0u16.to_le_bytes());
        record.extend_from_slice(&0u16.to_le_bytes());
        record.extend_from_slice(&count16.to_le_bytes());
        record.extend_from_slice(&count16.to_le_bytes());
        record.extend_from_slice(&(cd_size.min(ZIP64_LIMIT) as u32).to_le_bytes());
        record.extend_from_slice(&(cd_offset.min(ZIP64_LIMIT) as u32).to_le_bytes());
        record.extend_from_slice(&0u16.to_le_bytes()); // comment length
        self.emit(&record)?;
        self.out.flush().map_err(write_error)?;
        Ok(self.offset)
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::io_unnamed(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts bytes and keeps only the small writes (headers, descriptors, directory), so
    /// archives past 4 GiB can be laid out without storing them.
    #[derive(Default)]
    struct Recorder {
        offset: u64,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() <= 4096 {
                self.writes.push((self.offset, buf.to_vec()));
            }
            self.offset += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn at(&self, offset: u64) -> &[u8] {
            &self
                .writes
                .iter()
                .find(|(o, _)| *o == offset)
                .unwrap_or_else(|| panic!("no write at {offset:#x}"))
                .1
        }
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(b[i..i + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
    }

    const BIG: u64 = 0x1_0000_0010;

    /// The layout torch 2.15 wrote for a 4 GiB+ storage followed by a small one (zip64 fields
    /// in the local and central headers, a 24-byte descriptor after the big record).
    #[test]
    fn records_past_4_gib_get_zip64_fields_exactly_as_miniz() {
        let mut sink = Recorder::default();
        let zeros = vec![0u8; 1 << 20];
        {
            let mut zip = ZipWriter::starting_at(&mut sink, 0x39c, 64, false).unwrap();
            let chunks = (0..BIG.div_ceil(zeros.len() as u64)).map(|i| {
                let left = BIG - i * zeros.len() as u64;
                &zeros[..left.min(zeros.len() as u64) as usize]
            });
            zip.add_chunks("big/data/1", BIG, chunks).unwrap();
            zip.add("big/data/2", &[7u8; 0x20]).unwrap();
            zip.finish(&mut |i, name| name.push_str(["big/data/1", "big/data/2"][i]))
                .unwrap();
        }
        // The writer starts at 0x39c of a sink that has seen nothing: shift by that.
        let base = 0x39c;
        let at = |offset: u64| sink.at(offset - base).to_vec();

        // data/1: zip64 (uncompressed size, compressed 0) then FB padding of 36; data at 0x400.
        let lh1 = at(0x39c);
        assert_eq!(u16_at(&lh1, 6), 0x0808);
        assert_eq!(u32_at(&lh1, 18), 0);
        assert_eq!(u32_at(&lh1, 22), 0);
        let extra = &lh1[30 + 10..];
        assert_eq!(u16_at(extra, 0), 1);
        assert_eq!(u16_at(extra, 2), 16);
        assert_eq!(u64_at(extra, 4), BIG);
        assert_eq!(u64_at(extra, 12), 0);
        assert_eq!(&extra[20..22], b"FB");
        assert_eq!(u16_at(extra, 22), 36);
        assert_eq!(0x39c + lh1.len() as u64, 0x400);

        // 24-byte descriptor with u64 sizes right after the data.
        let dd1 = at(0x400 + BIG);
        assert_eq!(dd1.len(), 24);
        assert_eq!(u32_at(&dd1, 0), DATA_DESCRIPTOR_SIG);
        assert_eq!(u64_at(&dd1, 8), BIG);
        assert_eq!(u64_at(&dd1, 16), BIG);

        // data/2 starts past 4 GiB: zip64 field with only the header offset, FB of 32.
        let lh2_offset = 0x400 + BIG + 24;
        assert_eq!(lh2_offset, 0x1_0000_0428);
        let lh2 = at(lh2_offset);
        let extra = &lh2[30 + 10..];
        assert_eq!(u16_at(extra, 0), 1);
        assert_eq!(u16_at(extra, 2), 8);
        assert_eq!(u64_at(extra, 4), lh2_offset);
        assert_eq!(u16_at(extra, 14), 32);
        assert_eq!(lh2_offset + lh2.len() as u64, 0x1_0000_0480);
        let dd2 = at(0x1_0000_0480 + 0x20);
        assert_eq!(
            dd2.len(),
            24,
            "zip64 local header means a 64-bit descriptor"
        );

        // Central directory: saturated 32-bit fields, real values in the zip64 extra.
        let cd_offset = 0x1_0000_0480 + 0x20 + 24;
        let cd1 = at(cd_offset);
        assert_eq!(u32_at(&cd1, 0), CENTRAL_SIG);
        assert_eq!(u32_at(&cd1, 20), 0xFFFF_FFFF);
        assert_eq!(u32_at(&cd1, 24), 0xFFFF_FFFF);
        assert_eq!(u32_at(&cd1, 42), 0x39c);
        assert_eq!(&cd1[46 + 10..], {
            let mut e = vec![1, 0, 16, 0];
            e.extend_from_slice(&BIG.to_le_bytes());
            e.extend_from_slice(&BIG.to_le_bytes());
            e
        });
        let cd2 = at(cd_offset + cd1.len() as u64);
        assert_eq!(u32_at(&cd2, 20), 0x20);
        assert_eq!(u32_at(&cd2, 42), 0xFFFF_FFFF);
        assert_eq!(&cd2[46 + 10..], {
            let mut e = vec![1, 0, 8, 0];
            e.extend_from_slice(&lh2_offset.to_le_bytes());
            e
        });

        // End records: zip64 ones hold the real offset; the classic one saturates.
        let end = at(cd_offset + (cd1.len() + cd2.len()) as u64);
        assert_eq!(u32_at(&end, 0), ZIP64_EOCD_SIG);
        assert_eq!(u64_at(&end, 24), 2);
        assert_eq!(u64_at(&end, 48), cd_offset);
        let eocd = &end[56 + 20..];
        assert_eq!(u32_at(eocd, 0), EOCD_SIG);
        assert_eq!(u32_at(eocd, 16), 0xFFFF_FFFF);
    }

    #[test]
    fn empty_records_have_no_descriptor_and_padding_may_be_zero() {
        let mut out = Vec::new();
        let mut zip = ZipWriter::new(&mut out, 64, true).unwrap();
        zip.add("a/data/0", &[]).unwrap();
        zip.finish(&mut |_, name| name.push_str("a/data/0"))
            .unwrap();
        // 30 + 8 + 4 = 42 -> 22 bytes of padding; data (none) at 64, central header next.
        assert_eq!(u16_at(&out, 6), 0x0800);
        assert_eq!(u16_at(&out, 28), 4 + 22);
        assert_eq!(u32_at(&out, 64), CENTRAL_SIG);
        assert_eq!(fb_padding(0, 30, 5, 64), 0);
    }

    #[test]
    fn records_written_in_pieces_match_whole_ones_and_names_are_checked() {
        let mut whole = Vec::new();
        let mut zip = ZipWriter::new(&mut whole, 64, true).unwrap();
        zip.add("a/data.pkl", b"hello world").unwrap();
        zip.finish(&mut |_, name| name.push_str("a/data.pkl"))
            .unwrap();

        let mut pieces = Vec::new();
        let mut zip = ZipWriter::new(&mut pieces, 64, true).unwrap();
        zip.begin("a/data.pkl", 11).unwrap();
        zip.data(b"hello").unwrap();
        zip.data(b" world").unwrap();
        zip.end().unwrap();
        zip.finish(&mut |_, name| name.push_str("a/data.pkl"))
            .unwrap();
        assert_eq!(pieces, whole);

        let mut out = Vec::new();
        let mut zip = ZipWriter::new(&mut out, 64, true).unwrap();
        zip.begin("a/data.pkl", 11).unwrap();
        zip.data(b"hello").unwrap();
        assert!(zip
            .end()
            .unwrap_err()
            .to_string()
            .contains("announced 11 bytes, got 5"));
        zip.add("a/x", b"x").unwrap();
        let err = zip
            .finish(&mut |_, name| name.push_str("a/xy"))
            .unwrap_err();
        assert!(err.to_string().contains("a/xy"), "{err}");
    }

    #[test]
    fn out_of_range_alignment_is_rejected() {
        let mut out = Vec::new();
        let err = ZipWriter::new(&mut out, 0, true).err().unwrap();
        assert!(matches!(err.root(), Error::Invalid { .. }), "{err:?}");
        let err = ZipWriter::new(&mut out, MAX_ALIGNMENT + 1, true)
            .err()
            .unwrap();
        assert!(matches!(err.root(), Error::Invalid { .. }), "{err:?}");
    }
}

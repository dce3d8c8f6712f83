//! Where each storage record's data begins: found in the record's local zip header, which
//! is the one part of a record the central directory does not describe.
//!
//! Reading a local header from a memory map costs a page fault per page of the file (about
//! 0.5 µs per page here). For archives of many small records, a second thread reads the
//! headers in storage order, ahead of the pickle reader, which asks for them in that order
//! and reads any the thread has not reached yet itself; for archives of few large records,
//! headers are read with `pread` (no pages mapped at all).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::zip::{ZipIndex, LOCAL_HEADER_LEN};

/// Fewest records for which a second thread pays off (spawning one costs ~50 µs).
const PARALLEL_RECORDS: usize = 2048;

/// Mean bytes per record from which `pread` beats a page fault: the kernel maps up to
/// 64 KiB around a faulting address, so denser records share their faults.
const PREAD_SPACING: u64 = 64 << 10;

/// The data offsets of an archive's records, resolved once each, by either thread.
pub(crate) struct DataOffsets<'a> {
    index: &'a ZipIndex,
    bytes: &'a [u8],
    /// Set when headers are better read with `pread` than through the map.
    file: Option<&'a File>,
    /// Whether a second thread should read headers ahead (many records, read through a map).
    read_ahead: bool,
    /// Data offset + 1 of each record position; 0 while unknown.
    starts: Vec<AtomicU64>,
    stop: AtomicBool,
}

impl<'a> DataOffsets<'a> {
    /// `file` is the file `bytes` maps, when it is a map (`None` for bytes in memory).
    /// `keep_pages_out`: read every header with `pread`, so that the map's pages stay out of
    /// the process (a value read to be copied elsewhere, whose pages the writer releases as
    /// it goes: headers read through the map would bring in the whole file when records are
    /// small).
    pub fn new(
        index: &'a ZipIndex,
        bytes: &'a [u8],
        file: Option<&'a File>,
        keep_pages_out: bool,
    ) -> DataOffsets<'a> {
        let records = index.records().len() as u64;
        let sparse = records > 0 && bytes.len() as u64 / records >= PREAD_SPACING;
        DataOffsets {
            index,
            bytes,
            file: file.filter(|_| sparse || keep_pages_out),
            read_ahead: file.is_some() && !sparse && records >= PARALLEL_RECORDS as u64,
            starts: (0..records).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
        }
    }

    /// Whether reading ahead on a second thread would pay: many records, read through a map.
    pub fn worth_a_thread(&self) -> bool {
        self.read_ahead
    }

    /// The data offset of the record at `position` (in [`ZipIndex::records`]).
    pub fn start(&self, position: usize) -> Result<usize> {
        let slot = self
            .starts
            .get(position)
            .ok_or_else(|| Error::format(format!("zip archive: no record {position}")))?;
        match slot.load(Ordering::Relaxed) {
            0 => {
                let start = self.resolve(position)?;
                slot.store(start as u64 + 1, Ordering::Relaxed);
                Ok(start)
            }
            known => Ok((known - 1) as usize),
        }
    }

    /// Resolves the records at `positions` in order, skipping those already known (the
    /// reader got there first), until told to stop. Errors are left for the reader's own
    /// lookup to report.
    pub fn read_ahead(&self, positions: impl Iterator<Item = usize>) {
        for position in positions {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(slot) = self.starts.get(position) else {
                continue;
            };
            if slot.load(Ordering::Relaxed) != 0 {
                // The reader caught up here: go on past it.
                continue;
            }
            if let Ok(start) = self.resolve(position) {
                slot.store(start as u64 + 1, Ordering::Relaxed);
            }
        }
    }

    /// Tells [`DataOffsets::read_ahead`] to stop.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn resolve(&self, position: usize) -> Result<usize> {
        let record = self
            .index
            .records()
            .get(position)
            .ok_or_else(|| Error::format(format!("zip archive: no record {position}")))?;
        let Some(file) = self.file else {
            return Ok(self.index.stored_range(self.bytes, record)?.start);
        };
        let mut header = [0u8; LOCAL_HEADER_LEN];
        // A failed read falls back to the map, which reports what is wrong.
        if file
            .read_exact_at(&mut header, record.local_header())
            .is_err()
        {
            return Ok(self.index.stored_range(self.bytes, record)?.start);
        }
        self.index
            .stored_range_from_header(self.bytes.len(), record, &header)
            .map(|range| range.start)
    }
}

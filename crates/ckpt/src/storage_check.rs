//! The crc32 a storage's bytes must have (its zip record's), checked once: by the first copy
//! of all of them out of the file, which hashes each piece as it lands (one pass over the
//! bytes instead of a pass to check and another to copy), or by
//! [`Storage::verify_checksum`](crate::Storage::verify_checksum) before any other use.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The piece copied then hashed at a time: small enough to be hashed while it is still in
/// the core's cache, large enough that the copy reads the file ([`crate::tensor`]'s
/// `MIN_FILE_READ`) rather than faulting in the map.
pub(crate) const CHUNK: usize = 256 << 10;

/// A checksum to check, and what was found once checked.
#[derive(Debug)]
pub(crate) struct CrcCheck {
    /// The record's name in the archive, for the error.
    record: String,
    /// The crc32 of the archive's directory.
    expected: u32,
    /// The crc32 of the bytes, once computed (by whichever copy came first).
    found: OnceLock<u32>,
}

impl CrcCheck {
    /// The bytes of `record` must hash to `expected`.
    pub(crate) fn new(record: String, expected: u32) -> CrcCheck {
        CrcCheck {
            record,
            expected,
            found: OnceLock::new(),
        }
    }

    /// The crc32 found, once computed.
    pub(crate) fn outcome(&self) -> Option<u32> {
        self.found.get().copied()
    }

    /// Keeps `found` as the bytes' crc32 and says whether it matches.
    pub(crate) fn record(&self, found: u32) -> Result<()> {
        // Two copies of one storage may race: both hashed the same bytes.
        let found = *self.found.get_or_init(|| found);
        self.result(found)
    }

    /// Whether `found` matches.
    pub(crate) fn result(&self, found: u32) -> Result<()> {
        if found == self.expected {
            return Ok(());
        }
        Err(Error::Checksum {
            record: self.record.clone(),
            expected: self.expected,
            found,
        })
    }
}

//! The four-byte signatures that open each kind of zip record (PKWARE's APPNOTE, section
//! 4.3), declared once for the archive reader, the writer and format detection. Each is
//! `PK` followed by two bytes, read and written as a little-endian `u32`.

/// A local file header: the start of every record, and so of every torch archive.
pub(crate) const LOCAL_SIG: u32 = 0x0403_4b50;
/// The data descriptor that follows a record whose sizes were not known in its header.
pub(crate) const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// A central directory header: one per record, after all the records.
pub(crate) const CENTRAL_SIG: u32 = 0x0201_4b50;
/// The zip64 end of central directory record.
pub(crate) const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
/// The zip64 end of central directory locator, just before the end record.
pub(crate) const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// The end of central directory record, the last record of the archive.
pub(crate) const EOCD_SIG: u32 = 0x0605_4b50;

//! Reading zip archives: the central directory is parsed once into an index of records
//! (name, data offset, size, method, crc32), checked against the file size.

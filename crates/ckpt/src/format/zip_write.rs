//! Writing zip archives exactly as torch's writer (miniz) lays them out: STORED records,
//! 64-byte aligned data through an `FB` padding field, data descriptors, zip64 when needed.

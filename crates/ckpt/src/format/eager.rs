//! Reading a whole file into one heap buffer, fast.
//!
//! Reading into fresh memory costs less in copying than in the kernel providing the new
//! pages (a fault and a zeroed page per 4 KiB). Large files are therefore read by a few
//! threads at once, each `pread`ing its own part of the file into its own part of the
//! buffer, so that this work proceeds on every core.

use std::fs::File;
use std::io;

/// Parts smaller than this are not worth a thread.
const MIN_PART: usize = 64 << 20;
/// More threads than this gain nothing on a page-cache read.
const MAX_THREADS: usize = 4;

/// The whole content of `file` (from offset 0; its length is read once, at the start).
pub(crate) fn read_whole_file(file: &File) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
    // Zeroed by the allocator for free: a large zeroed allocation is fresh zero pages.
    let mut bytes = vec![0u8; len];
    read_parts(file, &mut bytes, MIN_PART)?;
    Ok(bytes)
}

#[cfg(unix)]
fn read_parts(file: &File, bytes: &mut [u8], min_part: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(MAX_THREADS)
        .min(bytes.len() / min_part.max(1))
        .max(1);
    if threads == 1 {
        return file.read_exact_at(bytes, 0);
    }
    let part = bytes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = bytes.chunks_mut(part).enumerate();
        let first = parts.next();
        let others: Vec<_> = parts
            .map(|(i, chunk)| scope.spawn(move || file.read_exact_at(chunk, (i * part) as u64)))
            .collect();
        let mut result = match first {
            Some((_, chunk)) => file.read_exact_at(chunk, 0),
            None => Ok(()),
        };
        for handle in others {
            let joined = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reading thread panicked")));
            result = result.and(joined);
        }
        result
    })
}

#[cfg(not(unix))]
fn read_parts(file: &File, bytes: &mut [u8], _min_part: usize) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_read_in_parts_by_several_threads_reads_back_exactly() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..100_003).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let mut bytes = vec![0u8; content.len()];
        read_parts(&file, &mut bytes, 4096).unwrap();
        assert_eq!(bytes, content);
    }

    #[test]
    fn a_file_shorter_than_expected_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[1u8; 10_000]).unwrap();
        let mut bytes = vec![0u8; 20_000];
        assert!(read_parts(&file, &mut bytes, 4096).is_err());
    }

    #[test]
    fn empty_and_small_files_read_back_exactly() {
        let mut file = tempfile::tempfile().unwrap();
        assert!(read_whole_file(&file).unwrap().is_empty());
        file.write_all(b"PK\x03\x04 small").unwrap();
        assert_eq!(read_whole_file(&file).unwrap(), b"PK\x03\x04 small");
    }
}

//! Reading a whole file into memory the process owns, fast.
//!
//! Reading into fresh memory costs less in copying than in the kernel providing the new
//! pages (a fault and a zeroed page per 4 KiB). Large files are therefore read by a few
//! threads at once, each `pread`ing its own part of the file into its own part of the
//! buffer, so that this work proceeds on every core.
//!
//! On Linux, large files go to an anonymous mapping that asks for transparent huge pages
//! and is populated before the reads (`MADV_POPULATE_WRITE`): one 2 MiB page replaces 512
//! faults, which makes a 1 GiB read several times faster. Huge pages can stall, though
//! (direct compaction; a hypervisor re-providing memory it had reclaimed), so each thread
//! times its populating and returns to 4 KiB pages for the rest of its part as soon as huge
//! pages come slower than small ones would. Every step is optional: when a call fails (no
//! THP, a kernel before 5.14) the reads fault pages in as they would anyway.

use std::fs::File;
use std::io;

use crate::tensor::Buffer;

/// Parts smaller than this are not worth a thread.
const MIN_PART: usize = 64 << 20;
/// More threads than this gain nothing on a page-cache read.
const MAX_THREADS: usize = 4;

/// The whole content of `file` (from offset 0; its length is read once, at the start).
pub(crate) fn read_whole_file(file: &File) -> io::Result<Buffer> {
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
    #[cfg(target_os = "linux")]
    if len >= huge::MIN_LEN {
        return huge::read(file, len);
    }
    Ok(Buffer::Heap(read_to_vec(file, len)?))
}

fn read_to_vec(file: &File, len: usize) -> io::Result<Vec<u8>> {
    // Zeroed by the allocator for free: a large zeroed allocation is fresh zero pages.
    let mut bytes = vec![0u8; len];
    read_parts(file, &mut bytes, MIN_PART)?;
    Ok(bytes)
}

/// How many threads share `len` bytes of work.
#[cfg(unix)]
fn thread_count(len: usize, min_part: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_THREADS).min(len / min_part.max(1)).max(1)
}

#[cfg(target_os = "linux")]
mod huge {
    use std::fs::File;
    use std::io;
    use std::time::Duration;

    use memmap2::{Advice, MmapMut};

    use super::{read_parts, thread_count, MIN_PART};
    use crate::fresh::{huge_pages_welcome, populate, SLACK, SMALL_PAGES_PER_MIB};
    use crate::tensor::{AnonMemory, Buffer};

    /// Smaller files are read into a `Vec`: a mapping of their own gains nothing.
    pub(super) const MIN_LEN: usize = 16 << 20;
    const HUGE_PAGE: usize = 2 << 20;

    pub(super) fn read(file: &File, len: usize) -> io::Result<Buffer> {
        // Whole huge pages: the kernel aligns such a mapping to them, so none is lost at
        // its start, and the partial one at the end is at most 2 MiB more than the file.
        let mut map = MmapMut::map_anon(len.div_ceil(HUGE_PAGE) * HUGE_PAGE)?;
        let huge = huge_pages_welcome() && map.advise(Advice::HugePage).is_ok();
        provision(&map, len, huge, SMALL_PAGES_PER_MIB, SLACK);
        read_parts(file, &mut map[..len], MIN_PART)?;
        Ok(Buffer::Anon(AnonMemory::new(map, len)))
    }

    /// Populates the first `len` bytes of `map`, a part per thread.
    pub(super) fn provision(
        map: &MmapMut,
        len: usize,
        huge: bool,
        per_mib: Duration,
        slack: Duration,
    ) {
        let threads = thread_count(len, MIN_PART);
        let part = len.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for start in (part..len).step_by(part) {
                let end = (start + part).min(len);
                scope.spawn(move || populate(map, start..end, huge, per_mib, slack));
            }
            populate(map, 0..part.min(len), huge, per_mib, slack);
        });
    }
}

#[cfg(unix)]
fn read_parts(file: &File, bytes: &mut [u8], min_part: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let threads = thread_count(bytes.len(), min_part);
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
        let err = read_parts(&file, &mut bytes, 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
    }

    #[test]
    fn empty_and_small_files_read_back_exactly() {
        let mut file = tempfile::tempfile().unwrap();
        assert!(read_whole_file(&file).unwrap().as_bytes().is_empty());
        file.write_all(b"PK\x03\x04 small").unwrap();
        assert_eq!(
            read_whole_file(&file).unwrap().as_bytes(),
            b"PK\x03\x04 small"
        );
    }

    fn patterned_file(len: usize) -> (File, Vec<u8>) {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        (file, content)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_file_is_read_into_owned_anonymous_memory_exactly() {
        // Not a multiple of the huge page size: the rounded-up tail must not show.
        let (file, content) = patterned_file(huge::MIN_LEN + 4096 * 3 + 17);
        let buffer = read_whole_file(&file).unwrap();
        assert!(matches!(buffer, Buffer::Anon(_)));
        assert!(!buffer.is_mapped());
        assert_eq!(buffer.as_bytes(), &content[..]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn populating_gives_up_huge_pages_past_its_time_budget_and_stays_correct() {
        use std::time::Duration;
        let len = 40 << 20;
        let map = memmap2::MmapMut::map_anon(len).unwrap();
        // No time allowed at all: the first chunk already exceeds the budget.
        assert!(!crate::fresh::populate(
            &map,
            0..len,
            true,
            Duration::ZERO,
            Duration::ZERO
        ));
        // A generous budget keeps them (whether the kernel grants them is its business).
        assert!(crate::fresh::populate(
            &map,
            0..len,
            true,
            Duration::from_secs(60),
            Duration::from_secs(60)
        ));
        assert!(map.iter().all(|&b| b == 0));
        let (file, content) = patterned_file(len - 5);
        let mut map = memmap2::MmapMut::map_anon(len).unwrap();
        huge::provision(&map, len - 5, true, Duration::ZERO, Duration::ZERO);
        read_parts(&file, &mut map[..len - 5], 4 << 20).unwrap();
        assert_eq!(&map[..len - 5], &content[..]);
    }
}

//! Fresh memory for a copy of tensor bytes (a tensor loaded into a model, a view copied out
//! of a file's buffer).
//!
//! The copy itself costs less than the kernel providing the new pages: a fault and a zeroed
//! page per 4 KiB (0.2–0.5 s per GiB on a small virtual machine, more than the copy). On
//! Linux a large copy therefore goes to an anonymous mapping of its own whose whole 2 MiB
//! blocks ask for transparent huge pages (as torch's allocator does with
//! `THP_MEM_ALLOC_ENABLE=1`), and whose pages are all provided before the copy, a chunk per
//! call (`MADV_POPULATE_WRITE`, Linux 5.14): one 2 MiB page replaces 512 faults, and frees
//! as fast. Huge pages can stall, though (direct compaction of fragmented memory; a
//! hypervisor re-providing memory it had reclaimed), so populating is timed: as soon as huge
//! pages come slower than small ones would, the rest of the allocation, and the allocations
//! of the next seconds, use small pages. Every step is optional: when a call fails (no THP, an
//! older kernel) the copy faults its pages in as it would anyway. Small copies and other
//! systems use the heap.

use crate::error::{Error, Result};
use crate::tensor::Storage;

/// Copies smaller than this go to the heap: a mapping of their own is not worth a syscall
/// (and a process may only have so many).
#[cfg(target_os = "linux")]
const MIN_MAPPED: usize = 1 << 20;

/// `len` writable bytes (zero), then a [`Storage`] owning them.
pub(crate) struct Fresh(Inner);

enum Inner {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Mapped(crate::tensor::AnonMemory),
}

impl Fresh {
    /// `len` zero bytes about to be written, or `None` when the memory cannot be had.
    pub(crate) fn zeroed(len: usize) -> Option<Fresh> {
        #[cfg(target_os = "linux")]
        if len >= MIN_MAPPED {
            if let Some(memory) = linux::mapped(len) {
                linux::provision(&memory);
                return Some(Fresh(Inner::Mapped(memory)));
            }
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).ok()?;
        bytes.resize(len, 0);
        Some(Fresh(Inner::Heap(bytes)))
    }

    /// `len` zero bytes whose pages are provided only when written (like `calloc`), for
    /// tensors that may never be written (the zeros of a model about to be loaded), or
    /// `None` when the memory cannot be had. A load into them provides the pages first
    /// ([`populate_storage`]).
    pub(crate) fn lazy_zeroed(len: usize) -> Option<Storage> {
        #[cfg(target_os = "linux")]
        if len >= MIN_MAPPED {
            if let Some(memory) = linux::mapped(len) {
                return Some(Storage::from_anon(memory));
            }
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).ok()?;
        bytes.resize(len, 0);
        Some(Storage::from_vec(bytes))
    }

    /// A copy of the `len` bytes at byte `at` of `source`, in memory of its own; a large
    /// part of a file map is read from the file ([`Storage::read_into`]).
    pub(crate) fn copy_of(source: &Storage, at: usize, len: usize) -> Result<Storage> {
        let no_memory = || Error::OutOfMemory { bytes: len as u64 };
        #[cfg(target_os = "linux")]
        if len >= MIN_MAPPED {
            if let Some(mut memory) = linux::mapped(len) {
                linux::provision(&memory);
                source.read_into(at, memory.as_bytes_mut())?;
                return Ok(Storage::from_anon(memory));
            }
        }
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|_| no_memory())?;
        out.resize(len, 0);
        source.read_into(at, &mut out)?;
        Ok(Storage::from_vec(out))
    }

    /// The bytes, to write the copy into.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Inner::Heap(bytes) => bytes,
            #[cfg(target_os = "linux")]
            Inner::Mapped(memory) => memory.as_bytes_mut(),
        }
    }

    /// The storage owning the bytes.
    pub(crate) fn into_storage(self) -> Storage {
        match self.0 {
            Inner::Heap(bytes) => Storage::from_vec(bytes),
            #[cfg(target_os = "linux")]
            Inner::Mapped(memory) => Storage::from_anon(memory),
        }
    }
}

/// Provides the pages of `storage` before a write of all its bytes, when it is anonymous
/// memory of its own (pages already there cost next to nothing).
pub(crate) fn populate_storage(storage: &mut Storage) {
    #[cfg(target_os = "linux")]
    if let Some(memory) = storage.anon_mut() {
        linux::provision(memory);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = storage;
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{huge_pages_welcome, populate, SLACK, SMALL_PAGES_PER_MIB};

#[cfg(target_os = "linux")]
mod linux {
    use std::ops::Range;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use memmap2::{Advice, MmapMut};

    use crate::tensor::AnonMemory;

    pub(super) const HUGE_PAGE: usize = 2 << 20;
    /// Populated at once between two looks at the clock.
    const CHUNK: usize = 8 << 20;
    /// What one thread spends per MiB of fresh 4 KiB pages at best (fault, zeroing,
    /// accounting; 0.25–0.5 ms on a small virtual machine): huge pages that cost more than
    /// this are stalling.
    pub(crate) const SMALL_PAGES_PER_MIB: Duration = Duration::from_micros(500);
    /// Slowness forgiven before giving up on huge pages (one slow page is no trend).
    pub(crate) const SLACK: Duration = Duration::from_millis(20);
    /// How long small pages are used after huge pages stalled: the memory that made them
    /// stall (fragmented, or reclaimed by a hypervisor) stays so for a while.
    const STALL_MEMORY: Duration = Duration::from_secs(10);

    /// An anonymous mapping for `len` bytes. Its length is rounded up to whole huge pages
    /// so that the kernel aligns it to them (Linux 6.7 and later); the rounded-up tail is
    /// never touched and costs no memory.
    pub(super) fn mapped(len: usize) -> Option<AnonMemory> {
        let map = MmapMut::map_anon(len.checked_next_multiple_of(HUGE_PAGE)?).ok()?;
        Some(AnonMemory::new(map, len))
    }

    /// Provides every page of `memory`: huge pages over its whole 2 MiB blocks while they
    /// come fast (the last, partial block gets small pages, so no memory is wasted), small
    /// pages otherwise.
    pub(super) fn provision(memory: &AnonMemory) {
        let len = memory.as_bytes().len();
        let blocks = len / HUGE_PAGE * HUGE_PAGE;
        let huge = blocks > 0
            && huge_pages_welcome()
            && memory
                .map()
                .advise_range(Advice::HugePage, 0, blocks)
                .is_ok();
        populate(memory.map(), 0..len, huge, SMALL_PAGES_PER_MIB, SLACK);
    }

    /// Populates `range` of `map` a chunk at a time. When huge pages (asked for by the
    /// caller) have cost more than `per_mib` plus `slack` of the populating threads' time
    /// over the recent allocations of the process ([`within_budget`]), gives them up for the
    /// rest of the range and for the allocations of the next seconds. Returns whether huge
    /// pages were kept.
    pub(crate) fn populate(
        map: &MmapMut,
        range: Range<usize>,
        mut huge: bool,
        per_mib: Duration,
        slack: Duration,
    ) -> bool {
        let mut at = range.start;
        while at < range.end {
            let n = CHUNK.min(range.end - at);
            let began = Clock::now();
            if map.advise_range(Advice::PopulateWrite, at, n).is_err() {
                // Before Linux 5.14, say: the copy faults the pages in instead.
                return huge;
            }
            at += n;
            if huge && !within_budget(n, began.elapsed(), per_mib, slack) {
                huge = false;
                note_stall();
                if at < range.end {
                    // Failing leaves huge pages on: slower for this copy, still correct.
                    let _ = map.advise_range(Advice::NoHugePage, at, range.end - at);
                }
            }
        }
        huge
    }

    /// The time this thread has run: populating is work the kernel does on the calling
    /// thread (zeroing, compacting memory), and a budget in wall time would also count the
    /// time other processes had the CPU, taking a busy machine for stalling huge pages.
    /// Wall time where the thread's clock cannot be read.
    struct Clock(Result<Duration, Instant>);

    impl Clock {
        fn now() -> Clock {
            Clock(thread_cpu_time().ok_or_else(Instant::now))
        }

        fn elapsed(&self) -> Duration {
            match self.0 {
                Ok(began) => {
                    thread_cpu_time().map_or(Duration::ZERO, |now| now.saturating_sub(began))
                }
                Err(began) => began.elapsed(),
            }
        }
    }

    fn thread_cpu_time() -> Option<Duration> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` only writes the `timespec` it is given.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        let secs = u64::try_from(now.tv_sec).ok()?;
        let nanos = u32::try_from(now.tv_nsec).ok()?;
        (status == 0).then(|| Duration::new(secs, nanos))
    }

    /// The bytes populated with huge pages lately and the time it took, summed over the
    /// process's allocations (a load makes hundreds of a few MiB: a budget of their own
    /// would forgive each its slack), restarted every [`ACCOUNT_WINDOW`] bytes to follow the
    /// state of the machine's memory.
    static ACCOUNT_BYTES: AtomicU64 = AtomicU64::new(0);
    static ACCOUNT_NANOS: AtomicU64 = AtomicU64::new(0);
    const ACCOUNT_WINDOW: u64 = 256 << 20;

    /// Adds `bytes` populated in `spent` to the account; whether the account stays within
    /// `per_mib` for each MiB plus `slack` once. A failed account starts over.
    fn within_budget(bytes: usize, spent: Duration, per_mib: Duration, slack: Duration) -> bool {
        let spent = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        let total_bytes = ACCOUNT_BYTES
            .fetch_add(bytes as u64, Ordering::Relaxed)
            .saturating_add(bytes as u64);
        let total_nanos = ACCOUNT_NANOS
            .fetch_add(spent, Ordering::Relaxed)
            .saturating_add(spent);
        let budget = (per_mib.as_nanos() as u64)
            .saturating_mul(total_bytes >> 20)
            .saturating_add(slack.as_nanos() as u64);
        let within = total_nanos <= budget;
        if !within || total_bytes >= ACCOUNT_WINDOW {
            ACCOUNT_BYTES.store(0, Ordering::Relaxed);
            ACCOUNT_NANOS.store(0, Ordering::Relaxed);
        }
        within
    }

    /// When huge pages last stalled, in milliseconds since [`epoch`] plus one (0: never).
    static STALLED_AT: AtomicU64 = AtomicU64::new(0);

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn now_ms() -> u64 {
        u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn note_stall() {
        STALLED_AT.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether huge pages are worth asking for (they have not stalled lately).
    pub(crate) fn huge_pages_welcome() -> bool {
        let stalled = STALLED_AT.load(Ordering::Relaxed);
        stalled == 0 || now_ms().saturating_sub(stalled) > STALL_MEMORY.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_copies_hold_exactly_the_bytes() {
        for len in [0, 5, (1 << 20) + 4097, (4 << 20) + 3] {
            let bytes: Vec<u8> = (0..len + 9).map(|i| (i % 251) as u8).collect();
            let source = Storage::from_vec(bytes.clone());
            let storage = Fresh::copy_of(&source, 9, len).unwrap();
            assert_eq!(storage.as_bytes(), &bytes[9..]);
            assert!(storage.owns_its_bytes() && !storage.is_mapped());
            assert!(Fresh::copy_of(&source, 10, len).is_err());

            let mut fresh = Fresh::zeroed(len).unwrap();
            assert!(fresh.bytes_mut().iter().all(|&b| b == 0));
            fresh.bytes_mut().copy_from_slice(&bytes[9..]);
            let mut storage = fresh.into_storage();
            assert_eq!(storage.as_bytes(), &bytes[9..]);
            assert_eq!(storage.unique_bytes_mut().map(|b| b.len()), Some(len));

            let mut lazy = Fresh::lazy_zeroed(len).unwrap();
            populate_storage(&mut lazy);
            assert!(lazy.as_bytes().iter().all(|&b| b == 0));
            assert_eq!(lazy.len(), len);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_given_up_past_their_time_budget_and_the_memory_stays_correct() {
        use std::time::Duration;
        let len = (40 << 20) + 5;
        let mut memory = linux::mapped(len).unwrap();
        // No time allowed at all: the first chunk already exceeds the budget.
        assert!(!populate(
            memory.map(),
            0..len,
            true,
            Duration::ZERO,
            Duration::ZERO
        ));
        assert!(memory.as_bytes().iter().all(|&b| b == 0));
        memory.as_bytes_mut().fill(7);
        assert!(memory.as_bytes().iter().all(|&b| b == 7));
        assert_eq!(memory.as_bytes().len(), len);
    }
}

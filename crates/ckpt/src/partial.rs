//! Partial local copies: a file of a remote object's full size that holds only the byte
//! ranges fetched so far (the rest reads as zeros, and is never read as data).
//!
//! Whoever makes such a file (the object store's reader) registers it with the source that
//! fills it ([`register`]); the readers ([`crate::format::load_with`]) find it there
//! ([`source_of`]) and map the file with the source attached, so that every byte they read,
//! and every byte of a storage read later, is first made present ([`RangeSource::ensure`]):
//! fetched when absent, or an error naming the object and the offset.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;

/// What fills the absent ranges of a partial local copy.
pub(crate) trait RangeSource: Send + Sync {
    /// The partial copy this source fills, for the reader to map: the path may name another
    /// file by now (a process that put a new copy in place), whose ranges this source does
    /// not know.
    fn file(&self) -> std::io::Result<std::fs::File>;

    /// Makes every byte of `ranges` (offsets in the file) present, fetching what is absent
    /// (all of it at once, in parallel). An error names the object and the offset.
    fn ensure(&self, ranges: &[Range<u64>]) -> Result<()>;

    /// Whether every byte of `range` is present already (no request).
    fn is_present(&self, range: Range<u64>) -> bool;
}

type Registry = Mutex<HashMap<PathBuf, Arc<dyn RangeSource>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Says that `path` is a partial copy that `source` fills.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn register(path: &Path, source: Arc<dyn RangeSource>) {
    if let Ok(mut map) = registry().lock() {
        map.insert(path.to_path_buf(), source);
    }
}

/// The source that fills `path`, when it is a partial copy.
pub(crate) fn source_of(path: &Path) -> Option<Arc<dyn RangeSource>> {
    registry().lock().ok()?.get(path).cloned()
}

/// Sorted, disjoint, non-adjacent ranges: the bytes present in a partial copy.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
}

#[cfg_attr(not(feature = "s3"), allow(dead_code))]
impl RangeSet {
    /// The set of `ranges` (in any order, overlapping or not).
    pub(crate) fn from_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> RangeSet {
        let mut set = RangeSet::default();
        for range in ranges {
            set.insert(range);
        }
        set
    }

    /// The ranges, in order.
    pub(crate) fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Bytes in the set.
    pub(crate) fn total(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Adds `range`, merging it with the ranges it overlaps or touches.
    pub(crate) fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let last = self.ranges.partition_point(|r| r.start <= range.end);
        let merged = match self.ranges.get(first..last) {
            Some(touched) if !touched.is_empty() => {
                touched[0].start.min(range.start)..touched[touched.len() - 1].end.max(range.end)
            }
            _ => range,
        };
        self.ranges.splice(first..last, [merged]);
    }

    /// Whether every byte of `range` is in the set.
    pub(crate) fn contains(&self, range: &Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        let at = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges
            .get(at)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }

    /// The parts of `range` not in the set, in order.
    pub(crate) fn missing(&self, range: &Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut at = range.start;
        let first = self.ranges.partition_point(|r| r.end <= range.start);
        for present in self.ranges.iter().skip(first) {
            if present.start >= range.end {
                break;
            }
            if present.start > at {
                out.push(at..present.start);
            }
            at = at.max(present.end);
        }
        if at < range.end {
            out.push(at..range.end);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_what_is_missing() {
        let mut set = RangeSet::from_ranges([10..20, 30..40]);
        assert!(set.contains(&(12..20)));
        assert!(!set.contains(&(15..25)));
        assert!(set.contains(&(5..5)));
        assert_eq!(set.missing(&(0..50)), vec![0..10, 20..30, 40..50]);
        assert_eq!(set.missing(&(12..18)), Vec::<Range<u64>>::new());
        set.insert(20..30);
        assert_eq!(
            set.ranges().to_vec(),
            RangeSet::from_ranges([10..20, 20..40]).ranges()
        );
        set.insert(0..5);
        set.insert(45..50);
        set.insert(4..46);
        assert_eq!(set.ranges().len(), 1);
        assert_eq!(set.ranges().first(), Some(&(0..50)));
        assert_eq!(set.total(), 50);
    }
}

//! What one measurement reports, and how a child process measures its own memory.
//!
//! Every measurement runs in its own process. Before the timed operation the process resets
//! its peak RSS to the current RSS (`/proc/self/clear_refs`, value 5) and records that RSS as
//! its baseline (interpreter, libraries and, for saves, the state to save); after the
//! operation it reads the peak (`VmHWM`). The difference is what the operation itself added.

use serde::{Deserialize, Serialize};

/// The result of one timed operation, printed by a child as one JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock seconds of the operation (for loads: the load call and touching every byte).
    pub seconds: f64,
    /// For loads: seconds of the load call alone, before any tensor byte is touched.
    #[serde(default)]
    pub open_seconds: Option<f64>,
    /// RSS in bytes right before the operation, after the peak was reset.
    #[serde(default)]
    pub rss_before: u64,
    /// Peak RSS in bytes during the operation (the process's `VmHWM`).
    #[serde(default)]
    pub peak_rss: u64,
    /// Whether the peak was reset before the operation (else it includes the setup).
    #[serde(default)]
    pub peak_reset: bool,
    /// A checksum of the bytes touched, so that no contender skips the work.
    #[serde(default)]
    pub checksum: Option<f64>,
    /// Free-form detail (e.g. how many keys were matched).
    #[serde(default)]
    pub note: Option<String>,
    /// For a job of several MPI ranks: what each rank measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<crate::mpi::RankSample>,
}

impl Sample {
    /// Peak RSS above the baseline: what the operation itself needed.
    pub fn added_rss(&self) -> u64 {
        self.peak_rss.saturating_sub(self.rss_before)
    }
}

/// A reading of `/proc/self/status` in bytes: (`VmRSS`, `VmHWM`); zeros where unavailable.
pub fn rss_and_peak() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS to the current RSS; false where the kernel does not allow it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `op` as a measured operation: peak reset, baseline, wall-clock, peak.
pub fn measure<T>(op: impl FnOnce() -> T) -> (Sample, T) {
    let peak_reset = reset_peak();
    let (rss_before, _) = rss_and_peak();
    let start = std::time::Instant::now();
    let out = op();
    let seconds = start.elapsed().as_secs_f64();
    let (_, peak_rss) = rss_and_peak();
    let sample = Sample {
        seconds,
        rss_before,
        peak_rss,
        peak_reset,
        ..Sample::default()
    };
    (sample, out)
}

/// Median of `values` (the mean of the two middle ones for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_large_allocation_shows_in_the_added_peak() {
        let (sample, v) = measure(|| vec![1u8; 64 << 20]);
        assert_eq!(v.len(), 64 << 20);
        if sample.peak_reset {
            assert!(sample.added_rss() >= 60 << 20, "{sample:?}");
        }
    }
}

//! Copying many tensors on a few threads at once: fresh memory costs more in the kernel
//! providing its pages than in the copy itself, and that work proceeds on every core.

/// Below this many bytes in total, one thread does it all (a thread costs tens of µs).
const MIN_TOTAL: usize = 32 << 20;
/// Each thread gets at least this much work.
const MIN_PART: usize = 16 << 20;
/// More threads than this gain nothing on memory bandwidth.
const MAX_THREADS: usize = 4;

/// `f` of every item, in order; the items are split into consecutive runs of about equal
/// `weight` (bytes), one per thread, when the total is large enough to pay for threads.
pub(crate) fn map_weighted<T, R, W, F>(items: Vec<T>, weight: W, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    W: Fn(&T) -> usize,
    F: Fn(T) -> R + Sync,
{
    let weights: Vec<usize> = items.iter().map(&weight).collect();
    let total: usize = weights.iter().fold(0usize, |a, &w| a.saturating_add(w));
    let threads = thread_count(total);
    if threads <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let mut runs = Vec::new();
    let mut items = items.into_iter();
    for run in split(&weights, total, threads) {
        runs.push(items.by_ref().take(run.len()).collect::<Vec<T>>());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut runs = runs.into_iter();
        let first = runs.next().unwrap_or_default();
        let handles: Vec<_> = runs
            .map(|run| scope.spawn(move || run.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a bug; carry it to the caller as the serial code would.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

fn thread_count(total: usize) -> usize {
    if total < MIN_TOTAL {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_THREADS).min(total / MIN_PART).max(1)
}

/// Consecutive index ranges covering `weights`, at most `parts` of them, each ending once it
/// holds its share of `total`.
fn split(weights: &[usize], total: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let share = total.div_ceil(parts).max(1);
    let mut runs = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0usize;
    for (i, &w) in weights.iter().enumerate() {
        acc = acc.saturating_add(w);
        if acc >= share && runs.len() + 1 < parts {
            runs.push(start..i + 1);
            start = i + 1;
            acc = 0;
        }
    }
    if start < weights.len() {
        runs.push(start..weights.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_item_once_in_order() {
        let weights = [5, 1, 1, 1, 8, 0, 3];
        for parts in 1..5 {
            let runs = split(&weights, 19, parts);
            assert!(runs.len() <= parts);
            let flat: Vec<usize> = runs.into_iter().flatten().collect();
            assert_eq!(flat, (0..weights.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn results_keep_the_order_of_the_items_on_many_threads() {
        let items: Vec<usize> = (0..64).collect();
        let out = map_weighted(items.clone(), |_| 4 << 20, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }
}

//! Where the writer thread's time goes: cumulative counters the writer raises once per
//! cycle (a handful of atomic adds, nothing per key), read as differences between two
//! [`WriterStats`] snapshots. The benchmark prints them beside its figures, so a latency or
//! throughput figure comes with the share the store's single writer had in it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (µs) of the group-commit latency buckets: one cycle, from its start to its
/// acknowledgement (a last bucket holds the rest).
pub const COMMIT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Upper bounds of the requests-per-cycle (batch size) buckets.
pub const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Observations in buckets: `counts[i]` holds those at most `bounds[i]` and above the bound
/// before; the last count holds those above every bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets<const N: usize> {
    /// Per bucket, not cumulative.
    pub counts: [u64; N],
    /// The sum of the observations (µs, or requests).
    pub sum: u64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets {
            counts: [0; N],
            sum: 0,
        }
    }
}

impl<const N: usize> Buckets<N> {
    fn since(&self, earlier: &Self) -> Self {
        let mut counts = [0; N];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        Buckets {
            counts,
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }
}

/// Atomic [`Buckets`].
#[derive(Debug)]
struct AtomicBuckets<const N: usize> {
    counts: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> Default for AtomicBuckets<N> {
    fn default() -> Self {
        AtomicBuckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> AtomicBuckets<N> {
    fn observe(&self, bounds: &[u64], value: u64) {
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn read(&self) -> Buckets<N> {
        Buckets {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// What the writer did since it started (see [`WriterStats::since`] for a window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Cycles run (each one log record and at most one sync).
    pub cycles: u64,
    /// Write requests answered (a cycle serves every request pending when it starts).
    pub requests: u64,
    /// Keys written (after a cycle's writes are resolved to one final value per key).
    pub ops: u64,
    /// Bytes appended to the log.
    pub bytes: u64,
    /// Summed over requests: from submission to the start of the cycle that served it.
    pub queued: Duration,
    /// Resolving a cycle's writes to final values (reads sled for counters and prefixes).
    pub resolve: Duration,
    /// Appending the log record.
    pub append: Duration,
    /// `fdatasync` of the log.
    pub sync: Duration,
    /// Publishing the record in the overlay and handing it to the applier (waiting when
    /// the applier is far behind).
    pub handoff: Duration,
    /// Applying records to sled, on the applier thread (after the acknowledgement).
    pub apply: Duration,
    /// Checkpoints (sled flush and old log set aside), on the applier thread.
    pub checkpoint: Duration,
    /// The longest single cycle since the previous [`super::Store::writer_stats`] call:
    /// the longest any request waited behind the writer's own work.
    pub longest_cycle: Duration,
    /// The longest single `fdatasync` since the previous [`super::Store::writer_stats`]
    /// call: how much of [`WriterStats::longest_cycle`] the disk can account for.
    pub longest_sync: Duration,
    /// Group-commit latency per cycle, µs, over [`COMMIT_BUCKETS_US`].
    pub commit_latency: Buckets<13>,
    /// Requests per cycle, over [`BATCH_BUCKETS`].
    pub batch_size: Buckets<12>,
}

impl WriterStats {
    /// The counters of the window from `earlier` to `self` (`longest_cycle` is already per
    /// window, and kept).
    #[must_use]
    pub fn since(&self, earlier: &WriterStats) -> WriterStats {
        WriterStats {
            cycles: self.cycles.saturating_sub(earlier.cycles),
            requests: self.requests.saturating_sub(earlier.requests),
            ops: self.ops.saturating_sub(earlier.ops),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            queued: self.queued.saturating_sub(earlier.queued),
            resolve: self.resolve.saturating_sub(earlier.resolve),
            append: self.append.saturating_sub(earlier.append),
            sync: self.sync.saturating_sub(earlier.sync),
            handoff: self.handoff.saturating_sub(earlier.handoff),
            apply: self.apply.saturating_sub(earlier.apply),
            checkpoint: self.checkpoint.saturating_sub(earlier.checkpoint),
            longest_cycle: self.longest_cycle,
            longest_sync: self.longest_sync,
            commit_latency: self.commit_latency.since(&earlier.commit_latency),
            batch_size: self.batch_size.since(&earlier.batch_size),
        }
    }
}

/// Time spent in each stage of the cycle being measured.
#[derive(Debug, Default)]
pub(super) struct Stages {
    /// Requests the cycle served.
    pub(super) requests: usize,
    /// Keys the cycle wrote.
    pub(super) ops: usize,
    /// Bytes the cycle appended to the log.
    pub(super) bytes: usize,
    pub(super) resolve: Duration,
    pub(super) append: Duration,
    pub(super) sync: Duration,
    pub(super) handoff: Duration,
}

impl Stages {
    /// Runs `stage`, adding its time to the field `at` picks.
    pub(super) fn time<T>(
        &mut self,
        at: fn(&mut Stages) -> &mut Duration,
        stage: impl FnOnce() -> T,
    ) -> T {
        let start = Instant::now();
        let out = stage();
        *at(self) += start.elapsed();
        out
    }
}

/// The shared counters, in nanoseconds.
#[derive(Debug, Default)]
pub(super) struct Counters {
    cycles: AtomicU64,
    requests: AtomicU64,
    ops: AtomicU64,
    bytes: AtomicU64,
    queued: AtomicU64,
    resolve: AtomicU64,
    append: AtomicU64,
    sync: AtomicU64,
    handoff: AtomicU64,
    apply: AtomicU64,
    checkpoint: AtomicU64,
    longest_cycle: AtomicU64,
    longest_sync: AtomicU64,
    commit_latency: AtomicBuckets<13>,
    batch_size: AtomicBuckets<12>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Counters {
    /// Counts one writer cycle, its requests and keys: called before the requests are
    /// answered, so that whoever saw an answer sees it counted.
    pub(super) fn served(&self, stages: &Stages) {
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(stages.requests as u64, Ordering::Relaxed);
        self.ops.fetch_add(stages.ops as u64, Ordering::Relaxed);
        self.bytes.fetch_add(stages.bytes as u64, Ordering::Relaxed);
    }

    /// Records the times of one writer cycle (its requests waited `queued` in all), once
    /// it is over.
    pub(super) fn cycle(&self, queued: Duration, stages: &Stages) {
        let add = |counter: &AtomicU64, value: u64| {
            counter.fetch_add(value, Ordering::Relaxed);
        };
        add(&self.queued, nanos(queued));
        add(&self.resolve, nanos(stages.resolve));
        add(&self.append, nanos(stages.append));
        add(&self.sync, nanos(stages.sync));
        add(&self.handoff, nanos(stages.handoff));
        let total = stages.resolve + stages.append + stages.sync + stages.handoff;
        self.longest_cycle
            .fetch_max(nanos(total), Ordering::Relaxed);
        self.longest_sync
            .fetch_max(nanos(stages.sync), Ordering::Relaxed);
        let micros = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
        self.commit_latency.observe(&COMMIT_BUCKETS_US, micros);
        self.batch_size
            .observe(&BATCH_BUCKETS, stages.requests as u64);
    }

    /// Records one record the applier put into sled.
    pub(super) fn applied(&self, took: Duration) {
        self.apply.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// Records one checkpoint of the applier.
    pub(super) fn checkpointed(&self, took: Duration) {
        self.checkpoint.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// A snapshot; resets the longest cycle and sync.
    pub(super) fn read(&self) -> WriterStats {
        let get = |counter: &AtomicU64| Duration::from_nanos(counter.load(Ordering::Relaxed));
        WriterStats {
            cycles: self.cycles.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            queued: get(&self.queued),
            resolve: get(&self.resolve),
            append: get(&self.append),
            sync: get(&self.sync),
            handoff: get(&self.handoff),
            apply: get(&self.apply),
            checkpoint: get(&self.checkpoint),
            longest_cycle: Duration::from_nanos(self.longest_cycle.swap(0, Ordering::Relaxed)),
            longest_sync: Duration::from_nanos(self.longest_sync.swap(0, Ordering::Relaxed)),
            commit_latency: self.commit_latency.read(),
            batch_size: self.batch_size.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_its_own_cycles_and_the_longest_resets_on_read() {
        let counters = Counters::default();
        let ms = Duration::from_millis;
        let stages = |requests, sync| Stages {
            requests,
            ops: 3,
            bytes: 100,
            sync,
            handoff: ms(1),
            ..Stages::default()
        };
        counters.served(&stages(2, ms(2)));
        counters.cycle(ms(4), &stages(2, ms(2)));
        counters.applied(ms(7));
        let first = counters.read();
        assert_eq!((first.cycles, first.requests, first.ops), (1, 2, 3));
        assert_eq!(first.longest_cycle, ms(3));
        assert_eq!((first.longest_sync, first.bytes), (ms(2), 100));
        assert_eq!(first.apply, ms(7));
        counters.served(&stages(5, ms(1)));
        counters.cycle(ms(1), &stages(5, ms(1)));
        let window = counters.read().since(&first);
        assert_eq!((window.cycles, window.requests, window.ops), (1, 5, 3));
        assert_eq!(
            (window.queued, window.sync, window.apply),
            (ms(1), ms(1), ms(0))
        );
        // The first cycle's 3 ms belongs to the earlier window.
        assert_eq!(window.longest_cycle, ms(2));
        assert_eq!((window.longest_sync, window.bytes), (ms(1), 100));
        // The first cycle took 3 ms for 2 requests, the second 2 ms for 5.
        let latency = first.commit_latency.counts;
        assert_eq!((latency[5], first.commit_latency.sum), (1, 3000));
        assert_eq!(window.commit_latency.counts[4], 1);
        assert_eq!(window.batch_size.counts[1], 0);
        assert_eq!(
            (first.batch_size.counts[1], window.batch_size.counts[3]),
            (1, 1)
        );
    }
}

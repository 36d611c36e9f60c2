//! Figures: rates over a fixed time, percentiles, the report of targets, and each ratio
//! read beside the baseline measured just before and just after it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::*;

/// Runs `workers` copies of `work` until `duration` passes (each call is one unit when it
/// returns true); returns units per second.
pub(crate) async fn rate<F, Fut>(workers: usize, duration: Duration, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let work = Arc::new(work);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (done, stop, work) = (done.clone(), stop.clone(), work.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = work(i).await;
                    if n == 0 {
                        break;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    counted as f64 / elapsed.as_secs_f64()
}

pub(crate) struct Report {
    pub(crate) misses: usize,
}

impl Report {
    pub(crate) fn baseline(&self, name: &str, value: f64, unit: &str) {
        out!("{name:<62} {value:>12.0} {unit}");
    }

    /// A figure beside its baseline, with the target ratio.
    pub(crate) fn ratio(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        baseline: f64,
        baseline_name: &str,
        target: f64,
    ) {
        let r = value / baseline;
        let ok = r >= target;
        self.misses += usize::from(!ok);
        crate::report::bar(name, r * 100.0, target * 100.0);
        crate::report::target(
            name,
            format!("{value:.0} {unit} = {:.0}% of {baseline_name}", r * 100.0),
            format!(">= {:.0}%", target * 100.0),
            ok,
        );
        out!(
            "{name:<62} {value:>12.0} {unit}  = {:>5.0}% of {baseline_name} (target >= {:.0}%)  {}",
            r * 100.0,
            target * 100.0,
            if ok { "ok" } else { "MISSED" }
        );
    }

    pub(crate) fn limit(&mut self, name: &str, value: f64, unit: &str, limit: f64, context: &str) {
        let ok = value <= limit;
        self.misses += usize::from(!ok);
        crate::report::target(
            name,
            format!("{value:.2} {unit}"),
            format!("<= {limit} {unit}{context}"),
            ok,
        );
        out!(
            "{name:<62} {value:>12.2} {unit}  (target <= {limit} {unit}{context})  {}",
            if ok { "ok" } else { "MISSED" }
        );
    }
}

/// The phase's longest `fdatasync` of the store's log, for a latency target's context: one
/// sync alone longer than the target is the disk's stall, which no acknowledged durable
/// message can avoid waiting for.
pub(crate) fn longest_sync(took: Duration) -> String {
    format!(
        "longest fdatasync in the phase {:.1} ms",
        took.as_secs_f64() * 1e3
    )
}

/// The latencies collected so far, sorted.
pub(crate) fn sorted(latencies: &std::sync::Mutex<Vec<u64>>) -> Vec<u64> {
    let mut l = lock(latencies).clone();
    l.sort_unstable();
    l
}

/// The `p` quantile of sorted microsecond samples, in milliseconds (0 when empty).
pub(crate) fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// T measured again after each throughput figure: the figure is read beside the mean of
/// T just before and just after it, since the machine's speed drifts over a run (T alone
/// moves by tens of percent between phases of a few seconds here).
pub(crate) struct Beside {
    pub(crate) trivial: SocketAddr,
    pub(crate) concurrency: usize,
    pub(crate) phase: Duration,
    /// The last T measured.
    pub(crate) last: f64,
    /// The in-process emulator's broker, whose store writer is read around each phase.
    pub(crate) broker: emulator::broker::Broker,
    /// The writer's counters when the current phase started.
    pub(crate) mark: emulator::store::WriterStats,
}

impl Beside {
    /// Measures T again and returns the mean of it and the T before.
    pub(crate) async fn t(&mut self) -> anyhow::Result<f64> {
        let after = t_rate(self.trivial, self.concurrency, self.phase).await?;
        let mean = (self.last + after) / 2.0;
        self.last = after;
        Ok(mean)
    }

    /// Marks the start of a phase for [`Beside::writer`].
    pub(crate) fn mark(&mut self) {
        self.mark = self.broker.writer_stats();
    }

    /// Prints where the store writer's time went since [`Beside::mark`]: per cycle, the
    /// mean of each stage, and how long a request waited for its cycle to start. Returns
    /// that window's counters.
    pub(crate) fn writer(&mut self) -> emulator::store::WriterStats {
        let w = self.broker.writer_stats().since(&self.mark);
        let cycles = w.cycles.max(1) as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / cycles;
        out!(
            "  store writer: {} cycles, {:.1} requests and {:.0} keys each; \
             mean µs resolve {:.0}, append {:.0}, sync {:.0}, handoff {:.0}; \
             applier (after the answers) apply {:.0}, checkpoint {:.0}; \
             queued {:.0} µs per request; longest cycle {:.1} ms, longest sync {:.1} ms; \
             {:.1} KB per record",
            w.cycles,
            w.requests as f64 / cycles,
            w.ops as f64 / cycles,
            per(w.resolve),
            per(w.append),
            per(w.sync),
            per(w.handoff),
            per(w.apply),
            per(w.checkpoint),
            w.queued.as_secs_f64() * 1e6 / w.requests.max(1) as f64,
            w.longest_cycle.as_secs_f64() * 1e3,
            w.longest_sync.as_secs_f64() * 1e3,
            w.bytes as f64 / cycles / 1024.0,
        );
        w
    }
}

/// Locks a std mutex, poisoned or not (a worker that panicked has failed the run already).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

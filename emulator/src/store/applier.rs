//! The applier thread: puts each acknowledged cycle into sled, in order, then forgets it in
//! the overlay; at a checkpoint it flushes sled and sets aside the log file the writer
//! rotated away from, for reuse. Both used to run on the writer's thread, before its
//! answers (sled's apply) or stalling them (a checkpoint's flush, 10-24 ms); here they
//! delay no acknowledgement.
//!
//! The overlay is bounded: when the records waiting for the applier hold more than
//! [`MOST_PENDING_BYTES`], the writer waits. The bound is in bytes, not cycles, so that a
//! checkpoint's flush (tens of milliseconds, many small cycles) does not stall the writer,
//! while a run of large batches cannot grow memory without limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::stats::Counters;
use super::trees::Trees;
use super::wal::{self, Op};

/// How much less CPU share the applier thread asks for than the rest of the process.
#[cfg(target_os = "linux")]
const APPLIER_NICENESS: i32 = 10;

/// Bytes of keys and values waiting for the applier before the writer waits for it.
const MOST_PENDING_BYTES: u64 = 16 << 20;

/// What the applier is asked to do, in order.
pub(super) enum Job {
    /// Cycle `generation`'s operations, durable in the log and published in the overlay.
    Apply(u64, Vec<Op>),
    /// Every cycle of the old log file is queued before this: flush sled, then set the
    /// file aside as the spare.
    Checkpoint(PathBuf),
    /// Flush sled once everything queued before is applied, then answer (the writer is
    /// closing).
    Drain(SyncSender<Result<(), Arc<sled::Error>>>),
}

/// What the writer and the applier share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The first failure of either thread: after it nothing more is acknowledged.
    failed: Mutex<Option<Arc<sled::Error>>>,
    /// A rotated log file is waiting for its checkpoint.
    pub(super) checkpointing: AtomicBool,
    /// Bytes handed to the applier and not applied yet.
    pending: Mutex<u64>,
    /// Signalled as the applier applies.
    applied: Condvar,
}

/// Bytes a record holds (keys and values).
fn size(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|o| (o.key.len() + o.value.as_ref().map_or(0, |v| v.len())) as u64)
        .sum()
}

impl Shared {
    /// The failure that stopped the store, if one did.
    pub(super) fn failed(&self) -> Option<Arc<sled::Error>> {
        crate::sync::lock(&self.failed).clone()
    }

    /// Counts a record handed to the applier, first waiting while the applier is more than
    /// [`MOST_PENDING_BYTES`] behind (or until it fails).
    pub(super) fn hand(&self, ops: &[Op]) {
        let mut pending = crate::sync::lock(&self.pending);
        while *pending > MOST_PENDING_BYTES && self.failed().is_none() {
            pending = self
                .applied
                .wait(pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *pending += size(ops);
    }

    fn done(&self, ops: &[Op]) {
        let mut pending = crate::sync::lock(&self.pending);
        *pending = pending.saturating_sub(size(ops));
        self.applied.notify_all();
    }

    /// Records a failure (the first one is kept).
    pub(super) fn fail(&self, e: Arc<sled::Error>) {
        let mut failed = crate::sync::lock(&self.failed);
        if failed.is_none() {
            tracing::error!(error = %e, "store write failed; the store stops acknowledging writes");
            *failed = Some(e);
        }
        drop(failed);
        // A writer waiting for the applier stops waiting.
        let _pending = crate::sync::lock(&self.pending);
        self.applied.notify_all();
    }
}

/// Starts the applier thread; it ends when the returned sender is dropped.
pub(super) fn start(
    trees: Trees,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
) -> std::io::Result<(Sender<Job>, std::thread::JoinHandle<()>)> {
    let (jobs, inbox) = channel();
    let thread = std::thread::Builder::new()
        .name("store-applier".into())
        .spawn(move || run(&inbox, &trees, &shared, &counters))?;
    Ok((jobs, thread))
}

/// The failure the writer reports once the applier thread is gone.
pub(super) fn stopped_applier() -> sled::Error {
    sled::Error::ReportableBug("the store's applier thread stopped".into())
}

/// Fails the store if the applier thread unwinds (sled panicked): the writer, which may be
/// waiting for the applier's backlog to shrink, stops waiting and refuses writes.
struct FailOnPanic<'a>(&'a Shared);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(Arc::new(stopped_applier()));
        }
    }
}

fn run(inbox: &Receiver<Job>, trees: &Trees, shared: &Shared, counters: &Counters) {
    let _guard = FailOnPanic(shared);
    // Below the writer and the request handlers: on two cores the applier, which nothing
    // waits for, otherwise takes the writer's turn and lengthens its cycles. (On Linux a
    // nice value is per thread.)
    #[cfg(target_os = "linux")]
    let _ = rustix::process::nice(APPLIER_NICENESS);
    for job in inbox {
        match job {
            Job::Apply(generation, ops) => {
                // After a failure the cycle stays in the overlay: it is in the log, and
                // readers keep seeing what was acknowledged.
                if shared.failed().is_some() {
                    shared.done(&ops);
                    continue;
                }
                let started = Instant::now();
                match trees.apply(&ops) {
                    Ok(()) => trees.overlay.applied(generation, &ops),
                    Err(e) => shared.fail(Arc::new(e)),
                }
                shared.done(&ops);
                counters.applied(started.elapsed());
            }
            Job::Checkpoint(old) => {
                let started = Instant::now();
                let done = trees
                    .db
                    .flush()
                    .map(drop)
                    .and_then(|()| wal::retire(&old).map_err(sled::Error::Io));
                match done {
                    Ok(()) => shared.checkpointing.store(false, Ordering::SeqCst),
                    // The old file stays: a start replays it.
                    Err(e) => shared.fail(Arc::new(e)),
                }
                counters.checkpointed(started.elapsed());
            }
            Job::Drain(reply) => {
                let flushed = match shared.failed() {
                    Some(e) => Err(e),
                    None => trees.db.flush().map(drop).map_err(Arc::new),
                };
                let _ = reply.send(flushed);
            }
        }
    }
}

//! The single writer: every write goes through one thread that takes all pending batches,
//! resolves them to the final value of each key, appends that as one record to the
//! write-ahead log, `fdatasync`s once (group commit), publishes it in the overlay and then
//! answers them all; the applier thread puts the record into sled afterwards
//! (`applier.rs`). One thread writing sled keeps it away from heavy concurrent
//! insert+remove (sled 0.34 issue #1412) and from concurrent flushes (issue #1308), and
//! many writers share each sync. Why durability comes from a log of our own rather than
//! sled's flush: see `wal.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::applier::{self, Job, Shared, stopped_applier};
use super::stats::{Counters, Stages, WriterStats};
use super::trees::Trees;
use super::wal::{Op, Wal};
use super::{Durability, Error, Key, Result, Write};

/// Most requests merged into one cycle.
const MAX_BATCH: usize = 1024;

/// Log size past which the writer goes on in a new log file and the applier checkpoints the
/// old one (flushes sled, deletes it). It bounds what a start after a crash replays.
/// (1 MiB in the unit tests, so that they rotate.)
const CHECKPOINT_BYTES: u64 = if cfg!(test) { 1 << 20 } else { 32 << 20 };

enum Request {
    /// Writes to apply; `true` forces an fsync even without full durability; when it was
    /// submitted.
    Apply(Vec<Write>, bool, Instant, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// Writes queued by [`Store::submit`](super::Store::submit), on their way to disk.
#[derive(Debug)]
#[must_use = "the writes are not known to be durable until this is awaited"]
pub struct Durable(oneshot::Receiver<Result<()>>);

impl Durable {
    /// Waits until the writes are durable.
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] when the write or its flush failed, [`Error::ShutDown`] when the
    /// writer stopped first.
    pub async fn wait(self) -> Result<()> {
        self.0.await.map_err(|_| Error::ShutDown)?
    }
}

/// Handle to the writer thread (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct Writer {
    requests: mpsc::UnboundedSender<Request>,
    /// Taken by `close` to wait for the thread (it holds the `Db`, and so sled's file lock).
    /// A std mutex: held only to take the handle.
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Write requests submitted so far.
    submitted: Arc<AtomicU64>,
    /// Where the thread's time goes.
    counters: Arc<Counters>,
    /// Shut by a test to keep the thread from starting its next cycle.
    #[cfg(test)]
    hold: Arc<Gate>,
}

/// What the thread passes before each cycle (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
struct Gate {
    shut: Mutex<bool>,
    opened: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    fn pass(&self) {
        let mut shut = crate::sync::lock(&self.shut);
        while *shut {
            shut = self
                .opened
                .wait(shut)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// Keeps the writer from starting another cycle until dropped (tests only).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Hold(Arc<Gate>);

#[cfg(test)]
impl Drop for Hold {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.shut) = false;
        self.0.opened.notify_all();
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Apply(..) => "Apply",
            Request::Close(_) => "Close",
        })
    }
}

impl Writer {
    /// Starts the writer on a thread of its own: a cycle blocks on the log's sync, and a
    /// dedicated thread wakes straight from the request queue, with no hop through the async
    /// runtime (whose workers are busy serving requests exactly when the writer is needed).
    pub(super) fn start(
        trees: Trees,
        wal: Option<Wal>,
        durability: Durability,
    ) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::unbounded_channel::<Request>();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        // Before each cycle the thread passes the gate: a test can hold it shut.
        #[cfg(test)]
        let (hold, gate) = {
            let hold = Arc::new(Gate::default());
            let gate = hold.clone();
            (hold, move || gate.pass())
        };
        #[cfg(not(test))]
        let gate = || ();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(inbox, trees, wal, durability, &thread_counters, gate))?;
        Ok(Writer {
            requests,
            thread: Arc::new(Mutex::new(Some(thread))),
            submitted: Arc::default(),
            counters,
            #[cfg(test)]
            hold,
        })
    }

    /// Keeps the thread from starting another cycle until the [`Hold`] is dropped (tests
    /// only).
    #[cfg(test)]
    pub(super) fn hold(&self) -> Hold {
        *crate::sync::lock(&self.hold.shut) = true;
        Hold(self.hold.clone())
    }

    /// What the thread did so far; resets the longest cycle.
    pub(super) fn stats(&self) -> WriterStats {
        self.counters.read()
    }

    /// Write requests submitted so far.
    pub(super) fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst)
    }

    /// Queues `writes` now, after everything queued before, atomically across a crash (one
    /// log record); the answer says when they are durable (or applied, with
    /// `Durability::None`).
    pub(super) fn submit(&self, writes: Vec<Write>) -> Result<Durable> {
        let (reply, done) = oneshot::channel();
        self.submitted.fetch_add(1, Ordering::SeqCst);
        self.requests
            .send(Request::Apply(writes, false, Instant::now(), reply))
            .map_err(|_| Error::ShutDown)?;
        Ok(Durable(done))
    }

    /// Waits until everything sent before is on disk, whatever the durability setting.
    pub(super) async fn flush(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.requests
            .send(Request::Apply(Vec::new(), true, Instant::now(), reply))
            .map_err(|_| Error::ShutDown)?;
        done.await.map_err(|_| Error::ShutDown)?
    }

    /// Flushes, stops the task and waits for it.
    pub(super) async fn close(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        let sent = self.requests.send(Request::Close(reply)).is_ok();
        let result = if sent {
            done.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        let thread = crate::sync::lock(&self.thread).take();
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!("writer thread panicked"),
                Err(e) => tracing::error!(error = %e, "waiting for the writer thread failed"),
            }
        }
        result
    }
}

/// The writer thread's loop: takes every pending request, runs one cycle for all of them,
/// answers them, until `Close` (or every handle is gone).
fn run(
    mut inbox: mpsc::UnboundedReceiver<Request>,
    trees: Trees,
    mut wal: Option<Wal>,
    durability: Durability,
    counters: &Arc<Counters>,
    gate: impl Fn(),
) {
    let shared = Arc::new(Shared::default());
    let (jobs, applier) = match applier::start(trees.clone(), shared.clone(), counters.clone()) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "the store's applier thread did not start");
            return;
        }
    };
    let mut generation = 0u64;
    while let Some(first) = inbox.blocking_recv() {
        gate();
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        let mut replies = Vec::new();
        let mut closing = None;
        let mut forced = false;
        let (started, mut queued) = (Instant::now(), Duration::ZERO);
        for request in pending {
            match request {
                Request::Apply(w, force, submitted, reply) => {
                    queued += started.saturating_duration_since(submitted);
                    writes.push(w);
                    replies.push(reply);
                    forced |= force;
                }
                Request::Close(reply) => closing = Some(reply),
            }
        }
        let mut stages = Stages {
            requests: replies.len(),
            ..Stages::default()
        };
        let sync = durability == Durability::Full || forced || closing.is_some();
        let outcome = match shared.failed() {
            // After a failed write nothing more is acknowledged (fail-stop).
            Some(e) => Err(e),
            None => cycle(&trees, wal.as_mut(), writes, sync, &mut stages).map_err(Arc::new),
        };
        match &outcome {
            // Visible to readers before it is acknowledged.
            Ok(ops) => {
                generation += 1;
                stages.time(
                    |s| &mut s.handoff,
                    || trees.overlay.publish(generation, ops),
                );
            }
            Err(e) => shared.fail(e.clone()),
        }
        counters.served(&stages);
        for reply in replies {
            let _ = reply.send(
                outcome
                    .as_ref()
                    .map(drop)
                    .map_err(|e| Error::Flush(e.clone())),
            );
        }
        if let Ok(ops) = outcome {
            // Waits when the applier is far behind.
            let handed = stages.time(
                |s| &mut s.handoff,
                || {
                    shared.hand(&ops);
                    jobs.send(Job::Apply(generation, ops))
                },
            );
            if handed.is_err() {
                shared.fail(Arc::new(stopped_applier()));
            }
        }
        counters.cycle(queued, &stages);
        if let Some(wal) = wal.as_mut()
            && closing.is_none()
            && wal.len() > CHECKPOINT_BYTES
            && !shared.checkpointing.load(Ordering::SeqCst)
        {
            match wal.rotate() {
                Ok(old) => {
                    shared.checkpointing.store(true, Ordering::SeqCst);
                    if jobs.send(Job::Checkpoint(old)).is_err() {
                        shared.fail(Arc::new(stopped_applier()));
                    }
                }
                Err(e) => shared.fail(Arc::new(sled::Error::Io(e))),
            }
        }
        if let Some(reply) = closing {
            let closed = close(&jobs, wal.as_mut());
            // Let go of sled (and its file lock) before saying the store is closed.
            drop((jobs, trees, wal));
            if applier.join().is_err() {
                tracing::error!("the store's applier thread panicked");
            }
            let _ = reply.send(closed.map_err(Error::Flush));
            return;
        }
    }
}

/// Waits until the applier has put everything into sled and flushed it, then empties the
/// log: a clean close leaves nothing to replay.
fn close(
    jobs: &std::sync::mpsc::Sender<Job>,
    wal: Option<&mut Wal>,
) -> std::result::Result<(), Arc<sled::Error>> {
    let (reply, drained) = std::sync::mpsc::sync_channel(1);
    jobs.send(Job::Drain(reply))
        .map_err(|_| Arc::new(stopped_applier()))?;
    drained.recv().map_err(|_| Arc::new(stopped_applier()))??;
    match wal {
        Some(wal) => wal.reset().map_err(|e| Arc::new(sled::Error::Io(e))),
        None => Ok(()),
    }
}

/// One cycle up to its acknowledgement: the requests' final values, appended to the log and
/// synced when `sync` (in memory there is no log: nothing outlives the process).
fn cycle(
    trees: &Trees,
    wal: Option<&mut Wal>,
    requests: Vec<Vec<Write>>,
    sync: bool,
    stages: &mut Stages,
) -> std::result::Result<Vec<Op>, sled::Error> {
    let ops = stages.time(|s| &mut s.resolve, || resolve(trees, requests))?;
    stages.ops = ops.len();
    if let Some(wal) = wal {
        if !ops.is_empty() {
            stages.bytes = stages.time(|s| &mut s.append, || wal.append(&ops))?;
        }
        if sync {
            stages.time(|s| &mut s.sync, || wal.sync())?;
        }
    }
    Ok(ops)
}

/// Where a key lives in a cycle's overlay: (in the `messages` tree, key bytes).
fn slot(key: &Key) -> (bool, Vec<u8>) {
    (!key.is_entity(), key.to_bytes())
}

/// The final state of every key the requests touch, in key order: later writes win,
/// prefix deletes cover keys written earlier in the same cycle, and counters are raised
/// over the stored value.
fn resolve(trees: &Trees, requests: Vec<Vec<Write>>) -> std::result::Result<Vec<Op>, sled::Error> {
    let mut overlay: BTreeMap<(bool, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
    for write in requests.into_iter().flatten() {
        match write {
            Write::Put(k, bytes) => {
                overlay.insert(slot(&k), Some(bytes));
            }
            Write::Delete(k) => {
                overlay.insert(slot(&k), None);
            }
            Write::DeletePrefix(k) => {
                let messages = !k.is_entity();
                let prefix = k.to_prefix_bytes();
                for item in trees.scan_prefix(messages, &prefix) {
                    overlay.insert((messages, item?.0.to_vec()), None);
                }
                for (_, value) in overlay
                    .range_mut((messages, prefix.clone())..)
                    .take_while(|((m, key), _)| *m == messages && key.starts_with(&prefix))
                {
                    *value = None;
                }
            }
            Write::Raise(k, value) => {
                let slot = slot(&k);
                let current = match overlay.get(&slot) {
                    Some(bytes) => bytes.clone(),
                    None => trees.get(slot.0, &slot.1)?.map(|v| v.to_vec()),
                };
                // An unreadable stored counter is replaced: the raised value is the newest fact.
                let current = current
                    .and_then(|v| super::codec::decode::<u64>(&v).ok())
                    .unwrap_or(0);
                overlay.insert(
                    slot,
                    Some(super::codec::encode_for(&k, &value.max(current))),
                );
            }
        }
    }
    Ok(overlay
        .into_iter()
        .map(|((messages, key), value)| Op {
            messages,
            key,
            value: value.map(sled::IVec::from),
        })
        .collect())
}

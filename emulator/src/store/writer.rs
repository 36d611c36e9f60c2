//! The single writer: every write goes through one thread that takes all pending batches,
//! resolves them to the final value of each key, appends that as one record to the
//! write-ahead log, `fdatasync`s once (group commit), applies it to sled and then answers
//! them all. One writer keeps sled away from heavy concurrent insert+remove (sled 0.34 issue
//! #1412) and from concurrent flushes (issue #1308), and many writers share each sync. Why
//! durability comes from a log of our own rather than sled's flush: see `wal.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::stats::{Counters, Stages, WriterStats};
use super::wal::{Op, Wal};
use super::{Durability, Error, Key, Result, Write};

/// Most requests merged into one cycle.
const MAX_BATCH: usize = 1024;

/// Operations from which a record is applied as one sled batch per tree.
const BATCH_FROM: usize = 64;

/// Log size past which the writer flushes sled and empties the log (a checkpoint). It bounds
/// what a start after a crash replays.
const CHECKPOINT_BYTES: u64 = 32 << 20;

enum Request {
    /// Writes to apply; `true` forces an fsync even without full durability; when it was
    /// submitted.
    Apply(Vec<Write>, bool, Instant, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
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
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(inbox, trees, wal, durability, &thread_counters))?;
        Ok(Writer {
            requests,
            thread: Arc::new(Mutex::new(Some(thread))),
            submitted: Arc::default(),
            counters,
        })
    }

    /// What the thread did so far; resets the longest cycle.
    pub(super) fn stats(&self) -> WriterStats {
        self.counters.read()
    }

    /// Write requests submitted so far.
    pub(super) fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst)
    }

    /// Applies `writes` after everything sent before, atomically across a crash (one log
    /// record); returns once they are durable (or applied, with `Durability::None`).
    pub(super) async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.submitted.fetch_add(1, Ordering::SeqCst);
        self.requests
            .send(Request::Apply(writes, false, Instant::now(), reply))
            .map_err(|_| Error::ShutDown)?;
        done.await.map_err(|_| Error::ShutDown)?
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
    counters: &Counters,
) {
    let mut failed: Option<Arc<sled::Error>> = None;
    while let Some(first) = inbox.blocking_recv() {
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
        let mut stages = Stages::default();
        let outcome = match &failed {
            // After a failed write nothing more is acknowledged (fail-stop).
            Some(e) => Err(e.clone()),
            None => Cycle {
                sync: durability == Durability::Full || forced || closing.is_some(),
                checkpoint: closing.is_some(),
            }
            .run(&trees, wal.as_mut(), writes, &mut stages)
            .map_err(Arc::new),
        };
        counters.cycle(replies.len(), queued, &stages);
        if let Err(e) = &outcome {
            if failed.is_none() {
                tracing::error!(error = %e, "store write failed; the store stops acknowledging writes");
            }
            failed = Some(e.clone());
        }
        for reply in replies {
            let _ = reply.send(outcome.clone().map_err(Error::Flush));
        }
        if let Some(reply) = closing {
            // Let go of sled (and its file lock) before saying the store is closed.
            drop((trees, wal));
            let _ = reply.send(outcome.map_err(Error::Flush));
            return;
        }
    }
}

/// The sled database and its two trees (handles: cloning is cheap).
#[derive(Debug, Clone)]
pub(super) struct Trees {
    pub(super) db: sled::Db,
    pub(super) entities: sled::Tree,
    pub(super) messages: sled::Tree,
}

impl Trees {
    /// The `messages` tree, or the `entities` one.
    pub(super) fn tree(&self, messages: bool) -> &sled::Tree {
        if messages {
            &self.messages
        } else {
            &self.entities
        }
    }

    /// Applies one record's operations. Small records go in as plain inserts and removes:
    /// each `apply_batch` seals an I/O buffer (see `wal.rs`), which only pays off when it
    /// carries many writes. Atomicity comes from the log either way.
    pub(super) fn apply(&self, ops: &[Op]) -> std::result::Result<(), sled::Error> {
        if ops.len() >= BATCH_FROM {
            for messages in [false, true] {
                let mut batch = sled::Batch::default();
                let mut any = false;
                for op in ops.iter().filter(|o| o.messages == messages) {
                    any = true;
                    match &op.value {
                        Some(v) => batch.insert(op.key.as_slice(), v.as_slice()),
                        None => batch.remove(op.key.as_slice()),
                    }
                }
                if any {
                    self.tree(messages).apply_batch(batch)?;
                }
            }
            return Ok(());
        }
        for op in ops {
            let tree = self.tree(op.messages);
            match &op.value {
                Some(v) => tree.insert(op.key.as_slice(), v.as_slice()).map(drop)?,
                None => tree.remove(op.key.as_slice()).map(drop)?,
            }
        }
        Ok(())
    }

    /// Flushes sled, then empties the log: everything the log held is now in sled's own
    /// durable state.
    pub(super) fn checkpoint(&self, wal: &mut Wal) -> std::result::Result<(), sled::Error> {
        self.db.flush()?;
        wal.reset()?;
        Ok(())
    }
}

/// What one writer cycle must do besides applying.
#[derive(Debug, Clone, Copy)]
struct Cycle {
    /// Sync the log before answering.
    sync: bool,
    /// Checkpoint whatever the log's size (on close).
    checkpoint: bool,
}

impl Cycle {
    fn run(
        self,
        trees: &Trees,
        wal: Option<&mut Wal>,
        requests: Vec<Vec<Write>>,
        stages: &mut Stages,
    ) -> std::result::Result<(), sled::Error> {
        let ops = stages.time(|s| &mut s.resolve, || resolve(trees, requests))?;
        stages.ops = ops.len();
        match wal {
            Some(wal) => {
                if !ops.is_empty() {
                    stages.time(|s| &mut s.append, || wal.append(&ops))?;
                }
                if self.sync {
                    stages.time(|s| &mut s.sync, || wal.sync())?;
                }
                stages.time(|s| &mut s.apply, || trees.apply(&ops))?;
                if self.checkpoint || wal.len() > CHECKPOINT_BYTES {
                    stages.time(|s| &mut s.checkpoint, || trees.checkpoint(wal))?;
                }
            }
            // In memory: nothing outlives the process, so there is nothing to sync.
            None => stages.time(|s| &mut s.apply, || trees.apply(&ops))?,
        }
        Ok(())
    }
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
                for key in trees.tree(messages).scan_prefix(&prefix).keys() {
                    overlay.insert((messages, key?.to_vec()), None);
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
                    None => trees.tree(slot.0).get(&slot.1)?.map(|v| v.to_vec()),
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
            value,
        })
        .collect())
}

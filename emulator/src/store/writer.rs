//! The single writer: every write goes through one task that takes all pending batches,
//! applies them together, fsyncs once (group commit) and then answers them all. One writer
//! keeps sled away from heavy concurrent insert+remove (sled 0.34 issue #1412) and from
//! concurrent flushes (issue #1308), and many writers share each fsync.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Durability, Error, Key, Result, Write};

/// Most requests merged into one apply-and-flush cycle.
const MAX_BATCH: usize = 1024;

enum Request {
    /// Writes to apply; `true` forces an fsync even without full durability.
    Apply(Vec<Write>, bool, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// Handle to the writer task (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct Writer {
    requests: mpsc::UnboundedSender<Request>,
    /// Taken by `close` to wait for the task (it holds the `Db`, and so sled's file lock).
    /// A std mutex: held only to take the handle.
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
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
    pub(super) fn start(
        db: sled::Db,
        entities: sled::Tree,
        messages: sled::Tree,
        durability: Durability,
    ) -> Self {
        let (requests, mut inbox) = mpsc::unbounded_channel::<Request>();
        let task = tokio::spawn(async move {
            let mut failed: Option<Arc<sled::Error>> = None;
            while let Some(first) = inbox.recv().await {
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
                for request in pending {
                    match request {
                        Request::Apply(w, force, reply) => {
                            writes.push(w);
                            replies.push(reply);
                            forced |= force;
                        }
                        Request::Close(reply) => closing = Some(reply),
                    }
                }
                let outcome = match &failed {
                    // After a failed flush nothing more is acknowledged (fail-stop).
                    Some(e) => Err(e.clone()),
                    None => {
                        let (db, entities, messages) =
                            (db.clone(), entities.clone(), messages.clone());
                        let flush = durability == Durability::Full || forced || closing.is_some();
                        tokio::task::spawn_blocking(move || {
                            apply(&db, &entities, &messages, writes, flush)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(sled::Error::ReportableBug(format!(
                                "writer task failed: {e}"
                            )))
                        })
                        .map_err(Arc::new)
                    }
                };
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
                    let _ = reply.send(outcome.map_err(Error::Flush));
                    break;
                }
            }
        });
        Writer {
            requests,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Applies `writes` atomically per tree, after everything sent before; returns once they
    /// are durable (or applied, with `Durability::None`).
    pub(super) async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.requests
            .send(Request::Apply(writes, false, reply))
            .map_err(|_| Error::ShutDown)?;
        done.await.map_err(|_| Error::ShutDown)?
    }

    /// Waits until everything sent before is on disk, whatever the durability setting.
    pub(super) async fn flush(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.requests
            .send(Request::Apply(Vec::new(), true, reply))
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
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "writer task failed");
        }
        result
    }
}

fn apply(
    db: &sled::Db,
    entities: &sled::Tree,
    messages: &sled::Tree,
    requests: Vec<Vec<Write>>,
    flush: bool,
) -> std::result::Result<(), sled::Error> {
    let mut entity_batch = sled::Batch::default();
    let mut message_batch = sled::Batch::default();
    // Counters raised in this batch, by key, kept in write order for determinism.
    let mut raised: Vec<(Key, u64)> = Vec::new();
    for write in requests.into_iter().flatten() {
        let (key, bytes, prefix) = match write {
            Write::Put(k, b) => (k, Some(b), false),
            Write::Delete(k) => (k, None, false),
            Write::DeletePrefix(k) => (k, None, true),
            Write::Raise(k, value) => {
                match raised.iter_mut().find(|(r, _)| *r == k) {
                    Some((_, v)) => *v = (*v).max(value),
                    None => raised.push((k, value)),
                }
                continue;
            }
        };
        let (batch, tree) = if key.is_entity() {
            (&mut entity_batch, entities)
        } else {
            (&mut message_batch, messages)
        };
        if prefix {
            for item in tree.scan_prefix(key.to_prefix_bytes()) {
                batch.remove(item?.0);
            }
        } else if let Some(bytes) = bytes {
            batch.insert(key.to_bytes(), bytes);
        } else {
            batch.remove(key.to_bytes());
        }
    }
    for (key, value) in raised {
        let (batch, tree) = if key.is_entity() {
            (&mut entity_batch, entities)
        } else {
            (&mut message_batch, messages)
        };
        let bytes = key.to_bytes();
        // An unreadable stored counter is replaced: the raised value is the newest fact.
        let stored = tree
            .get(&bytes)?
            .and_then(|v| super::codec::decode::<u64>(&v).ok())
            .unwrap_or(0);
        batch.insert(bytes, super::codec::encode(&value.max(stored)));
    }
    entities.apply_batch(entity_batch)?;
    messages.apply_batch(message_batch)?;
    if flush {
        db.flush()?;
    }
    Ok(())
}

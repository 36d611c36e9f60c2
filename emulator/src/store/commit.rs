//! Group commit: writers apply their batch, then wait for a flush that *started after* it.
//! One task runs the flushes, so sled's `flush` is never called concurrently (sled 0.34
//! deadlocks on concurrent `flush_async`, PERF-NOTES) and many writers share one fsync.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Error, Result};

/// Handle to the flush task. The task stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    /// Number of flush requests made; a writer's ticket is the value after its increment.
    requested: Arc<watch::Sender<u64>>,
    /// Highest ticket covered by a completed flush, or the error that stopped flushing.
    completed: watch::Receiver<std::result::Result<u64, Arc<sled::Error>>>,
    /// Set to stop the task; it flushes once more and ends.
    stop: Arc<watch::Sender<bool>>,
    /// The task, taken by `close` to wait for it (it holds a `Db` clone, and so sled's
    /// file lock). A std mutex: held only to take the handle.
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl GroupCommit {
    pub(super) fn start(db: sled::Db) -> Self {
        let (requested, mut requests) = watch::channel(0u64);
        let (done, completed) = watch::channel(Ok(0u64));
        let (stop, mut stopping) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Ends on `close`, or when every `GroupCommit` (and so the request sender) is dropped.
            loop {
                let stop_now = tokio::select! {
                    changed = requests.changed() => changed.is_err(),
                    _ = stopping.changed() => true,
                };
                // Every ticket up to `target` was issued after its writer's batch was applied,
                // and this flush starts after reading it: the flush covers those batches.
                let target = *requests.borrow_and_update();
                let db = db.clone();
                let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(Ok(_)) => Ok(target),
                    Ok(Err(e)) => Err(Arc::new(e)),
                    Err(join) => Err(Arc::new(sled::Error::ReportableBug(format!(
                        "flush task failed: {join}"
                    )))),
                };
                let failed = outcome.is_err();
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "flush failed; the store stops acknowledging writes");
                }
                if done.send(outcome).is_err() || failed || stop_now {
                    break;
                }
            }
        });
        GroupCommit {
            requested: Arc::new(requested),
            completed,
            stop: Arc::new(stop),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Flushes once more and waits for the task to end, releasing its `Db` clone.
    pub(super) async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "flush task failed");
        }
    }

    /// Waits until everything applied before this call is on disk.
    pub(super) async fn durable(&self) -> Result<()> {
        let mut ticket = 0;
        self.requested.send_modify(|n| {
            *n += 1;
            ticket = *n;
        });
        let mut completed = self.completed.clone();
        let state = completed
            .wait_for(|state| match state {
                Ok(done) => *done >= ticket,
                Err(_) => true,
            })
            .await
            .map_err(|_| Error::ShutDown)?;
        match &*state {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Flush(e.clone())),
        }
    }
}

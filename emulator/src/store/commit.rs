//! Group commit: writers apply their batch, then wait for a flush that *started after* it.
//! One task runs the flushes, so sled's `flush` is never called concurrently (sled 0.34
//! deadlocks on concurrent `flush_async`, PERF-NOTES) and many writers share one fsync.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Error, Result};

/// Handle to the flush task. The task stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    /// Number of flush requests made; a writer's ticket is the value after its increment.
    requested: Arc<watch::Sender<u64>>,
    /// Highest ticket covered by a completed flush, or the error that stopped flushing.
    completed: watch::Receiver<std::result::Result<u64, Arc<sled::Error>>>,
}

impl GroupCommit {
    pub(super) fn start(db: sled::Db) -> Self {
        let (requested, mut requests) = watch::channel(0u64);
        let (done, completed) = watch::channel(Ok(0u64));
        tokio::spawn(async move {
            // Ends when every `GroupCommit` (and so the request sender) is dropped.
            while requests.changed().await.is_ok() {
                // Every ticket up to `target` was issued after its writer's batch was applied,
                // and this flush starts after reading it: the flush covers those batches.
                let target = *requests.borrow_and_update();
                let db = db.clone();
                let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(Ok(_)) => Ok(target),
                    Ok(Err(e)) => Err(Arc::new(e)),
                    Err(join) => Err(Arc::new(sled::Error::ReportableBug(format!("flush task failed: {join}")))),
                };
                let failed = outcome.is_err();
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "flush failed; the store stops acknowledging writes");
                }
                if done.send(outcome).is_err() || failed {
                    break;
                }
            }
        });
        GroupCommit { requested: Arc::new(requested), completed }
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

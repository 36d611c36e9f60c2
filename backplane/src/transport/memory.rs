//! An in-process bus with the transports' semantics, for single-node apps and tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Audience, Delivery, Transport, TransportError, TransportResult};
use crate::ids::NodeId;

/// Largest payload, as Service Bus Standard.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Inbox {
    ready: VecDeque<(u64, Vec<u8>, u32)>,
    /// Delivered, not yet settled: id -> (payload, delivery count).
    locked: BTreeMap<u64, (Vec<u8>, u32)>,
    notify: Arc<Notify>,
}

/// The in-memory bus (clone it to share between nodes of one process).
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    /// A std mutex: never held across an await.
    inboxes: Arc<Mutex<HashMap<NodeId, Inbox>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryTransport {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, Inbox>> {
        crate::sync::lock(&self.inboxes)
    }
}

impl Transport for MemoryTransport {
    /// The delivery's number in its node's inbox.
    type Handle = u64;

    fn max_message_bytes(&self) -> usize {
        MAX_MESSAGE_BYTES
    }

    async fn open(&self, node: &NodeId, _idle: Duration) -> TransportResult<()> {
        self.lock().entry(node.clone()).or_default();
        Ok(())
    }

    async fn close(&self, node: &NodeId) -> TransportResult<()> {
        if let Some(inbox) = self.lock().remove(node) {
            inbox.notify.notify_waiters();
        }
        Ok(())
    }

    async fn nodes(&self) -> TransportResult<Vec<NodeId>> {
        let mut nodes: Vec<NodeId> = self.lock().keys().cloned().collect();
        nodes.sort();
        Ok(nodes)
    }

    async fn publish(
        &self,
        origin: &NodeId,
        audience: Audience<'_>,
        payload: Vec<u8>,
    ) -> TransportResult<()> {
        self.check_size(payload.len())?;
        let mut inboxes = self.lock();
        for (node, inbox) in inboxes.iter_mut() {
            let wanted = match audience {
                Audience::Others => node != origin,
                Audience::Node(target) => node == target,
            };
            if wanted {
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                inbox.ready.push_back((id, payload.clone(), 0));
                inbox.notify.notify_one();
            }
        }
        Ok(())
    }

    async fn receive(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> TransportResult<Option<Delivery<Self::Handle>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notify = {
                let mut inboxes = self.lock();
                let inbox = inboxes
                    .get_mut(node)
                    .ok_or_else(|| TransportError::NoSubscription(node.clone()))?;
                if let Some((id, payload, count)) = inbox.ready.pop_front() {
                    inbox.locked.insert(id, (payload.clone(), count + 1));
                    return Ok(Some(Delivery {
                        payload,
                        delivery_count: count + 1,
                        handle: Some(id),
                    }));
                }
                inbox.notify.clone()
            };
            let notified = notify.notified();
            // Re-check after registering, so a publish in between is not missed.
            if self.lock().get(node).is_some_and(|i| !i.ready.is_empty()) {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn take(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> TransportResult<Option<Delivery<Self::Handle>>> {
        let Some(delivery) = self.receive(node, timeout).await? else {
            return Ok(None);
        };
        if let Some(handle) = delivery.handle {
            self.complete(node, handle).await?;
        }
        Ok(Some(Delivery {
            handle: None,
            ..delivery
        }))
    }

    async fn complete(&self, node: &NodeId, id: Self::Handle) -> TransportResult<()> {
        if let Some(inbox) = self.lock().get_mut(node) {
            inbox.locked.remove(&id);
        }
        Ok(())
    }

    async fn abandon(&self, node: &NodeId, id: Self::Handle) -> TransportResult<()> {
        if let Some(inbox) = self.lock().get_mut(node)
            && let Some((payload, count)) = inbox.locked.remove(&id)
        {
            inbox.ready.push_front((id, payload, count));
            inbox.notify.notify_one();
        }
        Ok(())
    }
}

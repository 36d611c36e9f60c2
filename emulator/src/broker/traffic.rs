//! What the broker has carried, per entity, for metrics: messages sent and received since
//! the emulator started, and receives parked in a long poll now. Counted with relaxed
//! atomics on the paths that already touch the entity; read without locking the queues.

use std::sync::atomic::Ordering;

use servicebus_wire::EntityKind;

use super::Broker;

/// One entity's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTraffic {
    /// Its path (`topic/Subscriptions/sub` for a subscription).
    pub path: String,
    /// Queue, topic or subscription.
    pub kind: EntityKind,
    /// Messages accepted for it (queues and topics).
    pub sent: u64,
    /// Messages received from it, dead-letter subqueue included.
    pub received: u64,
    /// Receives parked in a long poll on it now (both protocols).
    pub waiting: usize,
}

impl Broker {
    /// Every entity's traffic, in path order.
    pub fn traffic(&self) -> Vec<EntityTraffic> {
        let mut all: Vec<EntityTraffic> = self
            .runtime
            .all()
            .into_iter()
            .map(|e| EntityTraffic {
                path: e.path.clone(),
                kind: e.kind,
                sent: e.sent.load(Ordering::Relaxed),
                received: e.received.load(Ordering::Relaxed),
                waiting: e
                    .queue
                    .as_ref()
                    .map_or(0, |q| q.waiting.load(Ordering::Relaxed)),
            })
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }
}

//! A queue, topic or subscription as the runtime knows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use servicebus_wire::{EntityDescription, EntityKind};

use crate::broker::duplicates::History;
use crate::filter::CompiledRule;

use super::{Queue, add, lock, read};

/// A subscription of a topic with its compiled rules, by name.
pub(crate) type RoutedSubscription = (Arc<Entity>, Arc<Vec<(String, CompiledRule)>>);

/// A queue, topic or subscription as the runtime knows it.
#[derive(Debug)]
pub(crate) struct Entity {
    pub(crate) id: u64,
    pub(crate) kind: EntityKind,
    /// Its path as created (`topic/Subscriptions/sub` for subscriptions).
    pub(crate) path: String,
    pub(super) description: RwLock<EntityDescription>,
    /// Next sequence number (queues and topics).
    pub(super) next_seq: Mutex<u64>,
    /// Bytes of the messages stored for it (queues and topics).
    pub(super) stored_bytes: AtomicU64,
    /// Delivery state (queues and subscriptions).
    pub(crate) queue: Option<Queue>,
    /// Subscriptions and their compiled rules (topics), in name order.
    pub(super) subscriptions: RwLock<Vec<RoutedSubscription>>,
    /// Message ids seen within the duplicate-detection window (queues, topics).
    pub(crate) seen: Mutex<History>,
    /// Last send, receive or update, for `AutoDeleteOnIdle`.
    pub(super) last_used: Mutex<DateTime<Utc>>,
    /// Messages accepted for it since the emulator started (queues and topics; metrics).
    pub(crate) sent: AtomicU64,
    /// Messages received from it (any subqueue) since the emulator started (metrics).
    pub(crate) received: AtomicU64,
}

impl Entity {
    pub(crate) fn description(&self) -> EntityDescription {
        read(&self.description).clone()
    }

    pub(crate) fn subscriptions(&self) -> Vec<RoutedSubscription> {
        read(&self.subscriptions).clone()
    }

    /// What receives this entity's messages: a queue itself, a topic's subscriptions.
    pub(crate) fn receivers(self: &Arc<Self>) -> Vec<Arc<Entity>> {
        match self.kind {
            EntityKind::Queue => vec![self.clone()],
            _ => self.subscriptions().into_iter().map(|(s, _)| s).collect(),
        }
    }

    /// Reserves `n` sequence numbers; returns the first and the next free one.
    pub(crate) fn reserve(&self, n: u64) -> (u64, u64) {
        let mut next = lock(&self.next_seq);
        let first = *next;
        *next += n;
        (first, *next)
    }

    /// Records use (a send, receive, settle or update) for idle deletion.
    pub(crate) fn touch(&self, now: DateTime<Utc>) {
        let mut last = lock(&self.last_used);
        *last = (*last).max(now);
    }

    /// Whether it has been unused for its `AutoDeleteOnIdle` at `now`.
    pub(crate) fn is_idle(&self, now: DateTime<Utc>) -> bool {
        let idle = read(&self.description).auto_delete_on_idle;
        !idle.is_infinite() && add(*lock(&self.last_used), idle) <= now
    }

    /// Makes the next sequence number at least `n` (recovery).
    pub(crate) fn raise_next_seq(&self, n: u64) {
        let mut next = lock(&self.next_seq);
        *next = (*next).max(n);
    }

    pub(crate) fn add_stored(&self, bytes: u64) {
        self.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn remove_stored(&self, bytes: u64) {
        let _ = self
            .stored_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(bytes))
            });
    }

    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }
}

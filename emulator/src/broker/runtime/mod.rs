//! The messaging runtime: an in-memory index over the stored messages of every queue and
//! subscription, rebuilt from the store on start.
//!
//! - [`entity`]: a queue, topic or subscription as the runtime knows it;
//! - [`handoff`]: a sent message handed straight to a parked receiver;
//! - [`queue`]: the delivery state of a queue or subscription (ready, cold, locked,
//!   scheduled), and [`state`] behind it;
//! - [`refs`]: how many copies point at each stored message of a topic;
//! - [`snapshot`]: the index a clean stop keeps for the next start;
//! - this file: the registry of every entity, ids, and sends in flight.
//!
//! Locks in this module are std mutexes: none is held across an await.

mod entity;
mod handoff;
mod queue;
mod refs;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Duration, Utc};
use servicebus_wire::{EntityDescription, EntityKind, TimeSpan};
use tokio::sync::Notify;

use crate::filter::CompiledRule;
use crate::model::Address;
use crate::model::message::Delivery;
use crate::store::{Key, Write};

pub(crate) use crate::sync::{lock, read, write};
pub(crate) use entity::Entity;
pub(crate) use handoff::{Claim, Offer, Parked};
pub(crate) use queue::{Effect, Entry, Queue, QueueSettings, Subqueue, Taken, Waiting};
pub use queue::{ReceiveMode, Settle};
use refs::RefCounts;
pub(crate) use snapshot::IndexSnapshot;

pub(crate) const REASON_MAX_DELIVERY: &str = "MaxDeliveryCountExceeded";
pub(crate) const REASON_TTL: &str = "TTLExpiredException";

/// How many receivable deliveries a subqueue keeps in memory by default; the rest wait
/// on disk as [`Cold`] sequence numbers and are read in as receivers take the head.
pub(crate) const DEFAULT_WINDOW: usize = 1024;

/// `t + span`, saturating at the latest instant.
pub(crate) fn add(t: DateTime<Utc>, span: TimeSpan) -> DateTime<Utc> {
    Duration::from_std(span.to_std())
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Every entity, by folded address and by id (the same entities in both).
#[derive(Debug, Default)]
pub(super) struct Entities {
    by_address: HashMap<Address, Arc<Entity>>,
    by_id: HashMap<u64, Arc<Entity>>,
}

/// Every entity by key, the reference counts of stored messages, and id allocation.
#[derive(Debug)]
pub(crate) struct Runtime {
    entities: RwLock<Entities>,
    /// How many deliveries point at each stored message of a topic, by topic id. A queue's
    /// message has exactly one delivery, its own, and no count.
    refs: Mutex<HashMap<u64, RefCounts>>,
    /// The highest entity id given out.
    last_id: AtomicU64,
    /// Ready deliveries each subqueue keeps in memory.
    window: usize,
    /// Sends between submitting their writes and filing their deliveries.
    sends_in_flight: AtomicUsize,
    /// Wakes the sweeper early (the clock moved).
    pub(crate) sweep: Notify,
    /// Set when the emulator stops: parked receives answer at once, empty.
    closing: std::sync::atomic::AtomicBool,
    /// Wakes parked receives when `closing` is set.
    closed: Notify,
}

/// Counts a send in flight while it lives (see [`Runtime::sends_in_flight`]).
#[derive(Debug)]
pub(crate) struct SendInFlight(Arc<Runtime>);

impl SendInFlight {
    pub(crate) fn new(runtime: &Arc<Runtime>) -> Self {
        runtime.sends_in_flight.fetch_add(1, Ordering::SeqCst);
        SendInFlight(runtime.clone())
    }
}

impl Drop for SendInFlight {
    fn drop(&mut self) {
        self.0.sends_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new(DEFAULT_WINDOW)
    }
}

impl Runtime {
    /// An empty runtime whose subqueues keep up to `window` ready deliveries in memory.
    pub(crate) fn new(window: usize) -> Self {
        Runtime {
            entities: RwLock::default(),
            refs: Mutex::default(),
            last_id: AtomicU64::new(0),
            window,
            sends_in_flight: AtomicUsize::new(0),
            sweep: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Answers every parked receive (empty) and every later one at once: the emulator stops.
    pub(crate) fn close_receives(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    /// Whether [`Runtime::close_receives`] was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Completes once [`Runtime::close_receives`] is called after it was enabled.
    pub(crate) fn closed(&self) -> tokio::sync::futures::Notified<'_> {
        self.closed.notified()
    }

    /// A new entity id; ids start at 1 (0 marks a record written before ids existed).
    pub(crate) fn allocate_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn ensure_ids_above(&self, id: u64) {
        self.last_id.fetch_max(id, Ordering::Relaxed);
    }

    /// The entity at `address` (names compare folded).
    pub(crate) fn get(&self, address: &Address) -> Option<Arc<Entity>> {
        read(&self.entities)
            .by_address
            .get(&address.folded())
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entity>> {
        read(&self.entities).by_address.values().cloned().collect()
    }

    /// Adds (or replaces the description of) an entity.
    pub(crate) fn register(
        &self,
        address: &Address,
        id: u64,
        kind: EntityKind,
        path: String,
        description: EntityDescription,
        now: DateTime<Utc>,
    ) -> Arc<Entity> {
        if let Some(existing) = self.get(address) {
            *write(&existing.description) = description;
            existing.touch(now);
            return existing;
        }
        self.ensure_ids_above(id);
        let entity = Arc::new(Entity {
            id,
            kind,
            path,
            description: RwLock::new(description),
            next_seq: Mutex::new(1),
            stored_bytes: AtomicU64::new(0),
            queue: (kind != EntityKind::Topic).then(|| Queue::new(self.window)),
            subscriptions: RwLock::default(),
            seen: Mutex::default(),
            last_used: Mutex::new(now),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        let mut entities = write(&self.entities);
        entities.by_id.insert(id, entity.clone());
        entities.by_address.insert(address.folded(), entity.clone());
        drop(entities);
        entity
    }

    /// Sets a subscription's compiled rules on its topic (adding the subscription if new).
    pub(crate) fn set_rules(
        &self,
        topic: &Entity,
        subscription: Arc<Entity>,
        rules: Vec<(String, CompiledRule)>,
    ) {
        let mut subs = write(&topic.subscriptions);
        let rules = Arc::new(rules);
        match subs.iter_mut().find(|(s, _)| s.id == subscription.id) {
            Some(slot) => slot.1 = rules,
            None => {
                subs.push((subscription, rules));
                subs.sort_by_key(|a| a.0.path.to_lowercase());
            }
        }
    }

    pub(crate) fn unregister(&self, address: &Address) -> Option<Arc<Entity>> {
        let mut entities = write(&self.entities);
        let entity = entities.by_address.remove(&address.folded())?;
        entities.by_id.remove(&entity.id);
        Some(entity)
    }

    pub(crate) fn remove_subscription(&self, topic: &Entity, id: u64) {
        write(&topic.subscriptions).retain(|(s, _)| s.id != id);
    }

    /// Counts `n` more deliveries of a topic's stored message; true when it had none before.
    pub(crate) fn add_refs(&self, owner: u64, seq: u64, n: u32) -> bool {
        lock(&self.refs).entry(owner).or_default().add(seq, n)
    }

    /// Drops one delivery of a topic's stored message; true when it was the last, so the
    /// stored message is to be deleted.
    pub(crate) fn release_ref(&self, owner: u64, seq: u64) -> bool {
        let mut refs = lock(&self.refs);
        let Some(counts) = refs.get_mut(&owner) else {
            return false;
        };
        let last = counts.release(seq);
        if counts.counts.is_empty() {
            refs.remove(&owner);
        }
        last
    }

    /// Forgets the counts of a deleted topic.
    pub(crate) fn forget_refs(&self, owner: u64) {
        lock(&self.refs).remove(&owner);
    }

    /// Turns effects on `receivable` into store writes, releasing stored messages whose
    /// last delivery went.
    pub(crate) fn writes_for(&self, receivable: u64, effects: Vec<Effect>) -> Vec<Write> {
        let mut writes = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Effect::Rewrite(seq, delivery) => {
                    writes.push(Write::put(Key::Delivery(receivable, seq), &delivery))
                }
                Effect::Remove(seq, delivery) => {
                    if delivery.overridden {
                        writes.push(Write::delete(Key::Override(receivable, seq)));
                    }
                    // A queue's message goes with its one delivery.
                    if delivery.owner == receivable || self.release_ref(delivery.owner, seq) {
                        writes.push(Write::delete(Key::Delivery(receivable, seq)));
                        self.release_message(delivery.owner, seq, delivery.size, &mut writes);
                    } else if delivery.listed {
                        // Its stored message still lists it: a restart must not bring it back.
                        let settled = Delivery {
                            settled: true,
                            ..delivery
                        };
                        writes.push(Write::put(Key::Delivery(receivable, seq), &settled));
                    } else {
                        writes.push(Write::delete(Key::Delivery(receivable, seq)));
                    }
                }
            }
        }
        writes
    }

    /// The writes that delete a stored message whose last delivery went: the message, and
    /// the delivery records its topic's subscriptions may still have of it (settled copies,
    /// copies whose state changed).
    pub(crate) fn release_message(&self, owner: u64, seq: u64, size: u64, writes: &mut Vec<Write>) {
        writes.push(Write::delete(Key::Message(owner, seq)));
        if let Some(owner) = self.by_id(owner) {
            owner.remove_stored(size);
            for (subscription, _) in owner.subscriptions() {
                writes.push(Write::delete(Key::Delivery(subscription.id, seq)));
            }
        }
    }

    pub(crate) fn by_id(&self, id: u64) -> Option<Arc<Entity>> {
        read(&self.entities).by_id.get(&id).cloned()
    }

    /// Sends whose writes are submitted but whose deliveries are not filed yet.
    pub(crate) fn sends_in_flight(&self) -> usize {
        self.sends_in_flight.load(Ordering::SeqCst)
    }
}

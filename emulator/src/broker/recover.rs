//! Start-up: the index back from the snapshot a clean stop left, or rebuilt from the
//! records after a crash.

use std::collections::HashMap;
use std::sync::Arc;

use servicebus_wire::EntityKind;

use super::runtime::{self, Entity, Entry};
use super::{Broker, Error, Result};
use crate::model::Address;
use crate::model::EntityRecord;
use crate::model::message::{DeadLetter, Delivery};
use crate::store::{Key, Write};

/// Sequence numbers an owner's stored messages must span before recovery walks its two
/// halves on two threads (a thread per small owner would cost more than it saves).
const SPLIT_WALK_FROM: u64 = 1 << 16;

impl Broker {
    /// Registers every stored entity and compiles every subscription's rules.
    pub(super) async fn load_entities(&self) -> Result<HashMap<u64, Arc<runtime::Entity>>> {
        let mut records: Vec<(Address, EntityRecord)> = Vec::new();
        for r in self
            .store
            .scan::<EntityRecord>(Address::Queue(String::new()))?
        {
            records.push((Address::Queue(r.name.clone()), r));
        }
        for r in self
            .store
            .scan::<EntityRecord>(Address::Topic(String::new()))?
        {
            records.push((Address::Topic(r.name.clone()), r));
        }
        let topics: Vec<String> = records
            .iter()
            .filter(|(k, _)| matches!(k, Address::Topic(_)))
            .map(|(_, r)| r.name.clone())
            .collect();
        for topic in &topics {
            for r in self
                .store
                .scan::<EntityRecord>(Address::Subscription(topic.clone(), String::new()))?
            {
                records.push((Address::Subscription(topic.clone(), r.name.clone()), r));
            }
        }
        for (_, r) in &records {
            self.runtime.ensure_ids_above(r.id);
        }
        // Records from before ids existed get one now.
        let mut writes = Vec::new();
        for (key, r) in &mut records {
            if r.id == 0 {
                r.id = self.runtime.allocate_id();
                writes.push(Write::put(key.clone(), r));
            }
        }
        if !writes.is_empty() {
            self.store.apply(writes).await?;
        }
        let mut by_id = HashMap::new();
        for (key, r) in &records {
            let entity = self.register(key, r);
            by_id.insert(r.id, entity);
        }
        for (key, _) in &records {
            if let Address::Subscription(topic, sub) = key {
                self.refresh_rules(topic, sub)?;
            }
        }
        Ok(by_id)
    }

    /// Reads duplicate detection's history back: the ids each queue and topic saw within its
    /// window. Ids of deleted entities, and ids that left their window while the emulator
    /// was down, are deleted.
    pub(super) async fn load_history(
        &self,
        by_id: &HashMap<u64, Arc<runtime::Entity>>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut writes = Vec::new();
        let mut seen: HashMap<u64, Vec<(chrono::DateTime<chrono::Utc>, String)>> = HashMap::new();
        self.store
            .visit::<chrono::DateTime<chrono::Utc>, Error>(Key::AllSeen, |key, at| {
                let Some((owner, id)) = Key::parse_seen(key) else {
                    return Ok(());
                };
                let live = by_id.get(&owner).map(|e| e.description()).filter(|d| {
                    d.requires_duplicate_detection
                        && runtime::add(at, d.duplicate_detection_history_time_window) > now
                });
                match live {
                    Some(_) => seen.entry(owner).or_default().push((at, id)),
                    None => writes.push(Write::delete(Key::Seen(owner, id))),
                }
                Ok(())
            })?;
        for (owner, mut ids) in seen {
            ids.sort();
            if let Some(entity) = by_id.get(&owner) {
                let mut history = runtime::lock(&entity.seen);
                for (at, id) in ids {
                    history.remember(id, at);
                }
            }
        }
        if !writes.is_empty() {
            self.store.apply(writes).await?;
        }
        Ok(())
    }

    /// A delivery found at start-up: it was locked at most (locks do not survive a
    /// restart), so it is released as an expired lock would be, and past the maximum
    /// delivery count it goes to the dead-letter subqueue (with the write that says so).
    fn restarted(
        max_delivery_count: u32,
        receivable: u64,
        seq: u64,
        mut delivery: Delivery,
        writes: &mut Vec<Write>,
    ) -> Delivery {
        // A deferred message is not a released lock: it stays deferred.
        if delivery.dead_letter.is_none()
            && !delivery.deferred
            && delivery.delivery_count >= max_delivery_count
        {
            delivery.dead_letter = Some(DeadLetter {
                reason: runtime::REASON_MAX_DELIVERY.into(),
                description: format!(
                    "Message could not be consumed after {max_delivery_count} delivery attempts."
                ),
            });
            delivery.expires_at = None;
            writes.push(Write::put(Key::Delivery(receivable, seq), &delivery));
        }
        delivery
    }

    /// Restores the index a clean shutdown kept (see [`Broker::close`]); `false` when there
    /// is none or it does not fit, and the index is to be rebuilt from the records.
    pub(super) async fn restore(&self, by_id: &HashMap<u64, Arc<Entity>>) -> Result<bool> {
        let started = std::time::Instant::now();
        let Some(snapshot) = self.store.take_snapshot::<runtime::IndexSnapshot>() else {
            return Ok(false);
        };
        let now = self.clock.now();
        let mut writes = Vec::new();
        let restored = self
            .runtime
            .restore(snapshot, by_id, |entity, seq, delivery| {
                let max = entity.description().max_delivery_count;
                let delivery = Self::restarted(max, entity.id, seq, delivery, &mut writes);
                if let Some(queue) = &entity.queue {
                    queue.insert([Entry { seq, delivery }], now);
                }
            });
        if !restored {
            tracing::warn!("index snapshot does not fit the entities; rebuilding the index");
            return Ok(false);
        }
        tracing::info!(elapsed = ?started.elapsed(), "runtime index restored from the snapshot");
        if !writes.is_empty() {
            self.store.apply(writes).await?;
        }
        Ok(true)
    }

    /// Where recovery splits `owner`'s stored sequence numbers (the lower half ends at the
    /// first number), and how many lie between its first and last message (two seeks);
    /// `None` when it holds fewer than two messages.
    fn split(&self, owner: u64) -> Result<Option<(u64, u64)>> {
        let seq = |key: Option<Vec<u8>>| {
            key.and_then(|k| Key::parse_numbers(&k))
                .map(|(_, _, seq)| seq)
        };
        let first = seq(self
            .store
            .next_key(Key::Message(owner, 0), Key::Messages(owner))?);
        let last = seq(self
            .store
            .last_key(Key::Message(owner, 0), Key::Message(owner, u64::MAX))?);
        Ok(match (first, last) {
            (Some(first), Some(last)) if last > first => {
                Some((first + (last - first) / 2, last - first))
            }
            _ => None,
        })
    }

    /// Rebuilds the runtime index from the store: deliveries back in their subqueues (locks
    /// released, delivery counts kept), sequence counters, and removal of records that no
    /// entity owns any more.
    pub(super) async fn recover(&self, by_id: &HashMap<u64, Arc<Entity>>) -> Result<()> {
        let started = std::time::Instant::now();
        let mut writes = self.orphan_deliveries(by_id)?;
        let mut max_seq: HashMap<u64, u64> = HashMap::new();
        for owner in by_id
            .values()
            .filter(|e| matches!(e.kind, EntityKind::Queue | EntityKind::Topic))
        {
            let (owner_writes, top) = self.file_owner(owner, by_id)?;
            writes.extend(owner_writes);
            if let Some(top) = top {
                max_seq.insert(owner.id, top);
            }
        }
        self.orphan_messages(by_id, &mut writes)?;
        self.raise_sequences(by_id, &max_seq, &mut writes)?;
        tracing::info!(elapsed = ?started.elapsed(), "runtime index rebuilt");
        if !writes.is_empty() {
            tracing::info!(
                records = writes.len(),
                "removing records of deleted entities"
            );
            self.store.apply(writes).await?;
        }
        Ok(())
    }

    /// The deletes of delivery records no live entity owns; the others are read with their
    /// stored messages (see [`Broker::file_owner`]).
    fn orphan_deliveries(&self, by_id: &HashMap<u64, Arc<Entity>>) -> Result<Vec<Write>> {
        let mut writes = Vec::new();
        self.store
            .visit::<Delivery, Error>(Key::AllDeliveries, |key, delivery| {
                let Some((_, receivable, seq)) = Key::parse_numbers(key) else {
                    return Ok(());
                };
                self.runtime.ensure_ids_above(receivable);
                match by_id.get(&receivable) {
                    Some(e) if e.queue.is_some() && by_id.contains_key(&delivery.owner) => {}
                    _ => {
                        writes.push(Write::delete(Key::Delivery(receivable, seq)));
                        writes.push(Write::delete(Key::Override(receivable, seq)));
                    }
                }
                Ok(())
            })?;
        Ok(writes)
    }

    /// Files a queue's or a topic's messages with the deliveries of its receivers, in
    /// sequence order as they stream by; past each subqueue's window only their sequence
    /// numbers stay in memory (as ranges), so a large backlog costs little. Returns the
    /// writes it needs (dead-lettering past the maximum delivery count) and the highest
    /// sequence number seen.
    ///
    /// Reading every message record is most of a start after a crash: the lower and the
    /// upper half of the owner's sequence numbers are walked apart, on two threads when
    /// there are many. The upper half is filed cold, so the window fills from the smallest
    /// whichever half files first; small owners walk the upper half first, the order that
    /// leaves the most to the cold path (and so the one the tests exercise).
    fn file_owner(
        &self,
        owner: &Arc<Entity>,
        by_id: &HashMap<u64, Arc<Entity>>,
    ) -> Result<(Vec<Write>, Option<u64>)> {
        let now = self.clock.now();
        let receivers = owner.receivers();
        let ids: Vec<u64> = receivers.iter().map(|r| r.id).collect();
        let max: HashMap<u64, u32> = receivers
            .iter()
            .map(|r| (r.id, r.description().max_delivery_count))
            .collect();
        let walk = |(lo, hi): (u64, u64), cold: bool| {
            let mut writes = Vec::new();
            let mut top = None;
            self.deliveries(owner.id, &ids, lo, hi, |receiver, seq, delivery| {
                let Some(to) = by_id.get(&receiver) else {
                    return Ok(());
                };
                let max = max.get(&receiver).copied().unwrap_or(u32::MAX);
                let delivery = Self::restarted(max, receiver, seq, delivery, &mut writes);
                // A topic's message is stored once whatever its number of copies.
                if owner.kind == EntityKind::Queue || self.runtime.add_refs(owner.id, seq, 1) {
                    owner.add_stored(delivery.size);
                }
                top = Some(seq);
                if let Some(q) = &to.queue {
                    let entry = [Entry { seq, delivery }];
                    if cold {
                        q.insert_cold(entry, now);
                    } else {
                        q.insert(entry, now);
                    }
                }
                Ok(())
            })
            .map(|()| (writes, top))
        };
        let walked = match self.split(owner.id)? {
            Some((mid, span)) if span >= SPLIT_WALK_FROM => std::thread::scope(|scope| {
                let upper = scope.spawn(|| walk((mid + 1, u64::MAX), true));
                let lower = walk((0, mid), false);
                let upper = upper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                vec![lower, upper]
            }),
            Some((mid, _)) => {
                let upper = walk((mid + 1, u64::MAX), true);
                vec![walk((0, mid), false), upper]
            }
            None => vec![walk((0, u64::MAX), false)],
        };
        let mut writes = Vec::new();
        let mut top: Option<u64> = None;
        for half in walked {
            let (half_writes, half_top) = half?;
            writes.extend(half_writes);
            top = top.max(half_top);
        }
        Ok((writes, top))
    }

    /// Stored messages of entities deleted while their messages were being removed: a seek
    /// per owner finds them without reading every message (a message of a live owner is
    /// written and released in the same atomic write as its deliveries, so no per-message
    /// pass is needed).
    fn orphan_messages(
        &self,
        by_id: &HashMap<u64, Arc<Entity>>,
        writes: &mut Vec<Write>,
    ) -> Result<()> {
        let mut from = Key::Messages(0);
        while let Some(key) = self.store.next_key(from, Key::AllMessages)? {
            let Some((_, owner, _)) = Key::parse_numbers(&key) else {
                break;
            };
            self.runtime.ensure_ids_above(owner);
            if !by_id.contains_key(&owner) {
                writes.push(Write::delete_prefix(Key::Messages(owner)));
            }
            match owner.checked_add(1) {
                Some(next) => from = Key::Messages(next),
                None => break,
            }
        }
        Ok(())
    }

    /// Each live owner's next sequence number: past its counter and past every message
    /// found; counters of deleted owners go.
    fn raise_sequences(
        &self,
        by_id: &HashMap<u64, Arc<Entity>>,
        max_seq: &HashMap<u64, u64>,
        writes: &mut Vec<Write>,
    ) -> Result<()> {
        for (key, next) in self.store.scan_with_keys::<u64>(Key::AllNextSequences)? {
            let Some((_, owner, _)) = Key::parse_numbers(&key) else {
                continue;
            };
            self.runtime.ensure_ids_above(owner);
            match by_id.get(&owner) {
                Some(e) => e.raise_next_seq(max_seq.get(&owner).map_or(next, |m| next.max(m + 1))),
                None => writes.push(Write::delete(Key::NextSequence(owner))),
            }
        }
        Ok(())
    }
}

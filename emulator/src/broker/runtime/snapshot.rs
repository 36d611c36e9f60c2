//! The index a clean stop keeps (encoded by the store) so that the next start need not
//! read every message record.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rangemap::RangeSet;
use serde::{Deserialize, Serialize};
use servicebus_wire::EntityKind;

use crate::model::message::Delivery;

use super::state::{Cold, SubQueue};
use super::{Entity, Queue, RefCounts, Runtime, lock};

/// The runtime index as a clean shutdown leaves it for the next start.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IndexSnapshot {
    pub(super) last_id: u64,
    pub(super) owners: Vec<OwnerSnapshot>,
    pub(super) receivables: Vec<ReceivableSnapshot>,
}

/// A queue's or topic's counters and reference counts.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct OwnerSnapshot {
    pub(super) id: u64,
    pub(super) next_seq: u64,
    pub(super) stored_bytes: u64,
    pub(super) refs_base: u64,
    pub(super) refs: Vec<u32>,
}

/// A queue's or subscription's deliveries.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ReceivableSnapshot {
    pub(super) id: u64,
    pub(super) main: ColdSnapshot,
    pub(super) dead: ColdSnapshot,
    /// Locked and scheduled deliveries, whole.
    pub(super) held: Vec<(u64, Delivery)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct ColdSnapshot {
    pub(super) ranges: Vec<(u64, u64)>,
    pub(super) count: u64,
    pub(super) bytes: u64,
}

impl ColdSnapshot {
    /// A subqueue's ready and cold deliveries, all as cold.
    pub(super) fn of(sub: &SubQueue) -> Self {
        let mut cold = sub.cold.clone();
        for (&seq, entry) in &sub.ready {
            cold.add(seq, entry.delivery.size);
        }
        ColdSnapshot {
            ranges: cold.seqs.iter().map(|r| (r.start, r.end)).collect(),
            count: cold.count,
            bytes: cold.bytes,
        }
    }

    pub(super) fn into_cold(self) -> Cold {
        let mut seqs = RangeSet::new();
        for (start, end) in self.ranges.into_iter().filter(|(s, e)| s < e) {
            seqs.insert(start..end);
        }
        Cold {
            seqs,
            count: self.count,
            bytes: self.bytes,
        }
    }
}

impl Queue {
    pub(super) fn snapshot(&self, id: u64) -> ReceivableSnapshot {
        let state = lock(&self.state);
        let held = [&state.main, &state.dead]
            .into_iter()
            .flat_map(|sub| sub.locked.values().map(|l| &l.entry))
            .chain(state.scheduled.values())
            .map(|e| (e.seq, e.delivery.clone()))
            .collect();
        ReceivableSnapshot {
            id,
            main: ColdSnapshot::of(&state.main),
            dead: ColdSnapshot::of(&state.dead),
            held,
        }
    }
}

impl Runtime {
    /// What a restart needs to skip reading every delivery record: counters, reference
    /// counts, and each subqueue's deliveries, all as cold ones but the held (locked or
    /// scheduled). Valid only while nothing changes (taken at shutdown).
    pub(crate) fn snapshot(&self) -> IndexSnapshot {
        let mut out = IndexSnapshot {
            last_id: self.last_id.load(Ordering::Relaxed),
            owners: Vec::new(),
            receivables: Vec::new(),
        };
        let refs = lock(&self.refs);
        for entity in self.all() {
            if entity.kind != EntityKind::Subscription {
                let counts = refs.get(&entity.id);
                out.owners.push(OwnerSnapshot {
                    id: entity.id,
                    next_seq: *lock(&entity.next_seq),
                    stored_bytes: entity.stored_bytes(),
                    refs_base: counts.map_or(0, |c| c.base),
                    refs: counts.map_or_else(Vec::new, |c| c.counts.iter().copied().collect()),
                });
            }
            if let Some(queue) = &entity.queue {
                out.receivables.push(queue.snapshot(entity.id));
            }
        }
        out
    }

    /// Restores a [`Runtime::snapshot`] over freshly registered entities (by id). Held
    /// deliveries are handed to `held` (to be released as at any restart) rather than
    /// filed. `false`, with nothing changed, when it does not fit the entities.
    pub(crate) fn restore(
        &self,
        snapshot: IndexSnapshot,
        by_id: &HashMap<u64, Arc<Entity>>,
        mut held: impl FnMut(&Arc<Entity>, u64, Delivery),
    ) -> bool {
        let fits = snapshot.owners.iter().all(|o| {
            by_id
                .get(&o.id)
                .is_some_and(|e| e.kind != EntityKind::Subscription)
        }) && snapshot
            .receivables
            .iter()
            .all(|r| by_id.get(&r.id).is_some_and(|e| e.queue.is_some()));
        if !fits {
            return false;
        }
        self.ensure_ids_above(snapshot.last_id);
        let mut refs = lock(&self.refs);
        for owner in snapshot.owners {
            let entity = &by_id[&owner.id];
            entity.raise_next_seq(owner.next_seq);
            entity.add_stored(owner.stored_bytes);
            if !owner.refs.is_empty() {
                refs.insert(
                    owner.id,
                    RefCounts {
                        base: owner.refs_base,
                        counts: owner.refs.into(),
                    },
                );
            }
        }
        drop(refs);
        for r in snapshot.receivables {
            let entity = &by_id[&r.id];
            if let Some(queue) = &entity.queue {
                let mut state = lock(&queue.state);
                state.main.cold = r.main.into_cold();
                state.dead.cold = r.dead.into_cold();
            }
            for (seq, delivery) in r.held {
                held(entity, seq, delivery);
            }
        }
        true
    }
}

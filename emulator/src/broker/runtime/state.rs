//! The state behind a [`Queue`](super::Queue)'s mutex, and how entries are filed, read
//! back from disk, released and expired.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rangemap::RangeSet;
use uuid::Uuid;

use crate::model::message::DeadLetter;

use super::queue::{Effect, Entry, Loader, Locked, QueueSettings, Subqueue};
use super::{REASON_MAX_DELIVERY, REASON_TTL};

/// Most deliveries read in from disk at once (under the queue's lock).
pub(super) const LOAD_CHUNK: usize = 256;

/// Deliveries of a subqueue that are on disk but not in memory: their sequence numbers (as
/// ranges: a backlog of a million sends is one range) and the totals counts need.
///
/// Only deliveries whose record on disk is their current state are filed here (new sends,
/// and everything at start-up); nothing changes them while they are cold, so reading them
/// in later gives exactly what was filed.
#[derive(Debug, Default, Clone)]
pub(super) struct Cold {
    pub(super) seqs: RangeSet<u64>,
    pub(super) count: u64,
    pub(super) bytes: u64,
}

impl Cold {
    pub(super) fn add(&mut self, seq: u64, size: u64) {
        if !self.seqs.contains(&seq) {
            self.seqs.insert(seq..seq.saturating_add(1));
            self.count += 1;
            self.bytes += size;
        }
    }

    /// The smallest `n` sequence numbers.
    pub(super) fn first(&self, n: usize) -> Vec<u64> {
        self.seqs.iter().flat_map(Clone::clone).take(n).collect()
    }

    pub(super) fn all(&self) -> Vec<u64> {
        self.first(usize::MAX)
    }
}

#[derive(Debug, Default)]
pub(super) struct SubQueue {
    pub(super) ready: BTreeMap<u64, Entry>,
    pub(super) locked: HashMap<Uuid, Locked>,
    pub(super) cold: Cold,
}

#[derive(Debug)]
pub(super) struct QueueState {
    pub(super) main: SubQueue,
    pub(super) dead: SubQueue,
    pub(super) scheduled: BTreeMap<(DateTime<Utc>, u64), Entry>,
    /// Expiry times of `main.ready` entries, for cheap TTL sweeps.
    pub(super) expiries: BTreeSet<(DateTime<Utc>, u64)>,
    /// Ready entries kept in memory per subqueue before new ones stay cold.
    pub(super) window: usize,
}

impl QueueState {
    pub(super) fn new(window: usize) -> Self {
        QueueState {
            main: SubQueue::default(),
            dead: SubQueue::default(),
            scheduled: BTreeMap::new(),
            expiries: BTreeSet::new(),
            window: window.max(1),
        }
    }
}

/// Where [`QueueState::insert`] files an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filing {
    /// Its state is only in memory (its record is not current): it must be ready.
    Memory,
    /// Its record is current: cold once the window is full or anything is cold.
    OnDisk,
    /// Its record is current, and it goes cold.
    Cold,
}

impl QueueState {
    pub(super) fn sub(&mut self, which: Subqueue) -> &mut SubQueue {
        match which {
            Subqueue::Main => &mut self.main,
            Subqueue::DeadLetter => &mut self.dead,
        }
    }

    /// Files an entry; the subqueue in which it became receivable, if it did. An entry
    /// whose record on disk is its current state (`Filing::OnDisk`) stays cold when the
    /// subqueue already has cold entries or a full window, and always with `Filing::Cold`;
    /// scheduled entries are always in memory.
    pub(super) fn insert(
        &mut self,
        entry: Entry,
        now: DateTime<Utc>,
        filing: Filing,
    ) -> Option<Subqueue> {
        let which = if entry.delivery.dead_letter.is_some() {
            Subqueue::DeadLetter
        } else if let Some(at) = entry.delivery.scheduled_at.filter(|at| *at > now) {
            self.scheduled.insert((at, entry.seq), entry);
            return None;
        } else {
            Subqueue::Main
        };
        let window = self.window;
        let sub = self.sub(which);
        let cold = match filing {
            Filing::Memory => false,
            Filing::OnDisk => sub.cold.count > 0 || sub.ready.len() >= window,
            Filing::Cold => true,
        };
        if cold {
            sub.cold.add(entry.seq, entry.delivery.size);
            return Some(which);
        }
        if let Some(at) = entry
            .delivery
            .expires_at
            .filter(|_| which == Subqueue::Main)
        {
            self.expiries.insert((at, entry.seq));
        }
        self.sub(which).ready.insert(entry.seq, entry);
        Some(which)
    }

    /// Reads cold entries in, smallest first, once fewer than half a window are ready, or
    /// when the smallest cold one comes before every ready one (a message released, or
    /// restored from a snapshot, after larger ones went cold), so that the head is always
    /// the smallest sequence number.
    pub(super) fn refill(
        &mut self,
        which: Subqueue,
        now: DateTime<Utc>,
        load: Loader<'_>,
    ) -> crate::store::Result<()> {
        let window = self.window;
        let sub = self.sub(which);
        let cold_first = sub.cold.seqs.iter().next().map(|r| r.start);
        let behind = matches!(
            (cold_first, sub.ready.first_key_value()),
            (Some(cold), Some((&ready, _))) if cold < ready
        );
        if sub.cold.count == 0 || (sub.ready.len() >= window.div_ceil(2) && !behind) {
            return Ok(());
        }
        let seqs = sub
            .cold
            .first(window.saturating_sub(sub.ready.len()).clamp(1, LOAD_CHUNK));
        let (Some(&lo), Some(&hi)) = (seqs.first(), seqs.last()) else {
            return Ok(());
        };
        let found = load(which, lo, hi)?;
        let sub = self.sub(which);
        let mut entries = Vec::with_capacity(seqs.len());
        for (seq, delivery) in found {
            if sub.cold.seqs.contains(&seq) {
                sub.cold.bytes = sub.cold.bytes.saturating_sub(delivery.size);
                entries.push(Entry { seq, delivery });
            }
        }
        if entries.len() != seqs.len() {
            tracing::warn!(
                expected = seqs.len(),
                found = entries.len(),
                "delivery records missing on disk; skipped"
            );
        }
        sub.cold.seqs.remove(lo..hi.saturating_add(1));
        sub.cold.count = sub.cold.count.saturating_sub(seqs.len() as u64);
        if sub.cold.count == 0 {
            sub.cold = Cold::default();
        }
        for entry in entries {
            self.insert(entry, now, Filing::Memory);
        }
        Ok(())
    }

    pub(super) fn take_ready(&mut self, which: Subqueue) -> Option<Entry> {
        let entry = self.sub(which).ready.pop_first().map(|(_, e)| e)?;
        if let Some(at) = entry
            .delivery
            .expires_at
            .filter(|_| which == Subqueue::Main)
        {
            self.expiries.remove(&(at, entry.seq));
        }
        Some(entry)
    }

    /// A lock released (abandon or expiry): back to ready, or dead-lettered past the
    /// maximum delivery count. Dead-lettered messages are never dead-lettered again.
    pub(super) fn release(
        &mut self,
        which: Subqueue,
        mut entry: Entry,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) {
        if which == Subqueue::Main && entry.delivery.delivery_count >= settings.max_delivery_count {
            entry.delivery.dead_letter = Some(DeadLetter {
                reason: REASON_MAX_DELIVERY.into(),
                description: format!(
                    "Message could not be consumed after {} delivery attempts.",
                    settings.max_delivery_count
                ),
            });
            entry.delivery.expires_at = None;
            effects.push(Effect::Rewrite(entry.seq, entry.delivery.clone()));
        }
        self.insert(entry, now, Filing::Memory);
    }

    /// Applies time: expired locks are released, due scheduled messages become ready,
    /// expired ready messages are dropped or dead-lettered. Locked messages do not expire
    /// until their lock is released.
    pub(super) fn reclaim(
        &mut self,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let mut changed = false;
        for which in [Subqueue::Main, Subqueue::DeadLetter] {
            let expired: Vec<Uuid> = self
                .sub(which)
                .locked
                .iter()
                .filter(|(_, l)| l.until <= now)
                .map(|(t, _)| *t)
                .collect();
            for token in expired {
                if let Some(l) = self.sub(which).locked.remove(&token) {
                    self.release(which, l.entry, settings, now, effects);
                    changed = true;
                }
            }
        }
        while let Some(((at, seq), _)) = self.scheduled.first_key_value() {
            if *at > now {
                break;
            }
            let key = (*at, *seq);
            if let Some(mut entry) = self.scheduled.remove(&key) {
                entry.delivery.scheduled_at = None;
                self.insert(entry, now, Filing::Memory);
                changed = true;
            }
        }
        while let Some(&(at, seq)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, seq));
            let Some(mut entry) = self.main.ready.remove(&seq) else {
                continue;
            };
            if settings.dead_letter_on_expiry {
                entry.delivery.dead_letter = Some(DeadLetter {
                    reason: REASON_TTL.into(),
                    description: "The message expired and was dead lettered.".into(),
                });
                entry.delivery.expires_at = None;
                effects.push(Effect::Rewrite(seq, entry.delivery.clone()));
                self.dead.ready.insert(seq, entry);
            } else {
                effects.push(Effect::Remove(seq, entry.delivery));
            }
            changed = true;
        }
        changed
    }
}

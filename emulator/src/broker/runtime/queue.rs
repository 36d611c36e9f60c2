//! The delivery state of one queue or subscription, behind a std mutex: what is ready,
//! cold (on disk only), locked and scheduled, and what receivers take and settle.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use servicebus_wire::{EntityDescription, TimeSpan};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::model::message::{DEFERRED_UNTIL, DeadLetter, Delivery};

use super::state::{Filing, QueueState};
use super::{add, lock};

/// Which subqueue of a queue or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subqueue {
    Main,
    DeadLetter,
}

/// One delivery of a message in a subqueue.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) delivery: Delivery,
}

#[derive(Debug, Clone)]
pub(crate) struct Locked {
    pub(crate) entry: Entry,
    pub(crate) until: DateTime<Utc>,
}

/// Reads the deliveries of a receivable's subqueue with sequence numbers in `lo..=hi` (it
/// may return others of the receivable too; they are ignored).
pub(crate) type Loader<'a> =
    &'a dyn Fn(Subqueue, u64, u64) -> crate::store::Result<Vec<(u64, Delivery)>>;

/// What a state change needs on disk.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Rewrite the delivery record.
    Rewrite(u64, Delivery),
    /// The delivery is gone (completed, received-and-deleted, expired).
    Remove(u64, Delivery),
}

/// A queue's or subscription's delivery state and its waiters.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(super) state: Mutex<QueueState>,
    /// Woken when a message may have become receivable in the main subqueue: one waiter
    /// per new message, everyone for other changes.
    pub(super) main_ready: Notify,
    /// The same for the dead-letter subqueue.
    pub(super) dead_ready: Notify,
    /// Receives parked in a long poll right now.
    pub(crate) waiting: std::sync::atomic::AtomicUsize,
    /// Receive-and-delete receivers parked for a hand-off (see [`super::handoff`]).
    pub(super) slots: super::handoff::Slots,
}

/// Counts a parked receive while it lives; dropped when the receive returns or its client
/// goes away (hyper drops the handler), so nothing is taken for a vanished client.
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a Queue);

impl<'a> Waiting<'a> {
    pub(crate) fn new(queue: &'a Queue) -> Self {
        queue.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(queue)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts for management answers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) active: u64,
    pub(crate) dead_letter: u64,
    pub(crate) scheduled: u64,
    pub(crate) bytes: u64,
}

/// Settings a queue operation needs, read once per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueSettings {
    pub(crate) lock_duration: TimeSpan,
    pub(crate) max_delivery_count: u32,
    pub(crate) dead_letter_on_expiry: bool,
}

impl QueueSettings {
    pub(crate) fn of(d: &EntityDescription) -> Self {
        QueueSettings {
            lock_duration: d.lock_duration,
            max_delivery_count: d.max_delivery_count,
            dead_letter_on_expiry: d.dead_lettering_on_message_expiration,
        }
    }
}

pub(crate) fn lock_until(now: DateTime<Utc>, settings: &QueueSettings) -> DateTime<Utc> {
    add(now, settings.lock_duration)
}

/// What a receive took.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub(crate) entry: Entry,
    /// Lock token and expiry (peek-lock).
    pub(crate) lock: Option<(Uuid, DateTime<Utc>)>,
}

/// How a receive takes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveMode {
    /// Lock it (`POST .../head`, 201).
    PeekLock,
    /// Remove it (`DELETE .../head`, 200).
    ReceiveAndDelete,
}

/// How a locked message is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// `DELETE`: done with it.
    Complete,
    /// `PUT`: give it back now.
    Unlock,
    /// `POST`: extend the lock.
    Renew,
    /// Move it to the dead-letter subqueue with this reason (AMQP `rejected` with
    /// `com.microsoft:dead-letter`). A message already there stays there, unlocked, with
    /// the new reason.
    DeadLetter(DeadLetter),
    /// Take it out of normal delivery (AMQP `modified` with undeliverable-here): it is
    /// received only by sequence number from then on.
    Defer,
}

impl Queue {
    /// An empty queue keeping up to `window` ready deliveries per subqueue in memory.
    pub(crate) fn new(window: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState::new(window)),
            main_ready: Notify::new(),
            dead_ready: Notify::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            slots: super::handoff::Slots::default(),
        }
    }

    /// Files deliveries whose records are on disk as given (new sends, and everything at
    /// start-up) and wakes one parked receiver for each that became receivable (waking
    /// every receiver would have all but one find nothing and park again).
    pub(crate) fn insert(&self, entries: impl IntoIterator<Item = Entry>, now: DateTime<Utc>) {
        self.file(entries, now, Filing::OnDisk);
    }

    /// As [`Queue::insert`], but the entries go cold whatever the window holds (scheduled
    /// ones excepted): for a start-up that files the upper part of the sequence numbers
    /// while another thread files the lower part, so that the window fills from the
    /// smallest and the head stays the smallest sequence number.
    pub(crate) fn insert_cold(&self, entries: impl IntoIterator<Item = Entry>, now: DateTime<Utc>) {
        self.file(entries, now, Filing::Cold);
    }

    pub(super) fn file(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        now: DateTime<Utc>,
        filing: Filing,
    ) {
        let mut state = lock(&self.state);
        let ready: Vec<Subqueue> = entries
            .into_iter()
            .filter_map(|e| state.insert(e, now, filing))
            .collect();
        drop(state);
        for which in ready {
            self.ready(which).notify_one();
        }
    }

    pub(super) fn ready(&self, which: Subqueue) -> &Notify {
        match which {
            Subqueue::Main => &self.main_ready,
            Subqueue::DeadLetter => &self.dead_ready,
        }
    }

    /// Completes when something may have become receivable in `which` (see
    /// [`tokio::sync::Notify::notified`]; a notification for one waiter that is dropped
    /// before it is taken passes to the next waiter).
    pub(crate) fn notified(&self, which: Subqueue) -> tokio::sync::futures::Notified<'_> {
        self.ready(which).notified()
    }

    /// Wakes every parked receiver (messages released, expired or moved; entity changed).
    pub(crate) fn wake_all(&self) {
        self.main_ready.notify_waiters();
        self.dead_ready.notify_waiters();
    }

    /// Applies time, then takes the first ready message of `which`, if any, reading cold
    /// deliveries in through `load` as the ready ones run low.
    ///
    /// # Errors
    ///
    /// What `load` returns; nothing is taken then.
    pub(crate) fn take(
        &self,
        which: Subqueue,
        mode: ReceiveMode,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
        load: Loader<'_>,
    ) -> crate::store::Result<Option<Taken>> {
        let mut state = lock(&self.state);
        loop {
            state.refill(which, now, load)?;
            state.reclaim(settings, now, effects);
            // Expiry may have emptied what was just read in: read on while any is cold.
            if !state.sub(which).ready.is_empty() || state.sub(which).cold.count == 0 {
                break;
            }
        }
        let Some(mut entry) = state.take_ready(which) else {
            return Ok(None);
        };
        entry.delivery.delivery_count = entry.delivery.delivery_count.saturating_add(1);
        match mode {
            ReceiveMode::ReceiveAndDelete => {
                effects.push(Effect::Remove(entry.seq, entry.delivery.clone()));
                Ok(Some(Taken { entry, lock: None }))
            }
            ReceiveMode::PeekLock => {
                let token = Uuid::new_v4();
                let until = lock_until(now, settings);
                effects.push(Effect::Rewrite(entry.seq, entry.delivery.clone()));
                state.sub(which).locked.insert(
                    token,
                    Locked {
                        entry: entry.clone(),
                        until,
                    },
                );
                Ok(Some(Taken {
                    entry,
                    lock: Some((token, until)),
                }))
            }
        }
    }

    /// Puts back what [`Queue::take`] took when the receive's answer could not be made:
    /// the lock (if any) is dropped and the delivery is receivable again with the count it
    /// had before, as if it had never been taken. Its record on disk was not rewritten.
    pub(crate) fn untake(&self, which: Subqueue, taken: Taken, now: DateTime<Utc>) {
        let mut state = lock(&self.state);
        if let Some((token, _)) = taken.lock {
            state.sub(which).locked.remove(&token);
        }
        let mut entry = taken.entry;
        entry.delivery.delivery_count = entry.delivery.delivery_count.saturating_sub(1);
        let ready = state.insert(entry, now, Filing::Memory);
        drop(state);
        if let Some(which) = ready {
            self.ready(which).notify_one();
        }
    }

    /// The locked entry for `token`, if its lock is still held at `now`.
    pub(crate) fn locked(
        &self,
        which: Subqueue,
        token: Uuid,
        now: DateTime<Utc>,
    ) -> Option<Locked> {
        let mut state = lock(&self.state);
        state
            .sub(which)
            .locked
            .get(&token)
            .filter(|l| l.until > now)
            .cloned()
    }

    /// At most `count` deliveries of subqueue `which` from sequence number `from` on, in
    /// sequence order, whatever their state (ready, locked, scheduled, or on disk, read
    /// with `load`), changing none: what a peek shows.
    ///
    /// # Errors
    ///
    /// When reading deliveries from disk fails.
    pub(crate) fn peek(
        &self,
        which: Subqueue,
        from: u64,
        count: usize,
        load: Loader<'_>,
    ) -> crate::store::Result<Vec<Entry>> {
        let mut state = lock(&self.state);
        let scheduled: Vec<Entry> = match which {
            Subqueue::Main => state
                .scheduled
                .values()
                .filter(|e| e.seq >= from)
                .cloned()
                .collect(),
            Subqueue::DeadLetter => Vec::new(),
        };
        let sub = state.sub(which);
        let mut found: Vec<Entry> = sub
            .ready
            .range(from..)
            .take(count)
            .map(|(_, e)| e.clone())
            .collect();
        found.extend(
            sub.locked
                .values()
                .filter(|l| l.entry.seq >= from)
                .map(|l| l.entry.clone()),
        );
        found.extend(scheduled);
        let cold: Vec<u64> = sub
            .cold
            .seqs
            .iter()
            .filter(|r| r.end > from)
            .flat_map(|r| r.start.max(from)..r.end)
            .take(count)
            .collect();
        if let (Some(&lo), Some(&hi)) = (cold.first(), cold.last()) {
            found.extend(
                load(which, lo, hi)?
                    .into_iter()
                    .filter(|(seq, _)| cold.binary_search(seq).is_ok())
                    .map(|(seq, delivery)| Entry { seq, delivery }),
            );
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        found.truncate(count);
        Ok(found)
    }

    /// Takes deferred deliveries by sequence number, all or none: locked (their delivery
    /// count unchanged) or removed. `None` names a number that is not a deferred message.
    pub(crate) fn take_deferred(
        &self,
        sequence_numbers: &[u64],
        mode: ReceiveMode,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> Option<Vec<Taken>> {
        let mut state = lock(&self.state);
        let mut keys = Vec::new();
        for seq in sequence_numbers {
            let key = state
                .scheduled
                .iter()
                .find(|((_, s), e)| s == seq && e.delivery.deferred)
                .map(|(key, _)| *key)?;
            keys.push(key);
        }
        let mut taken = Vec::new();
        for key in keys {
            let Some(entry) = state.scheduled.remove(&key) else {
                continue;
            };
            match mode {
                ReceiveMode::ReceiveAndDelete => {
                    effects.push(Effect::Remove(entry.seq, entry.delivery.clone()));
                    taken.push(Taken { entry, lock: None });
                }
                ReceiveMode::PeekLock => {
                    let token = Uuid::new_v4();
                    let until = lock_until(now, settings);
                    let locked = Locked {
                        entry: entry.clone(),
                        until,
                    };
                    state.main.locked.insert(token, locked);
                    taken.push(Taken {
                        entry,
                        lock: Some((token, until)),
                    });
                }
            }
        }
        Some(taken)
    }

    /// Removes scheduled deliveries by sequence number; the removals to persist.
    pub(crate) fn cancel_scheduled(&self, sequence_numbers: &[u64]) -> Vec<Effect> {
        let mut state = lock(&self.state);
        let keys: Vec<(DateTime<Utc>, u64)> = state
            .scheduled
            .iter()
            .filter(|((_, seq), e)| sequence_numbers.contains(seq) && !e.delivery.deferred)
            .map(|(key, _)| *key)
            .collect();
        keys.into_iter()
            .filter_map(|key| state.scheduled.remove(&key))
            .map(|e| Effect::Remove(e.seq, e.delivery))
            .collect()
    }

    /// Settles a held lock. `None` when the lock is unknown or expired.
    pub(crate) fn settle(
        &self,
        which: Subqueue,
        token: Uuid,
        how: Settle,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> Option<Locked> {
        let mut state = lock(&self.state);
        state.reclaim(settings, now, effects);
        let held = state.sub(which).locked.get(&token)?.clone();
        let wake = matches!(how, Settle::Unlock | Settle::DeadLetter(_));
        match how {
            Settle::Renew => {
                if let Some(l) = state.sub(which).locked.get_mut(&token) {
                    l.until = lock_until(now, settings);
                }
            }
            Settle::Complete => {
                state.sub(which).locked.remove(&token);
                effects.push(Effect::Remove(held.entry.seq, held.entry.delivery.clone()));
            }
            Settle::Unlock => {
                state.sub(which).locked.remove(&token);
                state.release(which, held.entry.clone(), settings, now, effects);
            }
            Settle::Defer => {
                state.sub(which).locked.remove(&token);
                let mut entry = held.entry.clone();
                entry.delivery.deferred = true;
                entry.delivery.scheduled_at = Some(DEFERRED_UNTIL);
                effects.push(Effect::Rewrite(entry.seq, entry.delivery.clone()));
                state.insert(entry, now, Filing::Memory);
            }
            Settle::DeadLetter(reason) => {
                state.sub(which).locked.remove(&token);
                let mut entry = held.entry.clone();
                entry.delivery.dead_letter = Some(reason);
                entry.delivery.expires_at = None;
                effects.push(Effect::Rewrite(entry.seq, entry.delivery.clone()));
                state.insert(entry, now, Filing::Memory);
            }
        }
        drop(state);
        if wake {
            self.wake_all();
        }
        Some(held)
    }

    /// Applies time; wakes waiters when something became receivable.
    pub(crate) fn sweep(
        &self,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) {
        let changed = lock(&self.state).reclaim(settings, now, effects);
        if changed {
            self.wake_all();
        }
    }

    /// Every delivery, for deleting the queue or subscription: those in memory, and the
    /// sequence numbers of the cold ones.
    pub(crate) fn drain(&self) -> (Vec<Entry>, Vec<u64>) {
        let mut state = lock(&self.state);
        let window = state.window;
        let state = std::mem::replace(&mut *state, QueueState::new(window));
        let mut cold = state.main.cold.all();
        cold.extend(state.dead.cold.all());
        let mut out: Vec<Entry> = state
            .main
            .ready
            .into_values()
            .chain(state.dead.ready.into_values())
            .collect();
        out.extend(
            state
                .main
                .locked
                .into_values()
                .chain(state.dead.locked.into_values())
                .map(|l| l.entry),
        );
        out.extend(state.scheduled.into_values());
        (out, cold)
    }

    pub(crate) fn counts(&self) -> Counts {
        let state = lock(&self.state);
        let bytes = |entries: &mut dyn Iterator<Item = &Entry>| {
            entries.map(|e| e.delivery.size).sum::<u64>()
        };
        // Deferred messages wait among the scheduled ones, but the service counts them as
        // active: they stay in the main queue, set aside.
        let deferred = state
            .scheduled
            .range((DEFERRED_UNTIL, 0)..)
            .filter(|(_, e)| e.delivery.deferred)
            .count() as u64;
        Counts {
            active: (state.main.ready.len() + state.main.locked.len()) as u64
                + state.main.cold.count
                + deferred,
            dead_letter: (state.dead.ready.len() + state.dead.locked.len()) as u64
                + state.dead.cold.count,
            scheduled: state.scheduled.len() as u64 - deferred,
            bytes: state.main.cold.bytes
                + state.dead.cold.bytes
                + bytes(&mut state.main.ready.values())
                + bytes(&mut state.dead.ready.values())
                + bytes(&mut state.main.locked.values().map(|l| &l.entry))
                + bytes(&mut state.dead.locked.values().map(|l| &l.entry))
                + bytes(&mut state.scheduled.values()),
        }
    }
}

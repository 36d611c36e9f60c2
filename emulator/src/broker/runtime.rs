//! The messaging runtime: an in-memory index over the stored messages of every queue and
//! subscription, rebuilt from the store on start.
//!
//! Locks in this module are std mutexes: none is held across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Duration, Utc};
use rangemap::RangeSet;
use serde::{Deserialize, Serialize};
use servicebus_wire::{EntityDescription, EntityKind, TimeSpan};
use tokio::sync::Notify;
use uuid::Uuid;

use super::duplicates::History;
use crate::filter::CompiledRule;
use crate::model::message::{DeadLetter, Delivery};
use crate::store::{Key, Write};

pub(crate) const REASON_MAX_DELIVERY: &str = "MaxDeliveryCountExceeded";
pub(crate) const REASON_TTL: &str = "TTLExpiredException";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A subscription of a topic with its compiled rules, by name.
pub(crate) type RoutedSubscription = (Arc<Entity>, Arc<Vec<(String, CompiledRule)>>);

/// A queue, topic or subscription as the runtime knows it.
#[derive(Debug)]
pub(crate) struct Entity {
    pub(crate) id: u64,
    pub(crate) kind: EntityKind,
    /// Its path as created (`topic/Subscriptions/sub` for subscriptions).
    pub(crate) path: String,
    description: RwLock<EntityDescription>,
    /// Next sequence number (queues and topics).
    next_seq: Mutex<u64>,
    /// Bytes of the messages stored for it (queues and topics).
    stored_bytes: AtomicU64,
    /// Delivery state (queues and subscriptions).
    pub(crate) queue: Option<Queue>,
    /// Subscriptions and their compiled rules (topics), in name order.
    subscriptions: RwLock<Vec<RoutedSubscription>>,
    /// Message ids seen within the duplicate-detection window (queues, topics).
    pub(crate) seen: Mutex<History>,
    /// Last send, receive or update, for `AutoDeleteOnIdle`.
    last_used: Mutex<DateTime<Utc>>,
}

impl Entity {
    pub(crate) fn description(&self) -> EntityDescription {
        read(&self.description).clone()
    }

    pub(crate) fn subscriptions(&self) -> Vec<RoutedSubscription> {
        read(&self.subscriptions).clone()
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

/// Which subqueue of a queue or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
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

/// How many receivable deliveries a subqueue keeps in memory by default; the rest wait
/// on disk as [`Cold`] sequence numbers and are read in as receivers take the head.
pub(crate) const DEFAULT_WINDOW: usize = 1024;

/// Most deliveries read in from disk at once (under the queue's lock).
const LOAD_CHUNK: usize = 256;

/// Reads the deliveries of a receivable's subqueue with sequence numbers in `lo..=hi` (it
/// may return others of the receivable too; they are ignored).
pub(crate) type Loader<'a> =
    &'a dyn Fn(Sub, u64, u64) -> crate::store::Result<Vec<(u64, Delivery)>>;

/// Deliveries of a subqueue that are on disk but not in memory: their sequence numbers (as
/// ranges: a backlog of a million sends is one range) and the totals counts need.
///
/// Only deliveries whose record on disk is their current state are filed here (new sends,
/// and everything at start-up); nothing changes them while they are cold, so reading them
/// in later gives exactly what was filed.
#[derive(Debug, Default, Clone)]
struct Cold {
    seqs: RangeSet<u64>,
    count: u64,
    bytes: u64,
}

impl Cold {
    fn add(&mut self, seq: u64, size: u64) {
        if !self.seqs.contains(&seq) {
            self.seqs.insert(seq..seq.saturating_add(1));
            self.count += 1;
            self.bytes += size;
        }
    }

    /// The smallest `n` sequence numbers.
    fn first(&self, n: usize) -> Vec<u64> {
        self.seqs.iter().flat_map(Clone::clone).take(n).collect()
    }

    fn all(&self) -> Vec<u64> {
        self.first(usize::MAX)
    }
}

#[derive(Debug, Default)]
struct SubQueue {
    ready: BTreeMap<u64, Entry>,
    locked: HashMap<Uuid, Locked>,
    cold: Cold,
}

#[derive(Debug)]
struct QueueState {
    main: SubQueue,
    dead: SubQueue,
    scheduled: BTreeMap<(DateTime<Utc>, u64), Entry>,
    /// Expiry times of `main.ready` entries, for cheap TTL sweeps.
    expiries: BTreeSet<(DateTime<Utc>, u64)>,
    /// Ready entries kept in memory per subqueue before new ones stay cold.
    window: usize,
}

impl QueueState {
    fn new(window: usize) -> Self {
        QueueState {
            main: SubQueue::default(),
            dead: SubQueue::default(),
            scheduled: BTreeMap::new(),
            expiries: BTreeSet::new(),
            window: window.max(1),
        }
    }
}

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
    state: Mutex<QueueState>,
    /// Woken when a message may have become receivable in the main subqueue: one waiter
    /// per new message, everyone for other changes.
    main_ready: Notify,
    /// The same for the dead-letter subqueue.
    dead_ready: Notify,
    /// Receives parked in a long poll right now.
    pub(crate) waiting: std::sync::atomic::AtomicUsize,
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

/// `t + span`, saturating at the latest instant.
pub(crate) fn add(t: DateTime<Utc>, span: TimeSpan) -> DateTime<Utc> {
    Duration::from_std(span.to_std())
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn lock_until(now: DateTime<Utc>, settings: &QueueSettings) -> DateTime<Utc> {
    add(now, settings.lock_duration)
}

/// Where [`QueueState::insert`] files an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filing {
    /// Its state is only in memory (its record is not current): it must be ready.
    Memory,
    /// Its record is current: cold once the window is full or anything is cold.
    OnDisk,
    /// Its record is current, and it goes cold.
    Cold,
}

impl QueueState {
    fn sub(&mut self, which: Sub) -> &mut SubQueue {
        match which {
            Sub::Main => &mut self.main,
            Sub::DeadLetter => &mut self.dead,
        }
    }

    /// Files an entry; the subqueue in which it became receivable, if it did. An entry
    /// whose record on disk is its current state (`Filing::OnDisk`) stays cold when the
    /// subqueue already has cold entries or a full window, and always with `Filing::Cold`;
    /// scheduled entries are always in memory.
    fn insert(&mut self, entry: Entry, now: DateTime<Utc>, filing: Filing) -> Option<Sub> {
        let which = if entry.delivery.dead_letter.is_some() {
            Sub::DeadLetter
        } else if let Some(at) = entry.delivery.scheduled_at.filter(|at| *at > now) {
            self.scheduled.insert((at, entry.seq), entry);
            return None;
        } else {
            Sub::Main
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
        if let Some(at) = entry.delivery.expires_at.filter(|_| which == Sub::Main) {
            self.expiries.insert((at, entry.seq));
        }
        self.sub(which).ready.insert(entry.seq, entry);
        Some(which)
    }

    /// Reads cold entries in, smallest first, once fewer than half a window are ready, or
    /// when the smallest cold one comes before every ready one (a message released, or
    /// restored from a snapshot, after larger ones went cold), so that the head is always
    /// the smallest sequence number.
    fn refill(
        &mut self,
        which: Sub,
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

    fn take_ready(&mut self, which: Sub) -> Option<Entry> {
        let entry = self.sub(which).ready.pop_first().map(|(_, e)| e)?;
        if let Some(at) = entry.delivery.expires_at.filter(|_| which == Sub::Main) {
            self.expiries.remove(&(at, entry.seq));
        }
        Some(entry)
    }

    /// A lock released (abandon or expiry): back to ready, or dead-lettered past the
    /// maximum delivery count. Dead-lettered messages are never dead-lettered again.
    fn release(
        &mut self,
        which: Sub,
        mut entry: Entry,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) {
        if which == Sub::Main && entry.delivery.delivery_count >= settings.max_delivery_count {
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
    fn reclaim(
        &mut self,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let mut changed = false;
        for which in [Sub::Main, Sub::DeadLetter] {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `DELETE`: done with it.
    Complete,
    /// `PUT`: give it back now.
    Unlock,
    /// `POST`: extend the lock.
    Renew,
}

impl Queue {
    /// An empty queue keeping up to `window` ready deliveries per subqueue in memory.
    pub(crate) fn new(window: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState::new(window)),
            main_ready: Notify::new(),
            dead_ready: Notify::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
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

    fn file(&self, entries: impl IntoIterator<Item = Entry>, now: DateTime<Utc>, filing: Filing) {
        let mut state = lock(&self.state);
        let ready: Vec<Sub> = entries
            .into_iter()
            .filter_map(|e| state.insert(e, now, filing))
            .collect();
        drop(state);
        for which in ready {
            self.ready(which).notify_one();
        }
    }

    fn ready(&self, which: Sub) -> &Notify {
        match which {
            Sub::Main => &self.main_ready,
            Sub::DeadLetter => &self.dead_ready,
        }
    }

    /// Completes when something may have become receivable in `which` (see
    /// [`tokio::sync::Notify::notified`]; a notification for one waiter that is dropped
    /// before it is taken passes to the next waiter).
    pub(crate) fn notified(&self, which: Sub) -> tokio::sync::futures::Notified<'_> {
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
        which: Sub,
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
    pub(crate) fn untake(&self, which: Sub, taken: Taken, now: DateTime<Utc>) {
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
    pub(crate) fn locked(&self, which: Sub, token: Uuid, now: DateTime<Utc>) -> Option<Locked> {
        let mut state = lock(&self.state);
        state
            .sub(which)
            .locked
            .get(&token)
            .filter(|l| l.until > now)
            .cloned()
    }

    /// Settles a held lock. `None` when the lock is unknown or expired.
    pub(crate) fn settle(
        &self,
        which: Sub,
        token: Uuid,
        how: Settle,
        settings: &QueueSettings,
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> Option<Locked> {
        let mut state = lock(&self.state);
        state.reclaim(settings, now, effects);
        let held = state.sub(which).locked.get(&token)?.clone();
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
        }
        drop(state);
        if how == Settle::Unlock {
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
        Counts {
            active: (state.main.ready.len() + state.main.locked.len()) as u64
                + state.main.cold.count,
            dead_letter: (state.dead.ready.len() + state.dead.locked.len()) as u64
                + state.dead.cold.count,
            scheduled: state.scheduled.len() as u64,
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

/// How many deliveries point at each stored message of one topic, by sequence number from
/// the oldest still referenced: sequence numbers are dense, so this is 4 bytes a message
/// where a map would take ten times that.
#[derive(Debug, Default)]
struct RefCounts {
    base: u64,
    counts: VecDeque<u32>,
}

impl RefCounts {
    /// Adds `n`; true when the message had none before.
    fn add(&mut self, seq: u64, n: u32) -> bool {
        if self.counts.is_empty() {
            self.base = seq;
        }
        while seq < self.base {
            self.counts.push_front(0);
            self.base -= 1;
        }
        let i = usize::try_from(seq - self.base).unwrap_or(usize::MAX);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        let first = self.counts[i] == 0;
        self.counts[i] += n;
        first
    }

    /// Drops one; true when it was the last.
    fn release(&mut self, seq: u64) -> bool {
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.counts.len())
        else {
            return false;
        };
        let last = match &mut self.counts[i] {
            0 => return false,
            n => {
                *n -= 1;
                *n == 0
            }
        };
        while self.counts.front() == Some(&0) {
            self.counts.pop_front();
            self.base += 1;
        }
        last
    }
}

/// Every entity, by key and by id (the same entities in both).
#[derive(Debug, Default)]
struct Entities {
    by_key: HashMap<Vec<u8>, Arc<Entity>>,
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

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Entity>> {
        read(&self.entities).by_key.get(key).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entity>> {
        read(&self.entities).by_key.values().cloned().collect()
    }

    /// Adds (or replaces the description of) an entity.
    pub(crate) fn register(
        &self,
        key: Vec<u8>,
        id: u64,
        kind: EntityKind,
        path: String,
        description: EntityDescription,
        now: DateTime<Utc>,
    ) -> Arc<Entity> {
        if let Some(existing) = self.get(&key) {
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
        });
        let mut entities = write(&self.entities);
        entities.by_id.insert(id, entity.clone());
        entities.by_key.insert(key, entity.clone());
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

    pub(crate) fn unregister(&self, key: &[u8]) -> Option<Arc<Entity>> {
        let mut entities = write(&self.entities);
        let entity = entities.by_key.remove(key)?;
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

/// The runtime index as a clean shutdown leaves it for the next start.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IndexSnapshot {
    last_id: u64,
    owners: Vec<OwnerSnapshot>,
    receivables: Vec<ReceivableSnapshot>,
}

/// A queue's or topic's counters and reference counts.
#[derive(Debug, Serialize, Deserialize)]
struct OwnerSnapshot {
    id: u64,
    next_seq: u64,
    stored_bytes: u64,
    refs_base: u64,
    refs: Vec<u32>,
}

/// A queue's or subscription's deliveries.
#[derive(Debug, Serialize, Deserialize)]
struct ReceivableSnapshot {
    id: u64,
    main: ColdSnapshot,
    dead: ColdSnapshot,
    /// Locked and scheduled deliveries, whole.
    held: Vec<(u64, Delivery)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ColdSnapshot {
    ranges: Vec<(u64, u64)>,
    count: u64,
    bytes: u64,
}

impl ColdSnapshot {
    /// A subqueue's ready and cold deliveries, all as cold.
    fn of(sub: &SubQueue) -> Self {
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

    fn into_cold(self) -> Cold {
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
    fn snapshot(&self, id: u64) -> ReceivableSnapshot {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_counts_release_each_message_once() {
        let mut refs = RefCounts::default();
        assert!(refs.add(10, 2));
        assert!(refs.add(12, 1));
        assert!(!refs.add(10, 1));
        assert!(refs.add(8, 1), "an older message extends the front");
        assert!(!refs.release(10));
        assert!(refs.release(8));
        assert!(!refs.release(8), "released twice");
        assert!(!refs.release(99), "never counted");
        assert!(!refs.release(10));
        assert!(refs.release(10));
        assert_eq!(
            (refs.base, refs.counts.len()),
            (12, 1),
            "zeros at the front go"
        );
        assert!(refs.release(12));
        assert!(refs.counts.is_empty());
    }

    fn delivery(size: u64) -> Delivery {
        Delivery {
            owner: 1,
            delivery_count: 0,
            dead_letter: None,
            expires_at: None,
            scheduled_at: None,
            overridden: false,
            size,
            listed: false,
            settled: false,
        }
    }

    fn settings() -> QueueSettings {
        QueueSettings {
            lock_duration: TimeSpan::from_secs(30),
            max_delivery_count: 10,
            dead_letter_on_expiry: false,
        }
    }

    /// Reads `lo..=hi` of `disk`, as the store would.
    fn read(disk: &BTreeMap<u64, Delivery>, lo: u64, hi: u64) -> Vec<(u64, Delivery)> {
        disk.range(lo..=hi).map(|(&s, d)| (s, d.clone())).collect()
    }

    /// Receives-and-deletes the head of the main subqueue, reading cold deliveries through
    /// `load`; the sequence number taken.
    fn take(
        queue: &Queue,
        now: DateTime<Utc>,
        load: Loader<'_>,
        effects: &mut Vec<Effect>,
    ) -> Option<u64> {
        queue
            .take(
                Sub::Main,
                ReceiveMode::ReceiveAndDelete,
                &settings(),
                now,
                effects,
                load,
            )
            .unwrap()
            .map(|t| t.entry.seq)
    }

    #[test]
    fn past_the_window_deliveries_wait_on_disk_and_come_back_in_order() {
        let now = Utc::now();
        let queue = Queue::new(2);
        let disk: BTreeMap<u64, Delivery> = (1..=7).map(|s| (s, delivery(s))).collect();
        queue.insert(
            disk.iter().map(|(&seq, d)| Entry {
                seq,
                delivery: d.clone(),
            }),
            now,
        );
        let counts = queue.counts();
        assert_eq!((counts.active, counts.bytes), (7, 28));
        {
            let state = lock(&queue.state);
            assert_eq!(state.main.ready.len(), 2);
            assert_eq!(state.main.cold.count, 5);
        }
        let reads = std::cell::Cell::new(0);
        let load = |_: Sub, lo: u64, hi: u64| {
            reads.set(reads.get() + 1);
            Ok(read(&disk, lo, hi))
        };
        let mut taken = Vec::new();
        let mut effects = Vec::new();
        while let Some(seq) = take(&queue, now, &load, &mut effects) {
            taken.push(seq);
        }
        assert_eq!(taken, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(reads.get() >= 3, "read in a window at a time");
        let counts = queue.counts();
        assert_eq!((counts.active, counts.bytes), (0, 0));
    }

    #[test]
    fn a_cold_delivery_below_the_ready_ones_is_taken_first() {
        // A restart from a snapshot files the held deliveries in no set order: with a
        // full window, a smaller one goes cold behind a larger ready one.
        let now = Utc::now();
        let queue = Queue::new(1);
        let disk: BTreeMap<u64, Delivery> = [3, 5].map(|s| (s, delivery(s))).into();
        for seq in [5, 3] {
            queue.insert(
                [Entry {
                    seq,
                    delivery: disk[&seq].clone(),
                }],
                now,
            );
        }
        assert_eq!(lock(&queue.state).main.cold.count, 1);
        let load = |_: Sub, lo: u64, hi: u64| Ok(read(&disk, lo, hi));
        let mut effects = Vec::new();
        assert_eq!(take(&queue, now, &load, &mut effects), Some(3));
        assert_eq!(take(&queue, now, &load, &mut effects), Some(5));
    }

    #[test]
    fn cold_deliveries_expire_when_read_in_and_the_take_reads_on() {
        let now = Utc::now();
        let queue = Queue::new(1);
        let expired = |seq| Entry {
            seq,
            delivery: Delivery {
                expires_at: Some(now - Duration::seconds(1)),
                ..delivery(1)
            },
        };
        let mut disk: BTreeMap<u64, Delivery> = BTreeMap::new();
        let mut entries: Vec<Entry> = (1..=3).map(expired).collect();
        entries.push(Entry {
            seq: 4,
            delivery: delivery(1),
        });
        for e in &entries {
            disk.insert(e.seq, e.delivery.clone());
        }
        queue.insert(entries, now);
        // Counted until a receiver reaches them, as the service does.
        assert_eq!(queue.counts().active, 4);
        let load = |_: Sub, lo: u64, hi: u64| Ok(read(&disk, lo, hi));
        let mut effects = Vec::new();
        assert_eq!(
            take(&queue, now, &load, &mut effects),
            Some(4),
            "past three expired ones"
        );
        let removed: Vec<u64> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Remove(seq, _) => Some(*seq),
                Effect::Rewrite(..) => None,
            })
            .collect();
        assert_eq!(removed, vec![1, 2, 3, 4]);
        assert_eq!(queue.counts().active, 0);
    }

    #[test]
    fn a_drain_names_the_cold_deliveries() {
        let queue = Queue::new(1);
        queue.insert(
            (1..=4).map(|seq| Entry {
                seq,
                delivery: delivery(1),
            }),
            Utc::now(),
        );
        let (entries, cold) = queue.drain();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(cold, vec![2, 3, 4]);
        assert_eq!(queue.counts().active, 0);
    }
}

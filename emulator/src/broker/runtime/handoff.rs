//! Hand-off: a message sent while a receiver is parked on an empty queue or subscription
//! goes straight to that receiver, and its removal (receive-and-delete) or its lock
//! (peek-lock) is written in the same durable write as the send. Without it, the message
//! is filed after the send's write, the receiver wakes, and its take waits for a second
//! write: two fsyncs in a row on every message's way through (see the ARCHITECTURE).
//!
//! The exchange, for one copy:
//! 1. the receiver parks a [`Parked`] slot on the queue beside its wake-up;
//! 2. the send claims the slot ([`Queue::claim`]: only while the main subqueue has nothing
//!    ready or cold and nothing is on its way to be filed, so nothing older is overtaken)
//!    and passes an [`Offer`]; the next copies of the same send for that queue go to the
//!    same receiver, in order, while it has room (an AMQP link's take has room for up to
//!    16, a REST long poll for one);
//! 3. the receiver renders its answers and says for each whether it could
//!    ([`Offer::verdict`]): if not (or it went away), the send files that copy, and those
//!    after it, as usual, and they stay receivable;
//! 4. the send queues the message and its removal or lock as one write, and then tells the
//!    receiver ([`Offer::commit`]), which answers: whatever it does next is written after
//!    the send. A receive-and-delete message is already its own. A peek-lock receiver's
//!    lock is filed ([`Queue::lock_handed`]) once the write is durable; until then it is
//!    *unfiled* ([`Queue::lock_unfiled`]), and a settlement or renewal of it waits for the
//!    filing ([`Queue::until_filed`]), so that nothing reads or puts back a message that is
//!    not stored yet. The sender's own answer always waits for the write to be durable.
//!
//! A message handed off thus reaches its receiver without waiting for the disk (about
//! 0.3 ms less on this machine's fsync, and none of the disk's stalls). Should the
//! emulator die before that write is durable, the receiver has the message and the sender
//! got no acknowledgement: it sends again, and the receiver may see it twice, which
//! at-least-once senders allow for (a peek-lock receiver's settlement of the lost copy
//! fails as a lost lock). No acknowledged send is lost, and nothing a receiver completed
//! comes back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::model::message::{Delivery, MessageProps};

use super::lock;
use super::queue::{Entry, Locked, Queue, QueueSettings, ReceiveMode, lock_until};
use super::state::QueueState;

/// A copy handed to a parked receiver, with the delivery count of its first delivery.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) seq: u64,
    pub(crate) delivery: Delivery,
    pub(crate) enqueued_at: DateTime<Utc>,
    /// `TimeToLive` as the receiver sees it.
    pub(crate) time_to_live: Option<f64>,
    /// The entity's default time to live, in seconds (see `Received`).
    pub(crate) default_time_to_live: f64,
    pub(crate) props: MessageProps,
    pub(crate) body: Vec<u8>,
    /// Lock token and expiry, for a peek-lock receiver.
    pub(crate) lock: Option<(Uuid, DateTime<Utc>)>,
    /// The receiver's answer: `true` when it rendered the message and will return it.
    pub(crate) verdict: oneshot::Sender<bool>,
    /// `true` once the receiver may answer: its removal or lock is queued after the send;
    /// `false` (or dropped) when the write could not be queued.
    pub(crate) commit: oneshot::Receiver<bool>,
}

/// A parked receiver's slot: its place ([`Queue::place`]), how it takes, how many messages
/// it takes at most, where its offers go.
type Slot = (u64, ReceiveMode, usize, mpsc::UnboundedSender<Offer>);

/// The parked receivers that take hand-offs, in the order of their places (the order they
/// started in).
#[derive(Debug, Default)]
pub(crate) struct Slots {
    next: AtomicU64,
    parked: Mutex<VecDeque<Slot>>,
    /// Copies sent to this queue that are on their way to be filed (their send's write is
    /// not durable yet): while there are any, nothing is handed off, so that no later
    /// message overtakes them.
    filing: AtomicUsize,
    /// Locks of receivers answered before their send's write was durable: each is filed
    /// once it is (the watch turns `true`), or never, when the write fails (it is dropped).
    unfiled: Mutex<HashMap<Uuid, watch::Receiver<bool>>>,
}

/// A parked receiver claimed by a send: where its offers go, how it takes them, and how
/// many more it takes.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) slot: mpsc::UnboundedSender<Offer>,
    mode: ReceiveMode,
    pub(crate) room: usize,
}

impl Claim {
    /// The lock a copy offered now is taken with: a new one, lasting from `now`
    /// (peek-lock), or none.
    pub(crate) fn lock(
        &self,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Option<(Uuid, DateTime<Utc>)> {
        (self.mode == ReceiveMode::PeekLock).then(|| (Uuid::new_v4(), lock_until(now, settings)))
    }
}

/// A receiver's slot while it is parked; dropping it takes the slot back (an offer already
/// in it is dropped with it, and the send files that copy as usual).
#[derive(Debug)]
pub(crate) struct Parked<'a> {
    queue: &'a Queue,
    id: u64,
    /// Where offers arrive: all those of one send at once, up to the receiver's room.
    pub(crate) offers: mpsc::UnboundedReceiver<Offer>,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        lock(&self.queue.slots.parked).retain(|(id, ..)| *id != self.id);
    }
}

impl Queue {
    /// A receiver's place among those parked, taken when it starts: each time it parks it
    /// goes back to that place, so receivers are handed messages in the order they started
    /// (one that wakes for nothing and parks again does not fall behind those started
    /// after it: an AMQP link's overlapping takes report in the order they started).
    pub(crate) fn place(&self) -> u64 {
        self.slots.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Parks a receiver of the main subqueue, at its [`Queue::place`], for hand-offs of up
    /// to `room` messages.
    pub(crate) fn park(&self, id: u64, mode: ReceiveMode, room: usize) -> Parked<'_> {
        let (tx, offers) = mpsc::unbounded_channel();
        let mut parked = lock(&self.slots.parked);
        // From the back: a receiver parking for the first time is the newest.
        let at = parked
            .iter()
            .rposition(|(other, ..)| *other < id)
            .map_or(0, |i| i + 1);
        parked.insert(at, (id, mode, room.max(1), tx));
        Parked {
            queue: self,
            id,
            offers,
        }
    }

    /// Whether any receiver is parked for hand-offs (a cheap look before a send keeps a
    /// copy of what it may hand off).
    pub(crate) fn has_parked(&self) -> bool {
        !lock(&self.slots.parked).is_empty()
    }

    /// The first parked receiver still there, taken out of the queue, when the main
    /// subqueue has nothing ready or cold and nothing is on its way to be filed: a message
    /// handed off then overtakes nothing.
    pub(crate) fn claim(&self) -> Option<Claim> {
        let state = lock(&self.state);
        if main_has_ready(&state) || self.slots.filing.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let mut parked = lock(&self.slots.parked);
        while let Some((_, mode, room, slot)) = parked.pop_front() {
            if !slot.is_closed() {
                return Some(Claim { slot, mode, room });
            }
        }
        None
    }

    /// Counts a copy a send will file once its write is durable (see [`Slots::filing`]).
    pub(crate) fn filing_started(&self) {
        self.slots.filing.fetch_add(1, Ordering::SeqCst);
    }

    /// The copy counted by [`Queue::filing_started`] was filed, or its write failed.
    pub(crate) fn filing_ended(&self) {
        self.slots.filing.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether the main subqueue has anything ready or cold now.
    pub(crate) fn has_ready(&self) -> bool {
        main_has_ready(&lock(&self.state))
    }

    /// Notes the lock of a copy handed to a peek-lock receiver before the send that wrote
    /// it is durable: `filed` turns `true` once [`Queue::lock_handed`] files it.
    pub(crate) fn lock_unfiled(&self, token: Uuid, filed: watch::Receiver<bool>) {
        lock(&self.slots.unfiled).insert(token, filed);
    }

    /// Forgets an unfiled lock whose send's write failed: it is never filed, and what
    /// waits for it finds it lost.
    pub(crate) fn lock_dropped(&self, token: Uuid) {
        lock(&self.slots.unfiled).remove(&token);
    }

    /// Files the lock of a copy handed to a peek-lock receiver, once the send that wrote
    /// it is durable: from here it is settled, renewed or expires as any lock.
    pub(crate) fn lock_handed(
        &self,
        (token, until): (Uuid, DateTime<Utc>),
        seq: u64,
        delivery: Delivery,
    ) {
        let entry = Entry { seq, delivery };
        lock(&self.state)
            .main
            .locked
            .insert(token, Locked { entry, until });
        // Filed first: whoever looks for it from here finds it.
        lock(&self.slots.unfiled).remove(&token);
    }

    /// Returns once lock `token` is no longer on its way to be filed: at once for any lock
    /// but a handed one whose send's write is not durable yet.
    pub(crate) async fn until_filed(&self, token: Uuid) {
        let unfiled = lock(&self.slots.unfiled).get(&token).cloned();
        if let Some(mut filed) = unfiled {
            // An error: the write failed and the lock was never filed.
            let _ = filed.wait_for(|filed| *filed).await;
        }
    }
}

fn main_has_ready(state: &QueueState) -> bool {
    !state.main.ready.is_empty() || state.main.cold.count > 0
}

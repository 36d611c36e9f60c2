//! Hand-off: a message sent while a receive-and-delete receiver is parked on an empty
//! queue or subscription goes straight to that receiver, and its removal is written in the
//! same durable write as the send. Without it, the message is filed after the send's
//! write, the receiver wakes, and its removal waits for a second write: two fsyncs in a
//! row on every message's way through (see issue 18's breakdown in the ARCHITECTURE).
//!
//! The exchange, for one copy:
//! 1. the receiver parks a [`Parked`] slot on the queue beside its wake-up;
//! 2. the send claims the slot ([`Queue::claim`]: only while the main subqueue has nothing
//!    ready or cold, so nothing older is overtaken) and passes an [`Offer`];
//! 3. the receiver renders its answer and says whether it could ([`Offer::verdict`]): if
//!    not (or it went away), the send files the copy as usual, and it stays receivable;
//! 4. the send writes the message and its removal at once, then tells the receiver
//!    ([`Offer::commit`]), which answers only then: nothing is answered before it is
//!    durable.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::model::message::{Delivery, MessageProps};

use super::lock;
use super::queue::Queue;

/// A copy handed to a parked receiver, with the delivery count of its first delivery.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) seq: u64,
    pub(crate) delivery: Delivery,
    pub(crate) enqueued_at: DateTime<Utc>,
    /// `TimeToLive` as the receiver sees it.
    pub(crate) time_to_live: Option<f64>,
    pub(crate) props: MessageProps,
    pub(crate) body: Vec<u8>,
    /// The receiver's answer: `true` when it rendered the message and will return it.
    pub(crate) verdict: oneshot::Sender<bool>,
    /// `true` once the removal is durable; `false` (or dropped) when the write failed.
    pub(crate) commit: oneshot::Receiver<bool>,
}

/// The parked receivers that take hand-offs, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    next: AtomicU64,
    parked: Mutex<VecDeque<(u64, oneshot::Sender<Offer>)>>,
}

/// A receiver's slot while it is parked; dropping it takes the slot back (an offer already
/// in it is dropped with it, and the send files that copy as usual).
#[derive(Debug)]
pub(crate) struct Parked<'a> {
    queue: &'a Queue,
    id: u64,
    /// Where an offer arrives.
    pub(crate) offers: oneshot::Receiver<Offer>,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        lock(&self.queue.slots.parked).retain(|(id, _)| *id != self.id);
    }
}

impl Queue {
    /// Parks a receive-and-delete receiver of the main subqueue for hand-offs.
    pub(crate) fn park(&self) -> Parked<'_> {
        let id = self.slots.next.fetch_add(1, Ordering::Relaxed);
        let (tx, offers) = oneshot::channel();
        lock(&self.slots.parked).push_back((id, tx));
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

    /// The oldest parked receiver still there, taken out of the queue, when the main
    /// subqueue has nothing ready or cold: a message handed off then overtakes nothing.
    pub(crate) fn claim(&self) -> Option<oneshot::Sender<Offer>> {
        let state = lock(&self.state);
        if !state.main.ready.is_empty() || state.main.cold.count > 0 {
            return None;
        }
        let mut parked = lock(&self.slots.parked);
        while let Some((_, slot)) = parked.pop_front() {
            if !slot.is_closed() {
                return Some(slot);
            }
        }
        None
    }
}

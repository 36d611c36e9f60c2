//! A client's receiver link: messages are taken for it while it has credit, and each goes
//! to the connection as [`Event::Take`]. Takes overlap: once one has taken its messages and
//! waits for its durable write, the next may take what arrived since, so a slow write does
//! not hold up the messages behind it (as REST's several concurrent long polls do not).
//! Only the last take may be waiting for messages, so their order is the queue's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{Notify, mpsc};

use super::link::{Credit, Event, Lock, broker_error};
use super::{Context, convert};
use crate::broker::{self, ReceiveMode, ReceiveTarget};

/// How long one receive waits for a message before it looks at its credit again.
const LONG_POLL: Duration = Duration::from_secs(30);
/// Most messages one take locks (or removes) in one durable write.
const MOST_PER_TAKE: u32 = 64;
/// Most messages one parked take is handed by one send.
const MOST_PER_HAND_OFF: u32 = 16;
/// Takes of one link overlapping.
const TAKES_IN_FLIGHT: usize = 4;

/// A take started: the credit it reserved, whether for a drain, and whether it has taken
/// its messages yet.
struct Started {
    units: u32,
    drain: bool,
    taken: Arc<AtomicBool>,
}

/// What one take rendered: each message's transfer payload and lock.
type Taken = broker::Result<Vec<(Vec<u8>, Option<Lock>)>>;

/// Takes messages from `target` for a client's receiver link while it has credit. A drain
/// with nothing left is [`Event::Drained`].
pub(crate) async fn receive_task(
    context: Arc<Context>,
    target: ReceiveTarget,
    mode: ReceiveMode,
    credit: Arc<Credit>,
    events: mpsc::Sender<Event>,
    channel: u16,
    serial: u64,
) {
    let link = Link {
        credit: credit.clone(),
        events,
        channel,
        serial,
    };
    // Signalled by a take once it has its messages.
    let took = Arc::new(Notify::new());
    let mut inflight = FuturesOrdered::new();
    let mut started: VecDeque<Started> = VecDeque::new();
    loop {
        // A drain is answered alone; otherwise another take starts once every one before
        // it has taken.
        let may_start = started.len() < TAKES_IN_FLIGHT
            && started
                .iter()
                .all(|s| !s.drain && s.taken.load(Ordering::SeqCst));
        // A take that starts on an empty queue parks, and takes what the next send hands
        // it (all the messages of a batch that arrived together, up to 16): it reserves at
        // most half of the credit and leaves the rest to the take after it, which can then
        // park while the first one's messages are reported (or, in peek-lock, made
        // durable). Reserving everything made the next take wait for credit until the first
        // was reported, and messages sent meanwhile missed the hand-off; reserving one unit
        // made every message of a batch after the first miss it. On a queue with messages
        // ready, a take reserves up to 64.
        let parks = may_start && !context.broker.may_have_ready(&target);
        let most = if parks {
            MOST_PER_HAND_OFF
        } else {
            MOST_PER_TAKE
        };
        tokio::select! {
            biased;
            Some(taken) = inflight.next(), if !started.is_empty() => {
                let Some(take) = started.pop_front() else { return };
                if !link.report(take, taken).await {
                    return;
                }
            }
            reserved = credit.reserve(most, parks), if may_start => {
                let Some((units, drain)) = reserved else { return };
                let taken = Arc::new(AtomicBool::new(false));
                inflight.push_back(take(
                    context.clone(),
                    target.clone(),
                    mode,
                    credit.clone(),
                    (units, drain),
                    (taken.clone(), took.clone()),
                ));
                started.push_back(Started { units, drain, taken });
            }
            () = took.notified(), if !may_start && started.len() < TAKES_IN_FLIGHT => {}
        }
    }
}

/// One take of up to `units` messages. A drain, a credit cut below what it reserved or a
/// close that arrives while it waits ends the wait, so the credit is looked at again (a flow
/// that only grants more does not: the take stays parked); once messages are taken, the
/// take completes. `taken` is set (and `took` signalled) as the first message is rendered,
/// before the take's durable write.
async fn take(
    context: Arc<Context>,
    target: ReceiveTarget,
    mode: ReceiveMode,
    credit: Arc<Credit>,
    (units, drain): (u32, bool),
    (taken, took): (Arc<AtomicBool>, Arc<Notify>),
) -> Taken {
    let wait = if drain { Duration::ZERO } else { LONG_POLL };
    let interrupted = credit.interrupted();
    let render = |r: broker::Received| {
        if !taken.swap(true, Ordering::SeqCst) {
            took.notify_one();
        }
        let payload = convert::encode(&r).map_err(|e| broker::Error::Render {
            reason: e.to_string(),
        })?;
        let lock = r.lock.map(|(token, _)| Lock { token });
        Ok((payload, lock))
    };
    context
        .broker
        .receive_many(&target, mode, units as usize, wait, interrupted, render)
        .await
}

/// Where a link's takes report to.
struct Link {
    credit: Arc<Credit>,
    events: mpsc::Sender<Event>,
    channel: u16,
    serial: u64,
}

impl Link {
    /// Hands what a take got to the connection; false once the link should stop.
    async fn report(&self, take: Started, taken: Taken) -> bool {
        let (channel, serial) = (self.channel, self.serial);
        let messages = match taken {
            Ok(messages) => messages,
            Err(e) => {
                self.credit.unreserve(take.units);
                let failed = Event::Failed {
                    channel,
                    serial,
                    error: broker_error(&e),
                };
                let _ = self.events.send(failed).await;
                return false;
            }
        };
        self.credit.unreserve(take.units - messages.len() as u32);
        let none = messages.is_empty();
        for (payload, lock) in messages {
            let take = Event::Take {
                channel,
                serial,
                payload,
                lock,
            };
            if self.events.send(take).await.is_err() {
                return false;
            }
        }
        if none && take.drain {
            // Wait for the connection to end the drain before looking again.
            let answered = self.credit.changed();
            if self
                .events
                .send(Event::Drained { channel, serial })
                .await
                .is_err()
            {
                return false;
            }
            answered.await;
        }
        true
    }
}

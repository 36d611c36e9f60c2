//! A client's receiver link: messages are taken for it while it has credit, and each goes
//! to the connection as [`Event::Take`]. Takes overlap: once one has taken its messages and
//! waits for its durable write, the next may take what arrived since, so a slow write does
//! not hold up the messages behind it (as REST's several concurrent long polls do not).
//! Two takes may wait for messages at once, so that a message sent right behind another
//! (faster than the link's task can park a new take) is still handed off: the broker hands
//! parked takes messages in the order the takes started, and takes that finish together are
//! reported in sequence-number order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt as _, StreamExt as _};
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
/// Takes of one link waiting for messages at once.
const TAKES_WAITING: usize = 2;

/// A take started: the credit it reserved, whether for a drain, and whether it has taken
/// its messages yet.
struct Started {
    units: u32,
    drain: bool,
    taken: Arc<AtomicBool>,
}

/// A message rendered for its link: its sequence number, transfer payload and lock.
type Rendered = (u64, Vec<u8>, Option<Lock>);

/// What one take rendered, in order.
type Taken = broker::Result<Vec<Rendered>>;

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
        // A drain is answered alone; otherwise another take starts while fewer than two
        // are waiting for messages.
        let waiting = started
            .iter()
            .filter(|s| !s.taken.load(Ordering::SeqCst))
            .count();
        let may_start = started.len() < TAKES_IN_FLIGHT
            && started.iter().all(|s| !s.drain)
            && (waiting == 0 || waiting < TAKES_WAITING && !credit.draining());
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
                let mut done = vec![(take, taken)];
                // Takes after it that are done too go with it.
                while let Some(Some(taken)) = inflight.next().now_or_never() {
                    let Some(take) = started.pop_front() else { return };
                    done.push((take, taken));
                }
                if !link.report(done).await {
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
        Ok((r.sequence_number, payload, lock))
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
    /// Hands what takes got to the connection, their messages in sequence-number order
    /// (two takes waiting at once may have been handed theirs in either order); false once
    /// the link should stop.
    async fn report(&self, done: Vec<(Started, Taken)>) -> bool {
        let (channel, serial) = (self.channel, self.serial);
        let (mut messages, mut failed, mut drained) = (Vec::new(), None, false);
        for (take, taken) in done {
            match taken {
                Ok(got) => {
                    self.credit.unreserve(take.units - got.len() as u32);
                    drained |= take.drain && got.is_empty();
                    messages.extend(got);
                }
                Err(e) => {
                    self.credit.unreserve(take.units);
                    failed.get_or_insert(e);
                }
            }
        }
        messages.sort_by_key(|(seq, ..)| *seq);
        for (_, payload, lock) in messages {
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
        if let Some(e) = failed {
            let failed = Event::Failed {
                channel,
                serial,
                error: broker_error(&e),
            };
            let _ = self.events.send(failed).await;
            return false;
        }
        if drained {
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

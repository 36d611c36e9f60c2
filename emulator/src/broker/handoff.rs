//! The send's side of a hand-off (see `runtime::handoff` for the exchange): offer each
//! copy that may go straight to a parked receive-and-delete receiver, and turn the copies
//! the receivers took into removals written with the send.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::Broker;
use super::runtime::{Effect, Entity, Offer};
use super::send::Placement;
use crate::model::message::{Delivery, MessageProps};
use crate::store::Write;

/// How long a send waits for the verdicts of the receivers it offered copies to. A receiver
/// answers within microseconds unless its task is busy elsewhere (an AMQP link reporting
/// to a connection that cannot write): past this, its copy is filed as usual, and the
/// send is never held up by a slow receiver. A verdict that comes later finds no one and
/// leaves the receiver waiting on.
const PATIENCE: Duration = Duration::from_millis(2);

/// What a sent message is handed off with; kept only when a receiver of one of its copies
/// was parked when it was routed.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) props: MessageProps,
    pub(super) body: Vec<u8>,
    pub(super) time_to_live: Option<f64>,
}

/// The deliveries of one sent message.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) seq: u64,
    pub(super) copies: Vec<Placement>,
    pub(super) size: u64,
    pub(super) source: Option<Source>,
}

/// A copy offered to a receiver, waiting for its verdict.
struct Pending {
    seq: u64,
    copy: Placement,
    delivery: Delivery,
    verdict: oneshot::Receiver<bool>,
    commit: oneshot::Sender<bool>,
}

/// What the offers came to: copies to file as usual, removals to write with the send, and
/// the receivers to tell once they are durable.
#[derive(Default)]
pub(super) struct Handed {
    pub(super) file: Vec<(u64, Placement)>,
    pub(super) writes: Vec<Write>,
    pub(super) commits: Vec<oneshot::Sender<bool>>,
}

impl Broker {
    /// Offers every copy it can to a parked receiver, all at once, then waits for their
    /// verdicts. `owner` is the queue or topic sent to; its stored size and references
    /// must already count every copy (a removal releases them).
    pub(super) async fn hand_off(
        &self,
        owner: &Entity,
        sent: Vec<Sent>,
        now: DateTime<Utc>,
    ) -> Handed {
        let mut handed = Handed::default();
        let mut pending = Vec::new();
        for Sent {
            seq,
            copies,
            source,
            ..
        } in sent
        {
            for copy in copies {
                match source
                    .as_ref()
                    .and_then(|s| self.offer(owner, seq, &copy, s, now))
                {
                    Some((delivery, verdict, commit)) => pending.push(Pending {
                        seq,
                        copy,
                        delivery,
                        verdict,
                        commit,
                    }),
                    None => handed.file.push((seq, copy)),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for p in pending {
            let verdict = tokio::time::timeout_at(deadline, p.verdict).await;
            if matches!(verdict, Ok(Ok(true))) {
                let removal = vec![Effect::Remove(p.seq, p.delivery)];
                handed
                    .writes
                    .extend(self.runtime.writes_for(p.copy.to.id, removal));
                handed.commits.push(p.commit);
            } else {
                handed.file.push((p.seq, p.copy));
            }
        }
        handed
    }

    /// Offers one copy to a receiver parked on its queue or subscription, if the copy is
    /// receivable now and one is parked; the delivery it is handed with, the verdict to
    /// wait for and the commit to send.
    #[allow(clippy::type_complexity)] // the three parts of one offer, taken apart at once
    fn offer(
        &self,
        owner: &Entity,
        seq: u64,
        copy: &Placement,
        source: &Source,
        now: DateTime<Utc>,
    ) -> Option<(Delivery, oneshot::Receiver<bool>, oneshot::Sender<bool>)> {
        let d = &copy.delivery;
        let receivable = d.dead_letter.is_none()
            && !d.overridden
            && !d.deferred
            && d.scheduled_at.is_none_or(|at| at <= now)
            && d.expires_at.is_none_or(|at| at > now);
        if !receivable {
            return None;
        }
        let slot = copy.to.queue.as_ref()?.claim()?;
        let delivery = Delivery {
            delivery_count: d.delivery_count.saturating_add(1),
            ..d.clone()
        };
        let (verdict_tx, verdict) = oneshot::channel();
        let (commit, commit_rx) = oneshot::channel();
        let offer = Offer {
            seq,
            delivery: delivery.clone(),
            enqueued_at: now,
            time_to_live: source
                .time_to_live
                .map(|sent| self.effective_ttl(&copy.to, owner.id, sent)),
            props: source.props.clone(),
            body: source.body.clone(),
            verdict: verdict_tx,
            commit: commit_rx,
        };
        // A receiver that left since it was claimed drops the offer: filed as usual.
        slot.send(offer).ok()?;
        Some((delivery, verdict, commit))
    }
}

//! Both sides of a hand-off (see `runtime::handoff` for the exchange). The send's: offer
//! each copy that may go straight to a parked receiver, turn the copies the receivers took
//! into removals (receive-and-delete) or locks (peek-lock) written with the send, tell
//! each receiver when it may answer, and file the locks once the send is durable. The
//! receiver's: take the offers, render them, and answer when told.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::receive::Received;
use super::runtime::{Claim, Effect, Entity, Entry, Offer, Parked, QueueSettings};
use super::send::Placement;
use super::{Broker, Result};
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

/// What [`Broker::offer`] gives [`Pending`].
struct Offered {
    delivery: Delivery,
    lock: Option<(Uuid, DateTime<Utc>)>,
    verdict: oneshot::Receiver<bool>,
    commit: oneshot::Sender<bool>,
}

/// A copy offered to a receiver, waiting for its verdict.
struct Pending {
    seq: u64,
    copy: Placement,
    offered: Offered,
}

/// What the offers came to: copies to file as usual, removals and locks to write with the
/// send, locks to file once that is durable, and the receivers to tell when they may answer.
#[derive(Default)]
pub(super) struct Handed {
    /// Each counted in its queue's filings until it is filed (or the write failed).
    file: Vec<(u64, Placement)>,
    pub(super) writes: Vec<Write>,
    /// Each noted as unfiled on its queue until it is filed (or the write failed).
    locks: Vec<HandedLock>,
    /// Turned `true` once the locks are filed; dropped unchanged when the write fails.
    filed: Option<watch::Sender<bool>>,
    /// The receivers: told once the send's write is queued.
    queued: Vec<oneshot::Sender<bool>>,
}

/// The lock of a copy handed to a peek-lock receiver, filed once the send is durable.
struct HandedLock {
    copy: Placement,
    lock: (Uuid, DateTime<Utc>),
    seq: u64,
    delivery: Delivery,
}

impl Handed {
    /// Keeps a copy to file once the send is durable; until then nothing is handed off
    /// on its queue, so no later message overtakes it.
    fn file_later(&mut self, seq: u64, copy: Placement) {
        if let Some(queue) = &copy.to.queue {
            queue.filing_started();
        }
        self.file.push((seq, copy));
    }

    /// Notes a lock handed to a peek-lock receiver, to file once the send is durable;
    /// until then settling it waits (see `Queue::until_filed`).
    fn lock_later(&mut self, lock: HandedLock) {
        if let Some(queue) = &lock.copy.to.queue {
            let filed = self.filed.get_or_insert_with(|| watch::channel(false).0);
            queue.lock_unfiled(lock.lock.0, filed.subscribe());
        }
        self.locks.push(lock);
    }

    /// The send's write is queued: the receivers may answer (whatever they do next is
    /// written after it).
    pub(super) fn queued(&mut self) {
        for receiver in self.queued.drain(..) {
            let _ = receiver.send(true);
        }
    }

    /// The send's write is durable: files the locks of the copies handed to peek-lock
    /// receivers (and lets settlements waiting for them go on), then files the other
    /// copies where receivers find them.
    pub(super) fn durable(mut self, now: DateTime<Utc>) {
        for l in self.locks.drain(..) {
            if let Some(queue) = &l.copy.to.queue {
                queue.lock_handed(l.lock, l.seq, l.delivery);
            }
        }
        if let Some(filed) = self.filed.take() {
            filed.send_replace(true);
        }
        for (seq, copy) in self.file.drain(..) {
            if let Some(queue) = &copy.to.queue {
                queue.insert(
                    [Entry {
                        seq,
                        delivery: copy.delivery,
                    }],
                    now,
                );
                queue.filing_ended();
            }
        }
    }
}

impl Drop for Handed {
    /// A failed write files nothing: its copies stop holding hand-offs back, and its
    /// locks are lost (what waits for them wakes with `filed` dropped).
    fn drop(&mut self) {
        for l in &self.locks {
            if let Some(queue) = &l.copy.to.queue {
                queue.lock_dropped(l.lock.0);
            }
        }
        for (_, copy) in &self.file {
            if let Some(queue) = &copy.to.queue {
                queue.filing_ended();
            }
        }
    }
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
        // The receivers claimed so far, by queue or subscription: the next copies for the
        // same one go to the same receiver while it has room, in sequence order.
        let mut claims: Vec<(u64, Claim)> = Vec::new();
        for Sent {
            seq,
            copies,
            source,
            ..
        } in sent
        {
            for copy in copies {
                let offered = source.as_ref().filter(|_| receivable(&copy, now));
                let offered = offered.and_then(|source| {
                    let claim = claim_for(&mut claims, &copy)?;
                    self.offer(owner, seq, &copy, source, claim, now)
                });
                // A full receiver takes no more, nor does one a copy passed by: what came
                // after would overtake it.
                let took = offered.is_some();
                claims.retain(|(to, claim)| claim.room > 0 && (took || *to != copy.to.id));
                match offered {
                    Some(offered) => pending.push(Pending { seq, copy, offered }),
                    None => handed.file_later(seq, copy),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for Pending { seq, copy, offered } in pending {
            let verdict = tokio::time::timeout_at(deadline, offered.verdict).await;
            if !matches!(verdict, Ok(Ok(true))) {
                handed.file_later(seq, copy);
                continue;
            }
            // Received and deleted: removed; locked: its delivery counted, as a take does.
            let delivery = offered.delivery;
            let effect = match offered.lock {
                None => Effect::Remove(seq, delivery.clone()),
                Some(_) => Effect::Rewrite(seq, delivery.clone()),
            };
            let writes = self.runtime.writes_for(copy.to.id, vec![effect]);
            handed.writes.extend(writes);
            if let Some(lock) = offered.lock {
                handed.lock_later(HandedLock {
                    copy,
                    lock,
                    seq,
                    delivery,
                });
            }
            handed.queued.push(offered.commit);
        }
        handed
    }

    /// Offers one (receivable) copy to the receiver `claim`ed on its queue or subscription:
    /// what the send then waits for. `None` when that receiver has left.
    fn offer(
        &self,
        owner: &Entity,
        seq: u64,
        copy: &Placement,
        source: &Source,
        claim: &mut Claim,
        now: DateTime<Utc>,
    ) -> Option<Offered> {
        let d = &copy.delivery;
        let lock = claim.lock(&QueueSettings::of(&copy.to.description()), now);
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
            default_time_to_live: self.default_ttl(&copy.to, owner.id).as_secs_f64(),
            props: source.props.clone(),
            body: source.body.clone(),
            lock,
            verdict: verdict_tx,
            commit: commit_rx,
        };
        // A receiver that left since it was claimed drops the offer: filed as usual.
        claim.slot.send(offer).ok()?;
        claim.room -= 1;
        Some(Offered {
            delivery,
            lock,
            verdict,
            commit,
        })
    }
}

/// The receiver this send already claimed on the copy's queue or subscription, or one
/// claimed there now (when one is parked and nothing there is older).
fn claim_for<'a>(claims: &'a mut Vec<(u64, Claim)>, copy: &Placement) -> Option<&'a mut Claim> {
    let i = match claims.iter().position(|(to, _)| *to == copy.to.id) {
        Some(i) => i,
        None => {
            claims.push((copy.to.id, copy.to.queue.as_ref()?.claim()?));
            claims.len() - 1
        }
    };
    Some(&mut claims[i].1)
}

/// Whether a copy may go to a receiver now: it is not dead-lettered, deferred, held for a
/// rule action's own copy, scheduled for later or expired.
fn receivable(copy: &Placement, now: DateTime<Utc>) -> bool {
    let d = &copy.delivery;
    d.dead_letter.is_none()
        && !d.overridden
        && !d.deferred
        && d.scheduled_at.is_none_or(|at| at <= now)
        && d.expires_at.is_none_or(|at| at > now)
}

/// The offers a parked receiver gets: those one send made it, all at once (pending for
/// ever when it is not parked for hand-offs, or its slot went without any). The slot is
/// closed at the first: an offer made later fails at once and is filed as usual, rather
/// than wait unanswered while the send waits for its verdict.
pub(super) async fn offered(parked: &mut Option<Parked<'_>>) -> Vec<Offer> {
    let Some(parked) = parked else {
        return std::future::pending().await;
    };
    let Some(first) = parked.offers.recv().await else {
        return std::future::pending().await;
    };
    parked.offers.close();
    let mut offers = vec![first];
    while let Ok(more) = parked.offers.try_recv() {
        offers.push(more);
    }
    offers
}

/// Renders handed-off messages in order, telling the send of each whether it could, then
/// waits until the send lets it answer (its write queued: see `runtime::handoff`): the
/// answers, or `None` when that write could not be queued (nothing was taken then). A
/// render that fails leaves that message and those after it to be filed as usual; its
/// error is returned when it was the first, as for a take.
pub(super) async fn handed<R>(
    offers: Vec<Offer>,
    render: &mut impl FnMut(Received) -> Result<R>,
) -> Result<Option<Vec<R>>> {
    let (mut answers, mut commits) = (Vec::new(), Vec::new());
    // Offers left when the loop stops are dropped, so their verdicts say no.
    for offer in offers {
        let Offer {
            seq,
            delivery,
            enqueued_at,
            time_to_live,
            default_time_to_live,
            props,
            body,
            lock,
            verdict,
            commit,
        } = offer;
        // A panic drops the verdicts with the offers: the send files the copies as usual.
        let answer = render(Received {
            sequence_number: seq,
            delivery_count: delivery.delivery_count,
            enqueued_at,
            time_to_live,
            default_time_to_live,
            lock,
            props,
            body,
        });
        if verdict.send(answer.is_ok()).is_err() {
            // The send stopped waiting: it files this copy and those after it.
            break;
        }
        match answer {
            Ok(answer) => {
                answers.push(answer);
                commits.push(commit);
            }
            Err(e) if answers.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    // One write carries them all: it either succeeded or failed for every one.
    for commit in commits {
        if commit.await != Ok(true) {
            return Ok(None);
        }
    }
    Ok((!answers.is_empty()).then_some(answers))
}

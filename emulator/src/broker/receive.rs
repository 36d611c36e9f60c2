//! Receive and settle: take the next message (locked or removed) with its answer built
//! before the take is committed, long polls, complete, unlock and renew.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use servicebus_wire::TimeSpan;
use servicebus_wire::message::{PropertyValue, format_property};
use uuid::Uuid;

use super::handoff::{handed, offered};
use super::runtime::{
    self, Effect, Entity, Queue, QueueSettings, ReceiveMode, Settle, Subqueue, Taken,
};
use super::send::ttl_span;
use super::{Broker, Error, Result, allowed};
use crate::model::message::{Delivery, MessageProps, StoredDeliveries, StoredMessage};
use crate::model::{Address, EntityPath};
use crate::store::Key;

/// Which queue or subscription (and which subqueue) a receive or settle addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveTarget {
    /// `Address::Queue` or `Address::Subscription`.
    pub address: Address,
    /// The dead-letter subqueue instead of the main one.
    pub dead_letter: bool,
}

impl From<&EntityPath> for ReceiveTarget {
    /// The queue or subscription (or dead-letter subqueue) a messaging path names.
    fn from(path: &EntityPath) -> Self {
        ReceiveTarget {
            address: path.address(),
            dead_letter: path.dead_letter,
        }
    }
}

/// What a peeked message is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekState {
    /// Receivable (or locked by a receiver now).
    Active,
    /// Deferred: received only by sequence number.
    Deferred,
    /// Scheduled for later.
    Scheduled,
}

/// A received message, ready to be written out.
#[derive(Debug, Clone)]
pub struct Received {
    /// `SequenceNumber`.
    pub sequence_number: u64,
    /// `DeliveryCount`.
    pub delivery_count: u32,
    /// `EnqueuedTimeUtc`.
    pub enqueued_at: DateTime<Utc>,
    /// `TimeToLive` as sent (lowered to the entity's default).
    pub time_to_live: Option<f64>,
    /// The entity's `DefaultMessageTimeToLive` in seconds (through a subscription, lowered
    /// to its topic's): the `TimeToLive` REST reports for a message sent without one, as
    /// the service does (`TimeSpan.MaxValue`'s seconds when neither sets one).
    pub default_time_to_live: f64,
    /// Lock token and `LockedUntilUtc` (peek-lock).
    pub lock: Option<(Uuid, DateTime<Utc>)>,
    /// Properties (after rule actions; dead-letter reason and description added).
    pub props: MessageProps,
    /// The body.
    pub body: Vec<u8>,
}

/// Counts `n` messages received from `entity` (metrics).
fn count_received(entity: &Entity, n: usize) {
    entity
        .received
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// The subqueues of a queue or subscription; a topic has none to receive from.
fn queue_of(entity: &Entity) -> Result<&Queue> {
    entity.queue.as_ref().ok_or_else(|| Error::NotFound {
        kind: "queue or subscription",
        path: entity.path.clone(),
    })
}

impl Broker {
    fn receivable(&self, target: &ReceiveTarget) -> Result<(Arc<Entity>, Subqueue)> {
        let entity = self
            .entity(&target.address)
            .ok_or_else(|| Error::NotFound {
                kind: "queue or subscription",
                path: target.address.display_path(),
            })?;
        Ok((
            entity,
            if target.dead_letter {
                Subqueue::DeadLetter
            } else {
                Subqueue::Main
            },
        ))
    }

    /// Answers every parked receive now, empty, and every later one at once: the emulator
    /// is stopping, and a long poll must not hold its stop up.
    pub fn stop_waiting(&self) {
        self.runtime.close_receives();
    }

    /// Takes the next message: locks it (peek-lock) or removes it (receive-and-delete),
    /// waiting up to `timeout` for one to arrive. `Ok(None)` when none did.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting, nothing is taken. Dropped after taking, a lock simply expires
    /// (the delivery counts) and a received-and-deleted message is gone, as on the service.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Disabled`], [`Error::Store`].
    pub async fn receive(
        &self,
        target: &ReceiveTarget,
        mode: ReceiveMode,
        timeout: std::time::Duration,
    ) -> Result<Option<Received>> {
        self.receive_with(target, mode, timeout, Ok).await
    }

    /// As [`Broker::receive`], with the answer built by `render` before the take is
    /// committed: when reading the message or `render` fails (or panics), the message stays
    /// where it was, unlocked and with its delivery count, and the failure is returned.
    /// Only after the answer exists is the lock or the removal made durable.
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::receive`].
    ///
    /// # Errors
    ///
    /// As [`Broker::receive`], and what `render` returns.
    pub async fn receive_with<R>(
        &self,
        target: &ReceiveTarget,
        mode: ReceiveMode,
        timeout: std::time::Duration,
        render: impl FnOnce(Received) -> Result<R>,
    ) -> Result<Option<R>> {
        let mut render = Some(render);
        let once = |received| match render.take() {
            Some(render) => render(received),
            None => Err(Error::Render {
                reason: "rendered twice".into(),
            }),
        };
        let never = std::future::pending();
        let mut answers = self
            .receive_many(target, mode, 1, timeout, never, once)
            .await?;
        Ok(answers.pop())
    }

    /// As [`Broker::receive_with`], taking up to `max` messages (at least one, unless none
    /// arrives within `timeout`) in sequence order, with one durable write for all of them:
    /// what an AMQP receiver link with credit for several asks for. When reading a message or
    /// rendering it fails, it and those after it stay where they were, and the ones before
    /// are returned (the failure, when it is the first). When `interrupt` completes while
    /// it waits (never once it has taken), it returns at once with nothing.
    ///
    /// # Cancel safety
    ///
    /// As [`Broker::receive`].
    ///
    /// # Errors
    ///
    /// As [`Broker::receive_with`].
    pub async fn receive_many<R>(
        &self,
        target: &ReceiveTarget,
        mode: ReceiveMode,
        max: usize,
        timeout: std::time::Duration,
        interrupt: impl std::future::Future<Output = ()>,
        mut render: impl FnMut(Received) -> Result<R>,
    ) -> Result<Vec<R>> {
        tokio::pin!(interrupt);
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        entity.touch(self.clock.now());
        let deadline = tokio::time::Instant::now() + timeout;
        let owner = self.owner(target, &entity);
        let place = queue.place();
        loop {
            let notified = queue.notified(which);
            let closed = self.runtime.closed();
            tokio::pin!(notified, closed);
            notified.as_mut().enable();
            closed.as_mut().enable();
            let description = entity.description();
            allowed(&entity, &description, "receive")?;
            let settings = QueueSettings::of(&description);
            let mut effects = Vec::new();
            let load = |sub: Subqueue, lo: u64, hi: u64| self.load(&entity, owner, sub, lo, hi);
            let now = self.clock.now();
            // Each take with the index of its own effect (the last one `take` adds).
            let mut taken = Vec::new();
            while taken.len() < max.max(1) {
                match queue.take(which, mode, &settings, now, &mut effects, &load) {
                    Ok(Some(t)) => taken.push((t, effects.len().saturating_sub(1))),
                    Ok(None) => break,
                    Err(e) => {
                        // Reading cold deliveries failed: what was taken goes back.
                        for (t, _) in taken {
                            queue.untake(which, t, now);
                        }
                        return Err(e.into());
                    }
                }
            }
            if !taken.is_empty() {
                let answers = self
                    .commit(&entity, queue, which, taken, effects, &mut render, now)
                    .await?;
                count_received(&entity, answers.len());
                return Ok(answers);
            }
            self.persist(entity.id, effects).await?;
            if self.runtime.is_closing() {
                return Ok(Vec::new());
            }
            // A receiver of the main subqueue takes hand-offs: a message sent while it
            // waits comes with the send's own write, not after a second one. (Parked before
            // it counts as waiting: whoever sees it waiting may hand it a message.)
            let mut parked = (which == Subqueue::Main).then(|| queue.park(place, mode, max.max(1)));
            let _waiting = runtime::Waiting::new(queue);
            tokio::select! {
                biased;
                offers = offered(&mut parked) => {
                    if let Some(answers) = handed(offers, &mut render).await? {
                        count_received(&entity, answers.len());
                        return Ok(answers);
                    }
                }
                () = &mut notified => {}
                () = &mut closed => return Ok(Vec::new()),
                () = &mut interrupt => return Ok(Vec::new()),
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// Who stores `target`'s messages: the queue itself, or the subscription's topic.
    fn owner(&self, target: &ReceiveTarget, entity: &Entity) -> Option<u64> {
        match &target.address {
            Address::Subscription(topic, _) => {
                self.entity(&Address::Topic(topic.clone())).map(|t| t.id)
            }
            _ => Some(entity.id),
        }
    }

    /// Reads cold deliveries `lo..=hi` of `entity`'s subqueue `sub` back from the store.
    fn load(
        &self,
        entity: &Entity,
        owner: Option<u64>,
        sub: Subqueue,
        lo: u64,
        hi: u64,
    ) -> crate::store::Result<Vec<(u64, Delivery)>> {
        let mut found = Vec::new();
        if let (Some(owner), Subqueue::Main) = (owner, sub) {
            self.deliveries(owner, &[entity.id], lo, hi, |_, seq, d| {
                found.push((seq, d));
                Ok(())
            })?;
            return Ok(found);
        }
        // A dead-lettered delivery always has its record.
        for record in self
            .store
            .iter::<Delivery>(Key::Delivery(entity.id, lo), Key::Delivery(entity.id, hi))
        {
            let (key, d) = record?;
            if !d.settled {
                found.extend(Key::parse_numbers(&key).map(|(_, _, seq)| (seq, d)));
            }
        }
        Ok(found)
    }

    /// Builds the answers for what a receive took, then makes the takes durable. Takes
    /// whose answer cannot be built (the first failure and all after it) are undone, and
    /// what else the takes applied (expiries, say) is still written.
    #[allow(clippy::too_many_arguments)] // the pieces of the takes, kept apart for the undo
    async fn commit<R>(
        &self,
        entity: &Entity,
        queue: &Queue,
        which: Subqueue,
        taken: Vec<(Taken, usize)>,
        mut effects: Vec<Effect>,
        render: &mut impl FnMut(Received) -> Result<R>,
        now: DateTime<Utc>,
    ) -> Result<Vec<R>> {
        let mut answers = Vec::new();
        let mut failure = None;
        for (i, (t, _)) in taken.iter().enumerate() {
            // Read before the writes: receive-and-delete may delete the stored message.
            let answer = self.read(entity, t).and_then(|received| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(received)))
                    .unwrap_or_else(|panic| {
                        for (t, _) in &taken {
                            queue.untake(which, t.clone(), now);
                        }
                        std::panic::resume_unwind(panic)
                    })
            });
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => {
                    failure = Some((i, e));
                    break;
                }
            }
        }
        let kept = failure.as_ref().map_or(taken.len(), |(i, _)| *i);
        let mut undone = taken;
        let kept_takes: Vec<(Taken, usize)> = undone.drain(..kept).collect();
        for (t, effect) in undone.into_iter().rev() {
            effects.remove(effect);
            queue.untake(which, t, now);
        }
        if let Err(e) = self.persist(entity.id, effects).await {
            for (t, _) in kept_takes {
                queue.untake(which, t, now);
            }
            return Err(e);
        }
        match failure {
            Some((0, e)) => Err(e),
            _ => Ok(answers),
        }
    }

    fn read(&self, entity: &Entity, taken: &Taken) -> Result<Received> {
        let Taken { entry, lock } = taken;
        let owner = entry.delivery.owner;
        let (stored, body) = self
            .store
            .get_with_body::<StoredMessage>(Key::Message(owner, entry.seq))?
            .ok_or_else(|| Error::Missing {
                owner,
                seq: entry.seq,
            })?;
        let mut props = if entry.delivery.overridden {
            self.store
                .get::<MessageProps>(Key::Override(entity.id, entry.seq))?
                .unwrap_or(stored.props)
        } else {
            stored.props
        };
        if let Some(dl) = &entry.delivery.dead_letter {
            props.user.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("DeadLetterReason")
                    && !n.eq_ignore_ascii_case("DeadLetterErrorDescription")
            });
            props.user.push((
                "DeadLetterReason".into(),
                format_property(&PropertyValue::String(dl.reason.clone())),
            ));
            props.user.push((
                "DeadLetterErrorDescription".into(),
                format_property(&PropertyValue::String(dl.description.clone())),
            ));
        }
        Ok(Received {
            sequence_number: entry.seq,
            delivery_count: entry.delivery.delivery_count,
            enqueued_at: stored.enqueued_at,
            time_to_live: stored
                .time_to_live
                .map(|sent| self.effective_ttl(entity, owner, sent)),
            default_time_to_live: self.default_ttl(entity, owner).as_secs_f64(),
            lock: *lock,
            props,
            body,
        })
    }

    /// The time to live a receiver sees: the service lowers a message's to its entity's
    /// `DefaultMessageTimeToLive` (and, through a subscription, to its topic's) silently.
    pub(super) fn effective_ttl(&self, receivable: &Entity, owner: u64, sent: f64) -> f64 {
        let ttl = ttl_span(sent).min(self.default_ttl(receivable, owner));
        ttl.as_secs_f64().min(sent)
    }

    /// The `DefaultMessageTimeToLive` that bounds what `receivable` receives: its own, and
    /// through a subscription, its topic's.
    pub(super) fn default_ttl(&self, receivable: &Entity, owner: u64) -> TimeSpan {
        let mut ttl = receivable.description().default_message_time_to_live;
        if owner != receivable.id
            && let Some(topic) = self.runtime.by_id(owner)
        {
            ttl = ttl.min(topic.description().default_message_time_to_live);
        }
        ttl
    }

    /// The deliveries of `receivers` (a queue itself, or subscriptions of one topic) of the
    /// messages `owner` stores with sequence numbers in `lo..=hi`, in sequence order: a
    /// receiver's `D` record where one was written (a settled one drops the copy), else the
    /// delivery the stored message carries for it. Every record stream is walked at once,
    /// one record at a time.
    pub(super) fn deliveries(
        &self,
        owner: u64,
        receivers: &[u64],
        lo: u64,
        hi: u64,
        mut each: impl FnMut(u64, u64, Delivery) -> crate::store::Result<()>,
    ) -> crate::store::Result<()> {
        let seq_of = |key: &[u8]| Key::parse_numbers(key).map_or(0, |(_, _, seq)| seq);
        let mut written = Vec::with_capacity(receivers.len());
        for &receiver in receivers {
            let mut records = self
                .store
                .iter::<Delivery>(Key::Delivery(receiver, lo), Key::Delivery(receiver, hi));
            let next = records.next().transpose()?;
            written.push((receiver, records, next));
        }
        for record in self
            .store
            .iter::<StoredDeliveries>(Key::Message(owner, lo), Key::Message(owner, hi))
        {
            let (key, stored) = record?;
            let seq = seq_of(&key);
            for (receiver, records, next) in &mut written {
                // A delivery record without its message cannot be written (both go in one
                // atomic write); one would be skipped.
                while let Some((k, _)) = next.as_ref()
                    && seq_of(k) < seq
                {
                    *next = records.next().transpose()?;
                }
                let delivery = match next.take_if(|(k, _)| seq_of(k) == seq) {
                    Some((_, d)) => {
                        *next = records.next().transpose()?;
                        (!d.settled).then_some(d)
                    }
                    None => stored.initial_delivery(owner, *receiver).cloned(),
                };
                if let Some(delivery) = delivery {
                    each(*receiver, seq, delivery)?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn persist(&self, receivable: u64, effects: Vec<Effect>) -> Result<()> {
        if effects.is_empty() {
            return Ok(());
        }
        let writes = self.runtime.writes_for(receivable, effects);
        Ok(self.store.apply(writes).await?)
    }

    /// Completes, unlocks or renews a locked message, named by its sequence number or
    /// message id and its lock token.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when no held lock matches (expired, settled, wrong id),
    /// [`Error::NotFound`] for a missing entity, [`Error::Store`].
    pub async fn settle(
        &self,
        target: &ReceiveTarget,
        id: &str,
        token: &str,
        how: Settle,
    ) -> Result<()> {
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        let now = self.clock.now();
        entity.touch(now);
        let lost = || Error::LockLost {
            token: token.to_string(),
        };
        let token_id = Uuid::parse_str(token).map_err(|_| lost())?;
        queue.until_filed(token_id).await;
        let held = queue.locked(which, token_id, now).ok_or_else(lost)?;
        let matches_id = match id.parse::<u64>() {
            Ok(seq) => seq == held.entry.seq,
            Err(_) => {
                let taken = Taken {
                    entry: held.entry.clone(),
                    lock: None,
                };
                self.read(&entity, &taken)?.props.message_id.as_deref() == Some(id)
            }
        };
        if !matches_id {
            return Err(lost());
        }
        self.settle_one(&entity, queue, which, token_id, how, now)
            .await
    }

    /// Completes, unlocks, renews or dead-letters a locked message named by its lock token
    /// alone, as AMQP's management node names it (`renew-lock`, `update-disposition`).
    /// Returns when the lock now ends, for a renewal.
    ///
    /// # Errors
    ///
    /// As [`Broker::settle`].
    pub async fn settle_token(
        &self,
        target: &ReceiveTarget,
        token: Uuid,
        how: Settle,
    ) -> Result<Option<DateTime<Utc>>> {
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        let now = self.clock.now();
        entity.touch(now);
        let renew = how == Settle::Renew;
        self.settle_one(&entity, queue, which, token, how, now)
            .await?;
        Ok(renew
            .then(|| queue.locked(which, token, now).map(|l| l.until))
            .flatten())
    }

    /// Settles several locked messages of `target`, each named by its lock token, with one
    /// durable write: whether each lock was held (a lost one changes nothing).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity, [`Error::Store`].
    pub async fn settle_tokens(
        &self,
        target: &ReceiveTarget,
        settles: Vec<(Uuid, Settle)>,
    ) -> Result<Vec<bool>> {
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        let now = self.clock.now();
        entity.touch(now);
        self.settle_held(&entity, queue, which, settles, now).await
    }

    /// Applies settlements to held locks with one durable write: whether each was held.
    async fn settle_held(
        &self,
        entity: &Entity,
        queue: &Queue,
        which: Subqueue,
        settles: Vec<(Uuid, Settle)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        // A lock handed off before its send was durable is settled once it is filed.
        for (token, _) in &settles {
            queue.until_filed(*token).await;
        }
        let settings = QueueSettings::of(&entity.description());
        let mut effects = Vec::new();
        let held = settles
            .into_iter()
            .map(|(token, how)| {
                queue
                    .settle(which, token, how, &settings, now, &mut effects)
                    .is_some()
            })
            .collect();
        self.persist(entity.id, effects).await?;
        Ok(held)
    }

    /// As [`Broker::settle_held`], for one lock, which must be held.
    async fn settle_one(
        &self,
        entity: &Entity,
        queue: &Queue,
        which: Subqueue,
        token: Uuid,
        how: Settle,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let held = self
            .settle_held(entity, queue, which, vec![(token, how)], now)
            .await?;
        if held.first() == Some(&true) {
            return Ok(());
        }
        Err(Error::LockLost {
            token: token.to_string(),
        })
    }

    /// Whether `target` is a live queue or subscription (a receiver may attach to it).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when it is not.
    pub fn check_receivable(&self, target: &ReceiveTarget) -> Result<()> {
        let (entity, _) = self.receivable(target)?;
        queue_of(&entity).map(|_| ())
    }

    /// Receives deferred messages of `target` by sequence number, all or none: locked
    /// (peek-lock, delivery counts unchanged) or removed. `Ok(None)` when a number names no
    /// deferred message.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity, [`Error::Store`].
    pub async fn receive_deferred(
        &self,
        target: &ReceiveTarget,
        sequence_numbers: &[u64],
        mode: ReceiveMode,
    ) -> Result<Option<Vec<Received>>> {
        let (entity, _) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        let now = self.clock.now();
        entity.touch(now);
        let settings = QueueSettings::of(&entity.description());
        let mut effects = Vec::new();
        let Some(taken) = queue.take_deferred(sequence_numbers, mode, &settings, now, &mut effects)
        else {
            return Ok(None);
        };
        // Read before the writes: receive-and-delete deletes the stored message. A record
        // that cannot be read is a fault; a lock taken then simply expires.
        let received = taken
            .iter()
            .map(|t| self.read(&entity, t))
            .collect::<Result<Vec<_>>>()?;
        self.persist(entity.id, effects).await?;
        Ok(Some(received))
    }

    /// Most messages one peek returns.
    pub const MAX_PEEK: usize = 4096;

    /// Up to `count` messages of `target` from sequence number `from` on, in sequence
    /// order, whatever their state (active, locked, scheduled, deferred), without locking
    /// them or changing their delivery count; each with its state.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity, [`Error::Store`].
    pub fn peek(
        &self,
        target: &ReceiveTarget,
        from: u64,
        count: usize,
    ) -> Result<Vec<(Received, PeekState)>> {
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        let owner = self.owner(target, &entity);
        let load = |sub: Subqueue, lo: u64, hi: u64| self.load(&entity, owner, sub, lo, hi);
        let now = self.clock.now();
        queue
            .peek(which, from, count.min(Self::MAX_PEEK), &load)?
            .into_iter()
            .map(|entry| {
                let state = if entry.delivery.deferred {
                    PeekState::Deferred
                } else if entry.delivery.scheduled_at.is_some_and(|at| at > now) {
                    PeekState::Scheduled
                } else {
                    PeekState::Active
                };
                let taken = Taken { entry, lock: None };
                Ok((self.read(&entity, &taken)?, state))
            })
            .collect()
    }

    /// Receives parked in a long poll on `target` right now (for tests and metrics).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity.
    pub fn waiting_receivers(&self, target: &ReceiveTarget) -> Result<usize> {
        let (entity, _) = self.receivable(target)?;
        Ok(entity
            .queue
            .as_ref()
            .map_or(0, |q| q.waiting.load(std::sync::atomic::Ordering::SeqCst)))
    }

    /// Whether a receive on `target` would find a message now, or might: true for a
    /// dead-letter subqueue and for a missing entity (the receive reports that). False
    /// means a receive would park now (and most often be handed the next message).
    pub fn may_have_ready(&self, target: &ReceiveTarget) -> bool {
        if target.dead_letter {
            return true;
        }
        match self.receivable(target) {
            Ok((entity, _)) => entity.queue.as_ref().is_none_or(|q| q.has_ready()),
            Err(_) => true,
        }
    }
}

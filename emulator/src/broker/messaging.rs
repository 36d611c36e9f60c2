//! Send, receive, settle and time: the operations `http/messages.rs` calls.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use servicebus_wire::message::{
    MAX_TIME_TO_LIVE_SECS, PropertyValue, format_http_date, format_property,
};
use servicebus_wire::{EntityKind, EntityStatus, TimeSpan};
use uuid::Uuid;

use super::runtime::{
    self, Effect, Entity, Entry, Queue, QueueSettings, ReceiveMode, Settle, Sub, Taken,
};
use super::{Broker, Error, Result};
use crate::filter::value::{Properties, PropertiesMut, SystemProperty, Value};
use crate::model::limits::{MAX_PROPERTIES_BYTES, MAX_PROPERTY_BYTES, MESSAGE_OVERHEAD_BYTES};
use crate::model::message::{DeadLetter, Delivery, MessageProps, StoredDeliveries, StoredMessage};
use crate::store::{EntityKey, Key, Write};

/// Rule evaluation work (SQL rules times property bytes) above which a send's routing runs
/// on a blocking thread rather than on the runtime thread serving it. A backplane send (a
/// rule or two over a few hundred bytes) stays far below it.
const INLINE_ROUTING_WORK: usize = 256 * 1024;

/// Sequence numbers an owner's stored messages must span before recovery walks its two
/// halves on two threads (a thread per small owner would cost more than it saves).
const SPLIT_WALK_FROM: u64 = 1 << 16;

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// What the sender set.
    pub props: MessageProps,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// `TimeToLive` in seconds, if set.
    pub time_to_live: Option<f64>,
    /// `ScheduledEnqueueTimeUtc`, if set.
    pub scheduled_at: Option<DateTime<Utc>>,
}

impl Outgoing {
    /// What a client sent: its `BrokerProperties`, content type, custom properties and body.
    pub fn from_client(
        broker: &servicebus_wire::message::BrokerProperties,
        content_type: Option<String>,
        user: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        Outgoing {
            time_to_live: broker.time_to_live,
            scheduled_at: broker.scheduled_enqueue_time_utc,
            props: MessageProps::from_client(broker, content_type, user),
            body,
        }
    }

    /// Bytes counted against the entity's message size limit: body, properties, and the
    /// fixed overhead every message has (so that a batch of empty messages is not free).
    pub fn size(&self) -> usize {
        self.body.len() + self.props.size() + MESSAGE_OVERHEAD_BYTES
    }

    /// Refuses properties over the service's limits: 32 KB for one custom property (name
    /// and value), 64 KB for all of them with the system properties.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the property or the total.
    pub fn check_properties(&self) -> Result<()> {
        if let Some((name, value)) = self
            .props
            .user
            .iter()
            .find(|(n, v)| n.len() + v.len() > MAX_PROPERTY_BYTES)
        {
            return Err(Error::Invalid(format!(
                "the property '{}' is {} bytes; one property may hold at most {MAX_PROPERTY_BYTES}",
                name.chars().take(64).collect::<String>(),
                name.len() + value.len()
            )));
        }
        let total = self.props.size();
        if total > MAX_PROPERTIES_BYTES {
            return Err(Error::Invalid(format!(
                "the message's properties are {total} bytes; all of them together may hold at \
                 most {MAX_PROPERTIES_BYTES}"
            )));
        }
        Ok(())
    }
}

/// Which queue or subscription (and which subqueue) a receive or settle addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveTarget {
    /// `EntityKey::Queue` or `EntityKey::Subscription`.
    pub key: EntityKey,
    /// The dead-letter subqueue instead of the main one.
    pub dead_letter: bool,
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
    /// `TimeToLive` as sent.
    pub time_to_live: Option<f64>,
    /// Lock token and `LockedUntilUtc` (peek-lock).
    pub lock: Option<(Uuid, DateTime<Utc>)>,
    /// Properties (after rule actions; dead-letter reason and description added).
    pub props: MessageProps,
    /// The body.
    pub body: Vec<u8>,
}

/// A candidate copy during fan-out: what filters read and actions change.
#[derive(Debug, Clone)]
struct Candidate {
    props: MessageProps,
    seq: u64,
    enqueued_at: DateTime<Utc>,
    scheduled_at: Option<DateTime<Utc>>,
    time_to_live: Option<f64>,
    size: u64,
}

fn to_value(v: PropertyValue) -> Value {
    match v {
        PropertyValue::String(s) => Value::String(s),
        PropertyValue::Int(i) => Value::Int(i),
        PropertyValue::Double(d) => Value::Double(d),
        PropertyValue::Bool(b) => Value::Bool(b),
        PropertyValue::DateTime(t) => Value::DateTime(t),
    }
}

impl Properties for Candidate {
    fn system(&self, p: SystemProperty) -> Option<Value> {
        let text = |o: &Option<String>| o.clone().map(Value::String);
        match p {
            SystemProperty::MessageId => text(&self.props.message_id),
            SystemProperty::CorrelationId => text(&self.props.correlation_id),
            SystemProperty::SessionId => text(&self.props.session_id),
            SystemProperty::ReplyTo => text(&self.props.reply_to),
            SystemProperty::ReplyToSessionId => text(&self.props.reply_to_session_id),
            SystemProperty::To => text(&self.props.to),
            SystemProperty::Label => text(&self.props.label),
            SystemProperty::ContentType => text(&self.props.content_type),
            SystemProperty::SequenceNumber => i64::try_from(self.seq).ok().map(Value::Int),
            SystemProperty::EnqueuedTimeUtc => Some(Value::DateTime(self.enqueued_at)),
            SystemProperty::ScheduledEnqueueTimeUtc => self.scheduled_at.map(Value::DateTime),
            SystemProperty::TimeToLive => self.time_to_live.map(|s| Value::Duration(ttl_span(s))),
            SystemProperty::DeliveryCount => Some(Value::Int(0)),
            SystemProperty::Size => i64::try_from(self.size).ok().map(Value::Int),
        }
    }

    fn user(&self, name: &str) -> Option<Value> {
        self.props.user_value(name).map(to_value)
    }
}

impl PropertiesMut for Candidate {
    fn set_user(&mut self, name: &str, value: Value) {
        let raw = match value {
            Value::Null => return self.remove_user(name),
            Value::String(s) => format_property(&PropertyValue::String(s)),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::DateTime(t) => format!("\"{}\"", format_http_date(t)),
            Value::Duration(d) => (d.ticks() as f64 / 10_000_000.0).to_string(),
        };
        self.remove_user(name);
        self.props.user.push((name.to_string(), raw));
    }

    fn remove_user(&mut self, name: &str) {
        self.props
            .user
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn set_system(&mut self, p: SystemProperty, value: Option<String>) {
        let slot = match p {
            SystemProperty::MessageId => &mut self.props.message_id,
            SystemProperty::CorrelationId => &mut self.props.correlation_id,
            SystemProperty::SessionId => &mut self.props.session_id,
            SystemProperty::ReplyTo => &mut self.props.reply_to,
            SystemProperty::ReplyToSessionId => &mut self.props.reply_to_session_id,
            SystemProperty::To => &mut self.props.to,
            SystemProperty::Label => &mut self.props.label,
            SystemProperty::ContentType => &mut self.props.content_type,
            _ => return,
        };
        *slot = value;
    }
}

fn expiry(enqueued: DateTime<Utc>, ttls: &[TimeSpan]) -> Option<DateTime<Utc>> {
    let ttl = ttls.iter().min().copied().unwrap_or(TimeSpan::MAX);
    if ttl.is_infinite() {
        return None;
    }
    chrono::Duration::from_std(ttl.to_std())
        .ok()
        .and_then(|d| enqueued.checked_add_signed(d))
}

/// A time to live in seconds as a span: `TimeSpan::MAX` (never) from its maximum up, and
/// never a panic whatever the number (the wire refuses non-finite and non-positive ones).
fn ttl_span(seconds: f64) -> TimeSpan {
    if seconds >= MAX_TIME_TO_LIVE_SECS {
        return TimeSpan::MAX;
    }
    std::time::Duration::try_from_secs_f64(seconds).map_or(TimeSpan::ZERO, TimeSpan::from_std)
}

fn message_ttl(seconds: Option<f64>) -> TimeSpan {
    seconds.map_or(TimeSpan::MAX, ttl_span)
}

/// Seconds of a span, as `TimeToLive` is written.
fn span_seconds(span: TimeSpan) -> f64 {
    span.ticks() as f64 / 10_000_000.0
}

/// Refuses `operation` (`send` or `receive`) when the entity's status forbids it.
fn allowed(
    entity: &Entity,
    description: &servicebus_wire::EntityDescription,
    operation: &'static str,
) -> Result<()> {
    let forbidden = match operation {
        "send" => matches!(
            description.status,
            EntityStatus::Disabled | EntityStatus::SendDisabled
        ),
        _ => matches!(
            description.status,
            EntityStatus::Disabled | EntityStatus::ReceiveDisabled
        ),
    };
    if forbidden {
        return Err(Error::Disabled {
            path: entity.path.clone(),
            operation,
        });
    }
    Ok(())
}

/// The subqueues of a queue or subscription; a topic has none to receive from.
fn queue_of(entity: &Entity) -> Result<&Queue> {
    entity.queue.as_ref().ok_or_else(|| Error::NotFound {
        kind: "queue or subscription",
        path: entity.path.clone(),
    })
}

/// One copy to deliver: to whom, its delivery record and its changed properties.
struct Copy {
    to: Arc<Entity>,
    delivery: Delivery,
    overrides: Option<MessageProps>,
}

impl Broker {
    fn entity(&self, key: &EntityKey) -> Option<Arc<Entity>> {
        self.runtime.get(&key.to_bytes())
    }

    fn receivable(&self, target: &ReceiveTarget) -> Result<(Arc<Entity>, Sub)> {
        let entity = self.entity(&target.key).ok_or_else(|| Error::NotFound {
            kind: "queue or subscription",
            path: target.key.display_path(),
        })?;
        Ok((
            entity,
            if target.dead_letter {
                Sub::DeadLetter
            } else {
                Sub::Main
            },
        ))
    }

    /// The largest message the queue or topic at `path` takes, in bytes (body, properties
    /// and overhead); `None` when there is none.
    pub fn message_size_limit(&self, path: &str) -> Option<u64> {
        let entity = self
            .entity(&EntityKey::Queue(path.to_string()))
            .or_else(|| self.entity(&EntityKey::Topic(path.to_string())))?;
        Some(u64::from(entity.description().max_message_size_in_kilobytes) * 1024)
    }

    /// Answers every parked receive now, empty, and every later one at once: the emulator
    /// is stopping, and a long poll must not hold its stop up.
    pub fn stop_waiting(&self) {
        self.runtime.close_receives();
    }

    /// Sends messages to a queue or topic; a topic copies each to every subscription whose
    /// rules match (evaluated now). Answers once every copy is durable.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Disabled`], [`Error::TooLarge`] and [`Error::Invalid`]
    /// (nothing is enqueued), [`Error::Store`].
    pub async fn send(&self, path: &str, messages: Vec<Outgoing>) -> Result<()> {
        let entity = self
            .entity(&EntityKey::Queue(path.to_string()))
            .or_else(|| self.entity(&EntityKey::Topic(path.to_string())))
            .ok_or_else(|| Error::NotFound {
                kind: "queue or topic",
                path: path.to_string(),
            })?;
        let description = entity.description();
        allowed(&entity, &description, "send")?;
        let limit = u64::from(description.max_message_size_in_kilobytes) * 1024;
        for message in &messages {
            message.check_properties()?;
            if message.size() as u64 > limit {
                return Err(Error::TooLarge {
                    size: message.size() as u64,
                    limit,
                });
            }
        }
        let now = self.clock.now();
        entity.touch(now);
        let mut writes = Vec::new();
        let messages = Self::without_duplicates(&entity, &description, messages, now, &mut writes);
        if messages.is_empty() {
            if !writes.is_empty() {
                self.store.apply(writes).await?;
            }
            return Ok(());
        }
        let (first, next) = entity.reserve(messages.len() as u64);
        writes.push(Write::raise(Key::NextSequence(entity.id), next));
        let candidates: Vec<(Candidate, Outgoing)> = messages
            .into_iter()
            .zip(first..)
            .map(|(message, seq)| {
                let candidate = Candidate {
                    props: message.props.clone(),
                    seq,
                    enqueued_at: now,
                    scheduled_at: message.scheduled_at,
                    time_to_live: message.time_to_live,
                    size: message.size() as u64,
                };
                (candidate, message)
            })
            .collect();
        let routed = self.route(&entity, &description, candidates).await?;
        let mut deliveries = Vec::new();
        for (candidate, message, copies) in routed {
            if copies.is_empty() {
                continue;
            }
            Self::message_writes(&entity, &candidate, message, &copies, &mut writes);
            deliveries.push((candidate.seq, copies, candidate.size));
        }
        self.file(entity, writes, deliveries, now).await
    }

    /// The messages that are not duplicates of one sent within the window (those are
    /// accepted and dropped, as the service does); the history's writes go in `writes`.
    fn without_duplicates(
        entity: &Entity,
        description: &servicebus_wire::EntityDescription,
        messages: Vec<Outgoing>,
        now: DateTime<Utc>,
        writes: &mut Vec<Write>,
    ) -> Vec<Outgoing> {
        if !description.requires_duplicate_detection {
            return messages;
        }
        let window = description.duplicate_detection_history_time_window;
        let mut seen = runtime::lock(&entity.seen);
        messages
            .into_iter()
            .filter(|m| {
                m.props
                    .message_id
                    .as_deref()
                    .is_none_or(|id| !seen.check(entity.id, id, window, now, writes))
            })
            .collect()
    }

    /// Each message with its copies. Rules that read SQL over large properties, or many of
    /// them, are evaluated on a blocking thread, so that no send can hold a runtime thread
    /// (and every other request behind it) for long.
    async fn route(
        &self,
        entity: &Arc<Entity>,
        description: &servicebus_wire::EntityDescription,
        candidates: Vec<(Candidate, Outgoing)>,
    ) -> Result<Vec<(Candidate, Outgoing, Vec<Copy>)>> {
        let sql_rules: usize = entity
            .subscriptions()
            .iter()
            .map(|(_, rules)| rules.iter().filter(|(_, r)| r.is_sql()).count())
            .sum();
        let property_bytes: usize = candidates.iter().map(|(c, _)| c.props.size() + 64).sum();
        let route = {
            let (broker, entity, description) = (self.clone(), entity.clone(), description.clone());
            move || {
                candidates
                    .into_iter()
                    .map(|(candidate, message)| {
                        let copies = broker.fan_out(&entity, &description, &candidate)?;
                        Ok((candidate, message, copies))
                    })
                    .collect::<Result<Vec<_>>>()
            }
        };
        if sql_rules.saturating_mul(property_bytes) <= INLINE_ROUTING_WORK {
            return route();
        }
        match tokio::task::spawn_blocking(route).await {
            Ok(routed) => routed,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Store(crate::store::Error::ShutDown)),
        }
    }

    /// The writes of one sent message: its record (carrying a queue's delivery and a topic's
    /// plain copies: one record for the send, not one per copy), plus a record for each copy
    /// that differs (rule actions, dead-lettered by a filter error).
    fn message_writes(
        entity: &Entity,
        candidate: &Candidate,
        message: Outgoing,
        copies: &[Copy],
        writes: &mut Vec<Write>,
    ) {
        let seq = candidate.seq;
        let queue_delivery = (entity.kind == EntityKind::Queue)
            .then(|| copies.first().map(|c| c.delivery.clone()))
            .flatten();
        let listed = copies
            .iter()
            .filter(|c| c.delivery.listed)
            .map(|c| (c.to.id, c.delivery.clone()))
            .collect();
        let stored = StoredMessage {
            sequence_number: seq,
            enqueued_at: candidate.enqueued_at,
            time_to_live: message.time_to_live,
            scheduled_at: message.scheduled_at,
            props: message.props,
            body_len: message.body.len() as u64,
            queue_delivery,
            copies: listed,
        };
        writes.push(Write::put_with_body(
            Key::Message(entity.id, seq),
            &stored,
            &message.body,
        ));
        for copy in copies
            .iter()
            .filter(|c| entity.kind != EntityKind::Queue && !c.delivery.listed)
        {
            writes.push(Write::put(Key::Delivery(copy.to.id, seq), &copy.delivery));
            if let Some(o) = &copy.overrides {
                writes.push(Write::put(Key::Override(copy.to.id, seq), o));
            }
        }
    }

    /// Makes the writes durable, then files the deliveries where receivers find them.
    async fn file(
        &self,
        entity: Arc<Entity>,
        writes: Vec<Write>,
        deliveries: Vec<(u64, Vec<Copy>, u64)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // Once submitted, the writes land whether or not the client waits: the deliveries
        // are filed by a task of their own, so a sender that goes away (hyper then drops
        // this future) cannot leave stored messages no receiver will ever see.
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        let in_flight = runtime::SendInFlight::new(&runtime);
        let filed = tokio::spawn(async move {
            let _in_flight = in_flight;
            store.apply(writes).await?;
            for (seq, copies, size) in deliveries {
                entity.add_stored(size);
                if entity.kind == EntityKind::Topic {
                    runtime.add_refs(entity.id, seq, copies.len() as u32);
                }
                for copy in copies {
                    if let Some(queue) = &copy.to.queue {
                        queue.insert(
                            [Entry {
                                seq,
                                delivery: copy.delivery,
                            }],
                            now,
                        );
                    }
                }
            }
            Ok(())
        });
        match filed.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(Error::Store(crate::store::Error::ShutDown)),
        }
    }

    /// The copies of one message: the queue itself, or each matching subscription (one copy
    /// for all matching rules without action, one more for each matching rule with one).
    fn fan_out(
        &self,
        entity: &Arc<Entity>,
        description: &servicebus_wire::EntityDescription,
        candidate: &Candidate,
    ) -> Result<Vec<Copy>> {
        let size = candidate.size;
        let delivery = |expires_at, dead_letter: Option<DeadLetter>, overridden: bool| Delivery {
            // A topic's plain copies ride in the stored message (see `send`).
            listed: entity.kind == EntityKind::Topic && !overridden && dead_letter.is_none(),
            owner: entity.id,
            delivery_count: 0,
            expires_at: if dead_letter.is_some() {
                None
            } else {
                expires_at
            },
            dead_letter,
            scheduled_at: candidate.scheduled_at,
            overridden,
            size,
            settled: false,
        };
        let message_ttl = message_ttl(candidate.time_to_live);
        // A scheduled message is enqueued when it activates: its time to live starts then.
        let start = candidate
            .scheduled_at
            .filter(|at| *at > candidate.enqueued_at)
            .unwrap_or(candidate.enqueued_at);
        if entity.kind == EntityKind::Queue {
            let expires = expiry(
                start,
                &[message_ttl, description.default_message_time_to_live],
            );
            return Ok(vec![Copy {
                to: entity.clone(),
                delivery: delivery(expires, None, false),
                overrides: None,
            }]);
        }
        let mut copies = Vec::new();
        for (subscription, rules) in entity.subscriptions() {
            let sub = subscription.description();
            let expires = expiry(
                start,
                &[
                    message_ttl,
                    description.default_message_time_to_live,
                    sub.default_message_time_to_live,
                ],
            );
            let mut plain = false;
            let mut failure = None;
            for (name, rule) in rules.iter() {
                match rule.matches(candidate) {
                    Ok(false) => {}
                    Ok(true) if !rule.has_action() => plain = true,
                    Ok(true) => {
                        let mut changed = candidate.clone();
                        match rule.apply(&mut changed) {
                            Ok(()) => {
                                changed.set_user("RuleName", Value::String(name.clone()));
                                copies.push(Copy {
                                    to: subscription.clone(),
                                    delivery: delivery(expires, None, true),
                                    overrides: Some(changed.props),
                                });
                            }
                            Err(e) => failure = Some(format!("rule '{name}': {e}")),
                        }
                    }
                    Err(e) => failure = Some(format!("rule '{name}': {e}")),
                }
            }
            if plain {
                copies.push(Copy {
                    to: subscription.clone(),
                    delivery: delivery(expires, None, false),
                    overrides: None,
                });
            }
            if let Some(description) =
                failure.filter(|_| sub.dead_lettering_on_filter_evaluation_exceptions)
            {
                let reason = DeadLetter {
                    reason: "FilterEvaluationException".into(),
                    description,
                };
                copies.push(Copy {
                    to: subscription.clone(),
                    delivery: delivery(None, Some(reason), false),
                    overrides: None,
                });
            }
        }
        Ok(copies)
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
        let (entity, which) = self.receivable(target)?;
        let queue = queue_of(&entity)?;
        entity.touch(self.clock.now());
        let deadline = tokio::time::Instant::now() + timeout;
        // Who stores the messages: the queue itself, or the subscription's topic.
        let owner = match &target.key {
            EntityKey::Subscription(topic, _) => {
                self.entity(&EntityKey::Topic(topic.clone())).map(|t| t.id)
            }
            _ => Some(entity.id),
        };
        let mut render = Some(render);
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
            let load = |sub: Sub, lo: u64, hi: u64| self.load(&entity, owner, sub, lo, hi);
            let now = self.clock.now();
            let taken = queue.take(which, mode, &settings, now, &mut effects, &load)?;
            if let Some(taken) = taken {
                let Some(render) = render.take() else {
                    return Ok(None);
                };
                return self
                    .commit(&entity, queue, which, taken, effects, render, now)
                    .await
                    .map(Some);
            }
            self.persist(entity.id, effects).await?;
            if self.runtime.is_closing() {
                return Ok(None);
            }
            let _waiting = runtime::Waiting::new(queue);
            tokio::select! {
                () = &mut notified => {}
                () = &mut closed => return Ok(None),
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Reads cold deliveries `lo..=hi` of `entity`'s subqueue `sub` back from the store.
    fn load(
        &self,
        entity: &Entity,
        owner: Option<u64>,
        sub: Sub,
        lo: u64,
        hi: u64,
    ) -> crate::store::Result<Vec<(u64, Delivery)>> {
        let mut found = Vec::new();
        if let (Some(owner), Sub::Main) = (owner, sub) {
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

    /// Builds the answer for what a receive took, then makes the take durable. If the answer
    /// cannot be built, the take is undone (and what else the take applied, expiries say,
    /// is still written).
    #[allow(clippy::too_many_arguments)] // the pieces of one take, kept apart for the undo
    async fn commit<R>(
        &self,
        entity: &Entity,
        queue: &Queue,
        which: Sub,
        taken: Taken,
        mut effects: Vec<Effect>,
        render: impl FnOnce(Received) -> Result<R>,
        now: DateTime<Utc>,
    ) -> Result<R> {
        // Read before the writes: receive-and-delete may delete the stored message.
        let answer = self.read(entity, &taken).and_then(|received| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(received)))
                .unwrap_or_else(|panic| {
                    queue.untake(which, taken.clone(), now);
                    std::panic::resume_unwind(panic)
                })
        });
        match answer {
            Ok(answer) => match self.persist(entity.id, effects).await {
                Ok(()) => Ok(answer),
                Err(e) => {
                    queue.untake(which, taken, now);
                    Err(e)
                }
            },
            Err(e) => {
                // The take's own effect is the last one `take` added.
                effects.pop();
                queue.untake(which, taken, now);
                self.persist(entity.id, effects).await?;
                Err(e)
            }
        }
    }

    fn read(&self, entity: &Entity, taken: &Taken) -> Result<Received> {
        let Taken { entry, lock } = taken;
        let owner = entry.delivery.owner;
        let (stored, body) = self
            .store
            .get_with_body::<StoredMessage>(Key::Message(owner, entry.seq))?
            .ok_or_else(|| {
                Error::Invalid(format!("stored message {owner}/{} is missing", entry.seq))
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
            lock: *lock,
            props,
            body,
        })
    }

    /// The time to live a receiver sees: the service lowers a message's to its entity's
    /// `DefaultMessageTimeToLive` (and, through a subscription, to its topic's) silently.
    fn effective_ttl(&self, receivable: &Entity, owner: u64, sent: f64) -> f64 {
        let mut ttl = ttl_span(sent).min(receivable.description().default_message_time_to_live);
        if owner != receivable.id
            && let Some(topic) = self.runtime.by_id(owner)
        {
            ttl = ttl.min(topic.description().default_message_time_to_live);
        }
        span_seconds(ttl).min(sent)
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

    async fn persist(&self, receivable: u64, effects: Vec<Effect>) -> Result<()> {
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
        entity.touch(self.clock.now());
        let lost = || Error::LockLost {
            token: token.to_string(),
        };
        let token_id = Uuid::parse_str(token).map_err(|_| lost())?;
        let now = self.clock.now();
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
        let settings = QueueSettings::of(&entity.description());
        let mut effects = Vec::new();
        let settled = queue.settle(which, token_id, how, &settings, now, &mut effects);
        self.persist(entity.id, effects).await?;
        settled.map(|_| ()).ok_or_else(lost)
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

    /// Applies time to every queue and subscription: lock expiry, scheduled activation, TTL.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn sweep(&self) -> Result<()> {
        let now = self.clock.now();
        self.delete_idle(now).await?;
        for entity in self.runtime.all() {
            let description = entity.description();
            if description.requires_duplicate_detection {
                let mut writes = Vec::new();
                runtime::lock(&entity.seen).expire(
                    entity.id,
                    description.duplicate_detection_history_time_window,
                    now,
                    &mut writes,
                );
                if !writes.is_empty() {
                    self.store.apply(writes).await?;
                }
            }
            if let Some(queue) = &entity.queue {
                let mut effects = Vec::new();
                queue.sweep(&QueueSettings::of(&entity.description()), now, &mut effects);
                self.persist(entity.id, effects).await?;
            }
        }
        Ok(())
    }

    /// Deletes entities unused for their `AutoDeleteOnIdle` (a topic with its subscriptions).
    async fn delete_idle(&self, now: DateTime<Utc>) -> Result<()> {
        for entity in self.runtime.all().into_iter().filter(|e| e.is_idle(now)) {
            let outcome = match entity.path.split_once("/Subscriptions/") {
                Some((topic, sub)) if entity.kind == EntityKind::Subscription => {
                    self.delete_subscription(topic, sub).await
                }
                _ => self.delete_entity(&entity.path).await,
            };
            match outcome {
                Ok(()) => tracing::info!(entity = %entity.path, "deleted after AutoDeleteOnIdle"),
                // Deleted meanwhile (with its topic, or by a client): nothing to do.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves a manual clock forward and applies the new time at once.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] with the system clock, or for a move backwards or past
    /// [`crate::Clock::LATEST`] (the clock stays); [`Error::Store`].
    pub async fn advance_clock(&self, by: chrono::Duration) -> Result<DateTime<Utc>> {
        if !matches!(self.clock, crate::clock::Clock::Manual(_)) {
            return Err(Error::Invalid(
                "the clock is the system clock; start the emulator with --clock manual to move it"
                    .into(),
            ));
        }
        let now = self.clock.advance(by).ok_or_else(|| {
            Error::Invalid(format!(
                "the clock moves only forward and not past {}; it stays at {}",
                crate::Clock::LATEST.to_rfc3339(),
                self.clock.now().to_rfc3339()
            ))
        })?;
        self.sweep().await?;
        Ok(now)
    }

    /// A delivery found at start-up: it was locked at most (locks do not survive a
    /// restart), so it is released as an expired lock would be, and past the maximum
    /// delivery count it goes to the dead-letter subqueue (with the write that says so).
    fn restarted(
        max_delivery_count: u32,
        receivable: u64,
        seq: u64,
        mut delivery: Delivery,
        writes: &mut Vec<Write>,
    ) -> Delivery {
        if delivery.dead_letter.is_none() && delivery.delivery_count >= max_delivery_count {
            delivery.dead_letter = Some(DeadLetter {
                reason: runtime::REASON_MAX_DELIVERY.into(),
                description: format!(
                    "Message could not be consumed after {max_delivery_count} delivery attempts."
                ),
            });
            delivery.expires_at = None;
            writes.push(Write::put(Key::Delivery(receivable, seq), &delivery));
        }
        delivery
    }

    /// Restores the index a clean shutdown kept (see [`Broker::close`]); `false` when there
    /// is none or it does not fit, and the index is to be rebuilt from the records.
    pub(super) async fn restore(&self, by_id: &HashMap<u64, Arc<Entity>>) -> Result<bool> {
        let Some(bytes) = self.store.take_snapshot() else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let Ok(snapshot) = rmp_serde::from_slice::<runtime::IndexSnapshot>(&bytes) else {
            tracing::warn!("index snapshot unreadable; rebuilding the index from the records");
            return Ok(false);
        };
        let now = self.clock.now();
        let mut writes = Vec::new();
        let restored = self
            .runtime
            .restore(snapshot, by_id, |entity, seq, delivery| {
                let max = entity.description().max_delivery_count;
                let delivery = Self::restarted(max, entity.id, seq, delivery, &mut writes);
                if let Some(queue) = &entity.queue {
                    queue.insert([Entry { seq, delivery }], now);
                }
            });
        if !restored {
            tracing::warn!("index snapshot does not fit the entities; rebuilding the index");
            return Ok(false);
        }
        tracing::info!(elapsed = ?started.elapsed(), "runtime index restored from the snapshot");
        if !writes.is_empty() {
            self.store.apply(writes).await?;
        }
        Ok(true)
    }

    /// Where recovery splits `owner`'s stored sequence numbers (the lower half ends at the
    /// first number), and how many lie between its first and last message (two seeks);
    /// `None` when it holds fewer than two messages.
    fn split(&self, owner: u64) -> Result<Option<(u64, u64)>> {
        let seq = |key: Option<Vec<u8>>| {
            key.and_then(|k| Key::parse_numbers(&k))
                .map(|(_, _, seq)| seq)
        };
        let first = seq(self
            .store
            .next_key(Key::Message(owner, 0), Key::Messages(owner))?);
        let last = seq(self
            .store
            .last_key(Key::Message(owner, 0), Key::Message(owner, u64::MAX))?);
        Ok(match (first, last) {
            (Some(first), Some(last)) if last > first => {
                Some((first + (last - first) / 2, last - first))
            }
            _ => None,
        })
    }

    /// Rebuilds the runtime index from the store: deliveries back in their subqueues (locks
    /// released, delivery counts kept), sequence counters, and removal of records that no
    /// entity owns any more.
    pub(super) async fn recover(&self, by_id: &HashMap<u64, Arc<Entity>>) -> Result<()> {
        let now = self.clock.now();
        let started = std::time::Instant::now();
        let mut writes = Vec::new();
        let mut max_seq: HashMap<u64, u64> = HashMap::new();
        // Delivery records no live entity owns go; the others are read below, with their
        // stored messages.
        self.store
            .visit::<Delivery, Error>(Key::AllDeliveries, |key, delivery| {
                let Some((_, receivable, seq)) = Key::parse_numbers(key) else {
                    return Ok(());
                };
                self.runtime.ensure_ids_above(receivable);
                match by_id.get(&receivable) {
                    // Read with their stored messages, below.
                    Some(e) if e.queue.is_some() && by_id.contains_key(&delivery.owner) => {}
                    _ => {
                        writes.push(Write::delete(Key::Delivery(receivable, seq)));
                        writes.push(Write::delete(Key::Override(receivable, seq)));
                    }
                }
                Ok(())
            })?;
        // Each queue's and each topic's messages with the deliveries of its receivers, filed
        // in sequence order as they stream by; past each subqueue's window only their
        // sequence numbers stay in memory (as ranges), so a large backlog costs little.
        for owner in by_id
            .values()
            .filter(|e| matches!(e.kind, EntityKind::Queue | EntityKind::Topic))
        {
            let receivers: Vec<Arc<Entity>> = match owner.kind {
                EntityKind::Queue => vec![owner.clone()],
                _ => owner.subscriptions().into_iter().map(|(s, _)| s).collect(),
            };
            let ids: Vec<u64> = receivers.iter().map(|r| r.id).collect();
            let max: HashMap<u64, u32> = receivers
                .iter()
                .map(|r| (r.id, r.description().max_delivery_count))
                .collect();
            // Reading every message record is most of a start after a crash: the lower
            // and the upper half of the owner's sequence numbers are walked apart, on two
            // threads when there are many. The upper half is filed cold, so the window fills
            // from the smallest whichever half files first; small owners walk the upper
            // half first, the order that leaves the most to the cold path (and so the one
            // the tests exercise).

            let walk = |(lo, hi): (u64, u64), cold: bool| {
                let mut writes = Vec::new();
                let mut top = None;
                self.deliveries(owner.id, &ids, lo, hi, |receiver, seq, delivery| {
                    let Some(to) = by_id.get(&receiver) else {
                        return Ok(());
                    };
                    let max = max.get(&receiver).copied().unwrap_or(u32::MAX);
                    let delivery = Self::restarted(max, receiver, seq, delivery, &mut writes);
                    // A topic's message is stored once whatever its number of copies.
                    if owner.kind == EntityKind::Queue || self.runtime.add_refs(owner.id, seq, 1) {
                        owner.add_stored(delivery.size);
                    }
                    top = Some(seq);
                    if let Some(q) = &to.queue {
                        let entry = [Entry { seq, delivery }];
                        if cold {
                            q.insert_cold(entry, now);
                        } else {
                            q.insert(entry, now);
                        }
                    }
                    Ok(())
                })
                .map(|()| (writes, top))
            };
            let walked = match self.split(owner.id)? {
                Some((mid, span)) if span >= SPLIT_WALK_FROM => std::thread::scope(|scope| {
                    let upper = scope.spawn(|| walk((mid + 1, u64::MAX), true));
                    let lower = walk((0, mid), false);
                    let upper = upper
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    vec![lower, upper]
                }),
                Some((mid, _)) => {
                    let upper = walk((mid + 1, u64::MAX), true);
                    vec![walk((0, mid), false), upper]
                }
                None => vec![walk((0, u64::MAX), false)],
            };
            for half in walked {
                let (half_writes, top) = half?;
                writes.extend(half_writes);
                if let Some(top) = top {
                    let known = max_seq.entry(owner.id).or_default();
                    *known = (*known).max(top);
                }
            }
        }
        // Stored messages of entities deleted while their messages were being removed: a
        // seek per owner finds them without reading every message (a message of a live
        // owner is written and released in the same atomic write as its deliveries, so no
        // per-message pass is needed).
        let mut from = Key::Messages(0);
        while let Some(key) = self.store.next_key(from, Key::AllMessages)? {
            let Some((_, owner, _)) = Key::parse_numbers(&key) else {
                break;
            };
            self.runtime.ensure_ids_above(owner);
            if !by_id.contains_key(&owner) {
                writes.push(Write::delete_prefix(Key::Messages(owner)));
            }
            match owner.checked_add(1) {
                Some(next) => from = Key::Messages(next),
                None => break,
            }
        }
        for (key, next) in self.store.scan_with_keys::<u64>(Key::AllNextSequences)? {
            let Some((_, owner, _)) = Key::parse_numbers(&key) else {
                continue;
            };
            self.runtime.ensure_ids_above(owner);
            match by_id.get(&owner) {
                Some(e) => e.raise_next_seq(max_seq.get(&owner).map_or(next, |m| next.max(m + 1))),
                None => writes.push(Write::delete(Key::NextSequence(owner))),
            }
        }
        tracing::info!(elapsed = ?started.elapsed(), "runtime index rebuilt");
        if !writes.is_empty() {
            tracing::info!(
                records = writes.len(),
                "removing records of deleted entities"
            );
            self.store.apply(writes).await?;
        }
        Ok(())
    }
}

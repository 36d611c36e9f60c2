//! Send: validate, drop duplicates, route a topic's messages through its subscriptions'
//! rules, write every copy in one atomic write, then file the deliveries.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use servicebus_wire::message::{
    MAX_TIME_TO_LIVE_SECS, PropertyValue, format_http_date, format_property,
};
use servicebus_wire::{EntityKind, TimeSpan};

use super::handoff::{Sent, Source};
use super::runtime::{self, Entity};
use super::{Broker, Error, Result, allowed};
use crate::filter::value::{Properties, PropertiesMut, SystemProperty, Value};
use crate::model::Address;
use crate::model::limits::{MAX_PROPERTIES_BYTES, MAX_PROPERTY_BYTES, MESSAGE_OVERHEAD_BYTES};
use crate::model::message::{DeadLetter, Delivery, MessageProps, StoredMessage};
use crate::store::{Key, Write};

/// Rule evaluation work (SQL rules times property bytes) above which a send's routing runs
/// on a blocking thread rather than on the runtime thread serving it. A backplane send (a
/// rule or two over a few hundred bytes) stays far below it.
const INLINE_ROUTING_WORK: usize = 256 * 1024;

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
    /// What a REST client sent: its `BrokerProperties`, content type, custom properties and
    /// body. A message sent without a `MessageId` gets one, a new GUID in 32 hex digits, as
    /// the service gives it (clients such as the Rust SDK's REST crate require one back).
    pub fn from_client(
        broker: &servicebus_wire::message::BrokerProperties,
        content_type: Option<String>,
        user: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        let mut props = MessageProps::from_client(broker, content_type, user);
        if props.message_id.is_none() {
            props.message_id = Some(uuid::Uuid::new_v4().simple().to_string());
        }
        Outgoing {
            time_to_live: broker.time_to_live,
            scheduled_at: broker.scheduled_enqueue_time_utc,
            props,
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
    /// [`Error::PropertiesTooLarge`] naming the property or the total.
    pub fn check_properties(&self) -> Result<()> {
        if let Some((name, value)) = self
            .props
            .user
            .iter()
            .find(|(n, v)| n.len() + v.len() > MAX_PROPERTY_BYTES)
        {
            return Err(Error::PropertiesTooLarge {
                what: format!("property '{}'", name.chars().take(64).collect::<String>()),
                size: name.len() + value.len(),
                limit: MAX_PROPERTY_BYTES,
            });
        }
        let total = self.props.size();
        if total > MAX_PROPERTIES_BYTES {
            return Err(Error::PropertiesTooLarge {
                what: "properties (all together)".into(),
                size: total,
                limit: MAX_PROPERTIES_BYTES,
            });
        }
        Ok(())
    }
}

/// The outcome of a task: its panic goes on in the caller; a task cancelled because the
/// runtime is shutting down is [`crate::store::Error::ShutDown`].
async fn joined<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    match task.await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Store(crate::store::Error::ShutDown)),
    }
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
            Value::Duration(d) => d.as_secs_f64().to_string(),
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
pub(super) fn ttl_span(seconds: f64) -> TimeSpan {
    if seconds >= MAX_TIME_TO_LIVE_SECS {
        return TimeSpan::MAX;
    }
    std::time::Duration::try_from_secs_f64(seconds).map_or(TimeSpan::ZERO, TimeSpan::from_std)
}

fn message_ttl(seconds: Option<f64>) -> TimeSpan {
    seconds.map_or(TimeSpan::MAX, ttl_span)
}

/// What one subscription's rules make of a message.
#[derive(Debug, Default)]
struct Verdict {
    /// A rule without action matched: one plain copy (however many such rules matched).
    plain: bool,
    /// The properties of each copy a matching rule with an action made (`RuleName` set).
    changed: Vec<MessageProps>,
    /// The last rule that could not be evaluated, and why.
    failure: Option<String>,
}

impl Verdict {
    fn of(rules: &[(String, crate::filter::CompiledRule)], candidate: &Candidate) -> Self {
        let mut verdict = Verdict::default();
        for (name, rule) in rules {
            match rule.matches(candidate) {
                Ok(false) => {}
                Ok(true) if !rule.has_action() => verdict.plain = true,
                Ok(true) => {
                    let mut changed = candidate.clone();
                    match rule.apply(&mut changed) {
                        Ok(()) => {
                            changed.set_user("RuleName", Value::String(name.clone()));
                            verdict.changed.push(changed.props);
                        }
                        Err(e) => verdict.failure = Some(format!("rule '{name}': {e}")),
                    }
                }
                Err(e) => verdict.failure = Some(format!("rule '{name}': {e}")),
            }
        }
        verdict
    }
}

/// Where one copy of a message goes: to whom, its delivery record and its changed
/// properties (named so as not to shadow the prelude's `Copy`).
#[derive(Debug)]
pub(super) struct Placement {
    pub(super) to: Arc<Entity>,
    pub(super) delivery: Delivery,
    overrides: Option<MessageProps>,
}

impl Broker {
    /// The largest message the queue or topic at `path` takes, in bytes (body, properties
    /// and overhead); `None` when there is none.
    pub fn message_size_limit(&self, path: &str) -> Option<u64> {
        let entity = self.sendable(path)?;
        Some(u64::from(entity.description().max_message_size_in_kilobytes) * 1024)
    }

    /// The live queue or topic at `path`.
    fn sendable(&self, path: &str) -> Option<Arc<Entity>> {
        self.entity(&Address::Queue(path.to_string()))
            .or_else(|| self.entity(&Address::Topic(path.to_string())))
    }

    /// Sends messages to a queue or topic; a topic copies each to every subscription whose
    /// rules match (evaluated now). Answers once every copy is durable.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Disabled`], [`Error::TooLarge`] and
    /// [`Error::PropertiesTooLarge`]
    /// (nothing is enqueued), [`Error::Store`].
    pub async fn send(&self, path: &str, messages: Vec<Outgoing>) -> Result<()> {
        self.send_numbered(path, messages).await.map(|_| ())
    }

    /// As [`Broker::send`], returning the sequence numbers the messages were given, in
    /// order (none for a duplicate that was dropped): what scheduling answers with.
    ///
    /// # Errors
    ///
    /// As [`Broker::send`].
    pub async fn send_numbered(&self, path: &str, messages: Vec<Outgoing>) -> Result<Vec<u64>> {
        let entity = self.sendable(path).ok_or_else(|| Error::NotFound {
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
            return Ok(Vec::new());
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
            let source = copies
                .iter()
                .any(|c| c.to.queue.as_ref().is_some_and(|q| q.has_parked()))
                .then(|| Source {
                    props: message.props.clone(),
                    body: message.body.clone(),
                    time_to_live: message.time_to_live,
                });
            Self::message_writes(&entity, &candidate, message, &copies, &mut writes);
            deliveries.push(Sent {
                seq: candidate.seq,
                copies,
                size: candidate.size,
                source,
            });
        }
        let sent = next - first;
        self.file(entity.clone(), writes, deliveries, now).await?;
        entity
            .sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        Ok((first..next).collect())
    }

    /// Cancels scheduled messages of the queue or topic at `path` by sequence number (every
    /// subscription's copy, for a topic). Numbers that name no scheduled message are
    /// ignored, as the service does.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity, [`Error::Store`].
    pub async fn cancel_scheduled(&self, path: &str, sequence_numbers: &[u64]) -> Result<()> {
        let entity = self.sendable(path).ok_or_else(|| Error::NotFound {
            kind: "queue or topic",
            path: path.to_string(),
        })?;
        for receiver in entity.receivers() {
            if let Some(queue) = &receiver.queue {
                let effects = queue.cancel_scheduled(sequence_numbers);
                self.persist(receiver.id, effects).await?;
            }
        }
        Ok(())
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
    ) -> Result<Vec<(Candidate, Outgoing, Vec<Placement>)>> {
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
        joined(tokio::task::spawn_blocking(route)).await
    }

    /// The writes of one sent message: its record (carrying a queue's delivery and a topic's
    /// plain copies: one record for the send, not one per copy), plus a record for each copy
    /// that differs (rule actions, dead-lettered by a filter error).
    fn message_writes(
        entity: &Entity,
        candidate: &Candidate,
        message: Outgoing,
        copies: &[Placement],
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

    /// Hands what it can to parked receivers, makes the writes (and the removals or locks of
    /// what was handed off) durable, then files the other deliveries where receivers find
    /// them. Receive-and-delete receivers answer once the write is queued, peek-lock ones
    /// once it is durable (see `runtime::handoff`); the sender, once it is durable.
    async fn file(
        &self,
        entity: Arc<Entity>,
        mut writes: Vec<Write>,
        deliveries: Vec<Sent>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // Once submitted, the writes land whether or not the client waits: the deliveries
        // are filed by a task of their own, so a sender that goes away (hyper then drops
        // this future) cannot leave stored messages no receiver will ever see.
        let broker = self.clone();
        let in_flight = runtime::SendInFlight::new(&self.runtime);
        let filed = tokio::spawn(async move {
            let _in_flight = in_flight;
            // Counted before any hand-off: a removal releases what the copies hold.
            for sent in &deliveries {
                entity.add_stored(sent.size);
                if entity.kind == EntityKind::Topic {
                    let copies = sent.copies.len() as u32;
                    broker.runtime.add_refs(entity.id, sent.seq, copies);
                }
            }
            let mut handed = broker.hand_off(&entity, deliveries, now).await;
            writes.append(&mut handed.writes);
            let durable = broker.store.submit(writes)?;
            handed.queued();
            // A failed write drops the rest: the peek-lock receivers answer nothing, and
            // nothing is filed.
            durable.wait().await?;
            handed.durable(now);
            Ok(())
        });
        joined(filed).await
    }

    /// The copies of one message: the queue itself, or each matching subscription (one copy
    /// for all matching rules without action, one more for each matching rule with one).
    fn fan_out(
        &self,
        entity: &Arc<Entity>,
        description: &servicebus_wire::EntityDescription,
        candidate: &Candidate,
    ) -> Result<Vec<Placement>> {
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
            deferred: false,
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
            return Ok(vec![Placement {
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
            let verdict = Verdict::of(&rules, candidate);
            for changed in verdict.changed {
                copies.push(Placement {
                    to: subscription.clone(),
                    delivery: delivery(expires, None, true),
                    overrides: Some(changed),
                });
            }
            if verdict.plain {
                copies.push(Placement {
                    to: subscription.clone(),
                    delivery: delivery(expires, None, false),
                    overrides: None,
                });
            }
            if let Some(description) = verdict
                .failure
                .filter(|_| sub.dead_lettering_on_filter_evaluation_exceptions)
            {
                let reason = DeadLetter {
                    reason: "FilterEvaluationException".into(),
                    description,
                };
                copies.push(Placement {
                    to: subscription.clone(),
                    delivery: delivery(None, Some(reason), false),
                    overrides: None,
                });
            }
        }
        Ok(copies)
    }
}

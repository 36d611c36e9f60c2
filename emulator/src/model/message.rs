//! Messages as the broker keeps them.

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use servicebus_wire::message::{BrokerProperties, PropertyValue, parse_property};

/// What a sender set: the client-settable broker properties and the custom properties as
/// their header text (kept verbatim so receivers get back exactly what was sent).
///
/// Message records store fields by position: add fields only at the end, with
/// `#[serde(default)]` (see `store/codec.rs`); the same holds for every struct below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field is the broker property of the same name
pub struct MessageProps {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub session_id: Option<String>,
    pub label: Option<String>,
    pub reply_to: Option<String>,
    pub to: Option<String>,
    pub reply_to_session_id: Option<String>,
    pub partition_key: Option<String>,
    pub content_type: Option<String>,
    /// Custom properties: (name as sent, header text).
    pub user: Vec<(String, String)>,
    /// How an AMQP sender framed the body when not as `data` sections: the body then holds
    /// the encoded `amqp-value` or `amqp-sequence` sections, returned to AMQP receivers as
    /// they came. `None` for a plain body (REST, or AMQP `data`).
    #[serde(default)]
    pub body_section: Option<BodySection>,
    /// What an AMQP sender set that the texts above cannot carry exactly. `None` from REST,
    /// and when the texts carry everything.
    #[serde(default)]
    pub amqp: Option<AmqpExtras>,
}

/// The parts of an AMQP message kept in their AMQP encoding, so that AMQP receivers get back
/// the types that were sent while REST receivers read the texts. The front-end that wrote
/// them uses each one only while the text it stands beside is unchanged (a rule action or a
/// settlement may have changed a property since).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpExtras {
    /// The application properties whose text would not give back their value exactly (a
    /// `uint`, a `uuid`, `binary`, a `null`...), as one encoded `application-properties`
    /// section.
    #[serde(default, with = "serde_bytes")]
    pub properties: Option<Vec<u8>>,
    /// The message annotations the sender set besides those the broker reads, as one encoded
    /// `message-annotations` section.
    #[serde(default, with = "serde_bytes")]
    pub annotations: Option<Vec<u8>>,
    /// `message-id` when it is not a string, encoded.
    #[serde(default, with = "serde_bytes")]
    pub message_id: Option<Vec<u8>>,
    /// `correlation-id` when it is not a string, encoded.
    #[serde(default, with = "serde_bytes")]
    pub correlation_id: Option<Vec<u8>>,
}

/// An AMQP body that is not made of `data` sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodySection {
    /// One `amqp-value` section.
    Value,
    /// One or more `amqp-sequence` sections.
    Sequence,
}

impl MessageProps {
    /// From what a client sent.
    pub fn from_client(
        b: &BrokerProperties,
        content_type: Option<String>,
        user: Vec<(String, String)>,
    ) -> Self {
        MessageProps {
            message_id: b.message_id.clone(),
            correlation_id: b.correlation_id.clone(),
            session_id: b.session_id.clone(),
            label: b.label.clone(),
            reply_to: b.reply_to.clone(),
            to: b.to.clone(),
            reply_to_session_id: b.reply_to_session_id.clone(),
            partition_key: b.partition_key.clone(),
            content_type,
            user,
            body_section: None,
            amqp: None,
        }
    }

    /// The client-settable `BrokerProperties` fields these came from (the inverse of
    /// [`MessageProps::from_client`]); the rest are left unset.
    pub fn to_broker(&self) -> BrokerProperties {
        BrokerProperties {
            message_id: self.message_id.clone(),
            correlation_id: self.correlation_id.clone(),
            session_id: self.session_id.clone(),
            label: self.label.clone(),
            reply_to: self.reply_to.clone(),
            to: self.to.clone(),
            reply_to_session_id: self.reply_to_session_id.clone(),
            partition_key: self.partition_key.clone(),
            ..BrokerProperties::default()
        }
    }

    /// A custom property's typed value, by name (case-insensitive).
    pub fn user_value(&self, name: &str) -> Option<PropertyValue> {
        self.user
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, raw)| parse_property(raw))
    }

    /// Bytes counted against the size limit: properties' names and values.
    pub fn size(&self) -> usize {
        let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        opt(&self.message_id)
            + opt(&self.correlation_id)
            + opt(&self.session_id)
            + opt(&self.label)
            + opt(&self.reply_to)
            + opt(&self.to)
            + opt(&self.reply_to_session_id)
            + opt(&self.partition_key)
            + opt(&self.content_type)
            + self
                .user
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }
}

/// A message stored once for its queue or topic (`M` record header; the body follows raw).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Sequence number in its queue or topic.
    pub sequence_number: u64,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// `TimeToLive` as sent, in seconds.
    pub time_to_live: Option<f64>,
    /// `ScheduledEnqueueTimeUtc` as sent.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Properties as sent.
    pub props: MessageProps,
    /// Body length in bytes.
    pub body_len: u64,
    /// A queue's message: the delivery it was sent with. It is the delivery's state until a
    /// change writes a `D` record, so a queue's send writes one record, not two. `None` for
    /// a topic's message (see `copies`) and in records written before this field (their
    /// deliveries all have `D` records).
    #[serde(default)]
    pub queue_delivery: Option<Delivery>,
    /// A topic's message: the copies it was sent with that have no `D` record of their own
    /// (by subscription id), each the copy's state until a change writes its `D` record. A
    /// copy settled while others still hold the message leaves a settled `D` record (a
    /// tombstone). Copies with rule-action overrides, or dead-lettered at send, always have
    /// a `D` record and are not listed.
    #[serde(default)]
    pub copies: Vec<(u64, Delivery)>,
}

/// Of a [`StoredMessage`] record, only the deliveries that ride in it: what a walk over a
/// queue's or subscription's deliveries needs (recovery, the cold path). The other fields
/// are skipped without being parsed (no dates, no properties); they keep their names and
/// order, so every record version reads as this too.
#[derive(Debug, Deserialize)]
pub struct StoredDeliveries {
    #[serde(rename = "sequence_number")]
    _sequence_number: IgnoredAny,
    #[serde(rename = "enqueued_at")]
    _enqueued_at: IgnoredAny,
    #[serde(rename = "time_to_live")]
    _time_to_live: IgnoredAny,
    #[serde(rename = "scheduled_at")]
    _scheduled_at: IgnoredAny,
    #[serde(rename = "props")]
    _props: IgnoredAny,
    #[serde(rename = "body_len")]
    _body_len: IgnoredAny,
    /// See [`StoredMessage::queue_delivery`].
    #[serde(default)]
    queue_delivery: Option<Delivery>,
    /// See [`StoredMessage::copies`].
    #[serde(default)]
    copies: Vec<(u64, Delivery)>,
}

impl StoredDeliveries {
    /// The delivery `receiver` got at send, when it rides in this record (no `D` record
    /// was written for it then).
    pub fn initial_delivery(&self, owner: u64, receiver: u64) -> Option<&Delivery> {
        if receiver == owner {
            return self.queue_delivery.as_ref();
        }
        self.copies
            .iter()
            .find(|(to, _)| *to == receiver)
            .map(|(_, d)| d)
    }
}

/// Why a message is in the dead-letter subqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `DeadLetterReason`.
    pub reason: String,
    /// `DeadLetterErrorDescription`.
    pub description: String,
}

/// One queue's or subscription's delivery state of a message (`D` record): small, rewritten
/// on every delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The queue or topic whose `M` record holds the message.
    pub owner: u64,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// Set when the message is in the dead-letter subqueue.
    pub dead_letter: Option<DeadLetter>,
    /// When it expires (none for dead-lettered messages).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it becomes visible, if scheduled in the future.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Whether a rule action changed this copy's properties (`O` record).
    pub overridden: bool,
    /// Bytes of body and properties, for counts.
    pub size: u64,
    /// This topic copy is listed in its stored message's `copies`: settled while other
    /// copies remain, it leaves a tombstone (`settled`) so that a restart does not bring
    /// it back from the list.
    #[serde(default)]
    pub listed: bool,
    /// A tombstone: the copy was settled (see `listed`).
    #[serde(default)]
    pub settled: bool,
    /// Deferred by a receiver (AMQP): out of normal delivery, received only by sequence
    /// number. Its `scheduled_at` is [`DEFERRED_UNTIL`], so it waits with the scheduled
    /// messages and never comes due.
    #[serde(default)]
    pub deferred: bool,
}

/// When a deferred message would become visible: after any time the clock can show.
pub const DEFERRED_UNTIL: DateTime<Utc> = match DateTime::from_timestamp(253_402_214_400, 0) {
    Some(t) => t,
    None => DateTime::<Utc>::MAX_UTC,
};

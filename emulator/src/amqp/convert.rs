//! Messages between AMQP and the broker (contract section 5): a transfer's payload becomes
//! [`Outgoing`] messages, and a [`Received`] becomes a transfer's payload. The codec is
//! `serde_amqp`'s; this file only maps fields.

use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    AmqpSequence, AmqpValue, Batch, Body, Data, DeliveryAnnotations, Message, MessageId,
    Properties, annotations::OwnedKey,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use servicebus_wire::message::{PropertyValue, format_property, parse_property};

use crate::broker::{Outgoing, Received};
use crate::model::message::{BodySection, MessageProps};

/// The message format of a batch envelope (contract 4.2): its body is one `data` section per
/// message, each a complete encoded message.
pub(crate) const BATCH_FORMAT: u32 = 0x8001_3700;

/// Message annotations the broker reads into a message's fields (contract 5.2).
const PARTITION_KEY: &str = "x-opt-partition-key";
const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
/// Message annotations the broker sets on every delivery (contract 5.3).
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const MESSAGE_STATE: &str = "x-opt-message-state";
const LOCKED_UNTIL: &str = "x-opt-locked-until";

/// The annotations above: a sender's own copy of these is not kept (`extras.rs`).
pub(super) const BROKER_ANNOTATIONS: [&str; 6] = [
    PARTITION_KEY,
    SCHEDULED_ENQUEUE_TIME,
    ENQUEUED_TIME,
    SEQUENCE_NUMBER,
    MESSAGE_STATE,
    LOCKED_UNTIL,
];

/// Why a transfer's payload is not a message the broker can take (`amqp:decode-error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not an AMQP message.
    #[error("the transfer is not a valid AMQP message: {0}")]
    Message(#[from] serde_amqp::Error),
    /// A batch envelope without messages.
    #[error("received a batch message with no data in it")]
    EmptyBatch,
    /// A message format this broker does not know.
    #[error("message format {0} is not supported")]
    Format(u32),
    /// A broker annotation of the wrong type.
    #[error("the message annotation '{0}' has the wrong type")]
    Annotation(&'static str),
}

/// Decodes a complete transfer payload: one message, or every message of a batch envelope.
pub(crate) fn decode(format: u32, payload: &[u8]) -> Result<Vec<Outgoing>, DecodeError> {
    match format {
        0 => Ok(vec![outgoing(read(payload)?)?]),
        BATCH_FORMAT => {
            let envelope = read(payload)?;
            let Body::Data(sections) = envelope.body else {
                return Err(DecodeError::EmptyBatch);
            };
            if sections.is_empty() {
                return Err(DecodeError::EmptyBatch);
            }
            sections
                .into_iter()
                .map(|Data(inner)| outgoing(read(&inner)?))
                .collect()
        }
        other => Err(DecodeError::Format(other)),
    }
}

/// One encoded message.
pub(crate) fn read(bytes: &[u8]) -> Result<Message<Body<Value>>, serde_amqp::Error> {
    if !super::depth::within(bytes, super::depth::MAX_DEPTH) {
        return Err(serde_amqp::Error::Message("values nest too deeply".into()));
    }
    super::io::guarded(|| {
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes).map(|d| d.0)
    })
    .unwrap_or_else(|| Err(serde_amqp::Error::Message("malformed encoding".into())))
}

/// One message, encoded.
pub(crate) fn write(message: &Message<Body<Value>>) -> Result<Vec<u8>, serde_amqp::Error> {
    serde_amqp::to_vec(&Serializable(message))
}

/// The text form of a message or correlation id (the broker keeps ids as strings).
pub(crate) fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(u.clone().into_inner()).to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn timestamp_to_date(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.milliseconds())
}

fn date_to_timestamp(d: DateTime<Utc>) -> Timestamp {
    Timestamp::from_milliseconds(d.timestamp_millis())
}

fn annotation<'a>(m: &'a Message<Body<Value>>, key: &str) -> Option<&'a Value> {
    m.message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::Symbol(Symbol::from(key)))
}

/// A custom property's header text for an AMQP application property value.
pub(super) fn property_text(value: &SimpleValue) -> Option<String> {
    let typed = match value {
        SimpleValue::Null => return None,
        SimpleValue::Bool(b) => PropertyValue::Bool(*b),
        SimpleValue::Ubyte(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Ushort(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Uint(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Ulong(n) => match i64::try_from(*n) {
            Ok(n) => PropertyValue::Int(n),
            Err(_) => PropertyValue::String(n.to_string()),
        },
        SimpleValue::Byte(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Short(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Int(n) => PropertyValue::Int(i64::from(*n)),
        SimpleValue::Long(n) => PropertyValue::Int(*n),
        SimpleValue::Float(f) => PropertyValue::Double(f64::from(f.into_inner())),
        SimpleValue::Double(f) => PropertyValue::Double(f.into_inner()),
        SimpleValue::Timestamp(t) => match timestamp_to_date(t) {
            Some(d) => PropertyValue::DateTime(d),
            None => PropertyValue::Int(t.milliseconds()),
        },
        SimpleValue::Uuid(u) => {
            PropertyValue::String(uuid::Uuid::from_bytes(u.clone().into_inner()).to_string())
        }
        SimpleValue::String(s) => PropertyValue::String(s.clone()),
        SimpleValue::Symbol(s) => PropertyValue::String(s.0.clone()),
        SimpleValue::Char(c) => PropertyValue::String(c.to_string()),
        SimpleValue::Binary(b) => PropertyValue::String(String::from_utf8_lossy(b).into_owned()),
        SimpleValue::Decimal32(_)
        | SimpleValue::Decimal64(_)
        | SimpleValue::Decimal128(_)
        | SimpleValue::Described(_) => PropertyValue::String(format!("{value:?}")),
    };
    Some(format_property(&typed))
}

/// An AMQP application property value for a custom property's header text.
pub(super) fn property_value(raw: &str) -> SimpleValue {
    match parse_property(raw) {
        PropertyValue::String(s) => SimpleValue::String(s),
        PropertyValue::Int(n) => match i32::try_from(n) {
            Ok(n) => SimpleValue::Int(n),
            Err(_) => SimpleValue::Long(n),
        },
        PropertyValue::Double(f) => SimpleValue::Double(f.into()),
        PropertyValue::Bool(b) => SimpleValue::Bool(b),
        PropertyValue::DateTime(d) => SimpleValue::Timestamp(date_to_timestamp(d)),
    }
}

/// The broker's message for one AMQP message (contract 5.1-5.6).
fn outgoing(m: Message<Body<Value>>) -> Result<Outgoing, DecodeError> {
    let amqp = super::extras::keep(&m);
    let p = m.properties.clone().unwrap_or_default();
    let partition_key = match annotation(&m, PARTITION_KEY) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(DecodeError::Annotation(PARTITION_KEY)),
    };
    let scheduled_at = match annotation(&m, SCHEDULED_ENQUEUE_TIME) {
        None | Some(Value::Null) => None,
        Some(Value::Timestamp(t)) => timestamp_to_date(t),
        Some(_) => return Err(DecodeError::Annotation(SCHEDULED_ENQUEUE_TIME)),
    };
    let user = m
        .application_properties
        .as_ref()
        .map(|a| {
            a.0.iter()
                .filter_map(|(k, v)| property_text(v).map(|t| (k.clone(), t)))
                .collect()
        })
        .unwrap_or_default();
    let (body, body_section) = match m.body {
        // The first section's bytes are kept as they are (the usual single section costs
        // no copy); any others are appended.
        Body::Data(sections) => {
            let mut sections = sections.into_iter().map(|Data(b)| b.into_vec());
            let first = sections.next().unwrap_or_default();
            let body = sections.fold(first, |mut body, more| {
                body.extend_from_slice(&more);
                body
            });
            (body, None)
        }
        Body::Value(AmqpValue(v)) => (serde_amqp::to_vec(&v)?, Some(BodySection::Value)),
        Body::Sequence(sections) => {
            let lists = sections
                .into_iter()
                .map(|AmqpSequence(items)| Value::List(items))
                .collect();
            (
                serde_amqp::to_vec(&Value::List(lists))?,
                Some(BodySection::Sequence),
            )
        }
        Body::Empty => (Vec::new(), None),
    };
    Ok(Outgoing {
        props: MessageProps {
            // The service gives a message sent without an id one of its own (REST contract
            // 3.2's sample shows it); JS cannot settle a message without one.
            message_id: Some(
                p.message_id
                    .as_ref()
                    .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), id_text),
            ),
            correlation_id: p.correlation_id.as_ref().map(id_text),
            session_id: p.group_id.clone(),
            label: p.subject.clone(),
            reply_to: p.reply_to.clone(),
            to: p.to.clone(),
            reply_to_session_id: p.reply_to_group_id.clone(),
            partition_key,
            content_type: p.content_type.map(|s| s.0),
            user,
            body_section,
            amqp,
        },
        body,
        time_to_live: m
            .header
            .and_then(|h| h.ttl)
            .map(|ms| f64::from(ms) / 1000.0),
        scheduled_at,
    })
}

fn body_of(received: &Received) -> Result<Body<Value>, serde_amqp::Error> {
    Ok(match received.props.body_section {
        None if received.body.is_empty() => Body::Empty,
        None => Body::Data(Batch::from(vec![Data(Binary::from(received.body.clone()))])),
        Some(BodySection::Value) => Body::Value(AmqpValue(serde_amqp::from_slice(&received.body)?)),
        Some(BodySection::Sequence) => {
            let Value::List(lists) = serde_amqp::from_slice(&received.body)? else {
                return Ok(Body::Empty);
            };
            Body::Sequence(
                lists
                    .into_iter()
                    .map(|l| match l {
                        Value::List(items) => AmqpSequence(items),
                        other => AmqpSequence(vec![other]),
                    })
                    .collect(),
            )
        }
    })
}

/// The transfer payload for a received message: its properties, the broker's annotations
/// (contract 5.3) and, when locked, the lock token as a delivery annotation (5.4).
pub(crate) fn encode(received: &Received) -> Result<Vec<u8>, serde_amqp::Error> {
    encode_in_state(received, 0)
}

/// As [`encode`], with `x-opt-message-state` (0 active, 1 deferred, 2 scheduled): what a
/// peek shows.
pub(crate) fn encode_in_state(
    received: &Received,
    state: i32,
) -> Result<Vec<u8>, serde_amqp::Error> {
    let props = &received.props;
    let ttl_ms = received
        .time_to_live
        .map(|s| s * 1000.0)
        .filter(|ms| *ms >= 0.0 && *ms <= f64::from(u32::MAX));
    // The header is written with every field, delivery-count included even when 0: rhea
    // (JS) leaves an omitted field undefined instead of applying its default.
    let header = Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(0x70),
        value: Value::List(vec![
            Value::Bool(false),
            Value::Ubyte(4),
            ttl_ms.map_or(Value::Null, |ms| Value::Uint(ms as u32)),
            Value::Bool(false),
            // The number of earlier attempts (contract 5.1); the broker counts this one too.
            Value::Uint(received.delivery_count.saturating_sub(1)),
        ]),
    }));
    let expires = received
        .time_to_live
        .and_then(|s| chrono::Duration::try_milliseconds((s * 1000.0) as i64))
        .and_then(|d| received.enqueued_at.checked_add_signed(d));
    let properties = Properties {
        message_id: super::extras::message_id(props),
        correlation_id: super::extras::correlation_id(props),
        to: props.to.clone(),
        subject: props.label.clone(),
        reply_to: props.reply_to.clone(),
        content_type: props.content_type.clone().map(Symbol::from),
        absolute_expiry_time: ttl_ms.and(expires).map(date_to_timestamp),
        group_id: props.session_id.clone(),
        reply_to_group_id: props.reply_to_session_id.clone(),
        ..Properties::default()
    };
    let mut annotations = super::extras::annotations(props);
    let mut put = |k: &str, v: Value| annotations.0.insert(OwnedKey::Symbol(Symbol::from(k)), v);
    put(
        ENQUEUED_TIME,
        Value::Timestamp(date_to_timestamp(received.enqueued_at)),
    );
    put(
        SEQUENCE_NUMBER,
        Value::Long(i64::try_from(received.sequence_number).unwrap_or(i64::MAX)),
    );
    put(MESSAGE_STATE, Value::Int(state));
    if let Some(key) = &props.partition_key {
        put(PARTITION_KEY, Value::String(key.clone()));
    }
    let mut delivery_annotations = None;
    if let Some((token, until)) = received.lock {
        put(LOCKED_UNTIL, Value::Timestamp(date_to_timestamp(until)));
        let mut d = DeliveryAnnotations::default();
        d.0.insert(
            OwnedKey::Symbol(Symbol::from("x-opt-lock-token")),
            Value::Uuid(token.into_bytes().into()),
        );
        delivery_annotations = Some(d);
    }
    let application_properties = super::extras::properties(props);
    let mut payload = serde_amqp::to_vec(&header)?;
    payload.extend(write(&Message {
        header: None,
        delivery_annotations,
        message_annotations: Some(annotations),
        properties: Some(properties),
        application_properties,
        body: body_of(received)?,
        footer: None,
    })?);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::messaging::{Body, Data, Message};
    use fe2o3_amqp_types::primitives::{Binary, Value};
    use serde_amqp::extensions::TransparentVec;

    /// The bytes of a message whose body is `sections` data sections.
    fn encoded(sections: &[&[u8]]) -> Vec<u8> {
        let body = sections
            .iter()
            .map(|s| Data(Binary::from(s.to_vec())))
            .collect::<Vec<_>>();
        let message: Message<Body<Value>> = Message::builder()
            .body(Body::Data(TransparentVec::new(body)))
            .build();
        serde_amqp::to_vec(&fe2o3_amqp_types::messaging::message::__private::Serializable(message))
            .unwrap()
    }

    #[test]
    fn data_sections_make_one_body_in_order() {
        for (sections, body) in [
            (vec![&b"one"[..]], &b"one"[..]),
            (vec![&b"ab"[..], &b""[..], &b"cd"[..]], &b"abcd"[..]),
        ] {
            let got = super::decode(0, &encoded(&sections)).unwrap();
            assert_eq!(got[0].body, body);
        }
    }
}

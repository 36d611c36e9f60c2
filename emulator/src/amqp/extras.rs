//! What an AMQP message carries that the broker's texts cannot carry exactly, kept in its
//! AMQP encoding ([`AmqpExtras`]) and given back to AMQP receivers: application properties
//! of types the text form flattens (`uint`, `ubyte`, `uuid`, `binary`, `char`, `symbol`,
//! `null`...), the sender's own message annotations, and ids that are not strings. Each
//! typed value is used only while the text beside it is unchanged, so a rule action or a
//! settlement that changed a property wins.

use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Message, MessageAnnotations, MessageId, annotations::OwnedKey,
};
use fe2o3_amqp_types::primitives::SimpleValue;

use super::convert::{BROKER_ANNOTATIONS, id_text, property_text, property_value};
use crate::model::message::{AmqpExtras, MessageProps};

fn encoded<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    serde_amqp::to_vec(value).ok()
}

fn decoded<T: serde::de::DeserializeOwned>(bytes: Option<&[u8]>) -> Option<T> {
    serde_amqp::from_slice(bytes?).ok()
}

/// True when a value comes back unchanged from its text.
fn exact_as_text(value: &SimpleValue) -> bool {
    property_text(value).is_some_and(|text| property_value(&text) == *value)
}

fn typed_id(id: Option<&MessageId>) -> Option<Vec<u8>> {
    match id? {
        MessageId::String(_) => None,
        typed => encoded(typed),
    }
}

/// What of `m` its texts would lose; `None` when nothing.
pub(super) fn keep<B>(m: &Message<B>) -> Option<AmqpExtras> {
    let properties = m.application_properties.as_ref().and_then(|a| {
        let mut inexact = ApplicationProperties::default();
        for (name, value) in a.0.iter().filter(|(_, v)| !exact_as_text(v)) {
            inexact.0.insert(name.clone(), value.clone());
        }
        (!inexact.0.is_empty()).then(|| encoded(&inexact)).flatten()
    });
    let annotations = m.message_annotations.as_ref().and_then(|a| {
        let mut own = MessageAnnotations::default();
        for (key, value) in a.0.iter() {
            let broker =
                matches!(key, OwnedKey::Symbol(s) if BROKER_ANNOTATIONS.contains(&s.0.as_str()));
            if !broker {
                own.0.insert(key.clone(), value.clone());
            }
        }
        (!own.0.is_empty()).then(|| encoded(&own)).flatten()
    });
    let p = m.properties.as_ref();
    let extras = AmqpExtras {
        properties,
        annotations,
        message_id: typed_id(p.and_then(|p| p.message_id.as_ref())),
        correlation_id: typed_id(p.and_then(|p| p.correlation_id.as_ref())),
    };
    (extras != AmqpExtras::default()).then_some(extras)
}

/// The application properties for `props`: each text's typed value where one was kept and
/// the text is unchanged, else the value the text reads as; kept `null`s the texts lack.
pub(super) fn properties(props: &MessageProps) -> Option<ApplicationProperties> {
    let typed: Option<ApplicationProperties> = props
        .amqp
        .as_ref()
        .and_then(|x| decoded(x.properties.as_deref()));
    let mut out = ApplicationProperties::default();
    for (name, raw) in &props.user {
        let kept = typed
            .as_ref()
            .and_then(|t| t.0.get(name))
            .filter(|v| property_text(v).as_deref() == Some(raw.as_str()));
        out.0.insert(
            name.clone(),
            kept.cloned().unwrap_or_else(|| property_value(raw)),
        );
    }
    for (name, value) in typed.iter().flat_map(|t| t.0.iter()) {
        if *value == SimpleValue::Null && !props.user.iter().any(|(n, _)| n == name) {
            out.0.insert(name.clone(), SimpleValue::Null);
        }
    }
    (!out.0.is_empty()).then_some(out)
}

/// The sender's own message annotations (the broker adds its own over them).
pub(super) fn annotations(props: &MessageProps) -> MessageAnnotations {
    props
        .amqp
        .as_ref()
        .and_then(|x| decoded(x.annotations.as_deref()))
        .unwrap_or_default()
}

fn id(kept: Option<&[u8]>, text: Option<&String>) -> Option<MessageId> {
    let text = text?;
    let typed = decoded::<MessageId>(kept).filter(|id| id_text(id) == *text);
    Some(typed.unwrap_or_else(|| MessageId::String(text.clone())))
}

/// `message-id` as it was sent.
pub(super) fn message_id(props: &MessageProps) -> Option<MessageId> {
    let kept = props.amqp.as_ref().and_then(|x| x.message_id.as_deref());
    id(kept, props.message_id.as_ref())
}

/// `correlation-id` as it was sent.
pub(super) fn correlation_id(props: &MessageProps) -> Option<MessageId> {
    let kept = props
        .amqp
        .as_ref()
        .and_then(|x| x.correlation_id.as_deref());
    id(kept, props.correlation_id.as_ref())
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use fe2o3_amqp_types::messaging::{Body, Properties};
    use fe2o3_amqp_types::primitives::{Binary, Symbol, Uuid, Value};

    use super::*;
    use crate::amqp::convert;
    use crate::broker::Received;

    fn key(name: &str) -> OwnedKey {
        OwnedKey::Symbol(Symbol::from(name))
    }

    /// Sends `m` through the broker's form and reads what a receiver would get.
    fn through_the_broker(
        m: &Message<Body<Value>>,
        change: impl Fn(&mut MessageProps),
    ) -> Message<Body<Value>> {
        let bytes = convert::write(m).expect("encodes");
        let mut sent = convert::decode(0, &bytes).expect("decodes");
        let sent = sent.remove(0);
        let mut props = sent.props;
        change(&mut props);
        let received = Received {
            sequence_number: 1,
            delivery_count: 1,
            enqueued_at: chrono::Utc::now(),
            time_to_live: None,
            default_time_to_live: servicebus_wire::message::MAX_TIME_TO_LIVE_SECS,
            lock: None,
            props,
            body: sent.body,
        };
        let payload = convert::encode(&received).expect("encodes");
        // The payload starts with a header section the broker writes itself.
        convert::read(&payload).expect("reads back")
    }

    fn sample() -> Message<Body<Value>> {
        let mut a = ApplicationProperties::default();
        let uuid = Uuid::from([7u8; 16]);
        for (name, value) in [
            ("uint", SimpleValue::Uint(7)),
            ("ubyte", SimpleValue::Ubyte(200)),
            ("long", SimpleValue::Long(5)),
            ("int", SimpleValue::Int(5)),
            ("uuid", SimpleValue::Uuid(uuid.clone())),
            ("binary", SimpleValue::Binary(Binary::from(vec![0u8, 255]))),
            ("char", SimpleValue::Char('x')),
            ("symbol", SimpleValue::Symbol(Symbol::from("s"))),
            ("null", SimpleValue::Null),
            ("text", SimpleValue::String("hello".into())),
        ] {
            a.0.insert(name.into(), value);
        }
        let mut annotations = MessageAnnotations::default();
        annotations.0.insert(key("x-custom"), Value::Uint(3));
        annotations
            .0
            .insert(key("x-opt-sequence-number"), Value::Long(999));
        Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::Ulong(42)),
                correlation_id: Some(MessageId::Uuid(uuid)),
                ..Properties::default()
            })
            .application_properties(a)
            .message_annotations(annotations)
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::Int(1),
            )))
            .build()
    }

    #[test]
    fn amqp_types_ids_and_annotations_come_back_as_sent() {
        let sent = sample();
        let got = through_the_broker(&sent, |_| {});
        // As clients read them: a map, whatever the order (a kept null comes last).
        let sorted = |m: &Message<Body<Value>>| {
            let mut all: Vec<_> = m
                .application_properties
                .iter()
                .flat_map(|a| a.0.iter())
                .collect();
            all.sort_by_key(|(name, _)| name.as_str());
            format!("{all:?}")
        };
        assert_eq!(sorted(&got), sorted(&sent));
        let (p, q) = (got.properties.unwrap(), sent.properties.unwrap());
        assert_eq!(
            (p.message_id, p.correlation_id),
            (q.message_id, q.correlation_id)
        );
        let annotations = got.message_annotations.unwrap();
        assert_eq!(annotations.0.get(&key("x-custom")), Some(&Value::Uint(3)));
        // The broker's own annotation wins over the sender's.
        assert_eq!(
            annotations.0.get(&key("x-opt-sequence-number")),
            Some(&Value::Long(1))
        );
    }

    #[test]
    fn a_changed_text_wins_over_the_kept_type() {
        let got = through_the_broker(&sample(), |props| {
            for (name, raw) in &mut props.user {
                if name == "uint" {
                    *raw = "8".into();
                }
            }
            props.message_id = Some("other".into());
        });
        let a = got.application_properties.unwrap();
        assert_eq!(a.0.get("uint"), Some(&SimpleValue::Int(8)));
        assert_eq!(a.0.get("ubyte"), Some(&SimpleValue::Ubyte(200)));
        assert_eq!(
            got.properties.unwrap().message_id,
            Some(MessageId::String("other".into()))
        );
    }

    #[test]
    fn plain_messages_keep_nothing_extra() {
        let mut a = ApplicationProperties::default();
        a.0.insert("n".into(), SimpleValue::Int(3));
        a.0.insert("s".into(), SimpleValue::String("x".into()));
        let m: Message<Body<Value>> = Message::builder()
            .application_properties(a)
            .body(Body::Empty)
            .build();
        assert_eq!(keep(&m), None);
    }
}

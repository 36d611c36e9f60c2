//! The `{entity}/$management` node (contract section 7): lock renewal, settlement by
//! lock token, deferral, peek, scheduling, and a subscription's rules (`rules.rs`). Other operations answer `501 amqp:not-implemented`, so an SDK raises a clear
//! error rather than waiting.

use std::sync::Arc;

use fe2o3_amqp_types::messaging::{AmqpValue, Body, Message};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use uuid::Uuid;

use super::fields::{as_i64, field, integer, text};
use super::{Context, cbs, convert, link, rules};
use crate::auth::Right;
use crate::broker::{self, PeekState, ReceiveMode, ReceiveTarget, Settle};
use crate::model::EntityPath;
use crate::model::message::DeadLetter;

/// The right an operation needs (REST contract 2.7).
pub(crate) fn right_of(operation: &str) -> Right {
    match operation {
        "com.microsoft:schedule-message" | "com.microsoft:cancel-scheduled-message" => Right::Send,
        "com.microsoft:add-rule" | "com.microsoft:remove-rule" => Right::Manage,
        _ => Right::Listen,
    }
}

/// The request's `operation` application property.
pub(crate) fn operation(request: &Message<Body<Value>>) -> String {
    cbs::app_string(request, "operation").unwrap_or_default()
}

/// A management response: `statusCode`, `statusDescription` and, on an error,
/// `errorCondition` as a symbol (contract 7.3).
pub(crate) fn response(
    request: &Message<Body<Value>>,
    code: i32,
    description: &str,
    condition: Option<&str>,
) -> Message<Body<Value>> {
    let mut response = cbs::response(request, code, description, &["statusCode"]);
    if let Some(props) = response.application_properties.as_mut()
        && let Some(condition) = condition
    {
        props.0.insert(
            "errorCondition".into(),
            SimpleValue::Symbol(Symbol::from(condition)),
        );
    }
    response
}

/// Why a request failed: status code, condition and description.
struct Failure(i32, &'static str, String);

impl Failure {
    fn bad(description: impl Into<String>) -> Self {
        Failure(400, "com.microsoft:argument-error", description.into())
    }
}

impl From<broker::Error> for Failure {
    fn from(e: broker::Error) -> Self {
        use broker::Error as E;
        let (code, condition) = match &e {
            E::NotFound { .. } => (404, "amqp:not-found"),
            E::LockLost { .. } => (410, "com.microsoft:message-lock-lost"),
            E::Disabled { .. } => (400, "com.microsoft:entity-disabled"),
            E::Conflict { .. } => (409, "com.microsoft:entity-already-exists"),
            E::Rule(_) | E::Name(_) | E::WrongKind { .. } => (400, "com.microsoft:argument-error"),
            E::QuotaExceeded { .. } => (403, "amqp:resource-limit-exceeded"),
            _ => (500, "amqp:internal-error"),
        };
        let error = link::broker_error(&e);
        Failure(code, condition, error.description.unwrap_or_default())
    }
}

/// A map of one field, the shape of most response bodies.
fn one(key: &str, value: Value) -> OrderedMap<Value, Value> {
    let mut map = OrderedMap::new();
    map.insert(Value::String(key.to_string()), value);
    map
}

/// A message as peek and receive-by-sequence-number return it: encoded whole, in
/// `state` (0 active, 1 deferred, 2 scheduled), with its lock token when `locked`.
fn message_entry(received: &broker::Received, state: i32, locked: bool) -> Result<Value, Failure> {
    let encoded = convert::encode_in_state(received, state)
        .map_err(|e| Failure(500, "amqp:internal-error", e.to_string()))?;
    let mut entry = OrderedMap::new();
    if let (true, Some((token, _))) = (locked, received.lock) {
        entry.insert(
            Value::String("lock-token".into()),
            Value::Uuid(token.into_bytes().into()),
        );
    }
    entry.insert(
        Value::String("message".into()),
        Value::Binary(encoded.into()),
    );
    Ok(Value::Map(entry))
}

/// Most sequence numbers one cancel names.
const MAX_NUMBERS: usize = 4096;

fn sequence_number(v: &Value) -> Option<u64> {
    as_i64(v).and_then(|n| u64::try_from(n).ok())
}

/// `sequence-numbers`: an array (or list) of longs, at most [`MAX_NUMBERS`].
fn sequence_numbers(body: &OrderedMap<Value, Value>) -> Result<Vec<u64>, Failure> {
    let numbers: Vec<u64> = match field(body, "sequence-numbers") {
        Some(Value::Array(a)) => a.0.iter().filter_map(sequence_number).collect(),
        Some(Value::List(l)) => l.iter().filter_map(sequence_number).collect(),
        _ => return Err(Failure::bad("'sequence-numbers' must be an array of longs")),
    };
    if numbers.len() > MAX_NUMBERS {
        return Err(Failure::bad(format!(
            "at most {MAX_NUMBERS} sequence numbers in one request"
        )));
    }
    Ok(numbers)
}

/// The queue or topic a management node on `entity` sends to.
fn sendable(entity: &str) -> Result<String, Failure> {
    let path = EntityPath::parse(entity).map_err(|e| Failure::bad(e.to_string()))?;
    if !path.is_sendable() {
        return Err(Failure(
            400,
            "amqp:not-allowed",
            format!("'{entity}' is not a queue or topic"),
        ));
    }
    Ok(path.entity)
}

/// `lock-tokens`: an array (or a list) of UUIDs, in RFC 4122 byte order.
fn lock_tokens(body: &OrderedMap<Value, Value>) -> Result<Vec<Uuid>, Failure> {
    let items = match field(body, "lock-tokens") {
        Some(Value::Array(a)) => &a.0,
        Some(Value::List(l)) => l,
        _ => return Err(Failure::bad("'lock-tokens' must be an array of UUIDs")),
    };
    items
        .iter()
        .map(|v| match v {
            Value::Uuid(u) => Ok(Uuid::from_bytes(u.clone().into_inner())),
            _ => Err(Failure::bad("'lock-tokens' must be an array of UUIDs")),
        })
        .collect()
}

/// Answers one management request for the node of `entity`.
pub(crate) async fn answer(
    context: Arc<Context>,
    entity: String,
    request: Message<Body<Value>>,
) -> Message<Body<Value>> {
    let result = perform(&context, &entity, &request).await;
    let (code, description, condition, body) = match result {
        Ok(Some(body)) => (200, "OK".to_string(), None, Some(body)),
        Ok(None) => (200, "OK".to_string(), None, None),
        // 204 (nothing to return) is a success without a condition.
        Err(Failure(code, condition, description)) => (
            code,
            description,
            Some(condition).filter(|c| !c.is_empty()),
            None,
        ),
    };
    let mut response = response(&request, code, &description, condition);
    if let Some(body) = body {
        response.body = Body::Value(AmqpValue(Value::Map(body)));
    }
    response
}

async fn perform(
    context: &Context,
    entity: &str,
    request: &Message<Body<Value>>,
) -> Result<Option<OrderedMap<Value, Value>>, Failure> {
    let operation = operation(request);
    let empty = OrderedMap::new();
    let body = match &request.body {
        Body::Value(AmqpValue(Value::Map(m))) => m,
        _ => &empty,
    };
    let target = || {
        let path = EntityPath::parse(entity).map_err(|e| Failure::bad(e.to_string()))?;
        Ok::<_, Failure>(ReceiveTarget::from(&path))
    };
    match operation.as_str() {
        "com.microsoft:renew-lock" => {
            let target = target()?;
            let mut expirations = Vec::new();
            for token in lock_tokens(body)? {
                let until = context
                    .broker
                    .settle_token(&target, token, Settle::Renew)
                    .await?
                    .ok_or_else(|| {
                        Failure::from(broker::Error::LockLost {
                            token: token.to_string(),
                        })
                    })?;
                expirations.push(Value::Timestamp(Timestamp::from_milliseconds(
                    until.timestamp_millis(),
                )));
            }
            Ok(Some(one("expirations", Value::Array(Array(expirations)))))
        }
        "com.microsoft:update-disposition" => {
            let target = target()?;
            let how = match text(body, "disposition-status").as_deref() {
                Some("completed") => Settle::Complete,
                Some("abandoned") => Settle::Unlock,
                Some("suspended") => Settle::DeadLetter(DeadLetter {
                    reason: text(body, "deadletter-reason").unwrap_or_default(),
                    description: text(body, "deadletter-description").unwrap_or_default(),
                }),
                Some("defered") => Settle::Defer,
                other => {
                    return Err(Failure::bad(format!(
                        "'{}' is not a disposition status",
                        other.unwrap_or("")
                    )));
                }
            };
            for token in lock_tokens(body)? {
                context
                    .broker
                    .settle_token(&target, token, how.clone())
                    .await?;
            }
            Ok(None)
        }
        "com.microsoft:peek-message" => {
            let target = target()?;
            let from = integer(body, "from-sequence-number").unwrap_or(0).max(0);
            let count = integer(body, "message-count").unwrap_or(1).max(0);
            let peeked = context.broker.peek(
                &target,
                u64::try_from(from).unwrap_or(0),
                usize::try_from(count).unwrap_or(0),
            )?;
            if peeked.is_empty() {
                return Err(Failure(204, "", "No messages".into()));
            }
            let mut messages = Vec::new();
            for (received, state) in peeked {
                let state = match state {
                    PeekState::Active => 0,
                    PeekState::Deferred => 1,
                    PeekState::Scheduled => 2,
                };
                messages.push(message_entry(&received, state, false)?);
            }
            Ok(Some(one("messages", Value::List(messages))))
        }
        "com.microsoft:receive-by-sequence-number" => {
            let target = target()?;
            let numbers = sequence_numbers(body)?;
            let mode = match integer(body, "receiver-settle-mode") {
                Some(0) => ReceiveMode::ReceiveAndDelete,
                _ => ReceiveMode::PeekLock,
            };
            let received = context
                .broker
                .receive_deferred(&target, &numbers, mode)
                .await?
                .ok_or_else(|| {
                    Failure(
                        404,
                        "com.microsoft:message-not-found",
                        "A sequence number names no deferred message.".into(),
                    )
                })?;
            let mut messages = Vec::new();
            for r in received {
                messages.push(message_entry(&r, 1, true)?);
            }
            Ok(Some(one("messages", Value::List(messages))))
        }
        "com.microsoft:schedule-message" => {
            let path = sendable(entity)?;
            let items = match field(body, "messages") {
                Some(Value::List(items)) => items.as_slice(),
                Some(Value::Array(items)) => items.0.as_slice(),
                _ => return Err(Failure::bad("'messages' must be a list of maps")),
            };
            let mut messages = Vec::new();
            for item in items {
                let Value::Map(item) = item else {
                    return Err(Failure::bad("each of 'messages' must be a map"));
                };
                let Some(Value::Binary(encoded)) = field(item, "message") else {
                    return Err(Failure::bad(
                        "each of 'messages' needs an encoded 'message'",
                    ));
                };
                messages.extend(
                    convert::decode(0, encoded)
                        .map_err(|e| Failure(400, "amqp:decode-error", e.to_string()))?,
                );
            }
            let numbers = context.broker.send_numbered(&path, messages).await?;
            let numbers = numbers
                .into_iter()
                .map(|n| Value::Long(i64::try_from(n).unwrap_or(i64::MAX)))
                .collect();
            Ok(Some(one("sequence-numbers", Value::Array(Array(numbers)))))
        }
        "com.microsoft:cancel-scheduled-message" => {
            let path = sendable(entity)?;
            let numbers = sequence_numbers(body)?;
            context.broker.cancel_scheduled(&path, &numbers).await?;
            Ok(None)
        }
        "com.microsoft:add-rule"
        | "com.microsoft:remove-rule"
        | "com.microsoft:enumerate-rules" => {
            rule_operation(context, entity, &operation, body).await
        }
        other => Err(Failure(
            501,
            "amqp:not-implemented",
            format!("The management operation '{other}' is not supported by the emulator yet."),
        )),
    }
}

/// `add-rule`, `remove-rule` and `enumerate-rules` on a subscription's node.
async fn rule_operation(
    context: &Context,
    entity: &str,
    operation: &str,
    body: &OrderedMap<Value, Value>,
) -> Result<Option<OrderedMap<Value, Value>>, Failure> {
    let path = EntityPath::parse(entity).map_err(|e| Failure::bad(e.to_string()))?;
    let (topic, Some(subscription), false) = (&path.entity, &path.subscription, path.dead_letter)
    else {
        return Err(Failure(
            400,
            "amqp:not-allowed",
            format!("rules belong to subscriptions; '{entity}' is not one"),
        ));
    };
    let broker = &context.broker;
    match operation {
        "com.microsoft:add-rule" => {
            let name =
                text(body, "rule-name").ok_or_else(|| Failure::bad("a rule-name is needed"))?;
            let Some(Value::Map(description)) = field(body, "rule-description") else {
                return Err(Failure::bad("a rule-description map is needed"));
            };
            let rule = rules::rule_from(description).map_err(Failure::bad)?;
            broker
                .put_rule(topic, subscription, &name, rule, false)
                .await?;
            Ok(None)
        }
        "com.microsoft:remove-rule" => {
            let name =
                text(body, "rule-name").ok_or_else(|| Failure::bad("a rule-name is needed"))?;
            broker.delete_rule(topic, subscription, &name).await?;
            Ok(None)
        }
        _ => {
            let skip = integer(body, "skip").unwrap_or(0).max(0);
            let top = integer(body, "top").unwrap_or(i64::from(u16::MAX)).max(0);
            let page = broker.list_rules(
                topic,
                subscription,
                usize::try_from(skip).unwrap_or(0),
                usize::try_from(top).unwrap_or(0),
            )?;
            if page.items.is_empty() {
                return Err(Failure(204, "", "No rules".into()));
            }
            let listed = page
                .items
                .iter()
                .map(|record| {
                    let mut entry = OrderedMap::new();
                    entry.insert(
                        Value::String("rule-description".into()),
                        rules::described_rule(record),
                    );
                    Value::Map(entry)
                })
                .collect();
            Ok(Some(one("rules", Value::List(listed))))
        }
    }
}

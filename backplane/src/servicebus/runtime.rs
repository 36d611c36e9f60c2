//! Messaging: send, batch send, peek-lock, receive-and-delete, complete, unlock, renew.

use std::time::Duration;

use reqwest::Method;
use servicebus_wire::message::{
    BATCH_CONTENT_TYPE, BatchMessage, BrokerProperties, PropertyValue, format_property,
    is_reserved_header, parse_property, write_batch,
};

use super::error::{Error, Result, from_status};
use super::{Call, Client};

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The body, sent as raw bytes.
    pub body: Vec<u8>,
    /// Broker properties the sender sets (`MessageId`, `Label`, `To`, `TimeToLive`, ...).
    pub broker: BrokerProperties,
    /// Custom properties, sent as headers. Names must be HTTP header names; keep values
    /// ASCII (non-ASCII text belongs in the body).
    pub properties: Vec<(String, PropertyValue)>,
    /// `Content-Type`, kept and returned to receivers.
    pub content_type: Option<String>,
}

impl Message {
    /// A message with this body.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Adds a custom property.
    pub fn with_property(mut self, name: &str, value: PropertyValue) -> Self {
        self.properties.push((name.to_string(), value));
        self
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The body.
    pub body: Vec<u8>,
    /// Broker properties, including `SequenceNumber`, `DeliveryCount` and (peek-lock)
    /// `LockToken` and `LockedUntilUtc`.
    pub broker: BrokerProperties,
    /// Custom properties as typed by their header text (every response header that is not
    /// reserved, see [`servicebus_wire::message::is_reserved_header`]).
    pub properties: Vec<(String, PropertyValue)>,
    /// `Content-Type`, when the sender gave one.
    pub content_type: Option<String>,
    /// The queue, subscription or dead-letter path it came from (settles go there).
    pub receivable: String,
}

impl ReceivedMessage {
    /// A custom property by name (case-insensitive).
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.properties
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

fn check_property_name(name: &str) -> Result<()> {
    let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
    if !valid || is_reserved_header(name) {
        return Err(Error::InvalidProperty(name.to_string()));
    }
    Ok(())
}

impl Client {
    /// Sends a message to a queue or topic; returns once the service acknowledged it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProperty`] for a property name that cannot travel as a header,
    /// [`Error::TooLarge`], [`Error::NotFound`], [`Error::Unauthorized`], transient
    /// failures after the retries.
    pub async fn send(&self, entity: &str, message: &Message) -> Result<()> {
        let mut call = Call {
            body: message.body.clone(),
            ..Call::default()
        };
        let broker = message.broker.to_json();
        if broker != "{}" {
            call.headers.push(("brokerproperties".into(), broker));
        }
        if let Some(ct) = &message.content_type {
            call.headers.push(("content-type".into(), ct.clone()));
        }
        for (name, value) in &message.properties {
            check_property_name(name)?;
            call.headers.push((name.clone(), format_property(value)));
        }
        self.expect_status(Method::POST, &format!("/{entity}/messages"), call, 201)
            .await
    }

    /// Sends several messages in one request (`application/vnd.microsoft.servicebus.json`).
    ///
    /// # Errors
    ///
    /// As [`Client::send`].
    pub async fn send_batch(&self, entity: &str, messages: &[Message]) -> Result<()> {
        let batch: Vec<BatchMessage> = messages
            .iter()
            .map(|m| BatchMessage {
                body: m.body.clone(),
                broker: m.broker.clone(),
                user: m
                    .properties
                    .iter()
                    .map(|(n, v)| (n.clone(), format_property(v)))
                    .collect(),
                content_type: m.content_type.clone(),
            })
            .collect();
        let call = Call {
            body: write_batch(&batch).into_bytes(),
            headers: vec![("content-type".into(), BATCH_CONTENT_TYPE.into())],
            timeout: None,
        };
        self.expect_status(Method::POST, &format!("/{entity}/messages"), call, 201)
            .await
    }

    async fn expect_status(&self, method: Method, path: &str, call: Call, want: u16) -> Result<()> {
        let answer = self.call(method, path, call).await?;
        if answer.status.as_u16() == want {
            Ok(())
        } else {
            Err(from_status(
                answer.status.as_u16(),
                &String::from_utf8_lossy(&answer.body),
            ))
        }
    }

    /// Locks the next message of a queue or subscription (or its dead-letter path), waiting
    /// up to `timeout` for one; `None` when none arrived.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while the request is in flight may leave a message locked on
    /// the service; it becomes receivable again when its lock expires.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing entity, transient failures after the retries.
    pub async fn peek_lock(
        &self,
        receivable: &str,
        timeout: Duration,
    ) -> Result<Option<ReceivedMessage>> {
        self.receive(Method::POST, receivable, timeout, 201).await
    }

    /// Removes and returns the next message, waiting up to `timeout`. At most once: a lost
    /// response loses the message.
    ///
    /// # Errors
    ///
    /// As [`Client::peek_lock`].
    pub async fn receive_and_delete(
        &self,
        receivable: &str,
        timeout: Duration,
    ) -> Result<Option<ReceivedMessage>> {
        self.receive(Method::DELETE, receivable, timeout, 200).await
    }

    async fn receive(
        &self,
        method: Method,
        receivable: &str,
        timeout: Duration,
        want: u16,
    ) -> Result<Option<ReceivedMessage>> {
        let path = format!("/{receivable}/messages/head?timeout={}", timeout.as_secs());
        let answer = self
            .call(
                method,
                &path,
                Call {
                    timeout: Some(timeout),
                    ..Call::default()
                },
            )
            .await?;
        match answer.status.as_u16() {
            204 => Ok(None),
            s if s == want => {
                let header = |n: &str| answer.headers.get(n).and_then(|v| v.to_str().ok());
                let broker = match header("brokerproperties") {
                    Some(json) => BrokerProperties::parse_received(json)
                        .map_err(|e| Error::Protocol(e.to_string()))?,
                    None => BrokerProperties::default(),
                };
                let properties = answer
                    .headers
                    .iter()
                    .filter(|(n, _)| !is_reserved_header(n.as_str()))
                    .filter_map(|(n, v)| {
                        v.to_str()
                            .ok()
                            .map(|v| (n.as_str().to_string(), parse_property(v)))
                    })
                    .collect();
                Ok(Some(ReceivedMessage {
                    content_type: header("content-type").map(str::to_string),
                    body: answer.body,
                    broker,
                    properties,
                    receivable: receivable.to_string(),
                }))
            }
            s => Err(from_status(s, &String::from_utf8_lossy(&answer.body))),
        }
    }

    async fn settle(&self, method: Method, message: &ReceivedMessage) -> Result<()> {
        let (Some(seq), Some(lock)) = (
            message.broker.sequence_number,
            message.broker.lock_token.as_deref(),
        ) else {
            return Err(Error::Protocol(
                "the message was not received with peek-lock".into(),
            ));
        };
        let path = format!("/{}/messages/{seq}/{lock}", message.receivable);
        let answer = self.call(method, &path, Call::default()).await?;
        match answer.status.as_u16() {
            200..=299 => Ok(()),
            // On a settle, 404 means the lock: expired, used, or never this message's.
            404 => Err(Error::LockLost),
            s => Err(from_status(s, &String::from_utf8_lossy(&answer.body))),
        }
    }

    /// Completes a peek-locked message.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when its lock expired or was used (it will come again).
    pub async fn complete(&self, message: &ReceivedMessage) -> Result<()> {
        self.settle(Method::DELETE, message).await
    }

    /// Gives a peek-locked message back at once (abandon).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when its lock expired or was used.
    pub async fn unlock(&self, message: &ReceivedMessage) -> Result<()> {
        self.settle(Method::PUT, message).await
    }

    /// Extends a lock by the entity's lock duration from now (the service does not say the
    /// new expiry over REST).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when its lock expired or was used.
    pub async fn renew(&self, message: &ReceivedMessage) -> Result<()> {
        self.settle(Method::POST, message).await
    }
}

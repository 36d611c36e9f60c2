//! Values that filters compute with, and the message properties they read.

use std::fmt;

use chrono::{DateTime, Utc};
use servicebus_wire::TimeSpan;

/// A property or expression value. `Null` is SQL's unknown: a missing user property, the
/// `NULL` literal, or the result of an operation that has no defined answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unknown.
    Null,
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// Whole number (Int64).
    Int(i64),
    /// Floating point (Double).
    Double(f64),
    /// Text, compared ordinally (case-sensitive).
    String(String),
    /// A point in time.
    DateTime(DateTime<Utc>),
    /// A span of time.
    Duration(TimeSpan),
}

impl Value {
    /// The truth value of a predicate result: `Some(b)` for booleans, `None` for anything
    /// else (unknown).
    pub fn truth(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d:?}"),
            Value::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::DateTime(t) => write!(f, "'{}'", t.to_rfc3339()),
            Value::Duration(d) => write!(f, "'{d}'"),
        }
    }
}

/// The system properties a filter may read (`sys.Name`), case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each is the broker property of the same name
pub enum SystemProperty {
    MessageId,
    CorrelationId,
    SessionId,
    ReplyTo,
    ReplyToSessionId,
    To,
    /// `Label`; `Subject` is accepted as an alias.
    Label,
    ContentType,
    SequenceNumber,
    EnqueuedTimeUtc,
    ScheduledEnqueueTimeUtc,
    TimeToLive,
    DeliveryCount,
    Size,
}

impl SystemProperty {
    const ALL: [SystemProperty; 14] = [
        Self::MessageId,
        Self::CorrelationId,
        Self::SessionId,
        Self::ReplyTo,
        Self::ReplyToSessionId,
        Self::To,
        Self::Label,
        Self::ContentType,
        Self::SequenceNumber,
        Self::EnqueuedTimeUtc,
        Self::ScheduledEnqueueTimeUtc,
        Self::TimeToLive,
        Self::DeliveryCount,
        Self::Size,
    ];

    /// The property's canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::MessageId => "MessageId",
            Self::CorrelationId => "CorrelationId",
            Self::SessionId => "SessionId",
            Self::ReplyTo => "ReplyTo",
            Self::ReplyToSessionId => "ReplyToSessionId",
            Self::To => "To",
            Self::Label => "Label",
            Self::ContentType => "ContentType",
            Self::SequenceNumber => "SequenceNumber",
            Self::EnqueuedTimeUtc => "EnqueuedTimeUtc",
            Self::ScheduledEnqueueTimeUtc => "ScheduledEnqueueTimeUtc",
            Self::TimeToLive => "TimeToLive",
            Self::DeliveryCount => "DeliveryCount",
            Self::Size => "Size",
        }
    }

    /// Looks a name up, case-insensitively (`Subject` is `Label`).
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("Subject") {
            return Some(Self::Label);
        }
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether a rule action may `SET` it (the client-settable string properties).
    pub fn is_settable(self) -> bool {
        matches!(
            self,
            Self::MessageId
                | Self::CorrelationId
                | Self::SessionId
                | Self::ReplyTo
                | Self::ReplyToSessionId
                | Self::To
                | Self::Label
                | Self::ContentType
        )
    }
}

/// What filters read from a message.
pub trait Properties {
    /// A system property; `None` when the message does not have it.
    fn system(&self, property: SystemProperty) -> Option<Value>;
    /// A user property by name, case-insensitively; `None` when absent.
    fn user(&self, name: &str) -> Option<Value>;
}

/// What rule actions change on a subscription's copy of a message.
pub trait PropertiesMut: Properties {
    /// Sets (or adds) a user property.
    fn set_user(&mut self, name: &str, value: Value);
    /// Removes a user property (no effect when absent).
    fn remove_user(&mut self, name: &str);
    /// Sets a settable system property (see [`SystemProperty::is_settable`]) to a string,
    /// or clears it with `None`.
    fn set_system(&mut self, property: SystemProperty, value: Option<String>);
}

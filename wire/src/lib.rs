//! Azure Service Bus REST wire types, shared by the emulator (which verifies and answers
//! them) and the backplane's client (which signs and sends them), so that both sides agree
//! by construction.
//!
//! - [`sas`]: Shared Access Signature tokens: sign, parse, verify, scope.
//! - [`connection_string`]: connection strings, including `UseDevelopmentEmulator`.
//! - [`duration`]: `xs:duration` as a .NET `TimeSpan`.
//! - [`names`]: entity name rules.
//! - [`description`], [`rule`]: entity and rule descriptions, parsed leniently and written
//!   in the service's element order.
//! - [`atom`]: entries, feeds and the error body.
//! - [`xml`]: the namespace-aware tree everything above is read from.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod atom;
pub mod connection_string;
pub mod description;
pub mod duration;
pub mod message;
pub mod names;
pub mod rule;
pub mod sas;
pub mod xml;

use chrono::{DateTime, Datelike as _, NaiveDateTime, SecondsFormat, Utc};

pub use connection_string::{ConnectionString, ConnectionStringError, Credential};
pub use description::{CountDetails, EntityDescription, EntityKind, EntityStatus, RuntimeInfo};
pub use duration::TimeSpan;
pub use rule::{CorrelationFilter, Filter, RuleAction, RuleDescription, TypedValue};
pub use sas::{SasError, SasToken};

/// The namespace of Service Bus descriptions.
pub const SB_NS: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";

/// Why wire data was refused. Each message names what is wrong, for a `400` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// Well-formed, but not the expected document.
    #[error("{0}")]
    Structure(String),
    /// A duration that is not an `xs:duration`.
    #[error("'{value}' is not a valid duration: {reason}")]
    Duration {
        /// The text as sent.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An element with a bad value.
    #[error("the value '{value}' of {element} is invalid: {reason}")]
    Value {
        /// The element's name.
        element: &'static str,
        /// The text as sent.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A name that breaks the naming rules.
    #[error("the {kind} '{name}' is invalid: {reason}")]
    InvalidName {
        /// What was being named.
        kind: &'static str,
        /// The name as sent.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
}

impl WireError {
    pub(crate) fn value(element: &'static str, value: &str, reason: &str) -> Self {
        WireError::Value {
            element,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Writes a timestamp as the service does in descriptions: ISO 8601 UTC, milliseconds.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads an ISO 8601 timestamp with or without zone and fraction (`Z` assumed). Years
/// outside 1 to 9999 (what the service's .NET `DateTime` holds) are refused.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc(),
    };
    (1..=9999).contains(&parsed.year()).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_stay_within_what_the_service_holds() {
        assert!(parse_timestamp("2024-01-02T03:04:05Z").is_some());
        assert!(parse_timestamp("9999-12-31T23:59:59").is_some());
        assert!(parse_timestamp("0001-01-01T00:00:00").is_some());
        for bad in [
            "+10000-01-01T00:00:00",
            "+99999-01-01T00:00:00Z",
            "-0001-01-01T00:00:00",
            "0000-01-01T00:00:00",
            "9999-12-31T23:00:00-05:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}

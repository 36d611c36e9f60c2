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
//! - [`error`]: [`WireError`], why wire data was refused; [`time`]: timestamps.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod atom;
pub mod connection_string;
pub mod description;
pub mod duration;
pub mod error;
pub mod message;
pub mod names;
pub mod rule;
pub mod sas;
pub mod time;
pub mod xml;

pub use connection_string::{ConnectionString, ConnectionStringError, Credential};
pub use description::{CountDetails, EntityDescription, EntityKind, EntityStatus, RuntimeInfo};
pub use duration::TimeSpan;
pub use error::WireError;
pub use rule::{CorrelationFilter, Filter, RuleAction, RuleDescription, TypedValue};
pub use sas::{SasError, SasToken};
pub use time::{format_timestamp, parse_timestamp};
pub use xml::SB_NS;

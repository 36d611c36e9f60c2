//! Scale real-time servers out over Azure Service Bus: every node publishes what it
//! broadcasts through a topic and receives what the other nodes publish through its own
//! subscription.
//!
//! This crate is being built in steps. Today it offers the pieces of its Service Bus REST
//! client that are shared with the emulator, so both sides agree by construction:
//! connection strings (including `UseDevelopmentEmulator=true`) and SAS token signing.
//! The typed REST client, the transport seam and the node runtime come next.
//!
//! ```
//! use backplane::servicebus::{ConnectionString, sas};
//!
//! let cs = ConnectionString::parse(
//!     "Endpoint=sb://localhost:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
//! )?;
//! assert_eq!(cs.base_url(), "http://localhost:5300");
//! let header = sas::sign(&format!("{}/", cs.base_url()), "RootManageSharedAccessKey", "SAS_KEY_VALUE", 4_102_444_800);
//! assert!(header.starts_with("SharedAccessSignature sr=http%3A%2F%2Flocalhost%3A5300%2F&sig="));
//! # Ok::<(), backplane::servicebus::ConnectionStringError>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

/// The Service Bus REST client (in progress): connection strings and SAS signing.
pub mod servicebus {
    pub use servicebus_wire::connection_string::{
        ConnectionString, ConnectionStringError, Credential,
    };
    pub use servicebus_wire::sas;
}

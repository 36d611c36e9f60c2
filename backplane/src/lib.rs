//! Scale real-time servers out over Azure Service Bus: every node publishes what it
//! broadcasts through a topic and receives what the other nodes publish through its own
//! subscription.
//!
//! This crate is being built in steps. Today it offers [`servicebus`], a typed REST client
//! for Service Bus usable on its own: connection strings (including
//! `UseDevelopmentEmulator=true`), cached SAS tokens, management of queues, topics,
//! subscriptions and rules, send, batch send, peek-lock, receive-and-delete, complete,
//! unlock and renew, with retries for transient failures only; [`envelope`], the versioned
//! wire format that packs events up to the size limit; and [`ordering`], the per-origin
//! reorder buffer with duplicate suppression and a bounded gap timeout; [`transport`], the
//! seam with a Service Bus implementation (one subscription per node, broker-side rules so a
//! node never receives its own broadcasts) and an in-memory one; and [`node`], a first node
//! runtime: publish to all (rooms, exceptions) or to one node, request/response with a
//! timeout (answers and the nodes that did not answer), heartbeats and the live-node set, a
//! janitor for dead nodes' subscriptions, parallel receivers, per-origin order, duplicate
//! suppression, completion after local delivery, packing, partitioning over several topics
//! by room, a receive-and-delete mode, graceful shutdown; and, with the feature
//! `socketioxide`, `socketio`: a socketioxide adapter over the node runtime, so that several
//! socketioxide servers act as one (`demo/src/chat.rs` is a complete chat on it, run by
//! `scripts/demo.sh`).
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

pub mod envelope;
pub mod ids;
pub mod node;
pub mod ordering;
pub mod servicebus;
#[cfg(feature = "socketioxide")]
pub mod socketio;
mod sync;
pub mod transport;

//! Scale real-time servers out over Azure Service Bus: every node publishes what it
//! broadcasts through a topic and receives what the other nodes publish through its own
//! subscription, so clients connected to different servers see one server.
//!
//! # How it works
//!
//! - [`Node`] is one server's place on the bus. It opens its own subscription (deleted by
//!   the bus when idle, so a crashed node's place goes by itself, and by the others'
//!   janitor sooner), with broker-side rules so it never receives its own broadcasts.
//! - Published events travel in versioned envelopes ([`envelope`]), several packed into
//!   one message up to the entity's size limit.
//! - Several receives run in parallel. Each origin's events carry a sequence number, and
//!   [`ordering`] restores publish order per origin (and per room lane when the node is
//!   partitioned over several topics), drops duplicates, and lets a missing event go after
//!   `gap_timeout`. A delivery is completed only once its events are handed to the
//!   application.
//! - The bus behind a node is a [`transport::Transport`]: Service Bus through the typed REST
//!   client [`Client`] (usable on its own), or [`MemoryTransport`] in one process.
//! - With the feature `socketioxide`, `socketio` is a socketioxide adapter over a node:
//!   broadcasts with rooms and exceptions, acknowledgements, `fetch_sockets`, and remote
//!   join, leave and disconnect (`demo/src/chat.rs` is a complete chat on it).
//!
//! # Guarantees
//!
//! Over the Service Bus transport with peek-lock:
//! - Delivery to live nodes is at least once from the bus, and exactly once to the
//!   application.
//! - Order is kept per origin, and per room when partitioned.
//! - A node crash leaves the others unaffected.
//! - A bus restart loses nothing acknowledged: nodes back off and resume.
//! - Events are packed up to the size limit; one larger event is a typed error.
//!
//! # Cancel safety
//!
//! [`Node::publish`] and [`Node::request`] may be dropped at any await. A publish dropped
//! before it returns may or may not have been sent; once it returned `Ok` the event is on
//! the bus. A dropped request sends nothing more and forgets its pending replies.
//!
//! # Example
//!
//! ```no_run
//! use backplane::{Client, Node, NodeConfig, ServiceBusTransport};
//!
//! # async fn run() -> Result<(), backplane::Error> {
//! // The emulator's development connection string; a real namespace's works the same.
//! let client = Client::from_connection_string(
//!     "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
//! )?;
//! let transport = ServiceBusTransport::new(client, "my-app").await?;
//! let (node, mut events) = Node::start(transport, NodeConfig::default()).await?;
//! node.publish(vec!["lobby".into()], vec![], b"hi".to_vec()).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{} sent {} bytes", event.origin, event.payload.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `socketioxide`: the socketioxide adapter (`socketio`).
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

pub use envelope::EnvelopeError;
pub use ids::NodeId;
pub use node::{Ask, Node, NodeConfig, PublishError, ReceiveMode, Received, Replies};
pub use servicebus::{Client, ConnectionString, RetryPolicy};
pub use transport::{MemoryTransport, ServiceBusTransport, Transport, TransportError};

/// Any failure of this crate, with whether trying again later may help. Each module keeps
/// its own error type; this one lets an application use `?` across all of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Service Bus client failed.
    #[error("service bus call failed")]
    ServiceBus(#[from] servicebus::Error),
    /// A connection string is malformed.
    #[error("invalid connection string")]
    ConnectionString(#[from] servicebus::ConnectionStringError),
    /// The transport failed.
    #[error("transport failed")]
    Transport(#[from] TransportError),
    /// A publish failed.
    #[error("publish failed")]
    Publish(#[from] PublishError),
    /// The socketioxide adapter failed.
    #[cfg(feature = "socketioxide")]
    #[error("socketioxide adapter failed")]
    Adapter(#[from] socketio::Error),
}

impl Error {
    /// Whether trying again later may succeed (throttling, a bus restarting, a lost
    /// connection), as opposed to a mistake that will fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ServiceBus(e) => e.is_transient(),
            Error::ConnectionString(_) => false,
            Error::Transport(e) => e.is_transient(),
            Error::Publish(PublishError::Transport(e)) => e.is_transient(),
            Error::Publish(_) => false,
            #[cfg(feature = "socketioxide")]
            Error::Adapter(_) => false,
        }
    }
}

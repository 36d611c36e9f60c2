//! A [socketioxide] adapter over the backplane (feature `socketioxide`): several
//! socketioxide servers behind one Service Bus topic act as one.
//!
//! ```no_run
//! use backplane::socketio::{AdapterOptions, AdapterState, ServiceBusAdapter};
//! use socketioxide::{SocketIo, adapter::Emitter, extract::SocketRef};
//!
//! type Socket = SocketRef<ServiceBusAdapter<Emitter>>;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connection = "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
//! let state = AdapterState::connect(connection, "chat", AdapterOptions::default()).await?;
//! let (layer, io) = SocketIo::builder()
//!     .with_adapter::<ServiceBusAdapter<_>>(state.clone())
//!     .build_layer();
//! io.ns("/", async |socket: Socket| {
//!     socket.on("message", async |socket: Socket| {
//!         // Reaches the clients of every server.
//!         let _ = socket.broadcast().emit("message", "hello").await;
//!     });
//! })
//! .await?;
//! // ... serve `layer` with axum or hyper; on the way out:
//! io.close().await;
//! state.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Serve with `TCP_NODELAY` on accepted connections (with axum:
//! `axum::serve(listener.tap_io(|tcp| { let _ = tcp.set_nodelay(true); }), app)`, from
//! `axum::serve::ListenerExt`; axum does not set it). Each WebSocket frame is a small write;
//! with Nagle's algorithm on, a frame waits for the acknowledgement of the one before,
//! which the client may delay up to 40 ms. This holds with any adapter: on one server with
//! socketioxide's own, room broadcasts paced at 500/s had a p99 of 35 ms with Nagle and
//! 3-4 ms without.
//!
//! How it works. Each server runs one backplane [`Node`] whose id is the server's
//! socketioxide id, shared by all its namespaces. An operation that concerns other servers
//! (broadcast, broadcast with acknowledgements, `fetch_sockets`, `rooms`, join, leave,
//! disconnect) is sent as a request (socketioxide's remote-adapter format, MessagePack,
//! tagged with the namespace) to every other node, or to one node when the operation targets
//! a socket of a known server; the server applies it to its own sockets. Requests that
//! expect answers (acknowledgements, sockets, rooms) wait for one answer per live node
//! ([`Node::live_nodes`]) and stop at the timeout, so a server that died makes a request
//! return what arrived instead of hanging. A server without the namespace answers at once
//! with nothing. The node's guarantees apply: a server never receives its own requests,
//! each request is applied once, in the order its origin published it (per lane: broadcasts
//! in one, targeted requests and answers in another).
//!
//! `server_count()` is the number of live nodes, this one included. When the last
//! namespace closes (`io.close()`), the node stops; [`AdapterState::shutdown`] also deletes
//! its subscription (otherwise the bus deletes it when idle, as for a crash).
//!
//! [socketioxide]: https://docs.rs/socketioxide
//! [`Node`]: crate::node::Node
//! [`Node::live_nodes`]: crate::node::Node::live_nodes

mod adapter;
mod emitter;
mod frame;
mod hub;
mod server_emit;
mod state;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{Stream, StreamExt, future};
use serde::Serialize;
use serde::de::DeserializeOwned;
use socketioxide_core::adapter::errors::{AdapterError, BroadcastError};
use socketioxide_core::adapter::remote_packet::{
    RequestIn, RequestOut, RequestTypeIn, RequestTypeOut, Response, ResponseType, ResponseTypeId,
};
use socketioxide_core::adapter::request::RemoteRequestHandler;
use socketioxide_core::adapter::stream::{
    AckStream, ChanStream, ResponseHandlers, insert_response_handler, wait_responses,
};
use socketioxide_core::adapter::{
    BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter, RemoteSocketData, Room,
    RoomParam, SocketEmitter, Spawnable,
};
use socketioxide_core::packet::Packet;
use socketioxide_core::{Sid, Uid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ids::NodeId;
use crate::node::{Node, NodeConfig, PublishError, Received, lock};
use crate::servicebus::Client;
use crate::transport::{MemoryTransport, ServiceBusTransport, Transport, TransportError};

use frame::Frame;

/// The adapter over Service Bus: `with_adapter::<ServiceBusAdapter<_>>(state)`.
pub type ServiceBusAdapter<E> = BackplaneAdapter<E, ServiceBusTransport>;
/// The adapter over the in-memory transport (several servers in one process, for tests).
pub type MemoryAdapter<E> = BackplaneAdapter<E, MemoryTransport>;

/// The adapter's settings.
#[derive(Debug, Clone)]
pub struct AdapterOptions {
    /// The backplane node's settings ([`NodeConfig`]; its `node_id` is ignored: the node
    /// takes the server's socketioxide id).
    pub node: NodeConfig,
    /// How long a request waits for the other servers' answers, added to the
    /// acknowledgement timeout for broadcasts with acknowledgements (default 5 s).
    pub request_timeout: Duration,
    /// How many topics room broadcasts are spread over (default 1). With K > 1,
    /// [`AdapterState::connect`] uses the topic `name` and `name-1` .. `name-(K-1)`; a
    /// broadcast to rooms goes to the topic of its room (the least by name when it names
    /// several), so broadcasts to one room keep their order; room-less broadcasts, requests
    /// and answers use the first topic. Every server of an app must use the same K.
    ///
    /// ```no_run
    /// # use backplane::socketio::{AdapterOptions, AdapterState};
    /// # async fn run(connection: &str) -> Result<(), backplane::socketio::Error> {
    /// let options = AdapterOptions {
    ///     partitions: 4, // topics "chat", "chat-1", "chat-2", "chat-3"
    ///     ..AdapterOptions::default()
    /// };
    /// let state = AdapterState::connect(connection, "chat", options).await?;
    /// # let _ = state;
    /// # Ok(()) }
    /// ```
    pub partitions: usize,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            node: NodeConfig::default(),
            request_timeout: Duration::from_secs(5),
            partitions: 1,
        }
    }
}

/// What can go wrong in the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string is malformed, or the topic could not be created.
    #[error("service bus")]
    ServiceBus(#[from] crate::servicebus::Error),
    /// The transport failed (opening the topic or the node's subscription).
    #[error("transport failed")]
    Transport(#[from] TransportError),
    /// A request could not be published.
    #[error("publish failed")]
    Publish(#[from] PublishError),
    /// A request or answer could not be encoded.
    #[error("encoding failed")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A server event's data is not of the type asked.
    #[error("decoding failed")]
    Decode(#[from] rmp_serde::decode::Error),
    /// An emitter's order could not be encoded (its data is not JSON-representable).
    #[error("emitter order: {0}")]
    Order(String),
    /// A namespace or server event name is longer than a frame holds (65,535 bytes).
    #[error("namespace or event name too long (65,535 bytes at most)")]
    Namespace,
    /// The server id cannot name a node.
    #[error("the server id cannot name a node")]
    NodeId(#[from] crate::ids::InvalidNodeId),
    /// An operation ran before the namespace's adapter was initialised.
    #[error("the adapter is not initialised")]
    NotReady,
    /// The state was shut down; build a new one.
    #[error("the adapter state was shut down")]
    Closed,
    /// One state was given to two socketioxide servers; each needs its own.
    #[error("this adapter state already serves another socketioxide server")]
    SharedState,
}

impl From<Error> for AdapterError {
    fn from(e: Error) -> Self {
        AdapterError(Box::new(e))
    }
}

pub use adapter::{BackplaneAdapter, InitRes};
use emitter::Order;
pub use emitter::{ClusterEmitter, Operators};
use hub::{Hub, Inbound, RequestSink, decode_response, dispatch, node_of};
use server_emit::ServerHandlers;
pub use server_emit::{ServerAcks, ServerEvent};
pub use state::AdapterState;
use state::StateInner;

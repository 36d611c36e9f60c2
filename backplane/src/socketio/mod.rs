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

mod frame;

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

/// Acknowledgements buffered per broadcast before the reader takes them; beyond, late
/// ones are dropped with a warning.
const ACK_BUFFER: usize = 1024;

/// The adapter's settings.
#[derive(Debug, Clone)]
pub struct AdapterOptions {
    /// The backplane node's settings ([`NodeConfig`]; its `node_id` is ignored: the node
    /// takes the server's socketioxide id).
    pub node: NodeConfig,
    /// How long a request waits for the other servers' answers, added to the
    /// acknowledgement timeout for broadcasts with acknowledgements (default 5 s).
    pub request_timeout: Duration,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            node: NodeConfig::default(),
            request_timeout: Duration::from_secs(5),
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
    /// The namespace name is too long for a frame.
    #[error("namespace name too long")]
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

/// The state shared by the namespaces of one server: the transport and, once the first
/// namespace starts, the server's backplane node. Cheap to clone; keep a clone to call
/// [`AdapterState::shutdown`].
pub struct AdapterState<T: Transport + Clone = ServiceBusTransport> {
    inner: Arc<StateInner<T>>,
}

impl<T: Transport + Clone> Clone for AdapterState<T> {
    fn clone(&self) -> Self {
        AdapterState {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport + Clone> fmt::Debug for AdapterState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterState")
            .field("options", &self.inner.options)
            .field("node", &self.node_id())
            .finish_non_exhaustive()
    }
}

struct StateInner<T: Transport> {
    transport: T,
    options: AdapterOptions,
    /// The running node. A std mutex: never held across an await.
    hub: Mutex<Option<Arc<Hub<T>>>>,
    /// Held while the node starts, so that two namespaces start one node.
    starting: tokio::sync::Mutex<()>,
    /// The node's id once started.
    node_id: OnceLock<NodeId>,
    closed: AtomicBool,
}

impl AdapterState<ServiceBusTransport> {
    /// Connects to Service Bus (the emulator or a namespace) and creates `topic` if
    /// missing. Every server of the app uses the same topic.
    ///
    /// # Errors
    ///
    /// A malformed connection string, or a topic that cannot be created.
    pub async fn connect(
        connection_string: &str,
        topic: &str,
        options: AdapterOptions,
    ) -> Result<Self, Error> {
        let client = Client::from_connection_string(connection_string)?;
        let transport = ServiceBusTransport::new(client, topic).await?;
        Ok(Self::with_transport(transport, options))
    }
}

impl<T: Transport + Clone> AdapterState<T> {
    /// A state over any transport (a [`MemoryTransport`] shared by servers in one process).
    pub fn with_transport(transport: T, options: AdapterOptions) -> Self {
        AdapterState {
            inner: Arc::new(StateInner {
                transport,
                options,
                hub: Mutex::new(None),
                starting: tokio::sync::Mutex::new(()),
                node_id: OnceLock::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The node's id (the server's socketioxide id) once a namespace has started.
    pub fn node_id(&self) -> Option<NodeId> {
        self.inner.node_id.get().cloned()
    }

    /// The live servers (the backplane's live nodes, this one included); 1 before the
    /// node starts.
    pub fn server_count(&self) -> usize {
        lock(&self.inner.hub)
            .as_ref()
            .map_or(1, |hub| hub.node.live_nodes().len())
    }

    /// Stops the node and deletes its subscription. Afterwards the state serves nothing.
    ///
    /// # Errors
    ///
    /// When the subscription cannot be deleted (the bus deletes it when idle anyway).
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.stop(true).await
    }

    /// Stops the node as a crash would, leaving its subscription for the bus or the other
    /// nodes' janitors to delete (for fault tests).
    pub async fn crash(&self) {
        let _ = self.inner.stop(false).await;
    }
}

impl<T: Transport + Clone> StateInner<T> {
    /// Closes the state and stops its node, deleting the subscription or not.
    async fn stop(&self, delete_subscription: bool) -> Result<(), Error> {
        self.closed.store(true, Ordering::SeqCst);
        let hub = lock(&self.hub).take();
        match hub {
            Some(hub) => hub.stop(delete_subscription).await,
            None => Ok(()),
        }
    }

    /// The server's hub, started on first use with the server's id as node id.
    async fn hub(&self, uid: Uid) -> Result<Arc<Hub<T>>, Error> {
        let _starting = self.starting.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if let Some(hub) = lock(&self.hub).as_ref() {
            return if hub.uid == uid {
                Ok(hub.clone())
            } else {
                Err(Error::SharedState)
            };
        }
        let node_id = node_of(uid)?;
        let config = NodeConfig {
            node_id: Some(node_id.clone()),
            ..self.options.node.clone()
        };
        let (node, events) = Node::start(self.transport.clone(), config).await?;
        let hub = Arc::new(Hub {
            node,
            uid,
            handlers: Mutex::default(),
            responses: Arc::default(),
            dispatcher: Mutex::default(),
        });
        *lock(&hub.dispatcher) = Some(tokio::spawn(dispatch(Arc::downgrade(&hub), events)));
        let _ = self.node_id.set(node_id);
        *lock(&self.hub) = Some(hub.clone());
        Ok(hub)
    }
}

/// Applies a request to one namespace's sockets.
type RequestSink = Arc<dyn Fn(RequestIn) + Send + Sync>;

/// One server's node and the routing of what it receives.
struct Hub<T: Transport> {
    node: Node<T>,
    uid: Uid,
    /// The namespaces of this server, by path. A std mutex: never held across an await.
    handlers: Mutex<HashMap<String, RequestSink>>,
    /// Requests of this server waiting for answers, by request id.
    responses: Arc<Mutex<ResponseHandlers<Vec<u8>>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Transport> Hub<T> {
    async fn stop(&self, delete_subscription: bool) -> Result<(), Error> {
        if let Some(task) = lock(&self.dispatcher).take() {
            task.abort();
        }
        if delete_subscription {
            self.node.shutdown().await?;
        } else {
            self.node.crash().await;
        }
        Ok(())
    }

    /// Publishes a request to every other node, or to `target` alone.
    async fn send_request(
        &self,
        ns: &str,
        req: &RequestOut<'_>,
        target: Option<Uid>,
    ) -> Result<(), Error> {
        let body = rmp_serde::to_vec(req)?;
        let payload = frame::request(ns, &body).map_err(|_| Error::Namespace)?;
        match target {
            Some(uid) => self.node.publish_to(&node_of(uid)?, payload).await?,
            None => self.node.publish(vec![], vec![], payload).await?,
        }
        Ok(())
    }

    /// Publishes an encoded answer to the node that asked.
    async fn send_response(&self, id: Sid, origin: Uid, body: Vec<u8>) -> Result<(), Error> {
        let payload = frame::response(id, &body);
        self.node.publish_to(&node_of(origin)?, payload).await?;
        Ok(())
    }

    fn on_event(self: &Arc<Self>, payload: &[u8]) {
        match frame::decode(payload) {
            Ok(Frame::Request { ns, body }) => match rmp_serde::from_slice::<RequestIn>(body) {
                Ok(req) => {
                    let sink = lock(&self.handlers).get(ns).cloned();
                    match sink {
                        Some(sink) => sink(req),
                        None => self.answer_empty(req),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an undecodable adapter request"),
            },
            Ok(Frame::Response { id, body }) => {
                let waiting = lock(&self.responses).get(&id).cloned();
                if let Some(tx) = waiting
                    && tx.try_send(body.to_vec()).is_err()
                {
                    tracing::warn!(request = %id, "answer buffer full; dropping an answer");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping a backplane event that is no adapter frame")
            }
        }
    }

    /// Answers a request for a namespace this server does not have with nothing, so the
    /// asker need not wait for its timeout.
    fn answer_empty(self: &Arc<Self>, req: RequestIn) {
        let empty = match req.r#type {
            RequestTypeIn::BroadcastWithAck(_) => ResponseType::<()>::BroadcastAckCount(0),
            RequestTypeIn::AllRooms => ResponseType::AllRooms(HashSet::new()),
            RequestTypeIn::FetchSockets => ResponseType::FetchSockets(Vec::new()),
            _ => return,
        };
        let res = Response {
            node_id: self.uid,
            r#type: empty,
        };
        let hub = self.clone();
        tokio::spawn(async move {
            let sent = match rmp_serde::to_vec(&res) {
                Ok(body) => hub.send_response(req.id, req.node_id, body).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not answer a request for an absent namespace");
            }
        });
    }
}

/// Routes the node's events to the namespaces and waiting requests, in arrival order.
async fn dispatch<T: Transport>(hub: Weak<Hub<T>>, mut events: mpsc::Receiver<Received>) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.on_event(&event.payload);
    }
}

/// A server's node id is its socketioxide id.
fn node_of(uid: Uid) -> Result<NodeId, Error> {
    NodeId::new(&uid.to_string()).map_err(Error::NodeId)
}

/// Reads an answer; a malformed one is dropped with a warning.
fn decode_response<D: DeserializeOwned>(
    bytes: Vec<u8>,
) -> Result<Response<D>, Box<dyn std::error::Error + Send>> {
    rmp_serde::from_slice(&bytes).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send>)
}

/// The namespace adapter socketioxide creates per namespace.
pub struct BackplaneAdapter<E, T: Transport + Clone = ServiceBusTransport> {
    local: CoreLocalAdapter<E>,
    uid: Uid,
    state: Arc<StateInner<T>>,
    hub: OnceLock<Arc<Hub<T>>>,
}

impl<E, T: Transport + Clone> fmt::Debug for BackplaneAdapter<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackplaneAdapter")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl<E, T: Transport + Clone> DefinedAdapter for BackplaneAdapter<E, T> {}

impl<E: SocketEmitter, T: Transport + Clone> BackplaneAdapter<E, T> {
    fn hub(&self) -> Result<&Arc<Hub<T>>, Error> {
        self.hub.get().ok_or(Error::NotReady)
    }

    /// Whether `opts` concerns sockets of other servers.
    fn is_remote(&self, opts: &BroadcastOptions) -> bool {
        !opts.is_local(self.uid) && opts.server_id != Some(self.uid)
    }

    /// How many servers answer a request with these options.
    fn answering(hub: &Hub<T>, opts: &BroadcastOptions) -> usize {
        if opts.server_id.is_some() {
            1
        } else {
            hub.node.live_nodes().len().saturating_sub(1)
        }
    }

    /// Joins (`join`) or leaves `rooms` for the sockets `opts` selects, on every server
    /// concerned.
    async fn change_rooms(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
        join: bool,
    ) -> Result<(), Error> {
        if self.is_remote(&opts) {
            let kind = if join {
                RequestTypeOut::AddSockets(&rooms)
            } else {
                RequestTypeOut::DelSockets(&rooms)
            };
            let req = RequestOut::new(self.uid, kind, &opts);
            self.send_req(req, opts.server_id).await?;
        }
        if join {
            self.local.add_sockets(opts, rooms);
        } else {
            self.local.del_sockets(opts, rooms);
        }
        Ok(())
    }

    async fn send_req(&self, req: RequestOut<'_>, target: Option<Uid>) -> Result<(), Error> {
        self.hub()?
            .send_request(self.local.path(), &req, target)
            .await
    }

    /// The answers of type `kind` to request `id`: at most `count`, until the timeout.
    fn answers<D: DeserializeOwned>(
        &self,
        hub: &Hub<T>,
        id: Sid,
        kind: ResponseTypeId,
        count: usize,
    ) -> impl Stream<Item = Response<D>> + use<D, E, T> {
        let rx = insert_response_handler(&hub.responses, id, count);
        let decoded = ChanStream::new(rx).filter_map(|bytes| {
            future::ready(match decode_response::<D>(bytes) {
                Ok(res) => Some(res),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an undecodable answer");
                    None
                }
            })
        });
        wait_responses(
            decoded,
            hub.responses.clone(),
            id,
            kind,
            count,
            self.state.options.request_timeout,
        )
    }
}

/// What initialising a namespace returns: await it (`io.ns(..).await?`) to know the node
/// runs; socketioxide spawns it for dynamic namespaces.
#[must_use = "await the namespace's initialisation"]
pub struct InitRes(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>);

impl fmt::Debug for InitRes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitRes")
    }
}

impl Future for InitRes {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Spawnable for InitRes {
    fn spawn(self) {
        tokio::spawn(async move {
            if let Err(e) = self.await {
                tracing::error!(error = %e, "could not start the namespace's adapter");
            }
        });
    }
}

impl<E: SocketEmitter, T: Transport + Clone> CoreAdapter<E> for BackplaneAdapter<E, T> {
    type Error = Error;
    type State = AdapterState<T>;
    type AckStream = Either<E::AckStream, AckStream<E, ChanStream<Vec<u8>>, Vec<u8>>>;
    type InitRes = InitRes;

    fn new(state: &Self::State, local: CoreLocalAdapter<E>) -> Self {
        BackplaneAdapter {
            uid: local.server_id(),
            local,
            state: state.inner.clone(),
            hub: OnceLock::new(),
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> Self::InitRes {
        InitRes(Box::pin(async move {
            let hub = self.state.hub(self.uid).await?;
            let me = Arc::downgrade(&self);
            let sink: RequestSink = Arc::new(move |req| {
                if let Some(adapter) = me.upgrade() {
                    adapter.recv_req(req);
                }
            });
            lock(&hub.handlers).insert(self.local.path().to_string(), sink);
            let _ = self.hub.set(hub);
            on_success();
            Ok(())
        }))
    }

    async fn close(&self) -> Result<(), Self::Error> {
        let Ok(hub) = self.hub() else { return Ok(()) };
        let last = {
            let mut handlers = lock(&hub.handlers);
            handlers.remove(self.local.path().as_str());
            handlers.is_empty()
        };
        if last {
            self.state.stop(true).await?;
        }
        Ok(())
    }

    async fn server_count(&self) -> Result<u16, Self::Error> {
        let live = self.hub()?.node.live_nodes().len();
        Ok(u16::try_from(live).unwrap_or(u16::MAX))
    }

    async fn broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> Result<(), BroadcastError> {
        if self.is_remote(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::Broadcast(&packet), &opts);
            self.send_req(req, opts.server_id)
                .await
                .map_err(AdapterError::from)?;
        }
        self.local.broadcast(packet, opts)?;
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream, Self::Error> {
        if !self.is_remote(&opts) {
            let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
            return Ok(Either::Left(local));
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::BroadcastWithAck(&packet), &opts)
            .with_ack_timeout(timeout);
        let id = req.id;
        let servers = Self::answering(hub, &opts);
        let (tx, rx) = mpsc::channel(servers + ACK_BUFFER);
        lock(&hub.responses).insert(id, tx);
        if let Err(e) = self.send_req(req, opts.server_id).await {
            lock(&hub.responses).remove(&id);
            return Err(e);
        }
        let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
        let wait = self
            .state
            .options
            .request_timeout
            .saturating_add(timeout.unwrap_or(self.local.ack_timeout()));
        Ok(Either::Right(AckStream::new(
            local,
            ChanStream::new(rx),
            decode_response::<E::AckError>,
            wait,
            u16::try_from(servers).unwrap_or(u16::MAX),
            id,
            hub.responses.clone(),
        )))
    }

    async fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Error> {
        self.change_rooms(opts, rooms.into_room_iter().collect(), true)
            .await
    }

    async fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Error> {
        self.change_rooms(opts, rooms.into_room_iter().collect(), false)
            .await
    }

    async fn disconnect_socket(&self, opts: BroadcastOptions) -> Result<(), BroadcastError> {
        if self.is_remote(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::DisconnectSockets, &opts);
            self.send_req(req, opts.server_id)
                .await
                .map_err(AdapterError::from)?;
        }
        self.local
            .disconnect_socket(opts)
            .map_err(BroadcastError::Socket)
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>, Error> {
        if !self.is_remote(&opts) {
            return Ok(self.local.rooms(opts).into_iter().collect());
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::AllRooms, &opts);
        let count = Self::answering(hub, &opts);
        let answers = self.answers::<()>(hub, req.id, ResponseTypeId::AllRooms, count);
        self.send_req(req, opts.server_id).await?;
        let mut rooms = self.local.rooms(opts);
        let mut answers = std::pin::pin!(answers);
        while let Some(answer) = answers.next().await {
            rooms.extend(answer.into_rooms().unwrap_or_default());
        }
        Ok(rooms.into_iter().collect())
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<RemoteSocketData>, Error> {
        if !self.is_remote(&opts) {
            return Ok(self.local.fetch_sockets(opts));
        }
        let hub = self.hub()?;
        let req = RequestOut::new(self.uid, RequestTypeOut::FetchSockets, &opts);
        let count = Self::answering(hub, &opts);
        let answers =
            self.answers::<RemoteSocketData>(hub, req.id, ResponseTypeId::FetchSockets, count);
        self.send_req(req, opts.server_id).await?;
        let mut sockets = self.local.fetch_sockets(opts);
        let mut answers = std::pin::pin!(answers);
        while let Some(answer) = answers.next().await {
            sockets.extend(answer.into_fetch_sockets().unwrap_or_default());
        }
        Ok(sockets)
    }

    fn get_local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }
}

impl<E: SocketEmitter, T: Transport + Clone> RemoteRequestHandler<E> for BackplaneAdapter<E, T> {
    type Error = Error;

    fn local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }

    fn send_res<D: Serialize + fmt::Debug + Send + 'static>(
        &self,
        req_id: Sid,
        req_origin: Uid,
        res: Response<D>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let hub = self.hub().cloned();
        let body = rmp_serde::to_vec(&res);
        async move { hub?.send_response(req_id, req_origin, body?).await }
    }
}

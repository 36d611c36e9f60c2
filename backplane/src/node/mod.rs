//! One backplane node: publishes events for the other nodes and receives theirs, in each
//! origin's order, once each.
//!
//! A node opens its own place on the transport (a subscription that the bus deletes when
//! idle, so a crashed node's place disappears by itself), runs `receivers` parallel
//! receives, decodes envelopes, restores per-origin order ([`crate::ordering`]) and hands
//! events to the application through a bounded channel. A delivery is completed only after
//! its events were handed over; when the channel is full the receivers wait, so messages
//! stay on the bus (a lock may then expire and the message come again; duplicates are
//! suppressed). Transient failures back off and retry; a vanished place is re-opened.
//!
//! - `config`: [`NodeConfig`] and its defaults;
//! - `outbox`: publish, packing and partitions;
//! - `receive`: the receive loops, ordering lanes and the gap timer;
//! - `liveness`: heartbeats, the live-node set and the janitor;
//! - `request`: requests and their replies.

mod config;
mod liveness;
mod observe;
mod outbox;
mod receive;
mod request;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::envelope::{EnvelopeError, Kind};
use crate::ids::{NodeId, RoomName};
use crate::ordering::Reorder;
use crate::transport::{Transport, TransportError};

pub use config::{NodeConfig, ReceiveMode};
use liveness::heartbeat_loop;
pub use observe::Health;
use outbox::Outbox;
pub use outbox::partition_of;
use receive::{gap_loop, receive_loop};
use request::Pending;
pub use request::{Ask, Replies};

/// An event from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Who published it.
    pub origin: NodeId,
    /// Its number at the origin.
    pub seq: u64,
    /// The rooms it is for (empty: everyone) and those left out; `None` when it was sent to
    /// this node alone.
    pub rooms: Option<(Vec<RoomName>, Vec<RoomName>)>,
    /// The application's bytes.
    pub payload: Vec<u8>,
    /// A request to answer with [`Node::reply`] (its id), or `None` for an event.
    pub request: Option<u64>,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event is larger than one message may carry (nothing was sent).
    #[error("event too large")]
    TooLarge(#[source] EnvelopeError),
    /// The transport failed (after its retries).
    #[error("transport failed")]
    Transport(#[from] TransportError),
}

/// Counters of a node, readable at any time.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Application events published (broadcasts, requests, answers; not heartbeats).
    pub published: AtomicU64,
    /// Events handed to the application.
    pub delivered: AtomicU64,
    /// Events dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Sequence numbers skipped after the gap timeout.
    pub gaps_skipped: AtomicU64,
    /// Transport failures retried.
    pub retries: AtomicU64,
    /// Messages that were not envelopes (completed and dropped).
    pub malformed: AtomicU64,
    /// Bus messages carrying application events (fewer than events when packing).
    pub messages_sent: AtomicU64,
}

/// A running node.
#[derive(Debug)]
pub struct Node<T: Transport> {
    id: NodeId,
    shared: Arc<Shared<T>>,
    counters: Arc<NodeCounters>,
    stop: Arc<AtomicBool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    next_request: AtomicU64,
}

#[derive(Debug)]
struct Shared<T: Transport> {
    id: NodeId,
    /// One transport per partition (topic); partition 0 carries everything not routed by room.
    transports: Vec<Arc<T>>,
    config: NodeConfig,
    /// The next sequence number this node publishes, per partition.
    next_seq: Vec<AtomicU64>,
    /// The next number of events sent to one node, per target: targeted events have their
    /// own numbering, or every other node would see a gap in the broadcasts' numbers.
    /// A std mutex: never held across an await.
    direct_seq: Mutex<std::collections::HashMap<NodeId, u64>>,
    /// When this node started (a node never heard of is dead only after `dead_after`).
    started: Instant,
    /// A std mutex: held only to accept or expire, never across an await.
    reorder: Mutex<Reorder<(Kind, Received), (NodeId, usize)>>,
    /// Taken around "release from the reorder buffer, then hand over" so that events reach
    /// the application in the order released: a receiver whose hand-over yields (channel
    /// full, or tokio's cooperative budget) must not be overtaken by another receiver.
    turn: tokio::sync::Mutex<()>,
    /// Requests waiting for answers, by id. A std mutex: never held across an await.
    pending: Mutex<std::collections::HashMap<u64, Pending>>,
    /// When each other node was last heard of. A std mutex: never held across an await.
    seen: Mutex<std::collections::HashMap<NodeId, Instant>>,
    /// Broadcasts to pack. A std mutex: never held across an await.
    /// Per partition.
    outbox: Vec<Mutex<Outbox>>,
    events: mpsc::Sender<Received>,
    counters: Arc<NodeCounters>,
    /// What [`Node::health`] reports. A std mutex: never held across an await.
    health: Mutex<Health>,
    stop: Arc<AtomicBool>,
}

impl<T: Transport> Node<T> {
    /// Opens the node's place on the transport and starts receiving. Returns the node and
    /// the stream of other nodes' events.
    ///
    /// # Errors
    ///
    /// When the place cannot be opened.
    pub async fn start(
        transport: T,
        config: NodeConfig,
    ) -> Result<(Self, mpsc::Receiver<Received>), TransportError> {
        Self::start_partitioned(vec![transport], config).await
    }

    /// As [`Node::start`] over several transports (one topic each): a broadcast goes to the
    /// partition of its first room (partition 0 when it names none), so order is kept per
    /// room; targeted events, requests, answers and heartbeats use partition 0. Every node
    /// of a cluster must use the same topics in the same order.
    ///
    /// # Errors
    ///
    /// When a place cannot be opened, or `transports` is empty.
    pub async fn start_partitioned(
        transports: Vec<T>,
        config: NodeConfig,
    ) -> Result<(Self, mpsc::Receiver<Received>), TransportError> {
        if transports.is_empty() {
            return Err(TransportError::NoTransport);
        }
        let id = config.node_id.clone().unwrap_or_else(NodeId::random);
        let transports: Vec<Arc<T>> = transports.into_iter().map(Arc::new).collect();
        for transport in &transports {
            transport.open(&id, config.idle_delete).await?;
        }
        let partitions = transports.len();
        let (events, stream) = mpsc::channel(config.channel_capacity.max(1));
        let counters = Arc::new(NodeCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            id: id.clone(),
            transports,
            next_seq: (0..partitions).map(|_| AtomicU64::new(1)).collect(),
            direct_seq: Mutex::default(),
            started: Instant::now(),
            pending: Mutex::default(),
            seen: Mutex::default(),
            outbox: (0..partitions).map(|_| Mutex::default()).collect(),
            reorder: Mutex::new(Reorder::new(config.gap_timeout)),
            turn: tokio::sync::Mutex::new(()),
            config: config.clone(),
            events,
            counters: counters.clone(),
            health: Mutex::default(),
            stop: stop.clone(),
        });
        let mut tasks: Vec<JoinHandle<()>> = (0..partitions)
            .flat_map(|p| (0..config.receivers.max(1)).map(move |_| p))
            .map(|p| tokio::spawn(receive_loop(shared.clone(), p)))
            .collect();
        tasks.push(tokio::spawn(gap_loop(shared.clone())));
        tasks.push(tokio::spawn(heartbeat_loop(shared.clone())));
        tasks.push(tokio::spawn(observe::export_loop(shared.clone())));
        tracing::info!(node = %id, "node started");
        Ok((
            Node {
                id,
                shared,
                counters,
                stop,
                tasks: Mutex::new(tasks),
                next_request: AtomicU64::new(1),
            },
            stream,
        ))
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The counters. They are also exported every second through the `metrics` facade
    /// (`backplane_events_published_total`, `..._received_total`,
    /// `backplane_duplicates_suppressed_total`, `backplane_gaps_timed_out_total`,
    /// `backplane_retries_total`, `backplane_messages_sent_total`,
    /// `backplane_malformed_messages_total`, and the gauge `backplane_live_nodes`, each
    /// labelled `node`) to whatever exporter the application installed.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The node's health, for a readiness or liveness probe.
    ///
    /// ```no_run
    /// # async fn probe(node: &backplane::node::Node<backplane::transport::MemoryTransport>) {
    /// let health = node.health();
    /// let ready = health.connected
    ///     && health.subscription_present
    ///     && health
    ///         .last_contact
    ///         .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(90));
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        lock(&self.shared.health).clone()
    }

    async fn stop_tasks(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Stops the node as a crash would: receiving stops at once and its place is left for
    /// the bus to delete when idle (for fault tests and supervised restarts).
    pub async fn crash(&self) {
        self.stop_tasks().await;
    }

    /// Stops receiving and removes the node's place (its subscription).
    ///
    /// # Errors
    ///
    /// When the place cannot be removed (the bus removes it when idle anyway).
    pub async fn shutdown(&self) -> Result<(), TransportError> {
        self.stop_tasks().await;
        for transport in &self.shared.transports {
            transport.close(&self.id).await?;
        }
        tracing::info!(node = %self.id, "node stopped");
        Ok(())
    }
}

pub(crate) use crate::sync::lock;

impl<T: Transport> Shared<T> {
    /// Partition 0's transport: node lists, targeted events, requests, heartbeats.
    fn control(&self) -> &T {
        &self.transports[0]
    }
}

/// The reorder lane of events sent to this node alone (beside the partitions' lanes).
const DIRECT_LANE: usize = usize::MAX;

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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::envelope::{self, Envelope, EnvelopeError, Event, Kind, Target};
use crate::ids::{NodeId, RoomName};
use crate::ordering::Reorder;
use crate::transport::{Audience, Transport, TransportError};

/// A node's settings; every field has a default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id (default: random, new per run).
    pub node_id: Option<NodeId>,
    /// Parallel receives (default 4). More raise throughput over REST, one message a receive.
    pub receivers: usize,
    /// Long-poll wait of each receive (default 30 s).
    pub receive_timeout: Duration,
    /// How long a missing event may hold back later ones of its origin (default 2 s).
    pub gap_timeout: Duration,
    /// Idle time after which the bus deletes a node's place (default 5 minutes, the
    /// service's minimum); the receivers' polls keep a live node's place.
    pub idle_delete: Duration,
    /// Events buffered for the application (default 1024); when full, receiving pauses.
    pub channel_capacity: usize,
    /// How often the node says it is alive (default 5 s).
    pub heartbeat_interval: Duration,
    /// A node unheard of for this long is dead: left out of [`Node::live_nodes`], and its
    /// subscription deleted by the janitor (default 30 s).
    pub dead_after: Duration,
    /// Broadcasts always pack what was published while the previous message was being
    /// sent (no added latency); a window above zero also waits this long before sending,
    /// to pack more (default zero).
    pub pack_window: Duration,
    /// Pack broadcasts at all (default true); off sends one message per event.
    pub packing: bool,
    /// How messages are taken from the bus (default peek-lock).
    pub receive_mode: ReceiveMode,
}

/// How a node takes messages from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// Lock, hand over, then complete: at least once from the bus, exactly once to the
    /// application after duplicate suppression.
    #[default]
    PeekLock,
    /// Remove on receipt: one request fewer per message, but a node that crashes between
    /// receipt and hand-over loses those events (at most once).
    ReceiveAndDelete,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: None,
            receivers: 4,
            receive_timeout: Duration::from_secs(30),
            gap_timeout: Duration::from_secs(2),
            idle_delete: Duration::from_secs(300),
            channel_capacity: 1024,
            heartbeat_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
            pack_window: Duration::ZERO,
            packing: true,
            receive_mode: ReceiveMode::PeekLock,
        }
    }
}

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

/// What a request got back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replies {
    /// Answers, by node, in arrival order.
    pub replies: Vec<(NodeId, Vec<u8>)>,
    /// Nodes asked that did not answer before the timeout.
    pub missing: Vec<NodeId>,
}

/// Who a request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Every other node that has a subscription now.
    All,
    /// One node.
    Node(NodeId),
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

/// Broadcasts waiting to be packed, each with who waits for its acknowledgement.
#[derive(Debug, Default)]
struct Outbox {
    queue: Vec<(Event, tokio::sync::oneshot::Sender<Result<(), String>>)>,
    /// Whether a flush task is running (it sends until the queue is empty).
    sending: bool,
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

/// A request waiting for answers.
#[derive(Debug)]
struct Pending {
    expected: Vec<NodeId>,
    replies: Vec<(NodeId, Vec<u8>)>,
    done: Arc<tokio::sync::Notify>,
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
            return Err(TransportError::Failed(
                "a node needs at least one transport".into(),
            ));
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
            stop: stop.clone(),
        });
        let mut tasks: Vec<JoinHandle<()>> = (0..partitions)
            .flat_map(|p| (0..config.receivers.max(1)).map(move |_| p))
            .map(|p| tokio::spawn(receive_loop(shared.clone(), p)))
            .collect();
        tasks.push(tokio::spawn(gap_loop(shared.clone())));
        tasks.push(tokio::spawn(heartbeat_loop(shared.clone())));
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

    /// The counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Publishes to every other node: clients in any of `rooms` (everyone when empty) and in
    /// none of `except`. The node never receives its own broadcast.
    ///
    /// # Errors
    ///
    /// [`PublishError::TooLarge`] for an event over the limit, [`PublishError::Transport`].
    pub async fn publish(
        &self,
        rooms: Vec<RoomName>,
        except: Vec<RoomName>,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        let partition = partition_of(&rooms, self.shared.transports.len());
        let target = Target::Rooms { rooms, except };
        if !self.shared.config.packing {
            return self
                .shared
                .send(
                    partition,
                    Audience::Others,
                    Kind::Broadcast,
                    target,
                    payload,
                )
                .await;
        }
        Shared::publish_packed(&self.shared, partition, target, payload).await
    }

    /// Publishes to one node.
    ///
    /// # Errors
    ///
    /// As [`Node::publish`].
    pub async fn publish_to(&self, node: &NodeId, payload: Vec<u8>) -> Result<(), PublishError> {
        self.shared
            .send(
                0,
                Audience::Node(node),
                Kind::Broadcast,
                Target::Node(node.clone()),
                payload,
            )
            .await
    }

    /// Asks other nodes and waits up to `timeout` for their answers ([`Node::reply`]);
    /// returns what came back and which nodes did not answer. A node that died is reported
    /// missing after the timeout; the call never hangs.
    ///
    /// # Errors
    ///
    /// As [`Node::publish`], or when the transport cannot list the nodes.
    pub async fn request(
        &self,
        ask: Ask,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Replies, PublishError> {
        let id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let expected: Vec<NodeId> = match &ask {
            Ask::All => self
                .shared
                .control()
                .nodes()
                .await?
                .into_iter()
                .filter(|n| *n != self.id)
                .collect(),
            Ask::Node(n) => vec![n.clone()],
        };
        let done = Arc::new(tokio::sync::Notify::new());
        lock(&self.shared.pending).insert(
            id,
            Pending {
                expected,
                replies: Vec::new(),
                done: done.clone(),
            },
        );
        let everyone = Target::Rooms {
            rooms: vec![],
            except: vec![],
        };
        let sent = match &ask {
            Ask::All => {
                self.shared
                    .send(0, Audience::Others, Kind::Request(id), everyone, payload)
                    .await
            }
            Ask::Node(n) => {
                self.shared
                    .send(
                        0,
                        Audience::Node(n),
                        Kind::Request(id),
                        Target::Node(n.clone()),
                        payload,
                    )
                    .await
            }
        };
        if let Err(e) = sent {
            lock(&self.shared.pending).remove(&id);
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = done.notified();
            let complete = lock(&self.shared.pending).get(&id).is_none_or(|p| {
                p.expected
                    .iter()
                    .all(|n| p.replies.iter().any(|(r, _)| r == n))
            });
            if complete || tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let pending = lock(&self.shared.pending).remove(&id);
        Ok(pending.map_or_else(Replies::default, |p| Replies {
            missing: p
                .expected
                .iter()
                .filter(|n| !p.replies.iter().any(|(r, _)| r == *n))
                .cloned()
                .collect(),
            replies: p.replies,
        }))
    }

    /// Answers a request received from another node.
    ///
    /// # Errors
    ///
    /// As [`Node::publish`]; a `received` that is not a request is ignored.
    pub async fn reply(&self, received: &Received, payload: Vec<u8>) -> Result<(), PublishError> {
        let Some(id) = received.request else {
            return Ok(());
        };
        let origin = received.origin.clone();
        self.shared
            .send(
                0,
                Audience::Node(&origin),
                Kind::Response(id),
                Target::Node(origin.clone()),
                payload,
            )
            .await
    }

    /// This node and the nodes heard of within `dead_after`.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let dead_after = self.shared.config.dead_after;
        let mut live: Vec<NodeId> = lock(&self.shared.seen)
            .iter()
            .filter(|(_, at)| at.elapsed() < dead_after)
            .map(|(n, _)| n.clone())
            .collect();
        live.push(self.id.clone());
        live.sort();
        live
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

    async fn send(
        &self,
        partition: usize,
        audience: Audience<'_>,
        kind: Kind,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        // Heartbeats are the node's own traffic, not the application's.
        let kind_counts = kind != Kind::Heartbeat;
        let mut event = self.unnumbered(partition, kind, target, payload)?;
        event.seq = match audience {
            Audience::Others => self.next_seq[partition].fetch_add(1, Ordering::SeqCst),
            Audience::Node(target) => {
                let mut direct = lock(&self.direct_seq);
                let next = direct.entry(target.clone()).or_insert(1);
                *next += 1;
                *next - 1
            }
        };
        let bytes = Envelope {
            origin: self.id.clone(),
            events: vec![event],
        }
        .encode();
        self.transports[partition]
            .publish(&self.id, audience, bytes)
            .await?;
        if kind_counts {
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// An event not yet numbered, refused if it cannot fit a message alone. Checked before
    /// numbering (the size does not depend on the number), so a refused event leaves no gap
    /// for receivers to wait on.
    fn unnumbered(
        &self,
        partition: usize,
        kind: Kind,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<Event, PublishError> {
        let event = Event {
            seq: 0,
            kind,
            target,
            payload,
        };
        envelope::check_fits(
            &self.id,
            &event,
            self.transports[partition].max_message_bytes(),
        )
        .map_err(PublishError::TooLarge)?;
        Ok(event)
    }

    /// Queues a broadcast for packing and waits until the message carrying it is
    /// acknowledged by the bus.
    async fn publish_packed(
        shared: &Arc<Self>,
        partition: usize,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        let (done, acknowledged) = tokio::sync::oneshot::channel();
        {
            let mut event = shared.unnumbered(partition, Kind::Broadcast, target, payload)?;
            let mut outbox = lock(&shared.outbox[partition]);
            // Numbered under the outbox lock, so the queue is in sequence order.
            event.seq = shared.next_seq[partition].fetch_add(1, Ordering::SeqCst);
            outbox.queue.push((event, done));
            if !outbox.sending {
                outbox.sending = true;
                tokio::spawn(Shared::flush(shared.clone(), partition));
            }
        }
        match acknowledged.await {
            Ok(Ok(())) => {
                shared.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(PublishError::Transport(TransportError::Failed(e))),
            Err(_) => Err(PublishError::Transport(TransportError::Failed(
                "the node stopped".into(),
            ))),
        }
    }

    /// Sends queued broadcasts, packed, until the queue is empty.
    async fn flush(shared: Arc<Self>, partition: usize) {
        if !shared.config.pack_window.is_zero() {
            tokio::time::sleep(shared.config.pack_window).await;
        }
        loop {
            let batch = {
                let mut outbox = lock(&shared.outbox[partition]);
                if outbox.queue.is_empty() {
                    outbox.sending = false;
                    return;
                }
                std::mem::take(&mut outbox.queue)
            };
            let (events, waiters): (Vec<Event>, Vec<_>) = batch.into_iter().unzip();
            let limit = shared.transports[partition].max_message_bytes();
            let mut waiters = waiters.into_iter();
            // Every event was checked to fit alone, so packing cannot fail.
            let envelopes = envelope::pack(&shared.id, events, limit).unwrap_or_default();
            for envelope in envelopes {
                let n = envelope.events.len();
                let outcome = shared.transports[partition]
                    .publish(&shared.id, Audience::Others, envelope.encode())
                    .await;
                shared
                    .counters
                    .messages_sent
                    .fetch_add(1, Ordering::Relaxed);
                for waiter in waiters.by_ref().take(n) {
                    let _ = waiter.send(outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
                }
            }
        }
    }

    /// Takes ordered events: answers go to their request, heartbeats only refresh
    /// liveness, the rest goes to the application.
    fn route(&self, ordered: Vec<(Kind, Received)>) -> Vec<Received> {
        let mut out = Vec::new();
        for (kind, received) in ordered {
            match kind {
                Kind::Broadcast => out.push(received),
                Kind::Request(id) => out.push(Received {
                    request: Some(id),
                    ..received
                }),
                Kind::Response(id) => {
                    if let Some(p) = lock(&self.pending).get_mut(&id) {
                        p.replies.push((received.origin, received.payload));
                        p.done.notify_one();
                    }
                }
                Kind::Heartbeat => {}
            }
        }
        out
    }
}

async fn receive_loop<T: Transport>(shared: Arc<Shared<T>>, partition: usize) {
    let transport = shared.transports[partition].clone();
    let mut backoff = Duration::from_millis(50);
    while !shared.stop.load(Ordering::Relaxed) {
        let received = match shared.config.receive_mode {
            ReceiveMode::PeekLock => {
                transport
                    .receive(&shared.id, shared.config.receive_timeout)
                    .await
            }
            ReceiveMode::ReceiveAndDelete => {
                transport
                    .take(&shared.id, shared.config.receive_timeout)
                    .await
            }
        };
        let delivery = match received {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                if let TransportError::NoSubscription(_) = e {
                    tracing::warn!(node = %shared.id, "subscription gone; re-opening");
                    let _ = transport.open(&shared.id, shared.config.idle_delete).await;
                } else {
                    tracing::warn!(node = %shared.id, error = %e, "receive failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let turn = shared.turn.lock().await;
        let ready = match Envelope::decode(&delivery.payload) {
            Ok(envelope) => {
                let now = Instant::now();
                let first_heard = lock(&shared.seen)
                    .insert(envelope.origin.clone(), now)
                    .is_none();
                if first_heard && envelope.origin != shared.id {
                    // A node that just started said hello: answer at once, so it knows
                    // this node without waiting for the next heartbeat.
                    tokio::spawn(greet(shared.clone(), envelope.origin.clone()));
                }
                let mut reorder = lock(&shared.reorder);
                let before = reorder.counters();
                let mut ready = Vec::new();
                for event in envelope.events {
                    let event_is_direct = matches!(event.target, Target::Node(_));
                    let received = Received {
                        origin: envelope.origin.clone(),
                        seq: event.seq,
                        rooms: match event.target {
                            Target::Rooms { rooms, except } => Some((rooms, except)),
                            Target::Node(_) => None,
                        },
                        payload: event.payload,
                        request: None,
                    };
                    // Targeted events are numbered per (origin, target): their own lane.
                    let lane = if event_is_direct {
                        DIRECT_LANE
                    } else {
                        partition
                    };
                    ready.extend(reorder.accept(
                        &(envelope.origin.clone(), lane),
                        event.seq,
                        (event.kind, received),
                        now,
                    ));
                }
                let after = reorder.counters();
                shared
                    .counters
                    .duplicates
                    .fetch_add(after.duplicates - before.duplicates, Ordering::Relaxed);
                drop(reorder);
                shared.route(ready)
            }
            Err(e) => {
                shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %shared.id, error = %e, "dropping a message that is not an envelope");
                Vec::new()
            }
        };
        if !hand_over(&shared, ready).await {
            return;
        }
        drop(turn);
        if let Err(e) = transport.complete(&shared.id, delivery.handle).await {
            tracing::warn!(node = %shared.id, error = %e, "complete failed; the message will come again");
        }
    }
}

/// Sends one heartbeat to `node` alone.
async fn greet<T: Transport>(shared: Arc<Shared<T>>, node: NodeId) {
    let beat = shared
        .send(
            0,
            Audience::Node(&node),
            Kind::Heartbeat,
            Target::Node(node.clone()),
            Vec::new(),
        )
        .await;
    if let Err(e) = beat {
        tracing::debug!(node = %shared.id, to = %node, error = %e, "greeting failed");
    }
}

/// Hands events to the application, waiting while the channel is full; false when the
/// application dropped its receiver.
async fn hand_over<T: Transport>(shared: &Shared<T>, events: Vec<Received>) -> bool {
    for event in events {
        if shared.events.send(event).await.is_err() {
            return false;
        }
        shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Releases events held back by a gap once the gap timeout passed.
async fn gap_loop<T: Transport>(shared: Arc<Shared<T>>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let wait = {
            let reorder = lock(&shared.reorder);
            reorder
                .next_deadline()
                .map_or(Duration::from_millis(200), |d| {
                    d.saturating_duration_since(Instant::now())
                })
        };
        tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
        let _turn = shared.turn.lock().await;
        let (released, skipped) = {
            let mut reorder = lock(&shared.reorder);
            let before = reorder.counters().gaps_skipped;
            let released = reorder.expire(Instant::now());
            (released, reorder.counters().gaps_skipped - before)
        };
        if skipped > 0 {
            shared
                .counters
                .gaps_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(node = %shared.id, skipped, "skipped missing events after the gap timeout");
        }
        let released = shared.route(released.into_iter().map(|(_, r)| r).collect());
        if !hand_over(&shared, released).await {
            return;
        }
    }
}

/// Says "alive" every `heartbeat_interval`, and deletes the subscriptions of nodes unheard
/// of for `dead_after` (the janitor; every node runs it, deleting twice is harmless).
async fn heartbeat_loop<T: Transport>(shared: Arc<Shared<T>>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let c = &shared.counters;
        tracing::debug!(
            node = %shared.id,
            published = c.published.load(Ordering::Relaxed),
            delivered = c.delivered.load(Ordering::Relaxed),
            duplicates = c.duplicates.load(Ordering::Relaxed),
            gaps_skipped = c.gaps_skipped.load(Ordering::Relaxed),
            retries = c.retries.load(Ordering::Relaxed),
            "node counters"
        );
        let beat = shared
            .send(
                0,
                Audience::Others,
                Kind::Heartbeat,
                Target::Rooms {
                    rooms: vec![],
                    except: vec![],
                },
                Vec::new(),
            )
            .await;
        if let Err(e) = beat {
            tracing::warn!(node = %shared.id, error = %e, "heartbeat failed");
        }
        if shared.started.elapsed() >= shared.config.dead_after {
            match shared.control().nodes().await {
                Ok(nodes) => {
                    for node in nodes.into_iter().filter(|n| *n != shared.id) {
                        let last = lock(&shared.seen).get(&node).copied();
                        if last.is_none_or(|at| at.elapsed() >= shared.config.dead_after) {
                            tracing::info!(node = %shared.id, dead = %node, "deleting the subscription of a dead node");
                            let mut closed = true;
                            for transport in &shared.transports {
                                closed &= transport.close(&node).await.is_ok();
                            }
                            if closed {
                                lock(&shared.seen).remove(&node);
                                let mut reorder = lock(&shared.reorder);
                                for lane in (0..shared.transports.len()).chain([DIRECT_LANE]) {
                                    reorder.forget(&(node.clone(), lane));
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %shared.id, error = %e, "janitor cannot list nodes")
                }
            }
        }
        tokio::time::sleep(shared.config.heartbeat_interval).await;
    }
}

/// The partition of a broadcast among `partitions` topics: by its first room (FNV-1a, the
/// same in every process and version), 0 when it names no room.
pub fn partition_of(rooms: &[RoomName], partitions: usize) -> usize {
    let Some(room) = rooms.first() else { return 0 };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as usize
}

/// The reorder lane of events sent to this node alone (beside the partitions' lanes).
const DIRECT_LANE: usize = usize::MAX;

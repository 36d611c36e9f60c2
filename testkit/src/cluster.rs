//! Many backplane nodes against one in-process emulator, with the expectations of each
//! node's application: what it should receive (rooms and exceptions applied, none of its own
//! broadcasts), what it did receive, and a per-node report when the two differ.
//!
//! Each node's "application" is one client that joined some rooms: it keeps an event if the
//! event names no rooms, or one of its rooms, and none of the excepted ones (as a real-time
//! server delivers to its local clients), and answers every request with its node id.
//! Joining or leaving a room first waits until the node has received everything expected so
//! far, so the expected set is exact.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane::ids::NodeId;
use backplane::node::{Ask, Node, NodeConfig, Received};
use backplane::servicebus::Client;
use backplane::transport::ServiceBusTransport;
use emulator::Settings;
use emulator::config::ClockMode;
use emulator::store::Location;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::{InProcessEmulator, lock};

/// How long waiting for deliveries may take before the check fails (not a sleep).
const DEADLINE: Duration = Duration::from_secs(60);

/// What a node's application kept: who sent it, on which lane, the payload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivered {
    /// The publishing node.
    pub origin: NodeId,
    /// Sent to this node alone (the direct lane) rather than broadcast.
    pub direct: bool,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Expected or received payloads by (origin, direct lane), in order.
pub type Lanes = BTreeMap<(NodeId, bool), Vec<Vec<u8>>>;

struct App {
    seen: Arc<Mutex<Vec<Delivered>>>,
    /// Events taken from the node, kept or not (requests aside).
    processed: Arc<std::sync::atomic::AtomicUsize>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

/// One place in the cluster: the node running there, if any, and its application.
struct Member {
    generation: usize,
    node: Option<Arc<Node<ServiceBusTransport>>>,
    app: Option<App>,
    rooms: Arc<Mutex<BTreeSet<String>>>,
    expected: Lanes,
    /// Events the node must take from the bus, kept by its client or not.
    incoming: usize,
}

/// A cluster of backplane nodes on one emulator (manual clock, store in a temp folder).
pub struct Cluster {
    bus: Option<InProcessEmulator>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    transport: ServiceBusTransport,
    base: NodeConfig,
    members: Vec<Member>,
    /// Subscriptions of crashed nodes still on the bus (their janitor time has not come).
    lingering: usize,
    /// Faults the emulator injects, across its restarts too.
    faults: Option<emulator::faults::FaultPlan>,
    /// Faults injected by the emulator's earlier runs (before its restarts).
    injected_before: u64,
    counter: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.addr)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn settings(dir: &std::path::Path, faults: Option<emulator::faults::FaultPlan>) -> Settings {
    Settings {
        location: Location::Directory(dir.join("bus")),
        clock: ClockMode::Manual,
        faults,
        ..Settings::in_memory()
    }
}

impl Cluster {
    /// Starts an emulator and `n` nodes on `topic`, each with `base` settings (ids are set
    /// per node and generation).
    ///
    /// # Errors
    ///
    /// When the emulator or a node cannot start.
    pub async fn start(n: usize, topic: &str, base: NodeConfig) -> Result<Cluster, String> {
        Self::start_with_faults(n, topic, base, None).await
    }

    /// As [`Cluster::start`], with the emulator injecting `faults` (kept across its
    /// restarts). Faults on management are the caller's to avoid: a node that cannot
    /// create its subscription fails to start.
    ///
    /// # Errors
    ///
    /// As [`Cluster::start`].
    pub async fn start_with_faults(
        n: usize,
        topic: &str,
        base: NodeConfig,
        faults: Option<emulator::faults::FaultPlan>,
    ) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let bus = InProcessEmulator::start_with(settings(dir.path(), faults.clone()))
            .await
            .map_err(|e| format!("emulator: {e}"))?;
        let client =
            Client::from_connection_string(&bus.connection_string()).map_err(|e| e.to_string())?;
        let transport = ServiceBusTransport::new(client, topic)
            .await
            .map_err(|e| format!("topic: {e}"))?;
        let mut cluster = Cluster {
            addr: bus.addr(),
            bus: Some(bus),
            dir,
            transport,
            base,
            members: Vec::new(),
            lingering: 0,
            faults,
            injected_before: 0,
            counter: 0,
        };
        for _ in 0..n {
            cluster.members.push(Member {
                generation: 0,
                node: None,
                app: None,
                rooms: Arc::default(),
                expected: Lanes::new(),
                incoming: 0,
            });
            cluster.launch(cluster.members.len() - 1).await?;
        }
        Ok(cluster)
    }

    /// How many places the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no places.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether a node runs at place `i`.
    pub fn is_live(&self, i: usize) -> bool {
        self.members[i].node.is_some()
    }

    /// The id of the node at place `i`, if one runs.
    pub fn id(&self, i: usize) -> Option<NodeId> {
        self.members[i].node.as_ref().map(|n| n.id().clone())
    }

    async fn launch(&mut self, i: usize) -> Result<(), String> {
        let member = &mut self.members[i];
        let id = NodeId::new(&format!("n{i}-g{}", member.generation)).map_err(|e| e.to_string())?;
        let config = NodeConfig {
            node_id: Some(id),
            ..self.base.clone()
        };
        let (node, events) = Node::start(self.transport.clone(), config)
            .await
            .map_err(|e| format!("node {i}: {e}"))?;
        let node = Arc::new(node);
        member.rooms = Arc::default();
        member.expected = Lanes::new();
        member.incoming = 0;
        member.app = Some(run_app(node.clone(), events, member.rooms.clone()));
        member.node = Some(node);
        Ok(())
    }

    fn payload(&mut self, origin: &NodeId) -> Vec<u8> {
        self.counter += 1;
        format!("{origin}#{}", self.counter).into_bytes()
    }

    /// Node `i` broadcasts to `rooms` (everyone when empty) except `except`; expectations
    /// are recorded for every other live node whose client would get it. Nothing when no
    /// node runs at `i`.
    ///
    /// # Errors
    ///
    /// When the publish is not acknowledged.
    pub async fn publish(
        &mut self,
        i: usize,
        rooms: Vec<String>,
        except: Vec<String>,
    ) -> Result<(), String> {
        let Some(node) = self.members[i].node.clone() else {
            return Ok(());
        };
        let origin = node.id().clone();
        let payload = self.payload(&origin);
        node.publish(rooms.clone(), except.clone(), payload.clone())
            .await
            .map_err(|e| format!("publish from {origin}: {e}"))?;
        for (k, member) in self.members.iter_mut().enumerate() {
            if k == i || member.node.is_none() {
                continue;
            }
            member.incoming += 1;
            if wants(&lock(&member.rooms), &rooms, &except) {
                member
                    .expected
                    .entry((origin.clone(), false))
                    .or_default()
                    .push(payload.clone());
            }
        }
        Ok(())
    }

    /// Node `i` sends one event to node `j` (nothing unless both run and differ).
    ///
    /// # Errors
    ///
    /// When the publish is not acknowledged.
    pub async fn publish_to(&mut self, i: usize, j: usize) -> Result<(), String> {
        let (Some(node), Some(to)) = (self.members[i].node.clone(), self.id(j)) else {
            return Ok(());
        };
        if i == j {
            return Ok(());
        }
        let origin = node.id().clone();
        let payload = self.payload(&origin);
        node.publish_to(&to, payload.clone())
            .await
            .map_err(|e| format!("publish from {origin} to {to}: {e}"))?;
        self.members[j].incoming += 1;
        self.members[j]
            .expected
            .entry((origin, true))
            .or_default()
            .push(payload);
        Ok(())
    }

    /// The client at node `i` joins (`true`) or leaves `room`, once node `i` has received
    /// everything expected so far.
    ///
    /// # Errors
    ///
    /// When node `i` does not receive what it should before the deadline.
    pub async fn set_room(&mut self, i: usize, room: &str, join: bool) -> Result<(), String> {
        if self.members[i].node.is_none() {
            return Ok(());
        }
        self.settle(i).await?;
        let mut rooms = lock(&self.members[i].rooms);
        if join {
            rooms.insert(room.to_string());
        } else {
            rooms.remove(room);
        }
        Ok(())
    }

    /// Node `i` asks the others and checks the answers: with no crashed node's subscription
    /// lingering, every other live node answers and none is missing; otherwise it asks one
    /// live node (`j` or the next live one), which must answer.
    ///
    /// # Errors
    ///
    /// When an answer is missing or the request fails.
    pub async fn request(&mut self, i: usize, j: usize) -> Result<(), String> {
        let Some(node) = self.members[i].node.clone() else {
            return Ok(());
        };
        let others: BTreeSet<NodeId> = (0..self.len())
            .filter(|k| *k != i)
            .filter_map(|k| self.id(k))
            .collect();
        let ask = if self.lingering == 0 {
            Ask::All
        } else {
            let pick = (0..self.len())
                .map(|k| (j + k) % self.len())
                .find(|k| *k != i && self.is_live(*k));
            match pick.and_then(|k| self.id(k)) {
                Some(id) => Ask::Node(id),
                None => return Ok(()),
            }
        };
        let replies = node
            .request(ask.clone(), b"who?".to_vec(), DEADLINE)
            .await
            .map_err(|e| format!("request from {}: {e}", node.id()))?;
        let answered: BTreeSet<NodeId> = replies.replies.iter().map(|(n, _)| n.clone()).collect();
        for (n, body) in &replies.replies {
            if body.as_slice() != n.as_str().as_bytes() {
                return Err(format!("{n} answered {:?}", String::from_utf8_lossy(body)));
            }
        }
        let want: BTreeSet<NodeId> = match ask {
            Ask::All => others,
            Ask::Node(id) => BTreeSet::from([id]),
        };
        if answered != want || !replies.missing.is_empty() {
            return Err(format!(
                "request from {}: answered {answered:?}, missing {:?}, expected answers from {want:?}",
                node.id(),
                replies.missing
            ));
        }
        Ok(())
    }

    /// Node `i` stops as a crash would; its subscription stays on the bus.
    pub async fn crash(&mut self, i: usize) {
        let member = &mut self.members[i];
        if let Some(node) = member.node.take() {
            node.crash().await;
            self.lingering += 1;
        }
        if let Some(app) = member.app.take() {
            app.task.abort();
        }
        member.expected.clear();
        member.incoming = 0;
    }

    /// Node `i` crashes (if running) and a new node (a new id) starts in its place.
    ///
    /// # Errors
    ///
    /// When the new node cannot start.
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        self.crash(i).await;
        self.members[i].generation += 1;
        self.launch(i).await
    }

    /// Stops the emulator (graceful: in-flight requests finish, the store is flushed) and
    /// starts it again on the same address and store.
    ///
    /// # Errors
    ///
    /// When it cannot restart.
    pub async fn restart_bus(&mut self) -> Result<(), String> {
        if let Some(bus) = self.bus.take() {
            self.injected_before += bus.faults_injected();
            bus.stop().await.map_err(|e| format!("bus stop: {e}"))?;
        }
        let bus =
            InProcessEmulator::start_on(settings(self.dir.path(), self.faults.clone()), self.addr)
                .await
                .map_err(|e| format!("bus restart: {e}"))?;
        self.bus = Some(bus);
        Ok(())
    }

    /// Faults the emulator injected so far, across its restarts.
    pub fn faults_injected(&self) -> u64 {
        self.injected_before
            + self
                .bus
                .as_ref()
                .map_or(0, InProcessEmulator::faults_injected)
    }

    /// Moves the emulator's clock forward (locks expire, messages come again).
    ///
    /// # Errors
    ///
    /// When the bus is down or the clock cannot move.
    pub async fn advance(&self, by: Duration) -> Result<(), String> {
        match &self.bus {
            Some(bus) => bus.advance_clock(by).await.map_err(|e| e.to_string()),
            None => Err("the bus is down".into()),
        }
    }

    /// Waits until node `i` has taken as many events from the bus as were sent to it, kept
    /// or not by its client (or the deadline): a room change must not race an event
    /// published before it.
    async fn settle(&self, i: usize) -> Result<(), String> {
        let member = &self.members[i];
        let Some(app) = &member.app else {
            return Ok(());
        };
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = app.changed.notified();
            if app.processed.load(std::sync::atomic::Ordering::SeqCst) >= member.incoming {
                return Ok(());
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return Err(self.report());
            }
        }
    }

    /// Waits for every live node to receive what it should, then compares: every node must
    /// have exactly its expected events, each once, in order per origin and lane.
    ///
    /// # Errors
    ///
    /// A report of what each node saw against what it should have seen.
    pub async fn check(&self) -> Result<(), String> {
        for i in 0..self.len() {
            self.settle(i).await?;
        }
        let ok = (0..self.len()).all(|i| {
            self.members[i]
                .app
                .as_ref()
                .is_none_or(|app| lanes(&lock(&app.seen)) == self.members[i].expected)
        });
        if ok { Ok(()) } else { Err(self.report()) }
    }

    /// What each live node saw against what it should have seen.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            let (Some(node), Some(app)) = (&member.node, &member.app) else {
                let _ = writeln!(out, "place {i}: no node running");
                continue;
            };
            let got = lanes(&lock(&app.seen));
            let verdict = if got == member.expected {
                "ok"
            } else {
                "DIFFERS"
            };
            let _ = writeln!(
                out,
                "place {i} ({}), rooms {:?}: {verdict}",
                node.id(),
                lock(&member.rooms)
            );
            let keys: BTreeSet<_> = got.keys().chain(member.expected.keys()).collect();
            for key in keys {
                let show = |v: Option<&Vec<Vec<u8>>>| {
                    v.map(|v| {
                        v.iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                };
                let (want, have) = (show(member.expected.get(key)), show(got.get(key)));
                let lane = if key.1 { "direct" } else { "broadcast" };
                if want == have {
                    let _ = writeln!(out, "  from {} ({lane}): {} ok", key.0, want.len());
                } else {
                    let _ = writeln!(
                        out,
                        "  from {} ({lane}):\n    expected {want:?}\n    received {have:?}",
                        key.0
                    );
                }
            }
        }
        out
    }

    /// Shuts every node down (deleting its subscription) and stops the emulator.
    ///
    /// # Errors
    ///
    /// When a node or the bus does not stop cleanly.
    pub async fn shutdown(mut self) -> Result<(), String> {
        for member in &mut self.members {
            if let Some(app) = member.app.take() {
                app.task.abort();
            }
            if let Some(node) = member.node.take() {
                node.shutdown().await.map_err(|e| e.to_string())?;
            }
        }
        if let Some(bus) = self.bus.take() {
            bus.stop().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Whether a client in `joined` gets an event for `rooms` minus `except`.
fn wants(joined: &BTreeSet<String>, rooms: &[String], except: &[String]) -> bool {
    (rooms.is_empty() || rooms.iter().any(|r| joined.contains(r)))
        && !except.iter().any(|r| joined.contains(r))
}

fn lanes(seen: &[Delivered]) -> Lanes {
    let mut out = Lanes::new();
    for d in seen {
        out.entry((d.origin.clone(), d.direct))
            .or_default()
            .push(d.payload.clone());
    }
    out
}

/// The node's application: keeps what its client would get, answers requests.
fn run_app(
    node: Arc<Node<ServiceBusTransport>>,
    mut events: mpsc::Receiver<Received>,
    rooms: Arc<Mutex<BTreeSet<String>>>,
) -> App {
    let seen: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let processed: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let changed = Arc::new(Notify::new());
    let task = {
        let (seen, processed, changed) = (seen.clone(), processed.clone(), changed.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if event.request.is_some() {
                    let answer = node.id().as_str().as_bytes().to_vec();
                    if let Err(e) = node.reply(&event, answer).await {
                        tracing::warn!(error = %e, "answer failed");
                    }
                    continue;
                }
                let keep = match &event.rooms {
                    None => true,
                    Some((to, except)) => wants(&lock(&rooms), to, except),
                };
                if keep {
                    lock(&seen).push(Delivered {
                        origin: event.origin,
                        direct: event.rooms.is_none(),
                        payload: event.payload,
                    });
                }
                processed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                changed.notify_waiters();
            }
        })
    };
    App {
        seen,
        processed,
        changed,
        task,
    }
}

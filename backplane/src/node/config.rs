//! A node's settings, each with its default and when to change it.

use std::time::Duration;

use crate::ids::NodeId;

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
    /// A node unheard of for this long is dead: left out of [`Node::live_nodes`](super::Node::live_nodes), and its
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

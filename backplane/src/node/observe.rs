//! What an operator sees of a node: its counters exported through the `metrics` facade (the
//! application installs the exporter it wants: Prometheus, StatsD, ...), and a health check.
//! Spans on publish and receive, carrying the origin and sequence number, are made where
//! those happen (`outbox.rs`, `receive.rs`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::transport::{Transport, TransportError};

use super::*;

/// How often a node exports its counters.
pub(super) const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// A node's health, for an application's readiness or liveness probe, from
/// [`Node::health`](super::Node::health).
///
/// ```
/// use backplane::node::Health;
/// use std::time::{Duration, Instant};
///
/// fn ready(health: &Health) -> bool {
///     health.connected
///         && health.subscription_present
///         && health
///             .last_contact
///             .is_some_and(|at| at.elapsed() < Duration::from_secs(90))
/// }
/// let fresh = Health {
///     connected: true,
///     subscription_present: true,
///     last_receive: None,
///     last_contact: Some(Instant::now()),
/// };
/// assert!(ready(&fresh));
/// assert!(!ready(&Health::default()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The bus answered the node's last receive (with or without a message).
    pub connected: bool,
    /// The node's subscription existed at its last receive (the bus said "no subscription"
    /// when not; the node then opens it again).
    pub subscription_present: bool,
    /// When the node last took a message from the bus (events or heartbeats); `None`
    /// until the first.
    pub last_receive: Option<Instant>,
    /// When the bus last answered a receive; `None` until the first answer.
    pub last_contact: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            connected: false,
            subscription_present: true,
            last_receive: None,
            last_contact: None,
        }
    }
}

impl<T: Transport> Shared<T> {
    /// Notes the outcome of one receive call.
    pub(super) fn note_receive<D>(&self, outcome: &Result<Option<D>, TransportError>) {
        let mut health = lock(&self.health);
        let now = Instant::now();
        match outcome {
            Ok(received) => {
                health.connected = true;
                health.subscription_present = true;
                health.last_contact = Some(now);
                if received.is_some() {
                    health.last_receive = Some(now);
                }
            }
            Err(TransportError::NoSubscription(_)) => {
                // The bus answered: reachable, but the place is gone.
                health.connected = true;
                health.subscription_present = false;
                health.last_contact = Some(now);
            }
            Err(_) => health.connected = false,
        }
    }

    /// Sets the exported counters and gauges to the node's current values.
    pub(super) fn export(&self) {
        let node = self.id.as_str().to_string();
        let c = &self.counters;
        for (name, value) in [
            ("backplane_events_published_total", &c.published),
            ("backplane_events_received_total", &c.delivered),
            ("backplane_duplicates_suppressed_total", &c.duplicates),
            ("backplane_gaps_timed_out_total", &c.gaps_skipped),
            ("backplane_retries_total", &c.retries),
            ("backplane_messages_sent_total", &c.messages_sent),
            ("backplane_malformed_messages_total", &c.malformed),
        ] {
            metrics::counter!(name, "node" => node.clone()).absolute(value.load(Ordering::Relaxed));
        }
        let live = self.live().len();
        metrics::gauge!("backplane_live_nodes", "node" => node).set(live as f64);
    }
}

/// Exports the node's metrics every [`EXPORT_EVERY`] until it stops.
pub(super) async fn export_loop<T: Transport>(shared: Arc<Shared<T>>) {
    while !shared.stop.load(Ordering::Relaxed) {
        shared.export();
        tokio::time::sleep(EXPORT_EVERY).await;
    }
}

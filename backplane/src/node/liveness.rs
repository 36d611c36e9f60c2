//! Liveness: heartbeats, the live-node set, greeting new nodes, and the janitor that
//! closes the places of nodes gone silent.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::envelope::{Kind, Target};
use crate::ids::NodeId;
use crate::transport::{Audience, Transport};

use super::*;

impl<T: Transport> Node<T> {
    /// This node and the nodes heard of within `dead_after`.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.shared.live()
    }
}

impl<T: Transport> Shared<T> {
    /// This node and the nodes heard of within `dead_after`, sorted.
    pub(super) fn live(&self) -> Vec<NodeId> {
        let dead_after = self.config.dead_after;
        let mut live: Vec<NodeId> = lock(&self.seen)
            .iter()
            .filter(|(_, at)| at.elapsed() < dead_after)
            .map(|(n, _)| n.clone())
            .collect();
        live.push(self.id.clone());
        live.sort();
        live
    }
}

/// Sends one heartbeat to `node` alone.
pub(super) async fn greet<T: Transport>(shared: Arc<Shared<T>>, node: NodeId) {
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

/// Says "alive" every `heartbeat_interval`, and deletes the subscriptions of nodes unheard
/// of for `dead_after` (the janitor; every node runs it, deleting twice is harmless).
pub(super) async fn heartbeat_loop<T: Transport>(shared: Arc<Shared<T>>) {
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

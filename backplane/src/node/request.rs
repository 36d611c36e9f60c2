//! Requests to every node or one, and the replies collected within a timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::envelope::{Kind, Target};
use crate::ids::NodeId;
use crate::transport::{Audience, Transport};

use super::*;

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

/// A request waiting for answers.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) expected: Vec<NodeId>,
    pub(super) replies: Vec<(NodeId, Vec<u8>)>,
    pub(super) done: Arc<tokio::sync::Notify>,
}

impl<T: Transport> Node<T> {
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
}

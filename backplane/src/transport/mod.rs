//! The seam between the node runtime and a bus. Two implementations: [`ServiceBusTransport`]
//! (a topic, one subscription per node, broker-side rules) and [`MemoryTransport`] (one
//! process, same semantics) for single-node apps and fast tests.
//!
//! Semantics every transport keeps: a node never receives what it published to all; a
//! message published to one node reaches that node only; delivery is at least once (a
//! delivery not completed comes again); completing or abandoning names the delivery.

mod memory;
mod servicebus;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryTransport;
pub use servicebus::ServiceBusTransport;

use crate::ids::NodeId;

/// Transport failures, as the node runtime tells them apart, with whether trying again may
/// help. A transport's own errors travel as [`TransportError::Bus`] (see
/// [`TransportError::bus`]), so a new transport needs no change here; the error is cheap to
/// clone, so one failed send can be reported to every event it carried.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The node's place is gone (deleted as idle, or by hand): re-open it.
    #[error("the subscription of node {0} does not exist")]
    NoSubscription(NodeId),
    /// The payload is over the message size limit.
    #[error("a message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bus failed; its own error is the source.
    #[error("the bus failed")]
    Bus {
        /// What the transport reported.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
        /// Whether trying again later may succeed.
        transient: bool,
    },
    /// The node stopped before the operation completed.
    #[error("the node stopped")]
    Stopped,
    /// A node was started without a transport.
    #[error("a node needs at least one transport")]
    NoTransport,
}

impl TransportError {
    /// A failure of the bus itself, with whether trying again may help.
    pub fn bus(source: impl std::error::Error + Send + Sync + 'static, transient: bool) -> Self {
        TransportError::Bus {
            source: Arc::new(source),
            transient,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Bus { transient, .. } => *transient,
            TransportError::NoSubscription(_)
            | TransportError::TooLarge { .. }
            | TransportError::Stopped
            | TransportError::NoTransport => false,
        }
    }

    /// The transport's own error, when it is an `E` (a Service Bus client error, say).
    pub fn bus_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            TransportError::Bus { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// Transport result.
pub type TransportResult<T> = Result<T, TransportError>;

/// One received message and how to settle it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<H> {
    /// The bytes published (an envelope).
    pub payload: Vec<u8>,
    /// How many times it was delivered (1 the first time).
    pub delivery_count: u32,
    /// What settles it (opaque to the runtime); `None` when there is nothing to settle
    /// (received and deleted).
    pub handle: Option<H>,
}

/// Who a published message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every node but the publisher.
    Others,
    /// One node.
    Node(&'a NodeId),
}

/// A bus the node runtime can use. A new bus implements this trait in its own module;
/// nothing here names an implementation.
pub trait Transport: Send + Sync + 'static {
    /// What names a delivery for complete and abandon (a lock token, an id).
    type Handle: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The largest payload one message may carry.
    fn max_message_bytes(&self) -> usize;

    /// [`TransportError::TooLarge`] when `size` bytes exceed [`Transport::max_message_bytes`].
    fn check_size(&self, size: usize) -> TransportResult<()> {
        let limit = self.max_message_bytes();
        if size > limit {
            return Err(TransportError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Creates the node's place to receive (idempotent); an idle one is removed by the bus
    /// after `idle` (crash cleanup).
    fn open(
        &self,
        node: &NodeId,
        idle: Duration,
    ) -> impl Future<Output = TransportResult<()>> + Send;

    /// Removes a node's place (graceful shutdown, or the janitor for a dead node).
    fn close(&self, node: &NodeId) -> impl Future<Output = TransportResult<()>> + Send;

    /// The nodes that have a place now.
    fn nodes(&self) -> impl Future<Output = TransportResult<Vec<NodeId>>> + Send;

    /// Publishes one message from `origin`.
    fn publish(
        &self,
        origin: &NodeId,
        audience: Audience<'_>,
        payload: Vec<u8>,
    ) -> impl Future<Output = TransportResult<()>> + Send;

    /// Waits up to `timeout` for the next message for `node`, locked until settled.
    fn receive(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> impl Future<Output = TransportResult<Option<Delivery<Self::Handle>>>> + Send;

    /// Waits up to `timeout` for the next message for `node` and removes it at once (at most
    /// once: lost if the node crashes before handing it over).
    fn take(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> impl Future<Output = TransportResult<Option<Delivery<Self::Handle>>>> + Send;

    /// Done with a delivery.
    fn complete(
        &self,
        node: &NodeId,
        handle: Self::Handle,
    ) -> impl Future<Output = TransportResult<()>> + Send;

    /// Gives a delivery back for redelivery.
    fn abandon(
        &self,
        node: &NodeId,
        handle: Self::Handle,
    ) -> impl Future<Output = TransportResult<()>> + Send;
}

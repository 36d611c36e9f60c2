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
use std::time::Duration;

pub use memory::MemoryTransport;
pub use servicebus::ServiceBusTransport;

use crate::ids::NodeId;

/// Transport failures, with whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// From the Service Bus client.
    #[error("service bus call failed")]
    ServiceBus(#[from] crate::servicebus::Error),
    /// The node's subscription is gone (deleted as idle, or by hand): re-open it.
    #[error("the subscription of node {0} does not exist")]
    NoSubscription(NodeId),
    /// A packed send failed (the cause, as text, is shared by every event of the message).
    #[error("sending failed: {0}")]
    Failed(String),
    /// The payload is over the message size limit.
    #[error("a message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl TransportError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::ServiceBus(e) => e.is_transient(),
            TransportError::NoSubscription(_) | TransportError::TooLarge { .. } => false,
            TransportError::Failed(_) => true,
        }
    }
}

/// Transport result.
pub type TransportResult<T> = Result<T, TransportError>;

/// One received message and how to settle it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The bytes published (an envelope).
    pub payload: Vec<u8>,
    /// How many times it was delivered (1 the first time).
    pub delivery_count: u32,
    /// Settles it (opaque to the runtime).
    pub handle: DeliveryHandle,
}

/// Names a delivery for complete/abandon.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryHandle {
    /// Nothing to settle (received and deleted).
    None,
    /// A Service Bus peek-locked message.
    ServiceBus(Box<crate::servicebus::ReceivedMessage>),
    /// A memory delivery: node and delivery id.
    Memory(NodeId, u64),
}

/// Who a published message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every node but the publisher.
    Others,
    /// One node.
    Node(&'a NodeId),
}

/// A bus the node runtime can use.
pub trait Transport: Send + Sync + 'static {
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
    ) -> impl Future<Output = TransportResult<Option<Delivery>>> + Send;

    /// Waits up to `timeout` for the next message for `node` and removes it at once (at most
    /// once: lost if the node crashes before handing it over).
    fn take(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> impl Future<Output = TransportResult<Option<Delivery>>> + Send;

    /// Done with a delivery.
    fn complete(
        &self,
        node: &NodeId,
        handle: DeliveryHandle,
    ) -> impl Future<Output = TransportResult<()>> + Send;

    /// Gives a delivery back for redelivery.
    fn abandon(
        &self,
        node: &NodeId,
        handle: DeliveryHandle,
    ) -> impl Future<Output = TransportResult<()>> + Send;
}

//! Links: what an attach names (contract 3.1), the credit a receiver link grants, and what
//! the tasks that do a link's waiting report: one sends what a client's sender link
//! delivers, in order (`sending.rs`), and one takes messages for a client's receiver link
//! while it has credit (`receiving.rs`).

use std::sync::Mutex;

use fe2o3_amqp_types::definitions::{AmqpError, Error as AmqpErrorBody, ErrorCondition, LinkError};
use fe2o3_amqp_types::messaging::DeliveryState;
use fe2o3_amqp_types::primitives::Symbol;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::broker;
use crate::model::EntityPath;
use crate::sync::lock;

/// What a link's address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// `$cbs`.
    Cbs,
    /// `{entity}/$management`, with the entity's path.
    Management(String),
    /// A queue, topic, subscription or dead-letter subqueue.
    Entity(EntityPath),
}

impl Node {
    /// Classifies a node path (already through [`super::cbs::node_path`]).
    pub(crate) fn parse(path: &str) -> Option<Node> {
        if path.eq_ignore_ascii_case("$cbs") {
            return Some(Node::Cbs);
        }
        if let Some((entity, last)) = path.rsplit_once('/')
            && last.eq_ignore_ascii_case("$management")
        {
            return Some(Node::Management(entity.to_string()));
        }
        EntityPath::parse(path).ok().map(Node::Entity)
    }
}

/// An AMQP error with a condition and a description.
pub(crate) fn error(condition: ErrorCondition, description: impl Into<String>) -> AmqpErrorBody {
    AmqpErrorBody::new(condition, Some(description.into()), None)
}

/// A `com.microsoft:` condition.
pub(crate) fn microsoft(name: &str) -> ErrorCondition {
    ErrorCondition::Custom(Symbol::from(format!("com.microsoft:{name}")))
}

/// The AMQP error for a broker error (contract section 9).
pub(crate) fn broker_error(e: &broker::Error) -> AmqpErrorBody {
    use broker::Error as E;
    let condition = match e {
        E::NotFound { .. } => ErrorCondition::AmqpError(AmqpError::NotFound),
        E::Disabled { .. } => microsoft("entity-disabled"),
        E::TooLarge { .. } | E::PropertiesTooLarge { .. } => {
            ErrorCondition::LinkError(LinkError::MessageSizeExceeded)
        }
        E::QuotaExceeded { .. } => ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded),
        E::LockLost { .. } => microsoft("message-lock-lost"),
        E::Name(_) | E::Rule(_) | E::WrongKind { .. } => microsoft("argument-error"),
        E::Conflict { .. } => microsoft("entity-already-exists"),
        E::CreationOnly { .. } | E::ClockNotManual | E::ClockOutOfRange { .. } => {
            ErrorCondition::AmqpError(AmqpError::NotAllowed)
        }
        E::Missing { .. } | E::Render { .. } | E::Store(_) => {
            ErrorCondition::AmqpError(AmqpError::InternalError)
        }
    };
    let description = match e {
        // JS recognises a missing entity by this text (contract 3.3).
        E::NotFound { path, .. } => format!("The messaging entity '{path}' could not be found."),
        E::LockLost { .. } => "The lock supplied is invalid. Either the lock expired, or the \
                               message has already been removed from the queue."
            .to_string(),
        other => other.to_string(),
    };
    error(condition, description)
}

/// A receiver link's credit as the client grants it (AMQP 2.6.7), shared between the
/// connection task (flows, transfers written) and the link's task (messages taken).
#[derive(Debug, Default)]
pub(crate) struct Credit {
    state: Mutex<CreditState>,
    changed: Notify,
    /// Woken only for what a take waiting with credit reserved must answer at once: a
    /// drain, credit cut below what is reserved, a close. A flow that only grants more
    /// (fe2o3 and the SDKs top credit up after each message) leaves the take waiting,
    /// still parked for a hand-off.
    interrupt: Notify,
}

#[derive(Debug, Default)]
struct CreditState {
    /// The client's delivery-count plus its link-credit: deliveries up to here are allowed.
    limit: u32,
    /// Transfers written.
    delivery_count: u32,
    /// Messages taken but not yet written.
    reserved: u32,
    /// The client asked to use up the credit now or give it back.
    drain: bool,
    /// The link is gone.
    closed: bool,
}

impl CreditState {
    /// Deliveries the client allows from here, reserved ones included.
    fn granted(&self) -> u32 {
        let granted = self.limit.wrapping_sub(self.delivery_count);
        // More than 2^31 means the client's count is behind ours: no credit.
        if granted > u32::MAX / 2 { 0 } else { granted }
    }

    fn available(&self) -> u32 {
        self.granted().saturating_sub(self.reserved)
    }
}

impl Credit {
    /// Applies a flow: the client's delivery-count (or ours, before it has one) and credit.
    pub(crate) fn flow(&self, delivery_count: Option<u32>, link_credit: u32, drain: bool) {
        let mut s = lock(&self.state);
        let base = delivery_count.unwrap_or(s.delivery_count);
        s.limit = base.wrapping_add(link_credit);
        s.drain = drain;
        let interrupt = drain || s.granted() < s.reserved;
        drop(s);
        self.changed.notify_waiters();
        if interrupt {
            self.interrupt.notify_waiters();
        }
    }

    /// Waits for credit and reserves up to `most` units of it: `Some((units, draining))`,
    /// or `None` once closed. With `leave_half`, at most half of what is available (but
    /// one unit at least), so that a take after this one can reserve too.
    pub(crate) async fn reserve(&self, most: u32, leave_half: bool) -> Option<(u32, bool)> {
        loop {
            let changed = self.changed.notified();
            {
                let mut s = lock(&self.state);
                if s.closed {
                    return None;
                }
                let available = s.available();
                let share = if leave_half {
                    available.div_ceil(2)
                } else {
                    available
                };
                let units = share.min(most);
                if units > 0 {
                    s.reserved += units;
                    return Some((units, s.drain));
                }
            }
            changed.await;
        }
    }

    /// Gives back reserved units that were not used.
    pub(crate) fn unreserve(&self, units: u32) {
        let mut s = lock(&self.state);
        s.reserved = s.reserved.saturating_sub(units);
    }

    /// Takes a unit for a transfer written now (reserved by the link's task, or not, for
    /// replies the connection writes itself): `false` when there is none.
    pub(crate) fn spend(&self, reserved: bool) -> bool {
        let mut s = lock(&self.state);
        if reserved {
            s.reserved = s.reserved.saturating_sub(1);
        } else if s.available() == 0 {
            return false;
        }
        s.delivery_count = s.delivery_count.wrapping_add(1);
        true
    }

    /// When draining and nothing more will come: ends the drain by using up the credit, and
    /// returns the delivery-count for the flow that tells the client so.
    pub(crate) fn finish_drain(&self, force: bool) -> Option<u32> {
        let mut s = lock(&self.state);
        if !s.drain || s.reserved > 0 || (!force && s.available() > 0) {
            return None;
        }
        s.delivery_count = s.limit;
        s.drain = false;
        let count = s.delivery_count;
        drop(s);
        self.changed.notify_waiters();
        Some(count)
    }

    /// Whether the client asked to drain the credit.
    pub(crate) fn draining(&self) -> bool {
        lock(&self.state).drain
    }

    /// Our delivery-count and the credit left, for a flow.
    pub(crate) fn snapshot(&self) -> (u32, u32) {
        let s = lock(&self.state);
        (s.delivery_count, s.available())
    }

    /// Completes at the next flow, drain end or close.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Completes at the next drain, cut below the reserved credit, or close: what a take
    /// waiting with reserved credit must stop for.
    pub(crate) fn interrupted(&self) -> tokio::sync::futures::Notified<'_> {
        self.interrupt.notified()
    }

    /// The link is gone: its task stops.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_waiters();
        self.interrupt.notify_waiters();
    }
}

/// What a link's task tells its connection. `serial` names the link, so a report that
/// arrives after its link is gone (and its handle reused) is recognised and dropped.
#[derive(Debug)]
pub(crate) enum Event {
    /// Deliveries from the client were sent to the broker (one write): the state to answer
    /// each with, in delivery order.
    Sent {
        channel: u16,
        serial: u64,
        outcomes: Vec<Outcome>,
    },
    /// A message taken for a receiver link, with one unit of its credit reserved.
    Take {
        channel: u16,
        serial: u64,
        payload: Vec<u8>,
        lock: Option<Lock>,
    },
    /// A draining receiver link found nothing more.
    Drained { channel: u16, serial: u64 },
    /// The link's entity failed (deleted, disabled): detach it with this error.
    Failed {
        channel: u16,
        serial: u64,
        error: AmqpErrorBody,
    },
    /// A management response, for the reply link `serial` names.
    Reply {
        channel: u16,
        serial: u64,
        payload: Vec<u8>,
    },
    /// Settlements were applied (or not): for each delivery id, the state to answer the
    /// client's disposition with.
    Settled {
        channel: u16,
        answers: Vec<(u32, DeliveryState)>,
    },
}

/// What became of one delivery of a client's sender link.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) delivery_id: u32,
    /// The client sent it settled: nothing answers it.
    pub(crate) settled: bool,
    pub(crate) state: DeliveryState,
}

/// A peek-lock delivery's lock.
#[derive(Debug, Clone)]
pub(crate) struct Lock {
    /// The lock token (the delivery tag, in .NET byte order).
    pub(crate) token: Uuid,
}

/// One delivery of a client's sender link, complete.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) delivery_id: u32,
    /// The client settled it (sent pre-settled): no disposition answers it.
    pub(crate) settled: bool,
    pub(crate) format: u32,
    pub(crate) payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::Credit;

    /// Whether `interrupted()` fires across `change`.
    fn interrupts(credit: &Credit, change: impl FnOnce(&Credit)) -> bool {
        let interrupted = credit.interrupted();
        tokio::pin!(interrupted);
        interrupted.as_mut().enable();
        change(credit);
        interrupted.now_or_never().is_some()
    }

    #[tokio::test]
    async fn only_what_a_waiting_take_must_answer_interrupts_it() {
        let credit = Credit::default();
        credit.flow(Some(0), 10, false);
        assert_eq!(credit.reserve(4, false).await, Some((4, false)));
        // Topping credit up (what clients do after each message) leaves the take waiting.
        assert!(!interrupts(&credit, |c| c.flow(Some(0), 20, false)));
        // Still at least what is reserved: no interrupt either.
        assert!(!interrupts(&credit, |c| c.flow(Some(0), 4, false)));
        // Cut below what is reserved, a drain, a close: each ends the wait.
        assert!(interrupts(&credit, |c| c.flow(Some(0), 2, false)));
        assert!(interrupts(&credit, |c| c.flow(Some(0), 10, true)));
        assert!(interrupts(&credit, Credit::close));
    }
}

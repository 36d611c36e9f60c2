//! Attaching links (contract 3.1-3.3): what the address names, whether a token covers it,
//! and the mirror attach (or the error detach right after it).

use std::sync::Arc;

use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorBody, ErrorCondition, Handle, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::TargetArchetype;
use fe2o3_amqp_types::performatives::Attach;
use tokio::sync::mpsc;

use super::{Connection, LINK_CREDIT, Link, Task, Work, write};
use crate::amqp::MAX_FRAME_SIZE;
use crate::amqp::io::IoError;
use crate::amqp::link::{self, Credit, Node};
use crate::amqp::{cbs, sending};
use crate::auth::Right;
use crate::broker::{ReceiveMode, ReceiveTarget};
use fe2o3_amqp::frames::amqp::FrameBody;

/// Most links one connection holds, across its sessions (each costs a task or a buffer).
const MAX_LINKS: usize = 4096;

/// What an attach becomes.
enum Plan {
    SendTo { path: String, max: u64 },
    Requests(Node),
    ReceiveFrom(ReceiveTarget, ReceiveMode),
    Replies(Node),
}

fn target_address(a: &Attach) -> Option<String> {
    match a.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        #[allow(unreachable_patterns)] // transactions' coordinator, with fe2o3's feature
        _ => None,
    }
}

fn not_allowed(description: String) -> AmqpErrorBody {
    link::error(
        ErrorCondition::AmqpError(AmqpError::NotAllowed),
        description,
    )
}

impl Connection {
    fn authorize(&self, path: &str, right: Right) -> Result<(), AmqpErrorBody> {
        self.tokens
            .authorize(&self.context.auth, &self.principal, path, right)
            .map_err(|d| link::error(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess), d))
    }

    fn plan(&self, client_sends: bool, path: &str, a: &Attach) -> Result<Plan, AmqpErrorBody> {
        let links: usize = self.sessions.values().map(|s| s.links.len()).sum();
        if links >= MAX_LINKS {
            return Err(link::error(
                ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded),
                format!("A connection holds at most {MAX_LINKS} links."),
            ));
        }
        let not_found = || {
            link::error(
                ErrorCondition::AmqpError(AmqpError::NotFound),
                format!("The messaging entity '{path}' could not be found."),
            )
        };
        let node = Node::parse(path).ok_or_else(not_found)?;
        match node {
            Node::Cbs if client_sends => Ok(Plan::Requests(Node::Cbs)),
            Node::Cbs => Ok(Plan::Replies(Node::Cbs)),
            Node::Management(_) => {
                // Which right depends on the operation; any of them lets the link attach.
                self.authorize(path, Right::Listen)
                    .or_else(|_| self.authorize(path, Right::Send))?;
                Ok(if client_sends {
                    Plan::Requests(node)
                } else {
                    Plan::Replies(node)
                })
            }
            Node::Entity(p) if client_sends => {
                if !p.is_sendable() {
                    return Err(not_allowed(format!(
                        "Cannot send to '{path}': send to its queue or topic."
                    )));
                }
                self.authorize(path, Right::Send)?;
                let max = self
                    .context
                    .broker
                    .message_size_limit(&p.entity)
                    .ok_or_else(not_found)?;
                Ok(Plan::SendTo {
                    path: p.entity,
                    max,
                })
            }
            Node::Entity(p) => {
                self.authorize(path, Right::Listen)?;
                let target = ReceiveTarget::from(&p);
                self.context
                    .broker
                    .check_receivable(&target)
                    .map_err(|e| link::broker_error(&e))?;
                let mode = if a.snd_settle_mode == SenderSettleMode::Settled {
                    ReceiveMode::ReceiveAndDelete
                } else {
                    ReceiveMode::PeekLock
                };
                Ok(Plan::ReceiveFrom(target, mode))
            }
        }
    }

    /// Answers an attach: the mirror attach with the client's termini echoed, then either the
    /// link's start (credit for a sender, a task for a receiver) or an error detach.
    pub(super) async fn attach(&mut self, channel: u16, a: Attach) -> Result<(), IoError> {
        if !self.sessions.contains_key(&channel) {
            return Ok(());
        }
        let handle = a.handle.0;
        let client_sends = a.role == Role::Sender;
        let address = if client_sends {
            target_address(&a)
        } else {
            a.source.as_ref().and_then(|s| s.address.clone())
        };
        let path = cbs::node_path(address.as_deref().unwrap_or(""));
        let plan = self.plan(client_sends, &path, &a);
        let mut reply = Attach {
            name: a.name.clone(),
            handle: Handle(handle),
            role: if client_sends {
                Role::Receiver
            } else {
                Role::Sender
            },
            snd_settle_mode: a.snd_settle_mode.clone(),
            rcv_settle_mode: a.rcv_settle_mode.clone(),
            source: a.source.clone(),
            target: a.target.clone(),
            unsettled: None,
            incomplete_unsettled: false,
            // Python detaches when a broker sender declares none (contract 3.3).
            initial_delivery_count: (!client_sends).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(error) => {
                tracing::debug!(%path, error = ?error.description, "attach refused");
                // As Azure: an attach with no termini, and the error detach right after it
                // in the same write. Python reports the detach's condition only this way;
                // with termini echoed it counts the link as open and sends on it.
                reply.source = None;
                reply.target = None;
                write(&mut self.out, channel, FrameBody::Attach(reply)).await?;
                return self.detach_with(channel, handle, error).await;
            }
        };
        if let Plan::SendTo { max, .. } = &plan {
            reply.max_message_size = Some(*max);
        }
        write(&mut self.out, channel, FrameBody::Attach(reply)).await?;
        let serial = self.serial();
        let delivery_count = a.initial_delivery_count.unwrap_or(0);
        let (role, grants, max) = match plan {
            Plan::SendTo { path, max } => {
                let (tx, rx) = mpsc::channel(LINK_CREDIT as usize);
                let task = tokio::spawn(sending::send_task(
                    self.context.clone(),
                    path,
                    rx,
                    self.events.clone(),
                    channel,
                    serial,
                ));
                let role = Work::SendTo {
                    deliveries: tx,
                    _task: Task(task),
                };
                (role, true, max)
            }
            Plan::Requests(node) => (Work::Requests { node }, true, u64::from(MAX_FRAME_SIZE) * 4),
            Plan::ReceiveFrom(target, mode) => {
                let credit = Arc::new(Credit::default());
                let task = tokio::spawn(crate::amqp::receiving::receive_task(
                    self.context.clone(),
                    target.clone(),
                    mode,
                    credit.clone(),
                    self.events.clone(),
                    channel,
                    serial,
                ));
                let role = Work::ReceiveFrom {
                    credit,
                    target,
                    _task: Task(task),
                };
                (role, false, 0)
            }
            Plan::Replies(node) => {
                let role = Work::Replies {
                    credit: Arc::new(Credit::default()),
                    node,
                    address: target_address(&a),
                    queue: Default::default(),
                    next_tag: 0,
                };
                (role, false, 0)
            }
        };
        let link = Link {
            serial,
            name: a.name,
            role,
            partial: None,
            credit_left: if grants { LINK_CREDIT } else { 0 },
            outstanding: 0,
            delivery_count,
            max_message_size: max,
        };
        if let Some(session) = self.sessions.get_mut(&channel) {
            // A second attach on a live handle replaces the first (its task stops).
            session.links.insert(handle, link);
        }
        if grants {
            self.link_flow(channel, handle, delivery_count, LINK_CREDIT, false)
                .await?;
        }
        Ok(())
    }
}

//! Requests to `$cbs` and `$management` nodes: each is answered on the reply link the
//! request names (contract 7.1): by its `reply-to` address, then by link name, then the
//! node's reply link on the same session, then on the connection.

use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition, Role};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Rejected};

use super::{Connection, LINK_CREDIT, Partial, Work};
use crate::amqp::io::IoError;
use crate::amqp::link::{self, Event, Node};
use crate::amqp::{cbs, convert, management};

impl Connection {
    /// Answers a complete request delivery.
    pub(super) async fn request(
        &mut self,
        channel: u16,
        handle: u32,
        node: Node,
        partial: Partial,
    ) -> Result<(), IoError> {
        self.top_up(channel, handle).await?;
        let request = convert::read(&partial.bytes);
        if !partial.settled {
            let state = match &request {
                Ok(_) => DeliveryState::Accepted(Accepted {}),
                Err(e) => DeliveryState::Rejected(Rejected {
                    error: Some(link::error(
                        ErrorCondition::AmqpError(AmqpError::DecodeError),
                        e.to_string(),
                    )),
                }),
            };
            self.disposition_out(channel, Role::Receiver, partial.delivery_id, state)
                .await?;
        }
        let Ok(request) = request else {
            return Ok(());
        };
        let reply_to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
        let Some((reply_channel, reply_handle)) = self.route(channel, &node, reply_to.as_deref())
        else {
            return Ok(());
        };
        let response = match &node {
            Node::Cbs => cbs::answer(&mut self.tokens, &self.context.auth, &request),
            Node::Management(entity) => {
                let node_path = format!("{entity}/$management");
                let right = management::right_of(&management::operation(&request));
                match self
                    .tokens
                    .authorize(&self.context.auth, &self.principal, &node_path, right)
                {
                    Ok(()) => {
                        // The operation waits on the broker (a durable write): it runs
                        // beside the connection, and its response comes back as an event.
                        let serial = self
                            .sessions
                            .get(&reply_channel)
                            .and_then(|s| s.links.get(&reply_handle))
                            .map(|l| l.serial);
                        let (context, events) = (self.context.clone(), self.events.clone());
                        let entity = entity.clone();
                        if let Some(serial) = serial {
                            tokio::spawn(async move {
                                let response = management::answer(context, entity, request).await;
                                if let Some(payload) = cbs::encoded(&response) {
                                    let reply = Event::Reply {
                                        channel: reply_channel,
                                        serial,
                                        payload,
                                    };
                                    let _ = events.send(reply).await;
                                }
                            });
                        }
                        return Ok(());
                    }
                    Err(description) => management::response(
                        &request,
                        401,
                        &description,
                        Some("amqp:unauthorized-access"),
                    ),
                }
            }
            Node::Entity(_) => return Ok(()),
        };
        let Some(bytes) = cbs::encoded(&response) else {
            return Ok(());
        };
        {
            if let Some(Work::Replies { queue, .. }) = self
                .link_mut(reply_channel, reply_handle)
                .map(|l| &mut l.role)
            {
                queue.push_back(bytes);
            }
            self.send_replies(reply_channel, reply_handle).await?;
        }
        Ok(())
    }

    /// Grants a request link its credit again when half is used.
    async fn top_up(&mut self, channel: u16, handle: u32) -> Result<(), IoError> {
        let Some(link) = self.link_mut(channel, handle) else {
            return Ok(());
        };
        if link.credit_left >= LINK_CREDIT / 2 {
            return Ok(());
        }
        link.credit_left = LINK_CREDIT;
        let count = link.delivery_count;
        self.link_flow(channel, handle, count, LINK_CREDIT, false)
            .await
    }

    /// The reply link for a request on `channel` to `node`.
    fn route(&self, channel: u16, node: &Node, reply_to: Option<&str>) -> Option<(u16, u32)> {
        let replies = || {
            self.sessions.iter().flat_map(|(c, s)| {
                s.links.iter().filter_map(move |(h, l)| match &l.role {
                    Work::Replies {
                        node: n, address, ..
                    } => Some((*c, *h, n, address.as_deref(), l.name.as_str())),
                    _ => None,
                })
            })
        };
        if let Some(to) = reply_to {
            let found = replies()
                .find(|r| r.3 == Some(to))
                .or_else(|| replies().find(|r| r.4 == to));
            if let Some(r) = found {
                return Some((r.0, r.1));
            }
        }
        replies()
            .find(|r| r.0 == channel && r.2 == node)
            .or_else(|| replies().find(|r| r.2 == node))
            .map(|r| (r.0, r.1))
    }
}

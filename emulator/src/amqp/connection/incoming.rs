//! Transfers from the client: deliveries to an entity or a request node, assembled from
//! their frames within the link credit granted and the entity's size limit.

use fe2o3_amqp_types::definitions::{ErrorCondition, LinkError};
use fe2o3_amqp_types::performatives::Transfer;

use super::{Connection, INCOMING_WINDOW, Partial, Work};
use crate::amqp::io::IoError;
use crate::amqp::link;

impl Connection {
    /// Counts a transfer frame against the session's window, advertising it again when
    /// half is used.
    pub(super) async fn count_incoming(&mut self, channel: u16) -> Result<(), IoError> {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        session.incoming_left = session.incoming_left.saturating_sub(1);
        if session.incoming_left < INCOMING_WINDOW / 2 {
            self.session_flow(channel).await?;
        }
        Ok(())
    }

    /// A transfer from the client: part of a delivery to an entity or a request node.
    pub(super) async fn transfer(
        &mut self,
        channel: u16,
        t: Transfer,
        payload: &[u8],
    ) -> Result<(), IoError> {
        self.count_incoming(channel).await?;
        let handle = t.handle.0;
        let Some(link) = self.link_mut(channel, handle) else {
            return Ok(());
        };
        if !matches!(link.role, Work::SendTo { .. } | Work::Requests { .. }) {
            return Ok(());
        }
        if link.partial.is_none() {
            let Some(delivery_id) = t.delivery_id else {
                return Err(IoError::Protocol(
                    "a first transfer without delivery-id".into(),
                ));
            };
            link.credit_left = link.credit_left.saturating_sub(1);
            link.delivery_count = link.delivery_count.wrapping_add(1);
            link.partial = Some(Partial {
                delivery_id,
                settled: t.settled.unwrap_or(false),
                format: t.message_format.unwrap_or(0),
                bytes: Vec::new(),
            });
        }
        if t.aborted {
            link.partial = None;
            return Ok(());
        }
        let max = link.max_message_size;
        let Some(partial) = link.partial.as_mut() else {
            return Ok(());
        };
        partial.bytes.extend_from_slice(payload);
        if partial.bytes.len() as u64 > max {
            let error = link::error(
                ErrorCondition::LinkError(LinkError::MessageSizeExceeded),
                format!("The message is larger than the entity's limit of {max} bytes."),
            );
            return self.detach_with(channel, handle, error).await;
        }
        if t.more {
            return Ok(());
        }
        let Some(partial) = link.partial.take() else {
            return Ok(());
        };
        match &link.role {
            Work::SendTo { deliveries, .. } => {
                link.outstanding += 1;
                let incoming = link::Incoming {
                    delivery_id: partial.delivery_id,
                    settled: partial.settled,
                    format: partial.format,
                    payload: partial.bytes,
                };
                if deliveries.try_send(incoming).is_err() {
                    let error = link::error(
                        ErrorCondition::LinkError(LinkError::TransferLimitExceeded),
                        "More deliveries than the link credit allows.",
                    );
                    return self.detach_with(channel, handle, error).await;
                }
                Ok(())
            }
            Work::Requests { node } => {
                let node = node.clone();
                self.request(channel, handle, node, partial).await
            }
            _ => Ok(()),
        }
    }
}

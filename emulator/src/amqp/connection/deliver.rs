//! Deliveries out (transfers within the session window and the link's credit, split to the
//! client's max-frame-size) and settlements in (contract 6.3): the client's disposition
//! is applied to the broker, then answered with the state that was applied.

use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp_types::definitions::{Handle, Role};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Rejected, Released};
use fe2o3_amqp_types::performatives::{Disposition, Transfer};
use fe2o3_amqp_types::primitives::{Symbol, Value};
use uuid::Uuid;

use super::{Connection, LINK_CREDIT, Pending, Unsettled, Work, write};
use crate::amqp::io::IoError;
use crate::amqp::link::{self, Event};
use crate::amqp::settling;
use crate::broker::Settle;
use crate::model::message::DeadLetter;

/// Bytes of a transfer frame that are not payload: frame header and performative (a
/// 16-byte tag and small numbers), rounded up.
const TRANSFER_OVERHEAD: usize = 128;
/// Most deliveries one disposition settles (a range is `first..=last`).
const MAX_RANGE: u32 = 10_000;

/// What a client's settlement asks for: apply this, then answer with that state.
struct Action(Settle, DeliveryState);

fn info_text(info: Option<&fe2o3_amqp_types::definitions::Fields>, key: &str) -> Option<String> {
    match info?.get(&Symbol::from(key))? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn action(state: Option<&DeliveryState>) -> Action {
    match state {
        None | Some(DeliveryState::Accepted(_)) => {
            Action(Settle::Complete, DeliveryState::Accepted(Accepted {}))
        }
        // undeliverable-here: defer (contract 6.3).
        Some(DeliveryState::Modified(m)) if m.undeliverable_here == Some(true) => {
            Action(Settle::Defer, DeliveryState::Modified(m.clone()))
        }
        Some(DeliveryState::Modified(m)) => {
            Action(Settle::Unlock, DeliveryState::Modified(m.clone()))
        }
        Some(DeliveryState::Rejected(r)) => {
            let dead_letter = r
                .error
                .as_ref()
                .filter(|e| e.condition == link::microsoft("dead-letter"));
            let applied = DeliveryState::Rejected(Rejected { error: None });
            match dead_letter {
                Some(e) => {
                    let info = e.info.as_deref();
                    let description = info_text(info, "DeadLetterErrorDescription")
                        .or_else(|| e.description.clone())
                        .unwrap_or_default();
                    let reason = info_text(info, "DeadLetterReason").unwrap_or_default();
                    Action(
                        Settle::DeadLetter(DeadLetter {
                            reason,
                            description,
                        }),
                        applied,
                    )
                }
                None => Action(Settle::Unlock, applied),
            }
        }
        Some(_) => Action(Settle::Unlock, DeliveryState::Released(Released {})),
    }
}

/// Runs of consecutive delivery ids with equal states, in order, each at most
/// [`MAX_RANGE`] long: `(first, last, state)`.
fn ranges(answers: Vec<(u32, DeliveryState)>) -> Vec<(u32, u32, DeliveryState)> {
    let mut runs: Vec<(u32, u32, DeliveryState)> = Vec::new();
    for (id, state) in answers {
        match runs.last_mut() {
            Some((first, last, s))
                // Never across the wrap of delivery ids: clients read `first..=last`.
                if last.checked_add(1) == Some(id) && *s == state && id - *first < MAX_RANGE =>
            {
                *last = id;
            }
            _ => runs.push((id, id, state)),
        }
    }
    runs
}

impl Connection {
    /// Handles what a link task reports.
    pub(super) async fn on_event(&mut self, event: Event) -> Result<(), IoError> {
        match event {
            Event::Sent {
                channel,
                serial,
                outcomes,
            } => {
                let Some(session) = self.sessions.get_mut(&channel) else {
                    return Ok(());
                };
                let Some((handle, link)) = session.by_serial(serial) else {
                    return Ok(());
                };
                link.outstanding = link.outstanding.saturating_sub(outcomes.len() as u32);
                let refill = (link.credit_left + link.outstanding < LINK_CREDIT / 2).then(|| {
                    link.credit_left = LINK_CREDIT - link.outstanding;
                    (link.delivery_count, link.credit_left)
                });
                let answers = outcomes
                    .into_iter()
                    .filter(|o| !o.settled)
                    .map(|o| (o.delivery_id, o.state))
                    .collect();
                self.dispositions_out(channel, Role::Receiver, answers)
                    .await?;
                if let Some((count, credit)) = refill {
                    self.link_flow(channel, handle, count, credit, false)
                        .await?;
                }
            }
            Event::Take {
                channel,
                serial,
                payload,
                lock,
            } => {
                let Some((handle, link)) = self.by_serial(channel, serial) else {
                    // The link is gone: a lock simply expires.
                    return Ok(());
                };
                let Work::ReceiveFrom { credit, target, .. } = &link.role else {
                    return Ok(());
                };
                credit.spend(true);
                let credit = credit.clone();
                let (tag, unsettled) = match lock {
                    Some(lock) => (
                        lock.token.to_bytes_le().to_vec(),
                        Some(Unsettled {
                            serial,
                            lock,
                            target: target.clone(),
                        }),
                    ),
                    None => (Uuid::new_v4().to_bytes_le().to_vec(), None),
                };
                let pending = Pending {
                    handle,
                    tag,
                    settled: unsettled.is_none(),
                    payload,
                    unsettled,
                };
                if let Some(session) = self.sessions.get_mut(&channel) {
                    session.pending.push_back(pending);
                }
                self.flush_pending(channel).await?;
                if let Some(count) = credit.finish_drain(false) {
                    self.link_flow(channel, handle, count, 0, true).await?;
                }
            }
            Event::Drained { channel, serial } => {
                let Some((handle, link)) = self.by_serial(channel, serial) else {
                    return Ok(());
                };
                if let Work::ReceiveFrom { credit, .. } = &link.role
                    && let Some(count) = credit.finish_drain(true)
                {
                    self.link_flow(channel, handle, count, 0, true).await?;
                }
            }
            Event::Failed {
                channel,
                serial,
                error,
            } => {
                let handle = self.by_serial(channel, serial).map(|(h, _)| h);
                if let Some(handle) = handle {
                    self.detach_with(channel, handle, error).await?;
                }
            }
            Event::Reply {
                channel,
                serial,
                payload,
            } => {
                let Some((handle, link)) = self.by_serial(channel, serial) else {
                    return Ok(());
                };
                if let Work::Replies { queue, .. } = &mut link.role {
                    queue.push_back(payload);
                }
                self.send_replies(channel, handle).await?;
            }
            Event::Settled { channel, answers } => {
                self.dispositions_out(channel, Role::Sender, answers)
                    .await?;
            }
        }
        Ok(())
    }

    /// A settled disposition of ours for one delivery.
    pub(super) async fn disposition_out(
        &mut self,
        channel: u16,
        role: Role,
        delivery_id: u32,
        state: DeliveryState,
    ) -> Result<(), IoError> {
        self.dispositions_out(channel, role, vec![(delivery_id, state)])
            .await
    }

    /// Settled dispositions of ours for these deliveries: one frame per run of consecutive
    /// delivery ids answered with the same state (`first..=last`, as every client reads).
    pub(super) async fn dispositions_out(
        &mut self,
        channel: u16,
        role: Role,
        answers: Vec<(u32, DeliveryState)>,
    ) -> Result<(), IoError> {
        if !self.sessions.contains_key(&channel) {
            return Ok(());
        }
        for (first, last, state) in ranges(answers) {
            let d = Disposition {
                role: role.clone(),
                first,
                last: (last != first).then_some(last),
                settled: true,
                state: Some(state),
                batchable: false,
            };
            write(&mut self.out, channel, FrameBody::Disposition(d)).await?;
        }
        Ok(())
    }

    /// Writes waiting transfers while the session's window allows.
    pub(super) async fn flush_pending(&mut self, channel: u16) -> Result<(), IoError> {
        let chunk = (self.max_frame_out as usize)
            .saturating_sub(TRANSFER_OVERHEAD)
            .max(256);
        loop {
            let Some(session) = self.sessions.get_mut(&channel) else {
                return Ok(());
            };
            let Some(front) = session.pending.front() else {
                return Ok(());
            };
            let frames = front.payload.len().div_ceil(chunk).max(1) as u32;
            if session.remote_incoming_window < frames {
                return Ok(());
            }
            let Some(p) = session.pending.pop_front() else {
                return Ok(());
            };
            let delivery_id = session.next_delivery_id;
            session.next_delivery_id = delivery_id.wrapping_add(1);
            if let Some(u) = p.unsettled {
                session.unsettled.insert(delivery_id, u);
            }
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(frames);
            session.remote_incoming_window -= frames;
            let parts: Vec<&[u8]> = if p.payload.is_empty() {
                vec![&[]]
            } else {
                p.payload.chunks(chunk).collect()
            };
            let last = parts.len() - 1;
            for (i, part) in parts.into_iter().enumerate() {
                let transfer = Transfer {
                    handle: Handle(p.handle),
                    delivery_id: Some(delivery_id),
                    delivery_tag: Some(p.tag.clone().into()),
                    message_format: Some(0),
                    settled: Some(p.settled),
                    more: i < last,
                    rcv_settle_mode: None,
                    state: None,
                    resume: false,
                    aborted: false,
                    batchable: false,
                };
                let body = FrameBody::Transfer {
                    performative: transfer,
                    payload: bytes::Bytes::copy_from_slice(part),
                };
                write(&mut self.out, channel, body).await?;
            }
        }
    }

    /// Sends the queued responses of a reply link while it has credit.
    pub(super) async fn send_replies(&mut self, channel: u16, handle: u32) -> Result<(), IoError> {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let Some(link) = session.links.get_mut(&handle) else {
            return Ok(());
        };
        let Work::Replies {
            credit,
            queue,
            next_tag,
            ..
        } = &mut link.role
        else {
            return Ok(());
        };
        let mut ready = Vec::new();
        while !queue.is_empty() && credit.spend(false) {
            if let Some(payload) = queue.pop_front() {
                *next_tag = next_tag.wrapping_add(1);
                ready.push(Pending {
                    handle,
                    tag: next_tag.to_be_bytes().to_vec(),
                    settled: true,
                    payload,
                    unsettled: None,
                });
            }
        }
        session.pending.extend(ready);
        self.flush_pending(channel).await
    }

    /// The client settles deliveries of ours: each is applied by a task, which reports the
    /// state to answer with ([`Event::Settled`]) when the client waits for it.
    pub(super) async fn disposition(
        &mut self,
        channel: u16,
        d: Disposition,
    ) -> Result<(), IoError> {
        if d.role != Role::Receiver {
            // The client settling its own deliveries: ours were answered settled already.
            return Ok(());
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let span = d
            .last
            .unwrap_or(d.first)
            .wrapping_sub(d.first)
            .min(MAX_RANGE);
        let mut unknown = Vec::new();
        let mut requests = Vec::new();
        for i in 0..=span {
            let id = d.first.wrapping_add(i);
            let Some(u) = session.unsettled.remove(&id) else {
                if !d.settled {
                    unknown.push(id);
                }
                continue;
            };
            let Action(how, applied) = action(d.state.as_ref());
            requests.push(settling::Request {
                channel,
                delivery_id: id,
                target: u.target,
                token: u.lock.token,
                how,
                applied,
                answer: !d.settled,
            });
        }
        for request in requests {
            if self.settler.send(request).await.is_err() {
                return Err(IoError::Protocol("the settling task stopped".into()));
            }
        }
        for id in unknown {
            let lost = DeliveryState::Rejected(Rejected {
                error: Some(link::broker_error(&crate::broker::Error::LockLost {
                    token: String::new(),
                })),
            });
            self.disposition_out(channel, Role::Sender, id, lost)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> DeliveryState {
        DeliveryState::Accepted(Accepted {})
    }

    fn released() -> DeliveryState {
        DeliveryState::Released(Released {})
    }

    #[test]
    fn consecutive_ids_with_one_state_share_a_disposition() {
        let answers = vec![
            (4, accepted()),
            (5, accepted()),
            (6, released()),
            (7, accepted()),
            (9, accepted()),
        ];
        assert_eq!(
            ranges(answers),
            vec![
                (4, 5, accepted()),
                (6, 6, released()),
                (7, 7, accepted()),
                (9, 9, accepted()),
            ]
        );
    }

    #[test]
    fn a_range_never_wraps_nor_outgrows_its_limit() {
        let wrap = vec![
            (u32::MAX - 1, accepted()),
            (u32::MAX, accepted()),
            (0, accepted()),
        ];
        assert_eq!(
            ranges(wrap),
            vec![(u32::MAX - 1, u32::MAX, accepted()), (0, 0, accepted())]
        );
        let long: Vec<_> = (0..MAX_RANGE + 1).map(|id| (id, accepted())).collect();
        assert_eq!(
            ranges(long),
            vec![
                (0, MAX_RANGE - 1, accepted()),
                (MAX_RANGE, MAX_RANGE, accepted())
            ]
        );
    }
}

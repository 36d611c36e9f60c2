//! Publishing: events packed into as few messages as fit, per partition, in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::envelope::{self, Envelope, Event, Kind, Target};
use crate::ids::{NodeId, RoomName};
use crate::transport::{Audience, Transport, TransportError};

use super::*;

/// Broadcasts waiting to be packed, each with who waits for its acknowledgement.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) queue: Vec<(
        Event,
        tokio::sync::oneshot::Sender<Result<(), TransportError>>,
    )>,
    /// Whether a flush task is running (it sends until the queue is empty).
    pub(super) sending: bool,
}

impl<T: Transport> Node<T> {
    /// Publishes to every other node: clients in any of `rooms` (everyone when empty) and in
    /// none of `except`. The node never receives its own broadcast.
    ///
    /// # Errors
    ///
    /// [`PublishError::TooLarge`] for an event over the limit, [`PublishError::Transport`].
    pub async fn publish(
        &self,
        rooms: Vec<RoomName>,
        except: Vec<RoomName>,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        let partition = partition_of(&rooms, self.shared.transports.len());
        let target = Target::Rooms { rooms, except };
        if !self.shared.config.packing {
            return self
                .shared
                .send(
                    partition,
                    Audience::Others,
                    Kind::Broadcast,
                    target,
                    payload,
                )
                .await;
        }
        Shared::publish_packed(&self.shared, partition, target, payload).await
    }

    /// Publishes to one node.
    ///
    /// # Errors
    ///
    /// As [`Node::publish`].
    pub async fn publish_to(&self, node: &NodeId, payload: Vec<u8>) -> Result<(), PublishError> {
        self.shared
            .send(
                0,
                Audience::Node(node),
                Kind::Broadcast,
                Target::Node(node.clone()),
                payload,
            )
            .await
    }
}

impl<T: Transport> Shared<T> {
    pub(super) async fn send(
        &self,
        partition: usize,
        audience: Audience<'_>,
        kind: Kind,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        // Heartbeats are the node's own traffic, not the application's.
        let kind_counts = kind != Kind::Heartbeat;
        let mut event = self.unnumbered(partition, kind, target, payload)?;
        event.seq = match audience {
            Audience::Others => self.next_seq[partition].fetch_add(1, Ordering::SeqCst),
            Audience::Node(target) => {
                let mut direct = lock(&self.direct_seq);
                let next = direct.entry(target.clone()).or_insert(1);
                *next += 1;
                *next - 1
            }
        };
        let span = tracing::debug_span!(
            "backplane.publish",
            origin = %self.id,
            seq = event.seq,
            partition,
        );
        let bytes = Envelope {
            origin: self.id.clone(),
            events: vec![event],
        }
        .encode();
        let publish = self.transports[partition].publish(&self.id, audience, bytes);
        tracing::Instrument::instrument(publish, span).await?;
        if kind_counts {
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// An event not yet numbered, refused if it cannot fit a message alone. Checked before
    /// numbering (the size does not depend on the number), so a refused event leaves no gap
    /// for receivers to wait on.
    pub(super) fn unnumbered(
        &self,
        partition: usize,
        kind: Kind,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<Event, PublishError> {
        let event = Event {
            seq: 0,
            kind,
            target,
            payload,
        };
        envelope::check_fits(
            &self.id,
            &event,
            self.transports[partition].max_message_bytes(),
        )
        .map_err(PublishError::TooLarge)?;
        Ok(event)
    }

    /// Queues a broadcast for packing and waits until the message carrying it is
    /// acknowledged by the bus.
    pub(super) async fn publish_packed(
        shared: &Arc<Self>,
        partition: usize,
        target: Target,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        let (done, acknowledged) = tokio::sync::oneshot::channel();
        let span = tracing::debug_span!(
            "backplane.publish",
            origin = %shared.id,
            seq = tracing::field::Empty,
            partition,
        );
        {
            let mut event = shared.unnumbered(partition, Kind::Broadcast, target, payload)?;
            let mut outbox = lock(&shared.outbox[partition]);
            // Numbered under the outbox lock, so the queue is in sequence order.
            event.seq = shared.next_seq[partition].fetch_add(1, Ordering::SeqCst);
            span.record("seq", event.seq);
            outbox.queue.push((event, done));
            if !outbox.sending {
                outbox.sending = true;
                tokio::spawn(Shared::flush(shared.clone(), partition));
            }
        }
        match tracing::Instrument::instrument(acknowledged, span).await {
            Ok(Ok(())) => {
                shared.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(PublishError::Transport(e)),
            Err(_) => Err(PublishError::Transport(TransportError::Stopped)),
        }
    }

    /// Sends queued broadcasts, packed, until the queue is empty.
    pub(super) async fn flush(shared: Arc<Self>, partition: usize) {
        if !shared.config.pack_window.is_zero() {
            tokio::time::sleep(shared.config.pack_window).await;
        }
        loop {
            let batch = {
                let mut outbox = lock(&shared.outbox[partition]);
                if outbox.queue.is_empty() {
                    outbox.sending = false;
                    return;
                }
                std::mem::take(&mut outbox.queue)
            };
            let (events, waiters): (Vec<Event>, Vec<_>) = batch.into_iter().unzip();
            let limit = shared.transports[partition].max_message_bytes();
            let mut waiters = waiters.into_iter();
            // Every event was checked to fit alone, so packing cannot fail.
            let envelopes = envelope::pack(&shared.id, events, limit).unwrap_or_default();
            for envelope in envelopes {
                let n = envelope.events.len();
                let outcome = shared.transports[partition]
                    .publish(&shared.id, Audience::Others, envelope.encode())
                    .await;
                shared
                    .counters
                    .messages_sent
                    .fetch_add(1, Ordering::Relaxed);
                for waiter in waiters.by_ref().take(n) {
                    // The same failure, the real one, for every event the message carried.
                    let _ = waiter.send(outcome.clone());
                }
            }
        }
    }
}

/// The partition of a broadcast among `partitions` topics: by its first room (FNV-1a, the
/// same in every process and version), 0 when it names no room.
pub fn partition_of(rooms: &[RoomName], partitions: usize) -> usize {
    let Some(room) = rooms.first() else { return 0 };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as usize
}

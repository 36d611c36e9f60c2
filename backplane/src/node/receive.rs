//! Receiving: parallel receive loops per partition, ordering lanes, hand-over to the
//! application, and the gap timer that lets a missing event go.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::envelope::{Envelope, Kind, Target};
use crate::transport::{Transport, TransportError};

use super::liveness::greet;
use super::*;

impl<T: Transport> Shared<T> {
    /// Takes ordered events: answers go to their request, heartbeats only refresh
    /// liveness, the rest goes to the application.
    pub(super) fn route(&self, ordered: Vec<(Kind, Received)>) -> Vec<Received> {
        let mut out = Vec::new();
        for (kind, received) in ordered {
            match kind {
                Kind::Broadcast => out.push(received),
                Kind::Request(id) => out.push(Received {
                    request: Some(id),
                    ..received
                }),
                Kind::Response(id) => {
                    if let Some(p) = lock(&self.pending).get_mut(&id) {
                        p.replies.push((received.origin, received.payload));
                        p.done.notify_one();
                    }
                }
                Kind::Heartbeat => {}
            }
        }
        out
    }
}

pub(super) async fn receive_loop<T: Transport>(shared: Arc<Shared<T>>, partition: usize) {
    let transport = shared.transports[partition].clone();
    let mut backoff = Duration::from_millis(50);
    while !shared.stop.load(Ordering::Relaxed) {
        let received = match shared.config.receive_mode {
            ReceiveMode::PeekLock => {
                transport
                    .receive(&shared.id, shared.config.receive_timeout)
                    .await
            }
            ReceiveMode::ReceiveAndDelete => {
                transport
                    .take(&shared.id, shared.config.receive_timeout)
                    .await
            }
        };
        shared.note_receive(&received);
        let delivery = match received {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                if let TransportError::NoSubscription(_) = e {
                    tracing::warn!(node = %shared.id, "subscription gone; re-opening");
                    let _ = transport.open(&shared.id, shared.config.idle_delete).await;
                } else {
                    tracing::warn!(node = %shared.id, error = %e, "receive failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let turn = shared.turn.lock().await;
        let ready = match Envelope::decode(&delivery.payload) {
            Ok(envelope) => {
                let now = Instant::now();
                let first_heard = lock(&shared.seen)
                    .insert(envelope.origin.clone(), now)
                    .is_none();
                if first_heard && envelope.origin != shared.id {
                    // A node that just started said hello: answer at once, so it knows
                    // this node without waiting for the next heartbeat.
                    tokio::spawn(greet(shared.clone(), envelope.origin.clone()));
                }
                let mut reorder = lock(&shared.reorder);
                let before = reorder.counters();
                let mut ready = Vec::new();
                for event in envelope.events {
                    let event_is_direct = matches!(event.target, Target::Node(_));
                    let received = Received {
                        origin: envelope.origin.clone(),
                        seq: event.seq,
                        rooms: match event.target {
                            Target::Rooms { rooms, except } => Some((rooms, except)),
                            Target::Node(_) => None,
                        },
                        payload: event.payload,
                        request: None,
                    };
                    // Targeted events are numbered per (origin, target): their own lane.
                    let lane = if event_is_direct {
                        DIRECT_LANE
                    } else {
                        partition
                    };
                    ready.extend(reorder.accept(
                        &(envelope.origin.clone(), lane),
                        event.seq,
                        (event.kind, received),
                        now,
                    ));
                }
                let after = reorder.counters();
                shared
                    .counters
                    .duplicates
                    .fetch_add(after.duplicates - before.duplicates, Ordering::Relaxed);
                drop(reorder);
                shared.route(ready)
            }
            Err(e) => {
                shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %shared.id, error = %e, "dropping a message that is not an envelope");
                Vec::new()
            }
        };
        if !hand_over(&shared, ready).await {
            return;
        }
        drop(turn);
        if let Some(handle) = delivery.handle
            && let Err(e) = transport.complete(&shared.id, handle).await
        {
            tracing::warn!(node = %shared.id, error = %e, "complete failed; the message will come again");
        }
    }
}

/// Hands events to the application, waiting while the channel is full; false when the
/// application dropped its receiver.
pub(super) async fn hand_over<T: Transport>(shared: &Shared<T>, events: Vec<Received>) -> bool {
    for event in events {
        let span = tracing::debug_span!(
            "backplane.receive",
            node = %shared.id,
            origin = %event.origin,
            seq = event.seq,
        );
        let sent = tracing::Instrument::instrument(shared.events.send(event), span).await;
        if sent.is_err() {
            return false;
        }
        shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Releases events held back by a gap once the gap timeout passed.
pub(super) async fn gap_loop<T: Transport>(shared: Arc<Shared<T>>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let wait = {
            let reorder = lock(&shared.reorder);
            reorder
                .next_deadline()
                .map_or(Duration::from_millis(200), |d| {
                    d.saturating_duration_since(Instant::now())
                })
        };
        tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
        let _turn = shared.turn.lock().await;
        let (released, skipped) = {
            let mut reorder = lock(&shared.reorder);
            let before = reorder.counters().gaps_skipped;
            let released = reorder.expire(Instant::now());
            (released, reorder.counters().gaps_skipped - before)
        };
        if skipped > 0 {
            shared
                .counters
                .gaps_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(node = %shared.id, skipped, "skipped missing events after the gap timeout");
        }
        let released = shared.route(released.into_iter().map(|(_, r)| r).collect());
        if !hand_over(&shared, released).await {
            return;
        }
    }
}

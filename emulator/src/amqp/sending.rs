//! A client's sender link: its deliveries go to the broker in order, as many at a time as
//! have arrived, in one durable write (so 64 deliveries in flight share one fsync, as 64
//! concurrent REST sends do). Each is answered once that write is durable.

use std::sync::Arc;

use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Rejected};
use futures_util::StreamExt as _;
use futures_util::future::maybe_done;
use futures_util::stream::FuturesOrdered;
use std::future::Future as _;
use tokio::sync::mpsc;

use super::link::{Event, Incoming, Outcome, broker_error, error};
use super::{Context, convert};
use crate::broker::{self, Outgoing};

/// Most deliveries written together.
const MOST_PER_WRITE: usize = 256;
/// Writes of one link overlapping.
const WRITES_IN_FLIGHT: usize = 4;

fn rejected(e: fe2o3_amqp_types::definitions::Error) -> DeliveryState {
    DeliveryState::Rejected(Rejected { error: Some(e) })
}

/// Refuses, before the shared write, what the broker would refuse for this message alone:
/// so one oversized message rejects its own delivery, not the others written with it.
fn check(messages: &[Outgoing], limit: Option<u64>) -> Result<(), broker::Error> {
    for m in messages {
        m.check_properties()?;
        if let Some(limit) = limit
            && m.size() as u64 > limit
        {
            return Err(broker::Error::TooLarge {
                size: m.size() as u64,
                limit,
            });
        }
    }
    Ok(())
}

/// The state each delivery is answered with, in order.
async fn write(context: &Context, path: &str, batch: &[Incoming]) -> Vec<DeliveryState> {
    let limit = context.broker.message_size_limit(path);
    let mut states: Vec<Option<DeliveryState>> = vec![None; batch.len()];
    let mut messages = Vec::new();
    let mut members = Vec::new();
    for (i, d) in batch.iter().enumerate() {
        match convert::decode(d.format, &d.payload) {
            Err(e) => {
                let decode = ErrorCondition::AmqpError(AmqpError::DecodeError);
                states[i] = Some(rejected(error(decode, e.to_string())));
            }
            Ok(decoded) => match check(&decoded, limit) {
                Err(e) => states[i] = Some(rejected(broker_error(&e))),
                Ok(()) => {
                    messages.extend(decoded);
                    members.push(i);
                }
            },
        }
    }
    if !members.is_empty() {
        let state = match context.broker.send(path, messages).await {
            Ok(()) => DeliveryState::Accepted(Accepted {}),
            Err(e) => rejected(broker_error(&e)),
        };
        for i in members {
            states[i] = Some(state.clone());
        }
    }
    states
        .into_iter()
        .map(|s| s.unwrap_or(DeliveryState::Accepted(Accepted {})))
        .collect()
}

/// Sends what a client's sender link delivers to `path`; each write's outcomes go back as
/// one [`Event::Sent`], in delivery order. Up to [`WRITES_IN_FLIGHT`] writes overlap (one
/// encodes while another waits for its fsync); each is started (decoded, and its sequence
/// numbers taken) before the next, so the queue's order is the link's.
pub(crate) async fn send_task(
    context: Arc<Context>,
    path: String,
    mut deliveries: mpsc::Receiver<Incoming>,
    events: mpsc::Sender<Event>,
    channel: u16,
    serial: u64,
) {
    let mut inflight = FuturesOrdered::new();
    let mut open = true;
    while open || !inflight.is_empty() {
        let mut arrived = Vec::with_capacity(MOST_PER_WRITE);
        tokio::select! {
            biased;
            Some((batch, states)) = inflight.next(), if !inflight.is_empty() => {
                let batch: Vec<Incoming> = batch;
                let outcomes = batch
                    .into_iter()
                    .zip(states)
                    .map(|(d, state)| Outcome {
                        delivery_id: d.delivery_id,
                        settled: d.settled,
                        state,
                    })
                    .collect();
                if events.send(Event::Sent { channel, serial, outcomes }).await.is_err() {
                    return;
                }
            }
            n = deliveries.recv_many(&mut arrived, MOST_PER_WRITE),
                if open && inflight.len() < WRITES_IN_FLIGHT =>
            {
                if n == 0 {
                    open = false;
                    continue;
                }
                let context = context.clone();
                let path = path.clone();
                let mut started = Box::pin(maybe_done(async move {
                    let states = write(&context, &path, &arrived).await;
                    (arrived, states)
                }));
                // Polled once now: it decodes and takes its sequence numbers before any
                // later write does.
                std::future::poll_fn(|cx| {
                    let _ = started.as_mut().poll(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                inflight.push_back(async move {
                    started.as_mut().await;
                    started.as_mut().take_output().unwrap_or_default()
                });
            }
        }
    }
}

//! Settlements of a connection's peek-lock deliveries (contract 6.3): the client's
//! dispositions are applied by one task per connection, as many at a time as have arrived,
//! with one durable write per queue or subscription (the SDKs settle one delivery per
//! disposition). Each is answered with the state that was applied.

use std::sync::Arc;

use fe2o3_amqp_types::messaging::{DeliveryState, Rejected};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Context;
use super::link::{Event, broker_error};
use crate::broker::{self, ReceiveTarget, Settle};

/// Most settlements applied together.
const MOST_PER_WRITE: usize = 256;

/// One settlement to apply.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) channel: u16,
    pub(crate) delivery_id: u32,
    pub(crate) target: ReceiveTarget,
    pub(crate) token: Uuid,
    pub(crate) how: Settle,
    /// The state to answer with once applied.
    pub(crate) applied: DeliveryState,
    /// The client waits for the answer (it sent its disposition unsettled).
    pub(crate) answer: bool,
}

fn lost() -> DeliveryState {
    let e = broker::Error::LockLost {
        token: String::new(),
    };
    DeliveryState::Rejected(Rejected {
        error: Some(broker_error(&e)),
    })
}

/// The answer for a request, once the broker has said whether its lock was held.
fn outcome(request: &Request, held: Result<bool, &broker::Error>) -> DeliveryState {
    match held {
        Err(e) => DeliveryState::Rejected(Rejected {
            error: Some(broker_error(e)),
        }),
        Ok(false) => lost(),
        Ok(true) => request.applied.clone(),
    }
}

/// Applies settlements until the connection goes.
pub(crate) async fn settle_task(
    context: Arc<Context>,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<Event>,
) {
    let mut batch = Vec::with_capacity(MOST_PER_WRITE);
    while requests.recv_many(&mut batch, MOST_PER_WRITE).await > 0 {
        // One write per target, in the order the targets first appear.
        while let Some(first) = batch.first() {
            let target = first.target.clone();
            let (same, rest): (Vec<Request>, Vec<Request>) =
                batch.drain(..).partition(|r| r.target == target);
            batch = rest;
            let settles = same.iter().map(|r| (r.token, r.how.clone())).collect();
            let held = context.broker.settle_tokens(&target, settles).await;
            // One event per run of requests on the same channel.
            let mut answers: Vec<(u16, Vec<(u32, DeliveryState)>)> = Vec::new();
            for (i, request) in same.iter().enumerate() {
                let state = match &held {
                    Ok(held) => outcome(request, Ok(held.get(i).copied().unwrap_or(false))),
                    Err(e) => outcome(request, Err(e)),
                };
                if !request.answer {
                    continue;
                }
                match answers.last_mut() {
                    Some((channel, run)) if *channel == request.channel => {
                        run.push((request.delivery_id, state));
                    }
                    _ => answers.push((request.channel, vec![(request.delivery_id, state)])),
                }
            }
            for (channel, answers) in answers {
                if events
                    .send(Event::Settled { channel, answers })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

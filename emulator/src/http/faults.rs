//! Applies the fault injector's decisions (`crate::faults`) to REST requests: which
//! operation and entity a request is, what to answer instead, and what to do after the
//! operation ran (close the connection unanswered; release a lock just handed out).

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio_util::sync::CancellationToken;

use super::target::Target;
use super::{ApiError, AppState, RequestContext};
use crate::broker::{ReceiveTarget, Settle};
use crate::faults::{Effect, Operation};
use crate::model::EntityPath;

/// Closes the request's connection without an answer (a request extension set by the
/// connection loop; absent for requests served without a connection, as in `oneshot`).
#[derive(Debug, Clone)]
pub(crate) struct Dropper(pub(crate) CancellationToken);

/// What to do once the operation has run.
pub(super) enum After {
    /// Answer as usual.
    Answer,
    /// Close the connection before answering (the operation is applied: a lost ack).
    Drop,
    /// Release the lock of the message just received, so it is delivered again.
    Release(EntityPath),
}

/// The operation a request is, for fault rules; `None` for what faults never touch
/// (health, metrics, the control API).
fn operation(method: &Method, target: &Target) -> Option<Operation> {
    Some(match (method, target) {
        (
            _,
            Target::Health
            | Target::Metrics
            | Target::Explorer(_)
            | Target::ClockAdvance
            | Target::Control(_),
        ) => return None,
        (_, Target::Send(_)) => Operation::Send,
        (&Method::POST, Target::Head(_)) => Operation::PeekLock,
        (_, Target::Head(_)) => Operation::ReceiveAndDelete,
        (&Method::DELETE, Target::Locked(..)) => Operation::Complete,
        (&Method::PUT, Target::Locked(..)) => Operation::Abandon,
        (_, Target::Locked(..)) => Operation::RenewLock,
        _ => Operation::Manage,
    })
}

/// The entity path a request names, as fault rules match it.
fn entity(target: &Target) -> String {
    match target {
        Target::Send(path) | Target::Entity(path) | Target::Subscriptions(path) => path.clone(),
        Target::Head(p) | Target::Locked(p, ..) => p.location_path(),
        Target::Subscription(topic, sub) | Target::Rules(topic, sub) => {
            format!("{topic}/Subscriptions/{sub}")
        }
        Target::Rule(topic, sub, rule) => format!("{topic}/Subscriptions/{sub}/Rules/{rule}"),
        _ => String::new(),
    }
}

/// The operation's name in metrics: a fault rule's name for what rules select, else what
/// the request is.
pub(super) fn operation_name(method: &Method, target: &Target) -> &'static str {
    match (operation(method, target), target) {
        (Some(operation), _) => match operation {
            Operation::Send => "send",
            Operation::PeekLock => "peekLock",
            Operation::ReceiveAndDelete => "receiveAndDelete",
            Operation::Complete => "complete",
            Operation::Abandon => "abandon",
            Operation::RenewLock => "renewLock",
            Operation::Manage | Operation::Any => "manage",
        },
        (None, Target::Health) => "health",
        (None, Target::Metrics) => "metrics",
        (None, Target::Explorer(_)) => "explorer",
        (None, _) => "control",
    }
}

/// Before the operation: `Err` with the answer when a fault replaces it, else what to do
/// after it.
pub(super) async fn before(
    state: &AppState,
    ctx: &RequestContext,
    method: &Method,
    target: &Target,
) -> Result<After, Response> {
    if !state.faults.armed() {
        return Ok(After::Answer);
    }
    let Some(operation) = operation(method, target) else {
        return Ok(After::Answer);
    };
    let entity = entity(target);
    let Some(effect) = state.faults.decide(operation, &entity) else {
        return Ok(After::Answer);
    };
    tracing::debug!(?effect, ?operation, %entity, "fault injected");
    match effect {
        Effect::ServerBusy { retry_after } => Err(busy(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            50002,
            "The server is busy (an injected fault)",
            Some(retry_after.unwrap_or_else(|| "1".into())),
        )),
        Effect::Status {
            status,
            retry_after,
        } => {
            let (code, sub, detail) = match status {
                429 => (
                    StatusCode::TOO_MANY_REQUESTS,
                    50009,
                    "Throttled (an injected fault)",
                ),
                410 => (
                    StatusCode::GONE,
                    41000,
                    "The entity is gone (an injected fault)",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50000,
                    "Internal server error (an injected fault)",
                ),
            };
            Err(busy(ctx, code, sub, detail, retry_after))
        }
        Effect::Delay { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(After::Answer)
        }
        Effect::DropAfterApply => Ok(After::Drop),
        Effect::LockLost => match target {
            Target::Locked(path, id, token) => {
                // Released as an expired lock would be; a lock already gone stays gone.
                let _ = state
                    .broker
                    .settle(&ReceiveTarget::from(path), id, token, Settle::Unlock)
                    .await;
                Err(ApiError::from(crate::broker::Error::LockLost {
                    token: token.clone(),
                })
                .into_response(ctx))
            }
            _ => Ok(After::Answer),
        },
        Effect::DuplicateDelivery => match target {
            Target::Head(path) => Ok(After::Release(path.clone())),
            _ => Ok(After::Answer),
        },
    }
}

/// After the operation: the answer, or (for a lost ack) a future that never completes while
/// the connection is closed under it.
pub(super) async fn after(
    state: &AppState,
    after: After,
    dropper: Option<Dropper>,
    response: Response,
) -> Response {
    match after {
        After::Answer => response,
        After::Drop => match dropper {
            Some(Dropper(token)) => {
                token.cancel();
                std::future::pending().await
            }
            None => response,
        },
        After::Release(path) => {
            if let Some((id, token)) = lock_of(&response) {
                let _ = state
                    .broker
                    .settle(&ReceiveTarget::from(&path), &id, &token, Settle::Unlock)
                    .await;
            }
            response
        }
    }
}

/// The sequence number and lock token a peek-lock answer carries in `BrokerProperties`.
fn lock_of(response: &Response) -> Option<(String, String)> {
    let properties = response.headers().get("BrokerProperties")?.to_str().ok()?;
    let json: serde_json::Value = serde_json::from_str(properties).ok()?;
    Some((
        json.get("SequenceNumber")?.as_u64()?.to_string(),
        json.get("LockToken")?.as_str()?.to_string(),
    ))
}

/// An error answer with `Retry-After` when given.
fn busy(
    ctx: &RequestContext,
    status: StatusCode,
    sub_code: u32,
    detail: &str,
    retry_after: Option<String>,
) -> Response {
    let mut response = ApiError::new(status, sub_code, detail).into_response(ctx);
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

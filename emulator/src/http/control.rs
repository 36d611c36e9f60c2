//! The control API under `/$emulator/` (Manage right), JSON in and out: the fault plan,
//! broker time, peek without side effects, purge and reset. (`POST /$emulator/clock/advance`
//! is older and lives with messaging.)

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::target::Control;
use super::{ApiError, AppState};
use crate::broker::{PeekState, ReceiveMode, ReceiveTarget, Received};
use crate::faults::FaultPlan;
use crate::model::EntityPath;
use servicebus_wire::EntityKind;

/// Messages one peek returns when `count` is absent.
const DEFAULT_PEEK: usize = 32;
/// Messages one purge step removes (one durable write).
const PURGE_STEP: usize = 256;
/// Entities listed per page while a reset walks them.
const PAGE: usize = 100;

/// Serves an authorized control request. Failures are JSON too:
/// `{"status": 400, "error": "..."}`.
pub(super) async fn handle(
    state: &AppState,
    ctx: &super::RequestContext,
    method: &Method,
    control: &Control,
    body: &Bytes,
) -> Response {
    match serve(state, ctx, method, control, body).await {
        Ok(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(e) => (
            e.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"status": e.status.as_u16(), "error": e.detail}).to_string(),
        )
            .into_response(),
    }
}

async fn serve(
    state: &AppState,
    ctx: &super::RequestContext,
    method: &Method,
    control: &Control,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let broker = &state.broker;
    match (method, control) {
        (&Method::GET, Control::Faults) => Ok(faults(state)),
        (&Method::PUT, Control::Faults) => {
            let plan = FaultPlan::parse(body)
                .map_err(|e| ApiError::bad_request(format!("fault plan: {e}")))?;
            state.faults.set(plan);
            Ok(faults(state))
        }
        (&Method::DELETE, Control::Faults) => {
            state.faults.clear();
            Ok(faults(state))
        }
        (&Method::GET, Control::Clock) => Ok(json!({
            "now": broker.clock().now().to_rfc3339(),
            "manual": broker.clock().is_manual(),
        })),
        (&Method::GET, Control::Peek(path)) => {
            let from = number(ctx, "from")?.unwrap_or(0);
            let count = number(ctx, "count")?.map_or(DEFAULT_PEEK, |c| c as usize);
            let peeked = broker.peek(&ReceiveTarget::from(path), from, count)?;
            Ok(
                json!({"messages": peeked.into_iter().map(|(m, s)| message(m, s)).collect::<Vec<_>>()}),
            )
        }
        (&Method::POST, Control::Purge(path)) => Ok(json!({"purged": purge(state, path).await?})),
        (&Method::POST, Control::Reset(None)) => Ok(json!({"deleted": reset_all(state).await?})),
        (&Method::POST, Control::Reset(Some(name))) => {
            Ok(json!({"purged": empty(state, name).await?}))
        }
        _ => Err(ApiError::method_not_allowed(
            method,
            super::target::Target::Control(control.clone()).template(),
        )),
    }
}

/// The plan, each rule's counts, and the total injected since the start.
fn faults(state: &AppState) -> Value {
    let (plan, counts) = match state.faults.status() {
        Some((plan, counts)) => (json!(plan), json!(counts)),
        None => (Value::Null, json!([])),
    };
    json!({"plan": plan, "counts": counts, "injected": state.faults.injected()})
}

/// A non-negative integer query parameter.
fn number(ctx: &super::RequestContext, name: &str) -> Result<Option<u64>, ApiError> {
    match ctx.param(name) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "the query parameter {name} is '{t}'; it must be a non-negative integer"
            ))
        }),
    }
}

/// A peeked message as JSON: the body as text when it is UTF-8, else in base64.
fn message(m: Received, state: PeekState) -> Value {
    let p = &m.props;
    let mut out = json!({
        "sequenceNumber": m.sequence_number,
        "state": match state {
            PeekState::Active => "active",
            PeekState::Deferred => "deferred",
            PeekState::Scheduled => "scheduled",
        },
        "deliveryCount": m.delivery_count,
        "enqueuedTimeUtc": m.enqueued_at.to_rfc3339(),
        "timeToLive": m.time_to_live,
        "messageId": p.message_id,
        "correlationId": p.correlation_id,
        "sessionId": p.session_id,
        "label": p.label,
        "to": p.to,
        "replyTo": p.reply_to,
        "contentType": p.content_type,
        "userProperties": p.user.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
    });
    match String::from_utf8(m.body) {
        Ok(text) => out["body"] = Value::from(text),
        Err(e) => {
            out["bodyBase64"] =
                Value::from(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
        }
    }
    out
}

/// Removes every receivable message of `path` (deferred and scheduled ones stay); returns
/// how many.
async fn purge(state: &AppState, path: &EntityPath) -> Result<usize, ApiError> {
    let target = ReceiveTarget::from(path);
    let mut purged = 0;
    loop {
        let taken = state
            .broker
            .receive_many(
                &target,
                ReceiveMode::ReceiveAndDelete,
                PURGE_STEP,
                Duration::ZERO,
                std::future::ready(()),
                |_| Ok(()),
            )
            .await?;
        if taken.is_empty() {
            return Ok(purged);
        }
        purged += taken.len();
    }
}

/// Empties a queue, or every subscription of a topic, with their dead-letter subqueues;
/// the definitions stay. Returns how many messages went.
async fn empty(state: &AppState, name: &str) -> Result<usize, ApiError> {
    let view = state
        .broker
        .get_entity(name)?
        .ok_or_else(|| ApiError::not_found(format!("no queue or topic '{name}'")))?;
    let mut receivables = Vec::new();
    if view.record.description.kind == EntityKind::Topic {
        let mut skip = 0;
        loop {
            let page = state.broker.list_subscriptions(name, skip, PAGE)?;
            let n = page.items.len();
            receivables.extend(page.items.into_iter().map(|s| Some(s.record.name)));
            skip += n;
            if n == 0 || skip >= page.total {
                break;
            }
        }
    } else {
        receivables.push(None);
    }
    let mut purged = 0;
    for subscription in receivables {
        for dead_letter in [false, true] {
            let path = EntityPath {
                entity: name.to_string(),
                subscription: subscription.clone(),
                dead_letter,
            };
            purged += purge(state, &path).await?;
        }
    }
    Ok(purged)
}

/// Deletes every queue and topic; returns how many.
async fn reset_all(state: &AppState) -> Result<usize, ApiError> {
    let mut deleted = 0;
    for kind in [EntityKind::Queue, EntityKind::Topic] {
        loop {
            let page = state.broker.list_entities(kind, 0, PAGE)?;
            if page.items.is_empty() {
                break;
            }
            for view in page.items {
                state.broker.delete_entity(&view.record.name).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

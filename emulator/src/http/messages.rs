//! Messaging over HTTP: send (single and batch), peek-lock, receive-and-delete, complete,
//! unlock, renew, and the manual clock's control endpoint. A thin translation between HTTP
//! and the broker.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use servicebus_wire::message::{
    BATCH_CONTENT_TYPE, BrokerProperties, is_reserved_header, parse_batch,
};

use super::target::Target;
use super::{ApiError, AppState, RequestContext};
use crate::auth::{Need, Right};
use crate::broker::{Outgoing, ReceiveMode, ReceiveTarget, Received, Settle};
use crate::model::EntityPath;

/// Long-poll wait when `timeout` is absent (contract 1.3, emulator decision).
const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// Longest long-poll wait.
const MAX_TIMEOUT_SECS: f64 = 230.0;
/// Largest single move of the manual clock; the clock itself stops at `Clock::LATEST`.
const MAX_CLOCK_STEP_SECS: f64 = 2.5e11;
/// Largest batch request.
pub(super) const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The rights a messaging request needs.
pub(super) fn need(target: &Target) -> Need {
    match target {
        Target::Send(_) => Need::Right(Right::Send),
        Target::ClockAdvance | Target::Control(_) => Need::Right(Right::Manage),
        _ => Need::Right(Right::Listen),
    }
}

/// Serves an authorized messaging request.
pub(super) async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let broker = &state.broker;
    match (method, target) {
        (&Method::POST, Target::Send(path)) => {
            let messages = if is_batch(headers) {
                batch(&body)?
            } else {
                vec![single(headers, body)?]
            };
            broker.send(path, messages).await?;
            Ok(StatusCode::CREATED.into_response())
        }
        (&Method::POST | &Method::DELETE, Target::Head(receivable)) => {
            let mode = if method == Method::POST {
                ReceiveMode::PeekLock
            } else {
                ReceiveMode::ReceiveAndDelete
            };
            let timeout = timeout(ctx)?;
            // The answer is built before the lock or removal is committed (see
            // `Broker::receive_with`): a message is never taken without its answer.
            let render = |received| Ok(message_response(ctx, receivable, mode, received));
            match broker
                .receive_with(&ReceiveTarget::from(receivable), mode, timeout, render)
                .await?
            {
                Some(response) => Ok(response),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        (&Method::DELETE | &Method::PUT | &Method::POST, Target::Locked(receivable, id, token)) => {
            let how = match *method {
                Method::DELETE => Settle::Complete,
                Method::PUT => Settle::Unlock,
                _ => Settle::Renew,
            };
            broker
                .settle(&ReceiveTarget::from(receivable), id, token, how)
                .await?;
            Ok(StatusCode::OK.into_response())
        }
        (&Method::POST, Target::ClockAdvance) => {
            let seconds = seconds_param(ctx, "seconds")?.ok_or_else(|| {
                ApiError::bad_request("the query parameter seconds must be a non-negative number")
            })?;
            if seconds > MAX_CLOCK_STEP_SECS {
                return Err(ApiError::bad_request(format!(
                    "the query parameter seconds is {seconds}; the clock moves at most \
                     {MAX_CLOCK_STEP_SECS} seconds (about 8,000 years) at a time"
                )));
            }
            // Within the bound above, milliseconds fit an i64 with room to spare.
            let by = chrono::Duration::milliseconds((seconds * 1000.0).round() as i64);
            let now = broker.advance_clock(by).await?;
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!(r#"{{"now":"{}"}}"#, now.to_rfc3339()),
            )
                .into_response())
        }
        _ => Err(ApiError::method_not_allowed(method, target.template())),
    }
}

fn timeout(ctx: &RequestContext) -> Result<Duration, ApiError> {
    let seconds = seconds_param(ctx, "timeout")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
    Ok(Duration::from_secs_f64(seconds.min(MAX_TIMEOUT_SECS)))
}

/// A query parameter holding a non-negative number of seconds; `None` when absent or empty.
fn seconds_param(ctx: &RequestContext, name: &str) -> Result<Option<f64>, ApiError> {
    match ctx.param(name) {
        None | Some("") => Ok(None),
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the query parameter {name} must be a non-negative number of seconds, not '{t}'"
                ))
            }),
    }
}

/// `403` (SubCode 40300) for a batch body over [`MAX_BATCH_BYTES`].
pub(super) fn batch_too_large(size: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        40300,
        format!("The batch is too large: {size} bytes, over the limit of {limit} bytes"),
    )
}

/// `403` (SubCode 40300) for a message body over the entity's size limit, as the broker
/// answers a message too large with its properties.
pub(super) fn message_too_large(size: u64, limit: usize) -> ApiError {
    ApiError::from(crate::broker::Error::TooLarge {
        size,
        limit: limit as u64,
    })
}

/// Whether the request is a batch send (by its media type, parameters ignored).
pub(super) fn is_batch(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(BATCH_CONTENT_TYPE))
}

fn single(headers: &HeaderMap, body: Bytes) -> Result<Outgoing, ApiError> {
    let broker = match headers.get("brokerproperties") {
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::bad_request("the BrokerProperties header is not ASCII text")
            })?;
            BrokerProperties::parse_client(text)?
        }
        None => BrokerProperties::default(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("the Content-Type header is not ASCII text"))
        })
        .transpose()?;
    let mut user = Vec::new();
    for (name, value) in headers {
        let lower = name.as_str();
        if is_reserved_header(lower) {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            ApiError::bad_request(format!(
                "the value of the custom property header '{lower}' is not ASCII text"
            ))
        })?;
        user.push((lower.to_string(), value.to_string()));
    }
    Ok(Outgoing::from_client(
        &broker,
        content_type,
        user,
        body.to_vec(),
    ))
}

/// Parses a batch body; its size was bounded by `MAX_BATCH_BYTES` when it was read.
fn batch(body: &Bytes) -> Result<Vec<Outgoing>, ApiError> {
    Ok(parse_batch(body)?
        .into_iter()
        .map(|m| Outgoing::from_client(&m.broker, m.content_type, m.user, m.body))
        .collect())
}

fn message_response(
    ctx: &RequestContext,
    receivable: &EntityPath,
    mode: ReceiveMode,
    m: Received,
) -> Response {
    let p = &m.props;
    let broker = BrokerProperties {
        // The service always says: the message's, else the entity's default.
        time_to_live: Some(m.time_to_live.unwrap_or(m.default_time_to_live)),
        sequence_number: Some(m.sequence_number),
        enqueued_sequence_number: Some(0),
        enqueued_time_utc: Some(m.enqueued_at),
        lock_token: m.lock.map(|(t, _)| t.to_string()),
        locked_until_utc: m.lock.map(|(_, until)| until),
        delivery_count: Some(m.delivery_count),
        state: Some("Active".into()),
        ..p.to_broker()
    };
    let status = match mode {
        ReceiveMode::PeekLock => StatusCode::CREATED,
        ReceiveMode::ReceiveAndDelete => StatusCode::OK,
    };
    let mut response = Response::builder().status(status);
    let headers = response
        .headers_mut()
        .expect("invariant: a fresh builder has headers");
    if let Some((token, _)) = m.lock {
        let location = format!(
            "{}/{}/messages/{}/{token}",
            ctx.base(),
            receivable.location_path(),
            m.sequence_number
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&broker.to_json()) {
        headers.insert(HeaderName::from_static("brokerproperties"), v);
    }
    if let Some(ct) = p
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    for (name, raw) in &p.user {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(raw),
        ) {
            headers.append(n, v);
        }
    }
    response
        .body(Body::from(m.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

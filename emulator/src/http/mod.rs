//! HTTP: one handler classifies the path (entity names contain `/` and keywords are
//! case-insensitive, which a route table cannot express), checks SAS, and hands over to the
//! surface's module. Errors become responses in `error.rs` only.

mod control;
mod error;
mod explorer;
mod faults;
mod management;
mod messages;
mod metrics;
mod serve;
mod target;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::MissingEntityGet;
pub(crate) use error::ApiError;
pub(crate) use faults::Dropper;
pub(crate) use metrics::{Live, Open};
pub(crate) use serve::{ConnectionLimits, OverTls, serve};
use target::Target;

/// Largest request body of any kind (a Premium-size message).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest entity or rule description (`PUT`); the service's own are a few kilobytes.
const MAX_DESCRIPTION_BYTES: usize = 256 * 1024;
/// Largest body of a request that takes none (receive, settle, `GET`, `DELETE`): ignored.
const MAX_OTHER_BODY_BYTES: usize = 64 * 1024;
/// Bytes of request bodies read at once, across all connections: a request whose body
/// would go past it waits for others to finish (so many slow senders of large bodies cannot
/// grow memory without bound).
const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) broker: Broker,
    pub(crate) auth: Authenticator,
    pub(crate) namespace: String,
    pub(crate) missing_get: MissingEntityGet,
    /// [`BODY_BUDGET_BYTES`] in KiB permits.
    pub(crate) bodies: Semaphore,
    /// How long a body may take to arrive once its headers have.
    pub(crate) body_timeout: Duration,
    /// The fault injector (no plan: no faults).
    pub(crate) faults: std::sync::Arc<crate::faults::Faults>,
    /// Request counts and connection gauges for `/metrics`.
    pub(crate) metrics: metrics::Metrics,
}

impl AppState {
    /// State over a broker and its authenticator, with the body budget.
    pub(crate) fn new(
        broker: Broker,
        auth: Authenticator,
        namespace: String,
        missing_get: MissingEntityGet,
        body_timeout: Duration,
        faults: std::sync::Arc<crate::faults::Faults>,
        live: std::sync::Arc<Live>,
    ) -> Self {
        AppState {
            broker,
            auth,
            namespace,
            missing_get,
            bodies: Semaphore::new(BODY_BUDGET_BYTES / 1024),
            body_timeout,
            faults,
            metrics: metrics::Metrics {
                requests: prometheus_client::metrics::family::Family::default(),
                live,
            },
        }
    }
}

/// The parts of a request that responses echo: host, path, query.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// `Host` as received (clients differ on whether it carries the port).
    pub(crate) host: String,
    /// The path as received, still percent-encoded.
    pub(crate) raw_path: String,
    /// The path percent-decoded.
    pub(crate) decoded_path: String,
    /// The query as received, if any.
    pub(crate) raw_query: Option<String>,
    /// Query parameters, percent-decoded (`%24top` is `$top`).
    pub(crate) params: Vec<(String, String)>,
    /// The namespace name.
    pub(crate) namespace: String,
    /// `https` for a request that came over TLS, else `http`.
    pub(crate) scheme: &'static str,
}

impl RequestContext {
    fn new(uri: &Uri, headers: &HeaderMap, namespace: &str, secure: bool) -> Self {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".to_string());
        let raw_path = uri.path().to_string();
        let decoded_path = percent_decode_str(&raw_path)
            .decode_utf8_lossy()
            .into_owned();
        let raw_query = uri.query().map(str::to_string);
        let params = raw_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| {
                    percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (decode(k), decode(v))
            })
            .collect();
        RequestContext {
            host,
            raw_path,
            decoded_path,
            raw_query,
            params,
            namespace: namespace.to_string(),
            scheme: if secure { "https" } else { "http" },
        }
    }

    /// A query parameter by name (case-insensitive).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `http://{Host}`.
    pub(crate) fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// `?api-version=X` when the request carried one, else empty.
    pub(crate) fn version_suffix(&self) -> String {
        self.param("api-version")
            .map(|v| format!("?api-version={v}"))
            .unwrap_or_default()
    }

    /// The request URL as received.
    pub(crate) fn url(&self) -> String {
        match &self.raw_query {
            Some(q) => format!("{}{}?{q}", self.base(), self.raw_path),
            None => format!("{}{}", self.base(), self.raw_path),
        }
    }
}

/// Builds the router over shared state. A handler that panics is answered `500` (and
/// logged) rather than dropping the connection; no client input should ever get there.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    with_layers(Router::new().fallback(dispatch)).with_state(state)
}

/// The layers every route is served through: panics caught, requests traced.
fn with_layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(panic = %what, "a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        50000,
        "Internal server error (the emulator's log has the cause)",
    )
    .render("", "")
}

async fn dispatch(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (response, operation) = answer(&state, request).await;
    let labels = metrics::RequestLabels {
        operation,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// The answer to a request, and the operation it was (for metrics).
async fn answer(state: &Arc<AppState>, request: Request) -> (Response, &'static str) {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let secure = parts.extensions.get::<OverTls>().is_some();
    let dropper = parts.extensions.get::<Dropper>().cloned();
    let ctx = RequestContext::new(&uri, &headers, &state.namespace, secure);
    let target = match Target::parse(&ctx.raw_path) {
        Ok(t) => t,
        Err(e) => return (ApiError::from(e).into_response(&ctx), "unknown"),
    };
    let operation = faults::operation_name(&method, &target);
    let span = tracing::debug_span!("request", %method, route = target.template());
    if matches!(
        target,
        Target::Health | Target::Metrics | Target::Explorer(_)
    ) {
        let response = match (&method, &target) {
            (&Method::GET, Target::Health) => health(),
            (&Method::GET, Target::Explorer(asset)) => match state.auth.primary() {
                Some(key) => explorer::serve(*asset, &key.name, &key.key),
                None => explorer::serve(*asset, "", ""),
            },
            (&Method::GET, _) => metrics::scrape(state),
            _ => ApiError::method_not_allowed(&method, target.template()).into_response(&ctx),
        };
        return (response, operation);
    }
    let messaging = matches!(
        target,
        Target::Send(_) | Target::Head(_) | Target::Locked(..) | Target::ClockAdvance
    );
    let need = if messaging || matches!(target, Target::Control(_)) {
        messages::need(&target)
    } else {
        management::need(&target, &method)
    };
    // The token first: nobody without one makes the emulator read a body.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if let Err(e) = state.auth.authorize(authorization, &ctx.decoded_path, need) {
        return (ApiError::from(e).into_response(&ctx), operation);
    }
    let body = match read_body(state, &method, &target, &headers, body).await {
        Ok(body) => body,
        Err(e) => return (e.into_response(&ctx), operation),
    };
    if let Target::Control(control) = &target {
        let response = control::handle(state, &ctx, &method, control, &body)
            .instrument(span)
            .await;
        return (response, operation);
    }
    let after = match faults::before(state, &ctx, &method, &target).await {
        Ok(after) => after,
        Err(answer) => return (answer, operation),
    };
    let result = if messaging {
        messages::handle(state, &ctx, &method, &target, &headers, body)
            .instrument(span)
            .await
    } else {
        management::handle(state, &ctx, &method, &target, &headers, &body)
            .instrument(span)
            .await
    };
    let response = result.unwrap_or_else(|e| e.into_response(&ctx));
    (
        faults::after(state, after, dropper, response).await,
        operation,
    )
}

/// Reads the body once the request is authorized: refused at once when `Content-Length`
/// is over the operation's limit, cut off when a body without one grows past it, and
/// bounded in time and (with every other body being read) in memory.
async fn read_body(
    state: &AppState,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let (limit, too_large): (usize, fn(u64, usize) -> ApiError) = match (method, target) {
        (&Method::POST, Target::Send(path)) => {
            if messages::is_batch(headers) {
                (messages::MAX_BATCH_BYTES, messages::batch_too_large)
            } else {
                let entity_limit = state.broker.message_size_limit(path).unwrap_or(u64::MAX);
                let limit =
                    usize::try_from(entity_limit).map_or(MAX_BODY_BYTES, |l| l.min(MAX_BODY_BYTES));
                (limit, messages::message_too_large)
            }
        }
        (&Method::PUT, _) => (MAX_DESCRIPTION_BYTES, body_too_large),
        _ => (MAX_OTHER_BODY_BYTES, body_too_large),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > limit as u64) {
        return Err(too_large(length, limit));
    }
    let expected = declared.map_or(limit, |l| usize::try_from(l).unwrap_or(limit));
    if expected == 0 {
        return Ok(Bytes::new());
    }
    // `limit` is at most MAX_BODY_BYTES, so the permits always fit the budget.
    let permits = u32::try_from(expected.div_ceil(1024)).unwrap_or(u32::MAX);
    let _budget = state
        .bodies
        .acquire_many(permits)
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 50004, "shutting down"))?;
    match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                Err(too_large(limit as u64 + 1, limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "the request body could not be read: {e}"
                )))
            }
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            40800,
            format!(
                "the request body did not arrive within {} seconds",
                state.body_timeout.as_secs()
            ),
        )),
    }
}

fn body_too_large(size: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        41300,
        format!(
            "the request body of {size} bytes is over the limit of {limit} bytes for this operation"
        ),
    )
}

/// `GET /health`: answers once the emulator serves (the store is open before the listener
/// accepts), as the official emulator does.
fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"healthy"}"#,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    /// A handler that panics is answered 500 with a Service Bus error body instead of the
    /// connection being dropped with the panic.
    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        async fn bug() -> StatusCode {
            panic!("a bug")
        }
        let app = with_layers(Router::new().fallback(bug));
        let response = app
            .oneshot(Request::get("/q").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("<Code>500</Code>") && text.contains("50000"),
            "{text}"
        );
    }
}

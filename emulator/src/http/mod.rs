//! HTTP: one handler classifies the path (entity names contain `/` and keywords are
//! case-insensitive, which a route table cannot express), checks SAS, and hands over to the
//! surface's module. Errors become responses in `error.rs` only.

mod error;
mod management;
mod messages;
mod target;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::MissingEntityGet;
pub(crate) use error::ApiError;
use target::Target;

/// Largest request body (a 1 MiB batch, or a Premium-size message, fits).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) broker: Broker,
    pub(crate) auth: Authenticator,
    pub(crate) namespace: String,
    pub(crate) missing_get: MissingEntityGet,
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
}

impl RequestContext {
    fn new(uri: &Uri, headers: &HeaderMap, namespace: &str) -> Self {
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
        format!("http://{}", self.host)
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

/// Builds the router over shared state.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = RequestContext::new(&uri, &headers, &state.namespace);
    let target = match Target::parse(&ctx.raw_path) {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(&ctx),
    };
    let span = tracing::debug_span!("request", %method, route = target.template());
    if target == Target::Health {
        return if method == Method::GET {
            health()
        } else {
            ApiError::method_not_allowed(&method, target.template()).into_response(&ctx)
        };
    }
    let messaging = matches!(
        target,
        Target::Send(_) | Target::Head(_) | Target::Locked(..) | Target::ClockAdvance
    );
    let need = if messaging {
        messages::need(&target)
    } else {
        management::need(&target, &method)
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if let Err(e) = state.auth.authorize(authorization, &ctx.decoded_path, need) {
        return ApiError::from(e).into_response(&ctx);
    }
    let result = if messaging {
        messages::handle(&state, &ctx, &method, &target, &headers, body)
            .instrument(span)
            .await
    } else {
        management::handle(&state, &ctx, &method, &target, &headers, &body)
            .instrument(span)
            .await
    };
    result.unwrap_or_else(|e| e.into_response(&ctx))
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

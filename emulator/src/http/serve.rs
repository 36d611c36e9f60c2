//! The connection loop: hyper's HTTP/1 server with the limits axum's `serve` does not set.
//!
//! - At most `max_connections` connections are served at once. Past that, a connection is
//!   answered `503` ServerBusy with `Retry-After` and closed (a few at a time; beyond those
//!   it is closed at once), so a client sees why rather than hanging in the backlog.
//! - Headers must arrive within `header_read_timeout`, which hyper also applies while a
//!   keep-alive connection waits for its next request: an idle or half-open connection is
//!   closed after it.
//! - Request headers are capped at `max_header_bytes` (`431` above it).
//! - On shutdown, nothing more is accepted, parked long polls are answered at once, in-flight
//!   requests finish, and connections still open after `shutdown_grace` are dropped.
//! - With TLS, HTTPS and HTTP share the port: a connection whose first byte is a TLS
//!   handshake record (22) is served over TLS, any other over plain HTTP. The first byte
//!   and the handshake must come within `header_read_timeout`, like a request's headers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::{ApiError, Dropper, Live, Open};

/// Connections over the limit that are answered `503` at once; past these, a connection
/// over the limit is closed without an answer (a flood must not cost a task each).
const BUSY_ANSWERS: usize = 64;

/// The limits of the connection loop (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) shutdown_grace: Duration,
}

/// Marks a request that came over TLS (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 22;

/// Serves `router` on `listener` until `shutdown` completes; `on_shutdown` runs once it has,
/// before in-flight requests are waited for (the broker answers parked long polls there).
/// With `tls`, HTTPS beside HTTP on the same port.
/// (The accept loop and its stop are one sequence; it runs a little over 80 lines.)
#[allow(clippy::too_many_arguments)] // the loop's inputs, each used once
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    live: Arc<Live>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    namespace: String,
    shutdown: impl Future<Output = ()> + Send,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // The read buffer holds the head while it is parsed: a little more than the cap,
        // so that the cap, not the buffer, decides (and answers 431).
        .max_buf_size(limits.max_header_bytes.saturating_add(16 * 1024).max(8192))
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let busy = Arc::new(Semaphore::new(BUSY_ANSWERS));
    let graceful = GracefulShutdown::new();
    // Ends handshakes still under way at shutdown: a connection is watched (and waited
    // for) only once it speaks HTTP.
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut tasks = JoinSet::new();
    let namespace: Arc<str> = namespace.into();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers (most of ours) go out at once rather than after the peer's delayed
        // acknowledgement of the previous segment.
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            let conn = Connection {
                http: http.clone(),
                router: router.clone(),
                watcher: graceful.watcher(),
                tls: tls.clone(),
                stopping: stopping.clone(),
                header_timeout: limits.header_read_timeout,
            };
            let open = Open::new(&live, |l| &l.http);
            tasks.spawn(async move {
                let (_permit, _open) = (permit, open);
                conn.serve(stream).await;
            });
        } else if let Ok(permit) = busy.clone().try_acquire_owned() {
            let io = TokioIo::new(stream);
            let (max, namespace) = (limits.max_connections, namespace.clone());
            let mut http = http.clone();
            http.keep_alive(false);
            let answer = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = busy_response(max, &namespace, req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            tasks.spawn(async move {
                let _permit = permit;
                let _ = http.serve_connection(io, answer).await;
            });
        }
    }
    drop(listener);
    stopping.cancel();
    on_shutdown();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "connections still open after the shutdown grace; dropping them"
        );
    }
    tasks.shutdown().await;
    Ok(())
}

/// What serving one accepted connection needs.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Cancelled at shutdown: ends a TLS handshake still under way.
    stopping: tokio_util::sync::CancellationToken,
    header_timeout: Duration,
}

impl Connection {
    /// Serves `stream` until it closes, the shutdown grace ends, or a lost-ack fault drops
    /// it (its requests carry a [`Dropper`]; requests over TLS carry [`OverTls`], so
    /// answers name `https://` URLs).
    async fn serve(self, stream: TcpStream) {
        let Connection {
            http,
            router,
            watcher,
            tls,
            stopping,
            header_timeout,
        } = self;
        let dropped = tokio_util::sync::CancellationToken::new();
        let dropper = Dropper(dropped.clone());
        let service = move |secure: bool| {
            TowerToHyperService::new(router.map_request(move |req: Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(dropper.clone());
                if secure {
                    req.extensions_mut().insert(OverTls);
                }
                req
            }))
        };
        let serving = async {
            let Some(tls) = tls else {
                let plain = http.serve_connection(TokioIo::new(stream), service(false));
                return watcher.watch(plain).await;
            };
            match stopping
                .run_until_cancelled(secure(stream, &tls, header_timeout))
                .await
                .flatten()
            {
                Some(Ok(tls)) => {
                    let secured = http.serve_connection(TokioIo::new(tls), service(true));
                    watcher.watch(secured).await
                }
                Some(Err(plain)) => {
                    let plain = http.serve_connection(TokioIo::new(plain), service(false));
                    watcher.watch(plain).await
                }
                None => Ok(()),
            }
        };
        if let Some(Err(e)) = dropped.run_until_cancelled(serving).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// TLS for a connection that opens with a handshake (`Ok`), the plain stream for any other
/// (`Err`); `None` when the first byte or the handshake does not come within `timeout`, or
/// the handshake fails (logged; the connection is closed).
async fn secure(
    stream: TcpStream,
    tls: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> Option<Result<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>> {
    let opened = tokio::time::timeout(timeout, async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] == TLS_HANDSHAKE => Some(tls.accept(stream).await.map(Ok)),
            Ok(1) => Some(Ok(Err(stream))),
            _ => None,
        }
    })
    .await;
    match opened {
        Ok(Some(Ok(io))) => Some(io),
        Ok(Some(Err(e))) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Ok(None) | Err(_) => None,
    }
}

/// `503` ServerBusy for a connection over the limit.
fn busy_response(max: usize, namespace: &str, path: &str) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        50004,
        format!(
            "The server is busy: {max} connections are open, the most it serves at once \
             (--max-connections); retry after a moment"
        ),
    )
    .render(namespace, path);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

//! The multi-node chat demo: an axum + socketioxide server whose nodes share their events
//! through one Service Bus topic with the backplane's adapter, and the page it serves
//! (`demo/public`). `scripts/demo.sh` starts the emulator and two `chat-node`s.

pub mod chat;

use std::net::SocketAddr;

/// `listener` with `TCP_NODELAY` set on every connection it accepts, for servers of
/// WebSockets (Socket.IO). A WebSocket frame is a small write of its own; with Nagle's
/// algorithm on, a frame written while the previous one is unacknowledged waits for that
/// acknowledgement, which the peer may delay up to 40 ms. Measured by `scripts/bench`
/// (Socket.IO room broadcasts, one server, paced 500/s): p99 35 ms with Nagle, 3-4 ms
/// without.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    })
}

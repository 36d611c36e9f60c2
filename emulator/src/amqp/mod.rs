//! The AMQP 1.0 front-end (contract `servicebus-amqp.md`): what the current Service Bus SDKs
//! speak, served over the same broker as the REST surface.
//!
//! Each connection is one task (`connection.rs`) that owns its sessions and links and is the
//! only writer of its socket. Work that waits (a durable send, a long poll for a receiver
//! link, a settlement) runs in per-link tasks (`link.rs`) that report back to the connection
//! task through a bounded channel, so a slow operation never stalls the other links of a
//! connection. Frames are encoded and decoded by fe2o3-amqp's codecs; the session and link
//! engine is ours, because the SDKs need two things fe2o3-amqp's acceptor does not give: the
//! lock token as the delivery tag, and control of the state a settlement is answered with
//! (see `emulator/ARCHITECTURE.md`).

mod cbs;
mod connection;
mod convert;
mod io;
mod link;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Broker;
use crate::auth::{Authenticator, SharedAccessKey};

/// The `max-frame-size` the emulator declares: what Azure Standard declares (contract 1.4).
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// The `channel-max` the emulator declares: room for clients that open one session per link.
pub const CHANNEL_MAX: u16 = 4999;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Context {
    /// The broker both surfaces serve.
    pub(crate) broker: Broker,
    /// Verifies CBS tokens, as REST's `Authorization` headers.
    pub(crate) auth: Authenticator,
    /// The configured keys, for SASL PLAIN.
    pub(crate) keys: Vec<SharedAccessKey>,
    /// The namespace name, the container id the emulator declares.
    pub(crate) namespace: String,
    /// Most connections served at once; more are closed at once.
    pub(crate) max_connections: usize,
}

/// Accepts AMQP connections until `stop` is cancelled, then closes every connection with
/// `amqp:connection:forced` and returns once they are gone.
pub(crate) async fn serve(listener: TcpListener, context: Arc<Context>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: the listener itself is fine.
                tracing::warn!(error = %e, "AMQP accept failed");
                continue;
            }
        };
        if connections.len() >= context.max_connections {
            tracing::warn!(%peer, "AMQP connection refused: too many connections");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(connection::run(stream, context.clone(), stop.child_token()));
    }
    while connections.join_next().await.is_some() {}
}

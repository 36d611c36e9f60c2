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
mod depth;
mod extras;
mod fields;
mod io;
mod link;
mod management;
mod receiving;
mod rules;
mod sending;
mod settling;
mod stream;

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
    /// Open connections, for metrics.
    pub(crate) live: Arc<crate::http::Live>,
}

/// Accepts AMQP connections on `plain` and, when given, AMQP over TLS on `tls`, until
/// `stop` is cancelled; then closes every connection with `amqp:connection:forced` and
/// returns once they are gone. A TLS handshake runs in the connection's own task, bounded
/// like the AMQP handshake after it.
pub(crate) async fn serve(
    plain: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    context: Arc<Context>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let (secure, acceptor) = tls.unzip();
    loop {
        let (accepted, over_tls) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = plain.accept() => (accepted, false),
            accepted = accept(secure.as_ref()) => (accepted, true),
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
        let (context, stop) = (context.clone(), stop.child_token());
        let open = crate::http::Open::new(&context.live, |l| &l.amqp);
        match (over_tls, &acceptor) {
            (true, Some(acceptor)) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let _open = open;
                    let shake = tokio::time::timeout(
                        connection::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    );
                    let secured = tokio::select! {
                        () = stop.cancelled() => return,
                        secured = shake => secured,
                    };
                    match secured {
                        Ok(Ok(tls)) => {
                            connection::run(stream::Stream::Tls(Box::new(tls)), context, stop)
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            _ => {
                connections.spawn(async move {
                    let _open = open;
                    connection::run(stream::Stream::Plain(stream), context, stop).await;
                });
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// The next connection on `listener`; never completes without one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Decodes one frame as the listener does (its 4-byte size included), for fuzzing and
/// tests: the performative's name, or why the frame is refused. Never panics.
///
/// # Errors
///
/// Why the listener would close the connection over these bytes.
pub fn decode_frame(bytes: &[u8]) -> Result<&'static str, String> {
    use fe2o3_amqp::frames::amqp::FrameBody;
    let size = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("shorter than the size field")?;
    if size as usize != bytes.len() || !(8..=MAX_FRAME_SIZE).contains(&size) {
        return Err(format!("a size of {size} for {} bytes", bytes.len()));
    }
    let mut body = bytes::BytesMut::from(&bytes[4..]);
    let frame = io::decode_amqp(&mut body).map_err(|e| e.to_string())?;
    Ok(match frame.body {
        FrameBody::Open(_) => "open",
        FrameBody::Begin(_) => "begin",
        FrameBody::Attach(_) => "attach",
        FrameBody::Flow(_) => "flow",
        FrameBody::Transfer { .. } => "transfer",
        FrameBody::Disposition(_) => "disposition",
        FrameBody::Detach(_) => "detach",
        FrameBody::End(_) => "end",
        FrameBody::Close(_) => "close",
        FrameBody::Empty => "empty",
    })
}

/// Encodes one frame as the listener writes it (its 4-byte size included), for load
/// clients and tests.
///
/// # Errors
///
/// When the performative does not encode.
pub fn encode_frame(frame: fe2o3_amqp::frames::amqp::Frame) -> Result<bytes::BytesMut, String> {
    io::encode_amqp(frame).map_err(|e| e.to_string())
}

/// Decodes a transfer's payload as a sender link does, for fuzzing and tests: how many
/// messages it holds (a batch envelope holds several). Never panics.
///
/// # Errors
///
/// Why the delivery would be rejected (`amqp:decode-error`).
pub fn decode_message(format: u32, payload: &[u8]) -> Result<usize, String> {
    convert::decode(format, payload)
        .map(|messages| messages.len())
        .map_err(|e| e.to_string())
}

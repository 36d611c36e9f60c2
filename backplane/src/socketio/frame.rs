//! How the adapter's requests and responses ride in a backplane event.
//!
//! ```text
//! request:  0x01 | namespace length (u16, big endian) | namespace | MessagePack RequestOut
//! response: 0x02 | request id (16 ASCII bytes)        | MessagePack Response
//! server:   0x03 | event name length (u16, big endian) | event name | MessagePack data
//! emitter:  0x04 | namespace length (u16, big endian)  | namespace  | JSON order
//! ```
//!
//! A server event (`AdapterState::server_side_emit`) is for the servers themselves, not
//! for a namespace. When it asks for acknowledgements it rides as a backplane request, and
//! each answer is `0x01 | MessagePack answer` from a server with a handler for the event,
//! or `0x00` from one without.
//!
//! The namespace keeps the namespaces of one app apart on their shared topic; a response
//! is routed by its request id alone (ids are unique per server).

use std::str::FromStr;

use socketioxide_core::Sid;

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const SERVER: u8 = 3;
const EMIT: u8 = 4;
/// A socket.io id is 16 characters.
const SID_LEN: usize = 16;

/// A decoded frame, borrowing the event's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A request for the namespace `ns`.
    Request { ns: &'a str, body: &'a [u8] },
    /// A response to the request `id`.
    Response { id: Sid, body: &'a [u8] },
    /// An event for the servers.
    Server { event: &'a str, body: &'a [u8] },
    /// A cluster emitter's order for the namespace `ns`.
    Emit { ns: &'a str, body: &'a [u8] },
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("frame truncated")]
    Truncated,
    /// The first byte is no known kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// The namespace (or server event name) is not UTF-8, or too long.
    #[error("namespace or event name is not UTF-8 or too long")]
    Namespace,
    /// The request id is not a socket.io id.
    #[error("bad request id")]
    RequestId,
}

/// A request frame around an encoded `RequestOut`.
pub(crate) fn request(ns: &str, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    named(REQUEST, ns, body)
}

/// A server event frame around encoded data.
pub(crate) fn server(event: &str, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    named(SERVER, event, body)
}

/// An emitter frame around a JSON order.
pub(crate) fn emit(ns: &str, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    named(EMIT, ns, body)
}

/// `kind | name length | name | body`.
fn named(kind: u8, name: &str, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u16::try_from(name.len()).map_err(|_| FrameError::Namespace)?;
    let mut out = Vec::with_capacity(3 + name.len() + body.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits `name length | name | body`.
fn split_named(rest: &[u8]) -> Result<(&str, &[u8]), FrameError> {
    let (len, rest) = rest.split_at_checked(2).ok_or(FrameError::Truncated)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (name, body) = rest.split_at_checked(len).ok_or(FrameError::Truncated)?;
    let name = std::str::from_utf8(name).map_err(|_| FrameError::Namespace)?;
    Ok((name, body))
}

/// A response frame around an encoded `Response`.
pub(crate) fn response(id: Sid, body: &[u8]) -> Vec<u8> {
    let id = id.to_string();
    let mut out = Vec::with_capacity(1 + id.len() + body.len());
    out.push(RESPONSE);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a frame.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&kind, rest) = bytes.split_first().ok_or(FrameError::Truncated)?;
    match kind {
        REQUEST => {
            let (ns, body) = split_named(rest)?;
            Ok(Frame::Request { ns, body })
        }
        SERVER => {
            let (event, body) = split_named(rest)?;
            Ok(Frame::Server { event, body })
        }
        EMIT => {
            let (ns, body) = split_named(rest)?;
            Ok(Frame::Emit { ns, body })
        }
        RESPONSE => {
            let (id, body) = rest
                .split_at_checked(SID_LEN)
                .ok_or(FrameError::Truncated)?;
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|id| Sid::from_str(id).ok())
                .ok_or(FrameError::RequestId)?;
            Ok(Frame::Response { id, body })
        }
        other => Err(FrameError::Kind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let bytes = request("/chat", b"body").unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            Frame::Request {
                ns: "/chat",
                body: b"body"
            }
        );
    }

    #[test]
    fn response_round_trips() {
        let id = Sid::new();
        let bytes = response(id, b"xyz");
        assert_eq!(
            decode(&bytes).unwrap(),
            Frame::Response { id, body: b"xyz" }
        );
    }

    #[test]
    fn server_event_round_trips() {
        let bytes = server("joined", b"data").unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            Frame::Server {
                event: "joined",
                body: b"data"
            }
        );
        assert_eq!(decode(&[3, 0, 2, b'a']), Err(FrameError::Truncated));
        let bytes = emit("/", b"{}").unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            Frame::Emit {
                ns: "/",
                body: b"{}"
            }
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(decode(b""), Err(FrameError::Truncated));
        assert_eq!(decode(&[9]), Err(FrameError::Kind(9)));
        assert_eq!(decode(&[1, 0]), Err(FrameError::Truncated));
        assert_eq!(decode(&[1, 0, 5, b'/']), Err(FrameError::Truncated));
        assert_eq!(decode(&[1, 0, 1, 0xff]), Err(FrameError::Namespace));
        assert_eq!(decode(&[2, b'a']), Err(FrameError::Truncated));
        assert_eq!(decode(b"\x02!!!!!!!!!!!!!!!!"), Err(FrameError::RequestId));
    }
}

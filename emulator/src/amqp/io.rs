//! Bytes on the wire: the protocol headers, the SASL exchange (contract 1.2-1.3) and AMQP
//! frames. Frame bodies are encoded and decoded by fe2o3-amqp's frame codecs; this file only
//! reads and writes the 4-byte size and enforces `max-frame-size`.

use bytes::{Buf as _, BufMut, BytesMut};
use fe2o3_amqp::frames::{amqp, sasl};
use fe2o3_amqp_types::primitives::{Array, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::auth::{Rights, SharedAccessKey};

/// `AMQP 0 1 0 0`: AMQP without a security layer.
pub(crate) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// `AMQP 3 1 0 0`: a SASL exchange first.
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The smallest frame: the 8-byte frame header.
const FRAME_HEADER: u32 = 8;
/// Largest SASL frame accepted (an `init` with a token as its initial response).
const MAX_SASL_FRAME: u32 = 64 * 1024;

/// Why a connection ends before or between frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IoError {
    /// The socket failed or closed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A frame that breaks the framing rules (`amqp:connection:framing-error`).
    #[error("{0}")]
    Framing(String),
    /// A frame body that does not decode (`amqp:decode-error`).
    #[error("cannot decode a frame: {0}")]
    Decode(String),
    /// The client is not speaking AMQP 1.0 without TLS.
    #[error("{0}")]
    Protocol(String),
}

/// Who the SASL exchange says the client is.
#[derive(Debug, Clone, Default)]
pub(crate) struct Principal {
    /// `PLAIN` with a configured key's name and value: its rights on the whole namespace.
    /// `None` for ANONYMOUS, MSSBCBS or no SASL: CBS tokens decide.
    pub(crate) plain: Option<Rights>,
}

/// `size` when it is a frame's size within `max`; the framing error otherwise.
fn checked_size(size: u32, max: u32) -> Result<u32, IoError> {
    if size < FRAME_HEADER {
        return Err(IoError::Framing(format!(
            "a frame of {size} bytes is smaller than its own header"
        )));
    }
    if size > max {
        return Err(IoError::Framing(format!(
            "a frame of {size} bytes is over the max-frame-size of {max}"
        )));
    }
    Ok(size)
}

/// Reads one SASL frame (after its size) of at most `max` bytes; `Ok(None)` at a clean end of
/// stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<BytesMut>, IoError> {
    let size = match reader.read_u32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size = checked_size(size, max)?;
    let mut body = BytesMut::zeroed((size - 4) as usize);
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Room made in a reader's buffer before each read: enough for a burst of small frames
/// (64 transfers of a few hundred bytes, or a dozen 1 KB messages) in one read.
const READ_AHEAD: usize = 16 * 1024;

/// Reads AMQP frames of at most `max` bytes through a buffer: one read takes in whatever
/// the client has written (a burst of transfers is one system call, not two per frame),
/// and each frame is cut from the buffer without a copy. [`FrameReader::next`] is
/// cancel-safe (what was read stays buffered), so the connection task awaits it beside its
/// other work instead of a reader task of its own passing frames on.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    reader: R,
    max: u32,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames from `reader`.
    pub(crate) fn new(reader: R, max: u32) -> Self {
        FrameReader {
            reader,
            max,
            buffer: BytesMut::new(),
        }
    }

    /// The next frame; `Ok(None)` when the client closed the socket between frames.
    /// Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Option<amqp::Frame>, IoError> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            // `buffered` made room for the frame begun; this makes room for a burst.
            if self.buffer.capacity() - self.buffer.len() < READ_AHEAD / 4 {
                self.buffer.reserve(READ_AHEAD);
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                };
            }
        }
    }

    /// The next frame if it is already read whole, without waiting.
    pub(crate) fn buffered(&mut self) -> Result<Option<amqp::Frame>, IoError> {
        let Some(&[a, b, c, d]) = self.buffer.get(..4) else {
            return Ok(None);
        };
        let size = checked_size(u32::from_be_bytes([a, b, c, d]), self.max)? as usize;
        if self.buffer.len() < size {
            self.buffer.reserve(size - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(4);
        let mut body = self.buffer.split_to(size - 4);
        decode_amqp(&mut body).map(Some)
    }
}

/// Decodes a frame (without its size): the 4 header bytes, then the performative.
pub(crate) fn decode_amqp(body: &mut BytesMut) -> Result<amqp::Frame, IoError> {
    // The codec reads the header bytes unchecked; the frame's size check guarantees them.
    if body.len() < 4 {
        return Err(IoError::Framing("a frame shorter than its header".into()));
    }
    if body[1] != fe2o3_amqp::frames::FRAME_TYPE_AMQP {
        return Err(IoError::Framing(format!(
            "frame type {} where an AMQP frame (0) was expected",
            body[1]
        )));
    }
    if body[0] != 2 {
        return Err(IoError::Framing(format!(
            "a data offset of {} words is not supported (extended headers are not used)",
            body[0]
        )));
    }
    if !super::depth::within(&body[4..], super::depth::MAX_DEPTH) {
        return Err(IoError::Decode("the frame's values nest too deeply".into()));
    }
    // A transfer's performative is followed by its payload; other frames are small, and
    // are kept for a second, lenient attempt.
    let is_transfer = body.get(4..7) == Some(&[0x00, 0x53, 0x14][..]);
    let kept = (!is_transfer).then(|| body.clone());
    let decoded = guarded(|| amqp::FrameDecoder {}.decode(body))
        .unwrap_or_else(|| Err(fe2o3_amqp::frames::Error::NotImplemented));
    match decoded {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(IoError::Decode("an incomplete frame".into())),
        Err(e) => match kept {
            Some(kept) => decode_lenient(&kept).ok_or_else(|| IoError::Decode(e.to_string())),
            None => Err(IoError::Decode(e.to_string())),
        },
    }
}

/// Decodes a performative whose `fields` maps have string keys where AMQP says symbols:
/// rhea (JS) writes a dead-letter disposition's error info that way (contract 6.3, and
/// trace js-03). Every map in a performative is a symbol-keyed `fields`, so turning string
/// keys into symbols there is what the client meant.
fn decode_lenient(body: &BytesMut) -> Option<amqp::Frame> {
    fn symbolize(value: &mut Value) {
        match value {
            Value::Map(map) => {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries.into_inner() {
                    if let Value::String(s) = k {
                        k = Value::Symbol(Symbol::from(s));
                    }
                    symbolize(&mut v);
                    map.insert(k, v);
                }
            }
            Value::Described(d) => symbolize(&mut d.value),
            Value::List(items) => items.iter_mut().for_each(symbolize),
            _ => {}
        }
    }
    let mut performative: Value = guarded(|| serde_amqp::from_slice(body.get(4..)?).ok())??;
    symbolize(&mut performative);
    let mut fixed = BytesMut::from(&body[..4]);
    fixed.extend_from_slice(&serde_amqp::to_vec(&performative).ok()?);
    guarded(|| amqp::FrameDecoder {}.decode(&mut fixed).ok().flatten())?
}

/// Runs a decoder over client bytes, turning a panic inside it into `None`. serde_amqp
/// 0.18.0 panics on some malformed input (a `list8` whose size byte is 0 underflows a
/// subtraction in `de.rs`, found by `emulator/tests/fuzz.rs`); a client's bytes must cost
/// it its connection, never the emulator a task.
pub(crate) fn guarded<T>(decode: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).ok()
}

/// Encodes an AMQP frame with its size: the header, the performative (by `serde_amqp`)
/// and a transfer's payload.
pub(crate) fn encode_amqp(frame: amqp::Frame) -> Result<BytesMut, IoError> {
    use serde::Serialize;
    let mut out = BytesMut::with_capacity(64);
    out.put_u32(0);
    out.put_u8(2); // data offset in 4-byte words: no extended header
    out.put_u8(fe2o3_amqp::frames::FRAME_TYPE_AMQP);
    out.put_u16(frame.channel);
    let mut serializer = serde_amqp::ser::Serializer::from((&mut out).writer());
    let encoded = match frame.body {
        amqp::FrameBody::Open(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Begin(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Attach(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Flow(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Transfer {
            performative,
            payload,
        } => performative.serialize(&mut serializer).map(|()| {
            out.put_slice(&payload);
        }),
        amqp::FrameBody::Disposition(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Detach(p) => p.serialize(&mut serializer),
        amqp::FrameBody::End(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Close(p) => p.serialize(&mut serializer),
        amqp::FrameBody::Empty => Ok(()),
    };
    encoded.map_err(|e| IoError::Decode(e.to_string()))?;
    let size =
        u32::try_from(out.len()).map_err(|_| IoError::Framing("a frame over 4 GiB".into()))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

async fn write_sasl<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: sasl::Frame,
) -> Result<(), IoError> {
    let mut out = BytesMut::with_capacity(64);
    out.put_u32(0);
    sasl::FrameCodec {}
        .encode(frame, &mut out)
        .map_err(|e| IoError::Decode(e.to_string()))?;
    let size = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&size.to_be_bytes());
    writer.write_all(&out).await?;
    Ok(())
}

async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<[u8; 8], IoError> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    Ok(header)
}

/// Refuses what is not an AMQP 1.0 header, with a hint for TLS (contract 1.1).
fn refuse(header: &[u8; 8]) -> IoError {
    if header[0] == 0x16 && header[1] == 0x03 || header[..5] == *b"AMQP\x02" {
        IoError::Protocol(
            "the client is using TLS: set UseDevelopmentEmulator=true in the connection \
             string (lower-case `true` for JavaScript and Python)"
                .into(),
        )
    } else {
        IoError::Protocol(format!("not an AMQP 1.0 protocol header: {header:02x?}"))
    }
}

/// Runs the protocol headers and, when the client asks for it, the SASL exchange; returns
/// once both sides have sent the AMQP header. A client that starts with the AMQP header
/// skips SASL (contract 1.2).
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keys: &[SharedAccessKey],
) -> Result<Principal, IoError> {
    let mut header = read_header(stream).await?;
    let mut principal = Principal::default();
    if header == SASL_HEADER {
        stream.write_all(&SASL_HEADER).await?;
        principal = sasl_exchange(stream, keys).await?;
        header = read_header(stream).await?;
    }
    if header != AMQP_HEADER {
        // The spec's answer to an unsupported header is the one we support, then close.
        let _ = stream.write_all(&AMQP_HEADER).await;
        return Err(refuse(&header));
    }
    stream.write_all(&AMQP_HEADER).await?;
    Ok(principal)
}

async fn sasl_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keys: &[SharedAccessKey],
) -> Result<Principal, IoError> {
    let mechanisms = ["MSSBCBS", "ANONYMOUS", "PLAIN"];
    write_sasl(
        stream,
        sasl::Frame::Mechanisms(SaslMechanisms {
            sasl_server_mechanisms: Array(mechanisms.iter().map(|m| Symbol::from(*m)).collect()),
        }),
    )
    .await?;
    let mut body = read_frame(stream, MAX_SASL_FRAME)
        .await?
        .ok_or_else(|| IoError::Protocol("closed during SASL".into()))?;
    if body.len() < 4 || body[1] != fe2o3_amqp::frames::FRAME_TYPE_SASL || body[0] != 2 {
        return Err(IoError::Framing("expected a SASL frame".into()));
    }
    let decoded = sasl::FrameCodec {}
        .decode(&mut body)
        .map_err(|e| IoError::Decode(e.to_string()))?;
    let Some(sasl::Frame::Init(init)) = decoded else {
        return Err(IoError::Protocol("expected sasl-init".into()));
    };
    let (code, principal) = match init.mechanism.0.as_str() {
        "ANONYMOUS" | "MSSBCBS" => (SaslCode::Ok, Principal::default()),
        "PLAIN" => match plain_rights(
            init.initial_response.as_ref().map_or(&[][..], |b| &b[..]),
            keys,
        ) {
            Some(rights) => (
                SaslCode::Ok,
                Principal {
                    plain: Some(rights),
                },
            ),
            None => (SaslCode::Auth, Principal::default()),
        },
        _ => (SaslCode::Auth, Principal::default()),
    };
    let ok = code == SaslCode::Ok;
    write_sasl(
        stream,
        sasl::Frame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        }),
    )
    .await?;
    if !ok {
        return Err(IoError::Protocol(format!(
            "SASL {} refused",
            init.mechanism.0
        )));
    }
    Ok(principal)
}

/// PLAIN's `authzid NUL user NUL password`, checked as a key name and key (contract 1.3).
fn plain_rights(response: &[u8], keys: &[SharedAccessKey]) -> Option<Rights> {
    let mut parts = response.split(|b| *b == 0);
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    let user = std::str::from_utf8(user).ok()?;
    keys.iter()
        .find(|k| {
            k.name.eq_ignore_ascii_case(user)
                && subtle::ConstantTimeEq::ct_eq(k.key.as_bytes(), password).into()
        })
        .map(|k| k.rights)
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
    use fe2o3_amqp_types::performatives::Flow;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    fn flow(credit: u32) -> Vec<u8> {
        let flow = Flow {
            next_incoming_id: Some(0),
            incoming_window: 10,
            next_outgoing_id: 0,
            outgoing_window: 10,
            handle: Some(0.into()),
            delivery_count: Some(0),
            link_credit: Some(credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        encode_amqp(Frame::new(0u16, FrameBody::Flow(flow)))
            .unwrap()
            .to_vec()
    }

    fn credit(frame: Option<Frame>) -> Option<u32> {
        match frame?.into_body() {
            FrameBody::Flow(flow) => flow.link_credit,
            _ => None,
        }
    }

    #[tokio::test]
    async fn frames_are_cut_from_whatever_the_reads_bring_and_a_cancelled_read_loses_nothing() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(server, 1024);
        let third = flow(3);
        let (head, tail) = third.split_at(5);
        // Two whole frames and the start of a third arrive in one read.
        client
            .write_all(&[flow(1), flow(2), head.to_vec()].concat())
            .await
            .unwrap();
        assert_eq!(credit(reader.next().await.unwrap()), Some(1));
        assert_eq!(credit(reader.buffered().unwrap()), Some(2));
        assert!(reader.buffered().unwrap().is_none());
        // A read given up on (as a select does) keeps what it read.
        let waited = tokio::time::timeout(std::time::Duration::ZERO, reader.next()).await;
        assert!(waited.is_err());
        client.write_all(tail).await.unwrap();
        assert_eq!(credit(reader.next().await.unwrap()), Some(3));
        // A clean end between frames is the end of the connection.
        drop(client);
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_by_its_size_and_a_torn_one_is_an_error() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(server, 1024);
        client.write_all(&4096u32.to_be_bytes()).await.unwrap();
        assert!(matches!(reader.next().await, Err(IoError::Framing(_))));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(server, 1024);
        client.write_all(&flow(1)[..6]).await.unwrap();
        drop(client);
        assert!(matches!(reader.next().await, Err(IoError::Io(_))));
    }
}

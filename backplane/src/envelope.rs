//! The backplane's wire format: a versioned envelope with explicit numeric tags carrying
//! one or more events of one origin node, packed into one Service Bus message up to the
//! entity's size limit.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! envelope := version:u8 (=1) origin:str count:u32 event*
//! event    := kind:u8 seq:u64 [request_id:u64 if kind is 2 or 3] target payload:bytes
//! kind     := 1 broadcast | 2 request | 3 response | 4 heartbeat
//! target   := 1 rooms:strs except:strs  (empty rooms: everyone)  | 2 node:str
//! str      := len:u32 utf8 ;  strs := count:u32 str* ;  bytes := len:u32 raw
//! ```
//!
//! Unknown versions and tags are refused with a typed error, never guessed.

use crate::ids::{NodeId, RoomName};

/// The format version written in every envelope.
pub const VERSION: u8 = 1;

/// What an event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An event for the application's clients.
    Broadcast,
    /// A request; answers name its id.
    Request(u64),
    /// The answer to the request with this id.
    Response(u64),
    /// "I am alive" (carries the node's state in the payload).
    Heartbeat,
}

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every node: clients in any of `rooms` (everyone when empty) and in none of `except`.
    Rooms {
        /// The rooms; empty means all clients.
        rooms: Vec<RoomName>,
        /// Rooms whose clients are left out.
        except: Vec<RoomName>,
    },
    /// One node.
    Node(NodeId),
}

/// One event of an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The origin's sequence number (per origin, from 1, no gaps at the origin).
    pub seq: u64,
    /// What it is.
    pub kind: Kind,
    /// Who it is for.
    pub target: Target,
    /// The application's bytes.
    pub payload: Vec<u8>,
}

/// Events of one origin, as one Service Bus message carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published them.
    pub origin: NodeId,
    /// In publish order.
    pub events: Vec<Event>,
}

/// Why bytes are not an envelope, or an event does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Written by another format version.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// Ends too early.
    #[error("envelope truncated")]
    Truncated,
    /// An unknown tag.
    #[error("unknown {what} tag {tag}")]
    Tag {
        /// Which tag.
        what: &'static str,
        /// Its value.
        tag: u8,
    },
    /// Text that is not UTF-8, or an invalid node id.
    #[error("invalid text in envelope")]
    Text,
    /// Bytes left after the last event.
    #[error("trailing bytes after the envelope")]
    Trailing,
    /// One event is larger than a message may be, alone.
    #[error("an event of {size} bytes does not fit in a message of at most {limit} bytes")]
    TooLarge {
        /// The event's encoded size (with an envelope around it).
        size: usize,
        /// The limit.
        limit: usize,
    },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_be_bytes());
    out.extend(s.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    out.extend((v.len() as u32).to_be_bytes());
    for s in v {
        put_str(out, s);
    }
}

impl Event {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let (tag, id) = match self.kind {
            Kind::Broadcast => (1u8, None),
            Kind::Request(id) => (2, Some(id)),
            Kind::Response(id) => (3, Some(id)),
            Kind::Heartbeat => (4, None),
        };
        out.push(tag);
        out.extend(self.seq.to_be_bytes());
        if let Some(id) = id {
            out.extend(id.to_be_bytes());
        }
        match &self.target {
            Target::Rooms { rooms, except } => {
                out.push(1);
                put_strs(out, rooms);
                put_strs(out, except);
            }
            Target::Node(node) => {
                out.push(2);
                put_str(out, node.as_str());
            }
        }
        out.extend((self.payload.len() as u32).to_be_bytes());
        out.extend(&self.payload);
    }

    fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v.len()
    }
}

fn header_len(origin: &NodeId) -> usize {
    1 + 4 + origin.as_str().len() + 4
}

impl Envelope {
    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            header_len(&self.origin) + self.events.iter().map(Event::encoded_len).sum::<usize>(),
        );
        out.push(VERSION);
        put_str(&mut out, self.origin.as_str());
        out.extend((self.events.len() as u32).to_be_bytes());
        for e in &self.events {
            e.encode_into(&mut out);
        }
        out
    }

    /// Reads an envelope.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] for another version, an unknown tag, truncation or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let origin = NodeId::new(&r.str()?).map_err(|_| EnvelopeError::Text)?;
        let count = r.u32()? as usize;
        let mut events = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let tag = r.u8()?;
            let seq = r.u64()?;
            let kind = match tag {
                1 => Kind::Broadcast,
                2 => Kind::Request(r.u64()?),
                3 => Kind::Response(r.u64()?),
                4 => Kind::Heartbeat,
                tag => {
                    return Err(EnvelopeError::Tag {
                        what: "event kind",
                        tag,
                    });
                }
            };
            let target = match r.u8()? {
                1 => Target::Rooms {
                    rooms: r.strs()?,
                    except: r.strs()?,
                },
                2 => Target::Node(NodeId::new(&r.str()?).map_err(|_| EnvelopeError::Text)?),
                tag => {
                    return Err(EnvelopeError::Tag {
                        what: "target",
                        tag,
                    });
                }
            };
            let payload = r.bytes()?.to_vec();
            events.push(Event {
                seq,
                kind,
                target,
                payload,
            });
        }
        if r.at != bytes.len() {
            return Err(EnvelopeError::Trailing);
        }
        Ok(Envelope { origin, events })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self.at.checked_add(n).ok_or(EnvelopeError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(EnvelopeError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| EnvelopeError::Truncated)?,
        ))
    }
    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| EnvelopeError::Truncated)?,
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], EnvelopeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, EnvelopeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| EnvelopeError::Text)
    }
    fn strs(&mut self) -> Result<Vec<String>, EnvelopeError> {
        let n = self.u32()? as usize;
        (0..n).map(|_| self.str()).collect()
    }
}

/// Whether one event fits a message of `limit` bytes alone.
///
/// # Errors
///
/// [`EnvelopeError::TooLarge`] when it does not.
pub fn check_fits(origin: &NodeId, event: &Event, limit: usize) -> Result<(), EnvelopeError> {
    let size = header_len(origin) + event.encoded_len();
    if size > limit {
        return Err(EnvelopeError::TooLarge { size, limit });
    }
    Ok(())
}

/// Packs an origin's events, in order, into as few envelopes as fit `limit` bytes each.
///
/// # Errors
///
/// [`EnvelopeError::TooLarge`] when one event alone does not fit (nothing is dropped
/// silently; the caller decides).
pub fn pack(
    origin: &NodeId,
    events: Vec<Event>,
    limit: usize,
) -> Result<Vec<Envelope>, EnvelopeError> {
    let header = header_len(origin);
    let mut out: Vec<Envelope> = Vec::new();
    let mut size = 0;
    for event in events {
        let len = event.encoded_len();
        if header + len > limit {
            return Err(EnvelopeError::TooLarge {
                size: header + len,
                limit,
            });
        }
        match out.last_mut() {
            Some(current) if size + len <= limit => {
                current.events.push(event);
                size += len;
            }
            _ => {
                out.push(Envelope {
                    origin: origin.clone(),
                    events: vec![event],
                });
                size = header + len;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = NodeId> {
        "[a-z0-9_-]{1,12}".prop_map(|s| NodeId::new(&s).unwrap())
    }

    fn event() -> impl Strategy<Value = Event> {
        let kind = prop_oneof![
            Just(Kind::Broadcast),
            any::<u64>().prop_map(Kind::Request),
            any::<u64>().prop_map(Kind::Response),
            Just(Kind::Heartbeat)
        ];
        let target = prop_oneof![
            (
                prop::collection::vec(".{0,6}", 0..3),
                prop::collection::vec(".{0,6}", 0..3)
            )
                .prop_map(|(rooms, except)| Target::Rooms { rooms, except }),
            node().prop_map(Target::Node),
        ];
        (
            any::<u64>(),
            kind,
            target,
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(seq, kind, target, payload)| Event {
                seq,
                kind,
                target,
                payload,
            })
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(origin in node(), events in prop::collection::vec(event(), 0..6)) {
            let e = Envelope { origin, events };
            prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn packing_keeps_order_and_fits_the_limit(origin in node(), events in prop::collection::vec(event(), 1..30), limit in 400usize..2000) {
            match pack(&origin, events.clone(), limit) {
                Ok(envelopes) => {
                    for e in &envelopes {
                        prop_assert!(e.encode().len() <= limit, "{} > {}", e.encode().len(), limit);
                        prop_assert!(!e.events.is_empty());
                    }
                    let flat: Vec<Event> = envelopes.into_iter().flat_map(|e| e.events).collect();
                    prop_assert_eq!(flat, events);
                }
                Err(EnvelopeError::TooLarge { size, limit: l }) => {
                    prop_assert_eq!(l, limit);
                    prop_assert!(size > limit);
                    prop_assert!(events.iter().any(|e| header_len(&origin) + e.encoded_len() > limit));
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn garbage_is_refused_not_guessed(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(e) = Envelope::decode(&bytes) {
                prop_assert_eq!(e.encode(), bytes);
            }
        }
    }

    #[test]
    fn typed_errors() {
        let origin = NodeId::new("a").unwrap();
        let e = Envelope {
            origin: origin.clone(),
            events: vec![Event {
                seq: 1,
                kind: Kind::Broadcast,
                target: Target::Rooms {
                    rooms: vec![],
                    except: vec![],
                },
                payload: vec![1, 2, 3],
            }],
        }
        .encode();
        assert_eq!(Envelope::decode(&[2]), Err(EnvelopeError::Version(2)));
        assert_eq!(
            Envelope::decode(&e[..e.len() - 1]),
            Err(EnvelopeError::Truncated)
        );
        let mut trailing = e.clone();
        trailing.push(0);
        assert_eq!(Envelope::decode(&trailing), Err(EnvelopeError::Trailing));
        let mut bad_kind = e;
        bad_kind[1 + 4 + 1 + 4] = 9;
        assert_eq!(
            Envelope::decode(&bad_kind),
            Err(EnvelopeError::Tag {
                what: "event kind",
                tag: 9
            })
        );
        let big = Event {
            seq: 1,
            kind: Kind::Broadcast,
            target: Target::Node(origin.clone()),
            payload: vec![0; 300 * 1024],
        };
        assert!(matches!(
            pack(&origin, vec![big], 256 * 1024),
            Err(EnvelopeError::TooLarge { limit: 262_144, .. })
        ));
    }
}

//! Record encoding: one format-version byte, then the record. Entity records are JSON
//! (readable, rarely written). Message records (deliveries, message headers, counters),
//! written and read on every send and receive, are MessagePack with the fields as an array
//! in declaration order: several times smaller than JSON and half the size of MessagePack
//! with field names (a delivery is rewritten per copy and per delivery; the names were most
//! of its bytes). A field may therefore only be added at the end of a message record's
//! struct, with `#[serde(default)]`, and never reordered or removed; the same decoder reads
//! records with field names (versions 3 and 4). Every version stays readable.

use serde::Serialize;
use serde::de::DeserializeOwned;

const FORMAT_VERSION: u8 = 1;
/// MessagePack records with field names (still read).
const NAMED_VERSION: u8 = 3;
/// MessagePack records with fields by position (written).
const COMPACT_VERSION: u8 = 5;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record is empty or written by an unknown format version.
    #[error("unknown record format version {0:?}")]
    Version(Option<u8>),
    /// The body is not the expected JSON.
    #[error("record body is not valid")]
    Body(#[from] serde_json::Error),
    /// The body is not the expected MessagePack.
    #[error("record body is not valid")]
    CompactBody(#[from] rmp_serde::decode::Error),
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serialising plain data structs with string keys to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("invariant: records serialise to JSON");
    out
}

/// The record stored under `key`: JSON for entities, MessagePack for message records.
pub(super) fn encode_for<T: Serialize>(key: &super::Key, value: &T) -> Vec<u8> {
    if key.is_entity() {
        encode(value)
    } else {
        encode_compact(value)
    }
}

/// The runtime index a clean stop keeps (MessagePack, fields by position, no version byte:
/// a snapshot that does not decode is simply rebuilt from the records).
pub(super) fn encode_snapshot<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structs cannot fail to serialise.
    rmp_serde::to_vec(value).expect("invariant: the index serialises to MessagePack")
}

/// The index from [`encode_snapshot`]; `None` when it does not decode.
pub(super) fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    rmp_serde::from_slice(bytes).ok()
}

/// A message record (see the module doc).
pub(super) fn encode_compact<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![COMPACT_VERSION];
    // Plain data structs cannot fail to serialise.
    rmp_serde::encode::write(&mut out, value).expect("invariant: records serialise to MessagePack");
    out
}

/// A record; of a record with a body (see [`encode_with_body`]), the header alone.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => Ok(serde_json::from_slice(body)?),
        Some((&(NAMED_VERSION | COMPACT_VERSION), body)) => Ok(rmp_serde::from_slice(body)?),
        _ => split_body(bytes).map(|(header, _)| header),
    }
}

/// Version byte of records that carry a raw body after a JSON header (still read).
const BODY_FORMAT_VERSION: u8 = 2;
/// The same with a MessagePack header with field names (still read).
const NAMED_BODY_VERSION: u8 = 4;
/// The same with a MessagePack header by position (written).
const COMPACT_BODY_VERSION: u8 = 6;

/// `[6][header length u32 BE][MessagePack header][raw body]`: bodies are stored as sent,
/// not inflated inside the header.
pub(super) fn encode_with_body<T: Serialize>(header: &T, body: &[u8]) -> Vec<u8> {
    let header = rmp_serde::to_vec(header).expect("invariant: records serialise to MessagePack");
    let mut out = Vec::with_capacity(5 + header.len() + body.len());
    out.push(COMPACT_BODY_VERSION);
    out.extend(
        u32::try_from(header.len())
            .expect("invariant: headers are far below 4 GiB")
            .to_be_bytes(),
    );
    out.extend(header);
    out.extend(body);
    out
}

pub(super) fn decode_with_body<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Vec<u8>), DecodeError> {
    let (header, body) = split_body(bytes)?;
    Ok((header, bytes[body..].to_vec()))
}

/// The header of a record with a body, and where its body starts.
fn split_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    match bytes.split_first() {
        Some((&version, rest))
            if rest.len() >= 4
                && [
                    BODY_FORMAT_VERSION,
                    NAMED_BODY_VERSION,
                    COMPACT_BODY_VERSION,
                ]
                .contains(&version) =>
        {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let header = rest
                .get(4..4 + len)
                .ok_or(DecodeError::Version(Some(version)))?;
            let header = if version == BODY_FORMAT_VERSION {
                serde_json::from_slice(header)?
            } else {
                rmp_serde::from_slice(header)?
            };
            Ok((header, 1 + 4 + len))
        }
        other => Err(DecodeError::Version(other.map(|(v, _)| *v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Record {
        a: u64,
        b: Option<String>,
    }

    /// A record of a layout with a body: `version`, `header`'s length, `header`, "body".
    fn with_header(version: u8, header: Vec<u8>) -> Vec<u8> {
        let mut record = vec![version];
        record.extend((header.len() as u32).to_be_bytes());
        record.extend(header);
        record.extend(b"body");
        record
    }

    #[test]
    fn every_version_reads_back() {
        let r = Record {
            a: 7,
            b: Some("x".into()),
        };
        assert_eq!(decode::<Record>(&encode(&r)).unwrap(), r);
        assert_eq!(decode::<Record>(&encode_compact(&r)).unwrap(), r);
        assert!(encode_compact(&r).len() < encode(&r).len());
        // Records of the MessagePack layout with field names.
        let mut named = vec![NAMED_VERSION];
        named.extend(rmp_serde::to_vec_named(&r).unwrap());
        assert!(encode_compact(&r).len() < named.len());
        assert_eq!(decode::<Record>(&named).unwrap(), r);
        let named = with_header(NAMED_BODY_VERSION, rmp_serde::to_vec_named(&r).unwrap());
        assert_eq!(
            decode_with_body::<Record>(&named).unwrap(),
            (
                Record {
                    a: 7,
                    b: Some("x".into())
                },
                b"body".to_vec()
            )
        );
        // A record written by the JSON format of the earlier layout.
        let old = with_header(BODY_FORMAT_VERSION, serde_json::to_vec(&r).unwrap());
        assert_eq!(
            decode_with_body::<Record>(&old).unwrap(),
            (r, b"body".to_vec())
        );
        let new = encode_with_body(&Record { a: 1, b: None }, b"raw");
        assert_eq!(
            decode_with_body::<Record>(&new).unwrap(),
            (Record { a: 1, b: None }, b"raw".to_vec())
        );
        // Read as a plain record, a record with a body is its header.
        assert_eq!(decode::<Record>(&new).unwrap(), Record { a: 1, b: None });
        assert_eq!(decode::<Record>(&old).unwrap().a, 7);
        assert!(decode::<Record>(&[9, 1, 2]).is_err());
        assert!(decode_with_body::<Record>(&[COMPACT_BODY_VERSION, 0, 0, 0, 9]).is_err());
    }

    /// A message record read for its deliveries only gives the deliveries the full read
    /// gives, in every layout a message record has had.
    #[test]
    fn a_message_record_reads_as_its_deliveries_in_every_layout() {
        use crate::model::message::{Delivery, MessageProps, StoredDeliveries, StoredMessage};
        let delivery = |owner, size| Delivery {
            owner,
            delivery_count: 2,
            dead_letter: None,
            expires_at: Some(chrono::Utc::now()),
            scheduled_at: None,
            overridden: false,
            size,
            listed: owner != 5,
            settled: false,
            deferred: false,
        };
        let stored = StoredMessage {
            sequence_number: 9,
            enqueued_at: chrono::Utc::now(),
            time_to_live: Some(60.0),
            scheduled_at: Some(chrono::Utc::now()),
            props: MessageProps {
                message_id: Some("m".into()),
                ..MessageProps::default()
            },
            body_len: 4,
            queue_delivery: Some(delivery(5, 10)),
            copies: vec![(6, delivery(4, 11)), (7, delivery(4, 12))],
        };
        let layouts = [
            encode_with_body(&stored, b"body"),
            with_header(
                NAMED_BODY_VERSION,
                rmp_serde::to_vec_named(&stored).unwrap(),
            ),
            with_header(BODY_FORMAT_VERSION, serde_json::to_vec(&stored).unwrap()),
        ];
        for record in layouts {
            let full = decode::<StoredMessage>(&record).unwrap();
            assert_eq!(full, stored);
            let slim = decode::<StoredDeliveries>(&record).unwrap();
            assert_eq!(slim.initial_delivery(5, 5), stored.queue_delivery.as_ref());
            assert_eq!(slim.initial_delivery(4, 6), Some(&stored.copies[0].1));
            assert_eq!(slim.initial_delivery(4, 7), Some(&stored.copies[1].1));
            assert_eq!(slim.initial_delivery(4, 8), None);
        }
        // A record from before deliveries rode in it (6 fields): none ride in it.
        let mut before = rmp_serde::to_vec(&(
            9u64,
            stored.enqueued_at,
            Some(60.0),
            None::<chrono::DateTime<chrono::Utc>>,
            MessageProps::default(),
            4u64,
        ))
        .unwrap();
        before = with_header(COMPACT_BODY_VERSION, before);
        let slim = decode::<StoredDeliveries>(&before).unwrap();
        assert_eq!(slim.initial_delivery(5, 5), None);
        assert_eq!(decode::<StoredMessage>(&before).unwrap().sequence_number, 9);
    }
}

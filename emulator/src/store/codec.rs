//! Record encoding: one format-version byte, then JSON. JSON keeps records readable and
//! lets fields be added with defaults; the version byte lets a later layout be told apart.

use serde::Serialize;
use serde::de::DeserializeOwned;

const FORMAT_VERSION: u8 = 1;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record is empty or written by an unknown format version.
    #[error("unknown record format version {0:?}")]
    Version(Option<u8>),
    /// The body is not the expected JSON.
    #[error("record body is not valid")]
    Body(#[from] serde_json::Error),
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serialising plain data structs with string keys to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("invariant: records serialise to JSON");
    out
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => Ok(serde_json::from_slice(body)?),
        other => Err(DecodeError::Version(other.map(|(v, _)| *v))),
    }
}

/// Version byte of records that carry a raw body after a JSON header.
const BODY_FORMAT_VERSION: u8 = 2;

/// `[2][header length u32 BE][JSON header][raw body]`: bodies are stored as sent, not
/// inflated inside JSON.
pub(super) fn encode_with_body<T: Serialize>(header: &T, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("invariant: records serialise to JSON");
    let mut out = Vec::with_capacity(5 + json.len() + body.len());
    out.push(BODY_FORMAT_VERSION);
    out.extend(
        u32::try_from(json.len())
            .expect("invariant: headers are far below 4 GiB")
            .to_be_bytes(),
    );
    out.extend(json);
    out.extend(body);
    out
}

pub(super) fn decode_with_body<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Vec<u8>), DecodeError> {
    match bytes.split_first() {
        Some((&BODY_FORMAT_VERSION, rest)) if rest.len() >= 4 => {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let header = rest
                .get(4..4 + len)
                .ok_or(DecodeError::Version(Some(BODY_FORMAT_VERSION)))?;
            Ok((serde_json::from_slice(header)?, rest[4 + len..].to_vec()))
        }
        other => Err(DecodeError::Version(other.map(|(v, _)| *v))),
    }
}

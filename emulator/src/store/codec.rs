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

//! Typed identifiers of the backplane.

use std::fmt;

/// A node's identity, unique per process run (a new one after a restart), so that every
/// origin's sequence numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        let bytes: [u8; 8] = rand::random();
        NodeId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// An id from text: 1 to 40 characters of letters, digits, `-` and `_` (it becomes
    /// part of a subscription name and of SQL/correlation filter values).
    ///
    /// # Errors
    ///
    /// [`InvalidNodeId`], naming the id.
    pub fn new(id: &str) -> Result<Self, InvalidNodeId> {
        let ok = !id.is_empty()
            && id.len() <= 40
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(NodeId(id.to_string()))
        } else {
            Err(InvalidNodeId(id.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id that breaks the rules of [`NodeId::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id '{0}' must be 1 to 40 letters, digits, '-' or '_'")]
pub struct InvalidNodeId(pub String);

/// A room name (any text).
pub type RoomName = String;

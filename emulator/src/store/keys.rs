//! Key layout of the `entities` tree.
//!
//! `Q|name`, `T|name`, `S|topic\0sub`, `R|topic\0sub\0rule`, names ASCII-lower-cased
//! (names are case-insensitive). NUL cannot occur in a valid name, so a prefix scan of
//! `S|topic\0` finds exactly that topic's subscriptions.

use std::fmt;

use crate::model::Address;

/// Key bytes of an [`Address`]: the store's business alone.
pub trait KeyBytes {
    /// The record's key.
    fn to_bytes(&self) -> Vec<u8>;
    /// The prefix of everything below this key: its trailing empty parts are dropped and a
    /// separator ends the rest (`Subscription("t", "")` scans the subscriptions of `t`).
    fn to_prefix_bytes(&self) -> Vec<u8>;
}

fn parts(address: &Address) -> (u8, Vec<&str>) {
    match address {
        Address::Queue(q) => (b'Q', vec![q]),
        Address::Topic(t) => (b'T', vec![t]),
        Address::Subscription(t, s) => (b'S', vec![t, s]),
        Address::Rule(t, s, r) => (b'R', vec![t, s, r]),
    }
}

impl KeyBytes for Address {
    fn to_bytes(&self) -> Vec<u8> {
        let (tag, parts) = parts(self);
        let mut out = vec![tag];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend(servicebus_wire::names::fold(part).as_bytes());
        }
        out
    }

    fn to_prefix_bytes(&self) -> Vec<u8> {
        let (tag, parts) = parts(self);
        let mut out = vec![tag];
        for part in parts.iter().take_while(|p| !p.is_empty()) {
            out.extend(servicebus_wire::names::fold(part).as_bytes());
            out.push(0);
        }
        out
    }
}

/// Any record's key, in either tree.
///
/// The `messages` tree holds `M|owner|seq` (a message as sent, stored once for a queue or
/// topic), `D|receivable|seq` (one receivable's delivery state of it, written only once it
/// differs from the delivery the `M` record carries for it) and `N|owner` (the
/// next sequence number), and `X|owner|message id` (a message id seen by duplicate detection,
/// with when); ids and sequence numbers are big-endian so byte order is numeric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An entity or rule record (`entities` tree).
    Entity(Address),
    /// A stored message of a queue or topic.
    Message(u64, u64),
    /// Every message of an owner (a prefix).
    Messages(u64),
    /// A receivable's delivery state of a message.
    Delivery(u64, u64),
    /// Every delivery of a receivable (a prefix).
    Deliveries(u64),
    /// A receivable's rule-action overrides of a message's properties.
    Override(u64, u64),
    /// Every override of a receivable (a prefix).
    Overrides(u64),
    /// Every delivery record of every receivable (recovery).
    AllDeliveries,
    /// Every stored message (recovery).
    AllMessages,
    /// Every next-sequence record (recovery).
    AllNextSequences,
    /// An owner's next sequence number.
    NextSequence(u64),
    /// A message id a queue or topic with duplicate detection has seen, and when.
    Seen(u64, String),
    /// Every seen message id of an owner (a prefix).
    SeenOf(u64),
    /// Every seen message id of every owner (start-up).
    AllSeen,
}

impl From<Address> for Key {
    fn from(k: Address) -> Self {
        Key::Entity(k)
    }
}

impl Key {
    /// Whether the record lives in the `entities` tree.
    pub fn is_entity(&self) -> bool {
        matches!(self, Key::Entity(_))
    }

    fn numbers(tag: u8, numbers: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * numbers.len());
        out.push(tag);
        for n in numbers {
            out.extend(n.to_be_bytes());
        }
        out
    }

    /// The record's key bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Entity(k) => k.to_bytes(),
            Key::Message(o, s) => Self::numbers(b'M', &[*o, *s]),
            Key::Messages(o) => Self::numbers(b'M', &[*o]),
            Key::Delivery(r, s) => Self::numbers(b'D', &[*r, *s]),
            Key::Deliveries(r) => Self::numbers(b'D', &[*r]),
            Key::NextSequence(o) => Self::numbers(b'N', &[*o]),
            Key::Override(r, s) => Self::numbers(b'O', &[*r, *s]),
            Key::Overrides(r) => Self::numbers(b'O', &[*r]),
            Key::AllDeliveries => vec![b'D'],
            Key::AllMessages => vec![b'M'],
            Key::AllNextSequences => vec![b'N'],
            Key::Seen(o, id) => {
                let mut out = Self::numbers(b'X', &[*o]);
                out.extend(id.as_bytes());
                out
            }
            Key::SeenOf(o) => Self::numbers(b'X', &[*o]),
            Key::AllSeen => vec![b'X'],
        }
    }

    /// The prefix of everything below this key.
    pub fn to_prefix_bytes(&self) -> Vec<u8> {
        match self {
            Key::Entity(k) => k.to_prefix_bytes(),
            other => other.to_bytes(),
        }
    }

    /// Reads an `X` (seen message id) key: its owner and the message id.
    pub fn parse_seen(bytes: &[u8]) -> Option<(u64, String)> {
        let rest = bytes.strip_prefix(b"X")?;
        let owner = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let id = std::str::from_utf8(rest.get(8..)?).ok()?;
        Some((owner, id.to_string()))
    }

    /// Reads the numbers of an `M`, `D`, `O` (two) or `N` (one, second 0) key.
    pub fn parse_numbers(bytes: &[u8]) -> Option<(u8, u64, u64)> {
        let (&tag, rest) = bytes.split_first()?;
        let a = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let b = match rest.get(8..16) {
            Some(b) => u64::from_be_bytes(b.try_into().ok()?),
            None => 0,
        };
        Some((tag, a, b))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Entity(k) => write!(f, "{k}"),
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_and_prefix_exact() {
        assert_eq!(
            Address::Queue("Orders".into()).to_bytes(),
            Address::Queue("orders".into()).to_bytes()
        );
        let prefix = Address::Subscription("t".into(), String::new()).to_prefix_bytes();
        assert!(
            Address::Subscription("t".into(), "a".into())
                .to_bytes()
                .starts_with(&prefix)
        );
        assert!(
            !Address::Subscription("t2".into(), "a".into())
                .to_bytes()
                .starts_with(&prefix)
        );
        assert_eq!(Address::Topic(String::new()).to_prefix_bytes(), b"T");
    }
}

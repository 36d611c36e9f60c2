//! Key layout of the `entities` tree.
//!
//! `Q|name`, `T|name`, `S|topic\0sub`, `R|topic\0sub\0rule`, names ASCII-lower-cased
//! (names are case-insensitive). NUL cannot occur in a valid name, so a prefix scan of
//! `S|topic\0` finds exactly that topic's subscriptions.

use std::fmt;

/// Where an entity's record lives. Names are lower-cased on the way to bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityKey {
    /// A queue by path.
    Queue(String),
    /// A topic by path.
    Topic(String),
    /// A subscription by topic and name.
    Subscription(String, String),
    /// A rule by topic, subscription and name.
    Rule(String, String, String),
}

impl EntityKey {
    fn parts(&self) -> (u8, Vec<&str>) {
        match self {
            EntityKey::Queue(q) => (b'Q', vec![q]),
            EntityKey::Topic(t) => (b'T', vec![t]),
            EntityKey::Subscription(t, s) => (b'S', vec![t, s]),
            EntityKey::Rule(t, s, r) => (b'R', vec![t, s, r]),
        }
    }

    /// The record's key.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (tag, parts) = self.parts();
        let mut out = vec![tag];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend(part.to_ascii_lowercase().as_bytes());
        }
        out
    }

    /// The prefix of everything below this key: its trailing empty parts are dropped and a
    /// separator ends the rest (`Subscription("t", "")` scans the subscriptions of `t`).
    pub fn to_prefix_bytes(&self) -> Vec<u8> {
        let (tag, parts) = self.parts();
        let mut out = vec![tag];
        for part in parts.iter().take_while(|p| !p.is_empty()) {
            out.extend(part.to_ascii_lowercase().as_bytes());
            out.push(0);
        }
        out
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, parts) = self.parts();
        write!(f, "{}:{}", tag as char, parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_and_prefix_exact() {
        assert_eq!(
            EntityKey::Queue("Orders".into()).to_bytes(),
            EntityKey::Queue("orders".into()).to_bytes()
        );
        let prefix = EntityKey::Subscription("t".into(), String::new()).to_prefix_bytes();
        assert!(
            EntityKey::Subscription("t".into(), "a".into())
                .to_bytes()
                .starts_with(&prefix)
        );
        assert!(
            !EntityKey::Subscription("t2".into(), "a".into())
                .to_bytes()
                .starts_with(&prefix)
        );
        assert_eq!(EntityKey::Topic(String::new()).to_prefix_bytes(), b"T");
    }
}

//! Typed entity addresses: what a request or an operation names, parsed once at the edge
//! and carried through the broker; only the store turns one into key bytes.

use std::fmt;

/// A queue, topic, subscription or rule, by its names as given (case preserved; names
/// compare case-insensitively, see `servicebus_wire::names::fold`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A queue by path.
    Queue(String),
    /// A topic by path.
    Topic(String),
    /// A subscription by topic and name.
    Subscription(String, String),
    /// A rule by topic, subscription and name.
    Rule(String, String, String),
}

impl Address {
    /// The same address with its names folded as they compare
    /// (`servicebus_wire::names::fold`): equal for two spellings of one entity.
    pub fn folded(&self) -> Address {
        use servicebus_wire::names::fold;
        match self {
            Address::Queue(p) => Address::Queue(fold(p)),
            Address::Topic(p) => Address::Topic(fold(p)),
            Address::Subscription(t, s) => Address::Subscription(fold(t), fold(s)),
            Address::Rule(t, s, r) => Address::Rule(fold(t), fold(s), fold(r)),
        }
    }

    /// The entity's path for messages (`topic/Subscriptions/sub` for subscriptions).
    pub fn display_path(&self) -> String {
        match self {
            Address::Queue(p) | Address::Topic(p) => p.clone(),
            Address::Subscription(t, s) => format!("{t}/Subscriptions/{s}"),
            Address::Rule(t, s, r) => format!("{t}/Subscriptions/{s}/Rules/{r}"),
        }
    }
}

impl fmt::Display for Address {
    /// The path as `display_path` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_path())
    }
}

//! Plain data the broker keeps, with no I/O.

pub mod address;
pub mod limits;
pub mod message;
pub mod path;

pub use address::Address;
pub use path::EntityPath;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use servicebus_wire::{EntityDescription, RuleDescription};

/// A stored queue, topic or subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// Internal id, unique among live entities; keys the entity's messages.
    #[serde(default)]
    pub id: u64,
    /// The name as first created (case preserved): the path for queues and topics, the
    /// subscription's own name for subscriptions.
    pub name: String,
    /// The settings.
    pub description: EntityDescription,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was last used (sent to, received from, updated); `None`: never.
    pub accessed_at: Option<DateTime<Utc>>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule's name as created.
    pub name: String,
    /// Filter and action.
    pub rule: RuleDescription,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

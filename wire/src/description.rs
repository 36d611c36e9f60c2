//! Entity descriptions (queues, topics, subscriptions) and their XML form.
//!
//! One [`EntityDescription`] holds every settable element of all three kinds; each kind
//! reads only its own elements and writes them in the service's order (contract 4.4), with
//! the service's defaults (4.5). Read-only and unknown elements are ignored on input, as the
//! service does.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::TimeSpan;
use crate::error::WireError;
use crate::rule::RuleDescription;
use crate::time::format_timestamp;
use crate::xml::{Element, SB_NS, boolean, escape};

/// Which kind of entity a description is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntityKind {
    /// A queue.
    Queue,
    /// A topic.
    Topic,
    /// A subscription of a topic.
    Subscription,
}

impl EntityKind {
    /// The description element's name (`QueueDescription`, ...).
    pub fn element_name(self) -> &'static str {
        match self {
            EntityKind::Queue => "QueueDescription",
            EntityKind::Topic => "TopicDescription",
            EntityKind::Subscription => "SubscriptionDescription",
        }
    }

    /// The kind whose description element has this local name.
    pub fn from_element_name(name: &str) -> Option<Self> {
        match name {
            "QueueDescription" => Some(EntityKind::Queue),
            "TopicDescription" => Some(EntityKind::Topic),
            "SubscriptionDescription" => Some(EntityKind::Subscription),
            _ => None,
        }
    }

    /// Lower-case noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            EntityKind::Queue => "queue",
            EntityKind::Topic => "topic",
            EntityKind::Subscription => "subscription",
        }
    }
}

/// An entity's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityStatus {
    /// Sends and receives allowed.
    Active,
    /// Nothing allowed.
    Disabled,
    /// Receives only.
    SendDisabled,
    /// Sends only.
    ReceiveDisabled,
}

impl EntityStatus {
    fn as_str(self) -> &'static str {
        match self {
            EntityStatus::Active => "Active",
            EntityStatus::Disabled => "Disabled",
            EntityStatus::SendDisabled => "SendDisabled",
            EntityStatus::ReceiveDisabled => "ReceiveDisabled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Active,
            Self::Disabled,
            Self::SendDisabled,
            Self::ReceiveDisabled,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// Shortest allowed lock.
pub const MIN_LOCK_DURATION: TimeSpan = TimeSpan::from_secs(5);
/// Longest allowed lock.
pub const MAX_LOCK_DURATION: TimeSpan = TimeSpan::from_mins(5);
/// Shortest allowed `AutoDeleteOnIdle`.
pub const MIN_AUTO_DELETE_ON_IDLE: TimeSpan = TimeSpan::from_mins(5);
/// Shortest duplicate-detection window.
pub const MIN_DUPLICATE_WINDOW: TimeSpan = TimeSpan::from_secs(20);
/// Longest duplicate-detection window.
pub const MAX_DUPLICATE_WINDOW: TimeSpan = TimeSpan::from_secs(7 * 24 * 3600);
/// Longest `UserMetadata`.
pub const MAX_USER_METADATA_LEN: usize = 1024;
/// Default maximum message size (Standard tier).
pub const DEFAULT_MAX_MESSAGE_SIZE_KB: u32 = 256;

/// The settable part of a queue, topic or subscription description. Fields that do not
/// apply to a kind keep their default and are never written for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field is the element of the same name in PascalCase
pub struct EntityDescription {
    pub kind: EntityKind,
    pub lock_duration: TimeSpan,
    pub max_size_in_megabytes: u32,
    pub requires_duplicate_detection: bool,
    pub requires_session: bool,
    pub default_message_time_to_live: TimeSpan,
    pub dead_lettering_on_message_expiration: bool,
    pub dead_lettering_on_filter_evaluation_exceptions: bool,
    pub duplicate_detection_history_time_window: TimeSpan,
    pub max_delivery_count: u32,
    pub enable_batched_operations: bool,
    pub is_anonymous_accessible: bool,
    pub filtering_messages_before_publishing: bool,
    pub status: EntityStatus,
    pub forward_to: Option<String>,
    pub user_metadata: Option<String>,
    pub support_ordering: bool,
    pub auto_delete_on_idle: TimeSpan,
    pub enable_partitioning: bool,
    pub enable_subscription_partitioning: bool,
    pub forward_dead_lettered_messages_to: Option<String>,
    pub enable_express: bool,
    pub max_message_size_in_kilobytes: u32,
}

/// Runtime facts written beside the settings in responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// `CreatedAt`.
    pub created_at: DateTime<Utc>,
    /// `UpdatedAt`.
    pub updated_at: DateTime<Utc>,
    /// `AccessedAt`; `None` writes the service's "never" (`0001-01-01T00:00:00Z`).
    pub accessed_at: Option<DateTime<Utc>>,
    /// `SizeInBytes` (queues and topics).
    pub size_in_bytes: u64,
    /// `MessageCount` (queues and subscriptions): every message, dead-lettered included.
    pub message_count: u64,
    /// `CountDetails`.
    pub counts: CountDetails,
    /// `SubscriptionCount` (topics).
    pub subscription_count: u64,
    /// Whether `AccessedAt` and `CountDetails` are written for queues and topics (the
    /// service omits them from create responses).
    pub detailed: bool,
}

impl RuntimeInfo {
    /// An entity created and updated at `now`, never accessed, holding nothing.
    pub fn empty(now: DateTime<Utc>) -> Self {
        RuntimeInfo {
            created_at: now,
            updated_at: now,
            accessed_at: None,
            size_in_bytes: 0,
            message_count: 0,
            counts: CountDetails::default(),
            subscription_count: 0,
            detailed: true,
        }
    }
}

/// `CountDetails`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the element of the same name
pub struct CountDetails {
    pub active: u64,
    pub dead_letter: u64,
    pub scheduled: u64,
    pub transfer: u64,
    pub transfer_dead_letter: u64,
}

const COUNT_NS: &str = "http://schemas.microsoft.com/netservices/2011/06/servicebus";

/// Response element order per kind (contract 4.4, Azure recordings).
const QUEUE_RESPONSE: &[&str] = &[
    "LockDuration",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DuplicateDetectionHistoryTimeWindow",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
    "SizeInBytes",
    "MessageCount",
    "IsAnonymousAccessible",
    "AuthorizationRules",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "SupportOrdering",
    "CountDetails",
    "ForwardDeadLetteredMessagesTo",
    "AutoDeleteOnIdle",
    "EnablePartitioning",
    "EntityAvailabilityStatus",
    "EnableExpress",
    "MaxMessageSizeInKilobytes",
];
const TOPIC_RESPONSE: &[&str] = &[
    "DefaultMessageTimeToLive",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "DuplicateDetectionHistoryTimeWindow",
    "EnableBatchedOperations",
    "SizeInBytes",
    "FilteringMessagesBeforePublishing",
    "IsAnonymousAccessible",
    "AuthorizationRules",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "SupportOrdering",
    "CountDetails",
    "SubscriptionCount",
    "AutoDeleteOnIdle",
    "EnablePartitioning",
    "EntityAvailabilityStatus",
    "EnableSubscriptionPartitioning",
    "EnableExpress",
    "MaxMessageSizeInKilobytes",
];
const SUBSCRIPTION_RESPONSE: &[&str] = &[
    "LockDuration",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DeadLetteringOnFilterEvaluationExceptions",
    "MessageCount",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "CountDetails",
    "ForwardDeadLetteredMessagesTo",
    "AutoDeleteOnIdle",
    "EntityAvailabilityStatus",
];
/// Request element order per kind (.NET serializers), for clients.
const QUEUE_REQUEST: &[&str] = &[
    "LockDuration",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DuplicateDetectionHistoryTimeWindow",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
    "IsAnonymousAccessible",
    "AuthorizationRules",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "SupportOrdering",
    "AutoDeleteOnIdle",
    "EnablePartitioning",
    "ForwardDeadLetteredMessagesTo",
    "EnableExpress",
    "MaxMessageSizeInKilobytes",
];
const TOPIC_REQUEST: &[&str] = &[
    "DefaultMessageTimeToLive",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "DuplicateDetectionHistoryTimeWindow",
    "EnableBatchedOperations",
    "FilteringMessagesBeforePublishing",
    "IsAnonymousAccessible",
    "AuthorizationRules",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "SupportOrdering",
    "AutoDeleteOnIdle",
    "EnablePartitioning",
    "EnableSubscriptionPartitioning",
    "EnableExpress",
    "MaxMessageSizeInKilobytes",
];
const SUBSCRIPTION_REQUEST: &[&str] = &[
    "LockDuration",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DeadLetteringOnFilterEvaluationExceptions",
    "DefaultRuleDescription",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
    "Status",
    "ForwardTo",
    "UserMetadata",
    "ForwardDeadLetteredMessagesTo",
    "AutoDeleteOnIdle",
];

/// Elements that are read-only runtime facts: ignored on input.
const READ_ONLY: &[&str] = &[
    "SizeInBytes",
    "MessageCount",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "CountDetails",
    "SubscriptionCount",
    "EntityAvailabilityStatus",
    "AuthorizationRules",
    "DefaultRuleDescription",
];

/// What a parsed description carries besides its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedDescription {
    /// The settings, defaults filled in.
    pub description: EntityDescription,
    /// The settable elements the request named (for "not updatable" checks).
    pub present: Vec<&'static str>,
    /// `DefaultRuleDescription` of a subscription create, if sent.
    pub default_rule: Option<RuleDescription>,
}

impl EntityDescription {
    /// The service's defaults for an empty description of `kind`.
    pub fn defaults(kind: EntityKind) -> Self {
        EntityDescription {
            kind,
            lock_duration: TimeSpan::from_mins(1),
            max_size_in_megabytes: 1024,
            requires_duplicate_detection: false,
            requires_session: false,
            default_message_time_to_live: TimeSpan::MAX,
            dead_lettering_on_message_expiration: false,
            dead_lettering_on_filter_evaluation_exceptions: true,
            duplicate_detection_history_time_window: TimeSpan::from_mins(10),
            max_delivery_count: 10,
            enable_batched_operations: true,
            is_anonymous_accessible: false,
            filtering_messages_before_publishing: false,
            status: EntityStatus::Active,
            forward_to: None,
            user_metadata: None,
            support_ordering: true,
            auto_delete_on_idle: TimeSpan::MAX,
            enable_partitioning: false,
            enable_subscription_partitioning: false,
            forward_dead_lettered_messages_to: None,
            enable_express: false,
            max_message_size_in_kilobytes: DEFAULT_MAX_MESSAGE_SIZE_KB,
        }
    }

    fn request_order(kind: EntityKind) -> &'static [&'static str] {
        match kind {
            EntityKind::Queue => QUEUE_REQUEST,
            EntityKind::Topic => TOPIC_REQUEST,
            EntityKind::Subscription => SUBSCRIPTION_REQUEST,
        }
    }

    fn response_order(kind: EntityKind) -> &'static [&'static str] {
        match kind {
            EntityKind::Queue => QUEUE_RESPONSE,
            EntityKind::Topic => TOPIC_RESPONSE,
            EntityKind::Subscription => SUBSCRIPTION_RESPONSE,
        }
    }

    /// Reads a description element (any child order), fills defaults and validates ranges.
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] naming the element and what is wrong with it.
    pub fn parse(kind: EntityKind, element: &Element) -> Result<ParsedDescription, WireError> {
        let mut description = EntityDescription::defaults(kind);
        let mut present = Vec::new();
        let mut default_rule = None;
        let settable = Self::request_order(kind);
        for child in &element.children {
            let name = child.name.as_str();
            if kind == EntityKind::Subscription && name == "DefaultRuleDescription" {
                default_rule = Some(RuleDescription::parse(child)?);
                continue;
            }
            let Some(&known) = settable.iter().find(|n| **n == name) else {
                continue; // unknown or belongs to another kind: ignored, as the service does
            };
            if READ_ONLY.contains(&known) {
                continue;
            }
            description.set(known, child.trimmed_text())?;
            present.push(known);
        }
        description.validate()?;
        Ok(ParsedDescription {
            description,
            present,
            default_rule,
        })
    }

    /// Sets one settable element of this kind by name from its text form (as in XML;
    /// booleans `true`/`false`, durations `PT1M`). Returns `false` for a name that is not a
    /// settable element of this kind. Call [`EntityDescription::validate`] afterwards.
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] when the text is not a valid value for the element.
    pub fn apply_setting(&mut self, name: &str, text: &str) -> Result<bool, WireError> {
        let settable = Self::request_order(self.kind);
        match settable
            .iter()
            .find(|n| **n == name && !READ_ONLY.contains(n))
        {
            Some(&known) => self.set(known, text.trim()).map(|()| true),
            None => Ok(false),
        }
    }

    fn set(&mut self, name: &'static str, text: &str) -> Result<(), WireError> {
        let d = self;
        match name {
            "LockDuration" => d.lock_duration = span(name, text)?,
            "MaxSizeInMegabytes" => d.max_size_in_megabytes = number(name, text)?,
            "RequiresDuplicateDetection" => d.requires_duplicate_detection = boolean(name, text)?,
            "RequiresSession" => d.requires_session = boolean(name, text)?,
            "DefaultMessageTimeToLive" => d.default_message_time_to_live = span(name, text)?,
            "DeadLetteringOnMessageExpiration" => {
                d.dead_lettering_on_message_expiration = boolean(name, text)?
            }
            "DeadLetteringOnFilterEvaluationExceptions" => {
                d.dead_lettering_on_filter_evaluation_exceptions = boolean(name, text)?;
            }
            "DuplicateDetectionHistoryTimeWindow" => {
                d.duplicate_detection_history_time_window = span(name, text)?
            }
            "MaxDeliveryCount" => d.max_delivery_count = number(name, text)?,
            "EnableBatchedOperations" => d.enable_batched_operations = boolean(name, text)?,
            "IsAnonymousAccessible" => d.is_anonymous_accessible = boolean(name, text)?,
            "FilteringMessagesBeforePublishing" => {
                d.filtering_messages_before_publishing = boolean(name, text)?
            }
            "Status" => {
                d.status = EntityStatus::parse(text).ok_or_else(|| {
                    WireError::value(
                        name,
                        text,
                        "expected Active, Disabled, SendDisabled or ReceiveDisabled",
                    )
                })?;
            }
            "ForwardTo" => d.forward_to = optional(text),
            "UserMetadata" => d.user_metadata = optional(text),
            "SupportOrdering" => d.support_ordering = boolean(name, text)?,
            "AutoDeleteOnIdle" => d.auto_delete_on_idle = span(name, text)?,
            "EnablePartitioning" => d.enable_partitioning = boolean(name, text)?,
            "EnableSubscriptionPartitioning" => {
                d.enable_subscription_partitioning = boolean(name, text)?
            }
            "ForwardDeadLetteredMessagesTo" => d.forward_dead_lettered_messages_to = optional(text),
            "EnableExpress" => d.enable_express = boolean(name, text)?,
            "MaxMessageSizeInKilobytes" => d.max_message_size_in_kilobytes = number(name, text)?,
            _ => {}
        }
        Ok(())
    }

    /// Checks the service's ranges (contract 4.5).
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] for the first value out of range.
    pub fn validate(&self) -> Result<(), WireError> {
        let kind = self.kind;
        let has = |name: &str| Self::request_order(kind).contains(&name);
        let out =
            |name: &'static str, value: String, why: &str| Err(WireError::value(name, &value, why));
        if has("LockDuration")
            && !(MIN_LOCK_DURATION..=MAX_LOCK_DURATION).contains(&self.lock_duration)
        {
            return out(
                "LockDuration",
                self.lock_duration.to_string(),
                "must be between PT5S and PT5M",
            );
        }
        if self.default_message_time_to_live < TimeSpan::from_secs(1) {
            return out(
                "DefaultMessageTimeToLive",
                self.default_message_time_to_live.to_string(),
                "must be at least PT1S",
            );
        }
        if self.auto_delete_on_idle < MIN_AUTO_DELETE_ON_IDLE {
            return out(
                "AutoDeleteOnIdle",
                self.auto_delete_on_idle.to_string(),
                "must be at least PT5M",
            );
        }
        if has("DuplicateDetectionHistoryTimeWindow")
            && !(MIN_DUPLICATE_WINDOW..=MAX_DUPLICATE_WINDOW)
                .contains(&self.duplicate_detection_history_time_window)
        {
            return out(
                "DuplicateDetectionHistoryTimeWindow",
                self.duplicate_detection_history_time_window.to_string(),
                "must be between PT20S and P7D",
            );
        }
        if has("MaxDeliveryCount") && self.max_delivery_count < 1 {
            return out(
                "MaxDeliveryCount",
                self.max_delivery_count.to_string(),
                "must be at least 1",
            );
        }
        if has("MaxSizeInMegabytes")
            && !(self.max_size_in_megabytes.is_multiple_of(1024)
                && (1024..=5120).contains(&self.max_size_in_megabytes))
        {
            return out(
                "MaxSizeInMegabytes",
                self.max_size_in_megabytes.to_string(),
                "must be 1024, 2048, 3072, 4096 or 5120",
            );
        }
        if has("MaxMessageSizeInKilobytes")
            && !(1..=102_400).contains(&self.max_message_size_in_kilobytes)
        {
            return out(
                "MaxMessageSizeInKilobytes",
                self.max_message_size_in_kilobytes.to_string(),
                "must be between 1 and 102400",
            );
        }
        if let Some(m) = &self.user_metadata
            && m.chars().count() > MAX_USER_METADATA_LEN
        {
            return out(
                "UserMetadata",
                format!("{} characters", m.chars().count()),
                "must be at most 1024 characters",
            );
        }
        Ok(())
    }

    fn settable_text(&self, name: &str) -> Option<String> {
        let d = self;
        Some(match name {
            "LockDuration" => d.lock_duration.to_string(),
            "MaxSizeInMegabytes" => d.max_size_in_megabytes.to_string(),
            "RequiresDuplicateDetection" => d.requires_duplicate_detection.to_string(),
            "RequiresSession" => d.requires_session.to_string(),
            "DefaultMessageTimeToLive" => d.default_message_time_to_live.to_string(),
            "DeadLetteringOnMessageExpiration" => {
                d.dead_lettering_on_message_expiration.to_string()
            }
            "DeadLetteringOnFilterEvaluationExceptions" => {
                d.dead_lettering_on_filter_evaluation_exceptions.to_string()
            }
            "DuplicateDetectionHistoryTimeWindow" => {
                d.duplicate_detection_history_time_window.to_string()
            }
            "MaxDeliveryCount" => d.max_delivery_count.to_string(),
            "EnableBatchedOperations" => d.enable_batched_operations.to_string(),
            "IsAnonymousAccessible" => d.is_anonymous_accessible.to_string(),
            "FilteringMessagesBeforePublishing" => {
                d.filtering_messages_before_publishing.to_string()
            }
            "Status" => d.status.as_str().to_string(),
            "ForwardTo" => d.forward_to.clone()?,
            "UserMetadata" => d.user_metadata.clone()?,
            "SupportOrdering" => d.support_ordering.to_string(),
            "AutoDeleteOnIdle" => d.auto_delete_on_idle.to_string(),
            "EnablePartitioning" => d.enable_partitioning.to_string(),
            "EnableSubscriptionPartitioning" => d.enable_subscription_partitioning.to_string(),
            "ForwardDeadLetteredMessagesTo" => d.forward_dead_lettered_messages_to.clone()?,
            "EnableExpress" => d.enable_express.to_string(),
            "MaxMessageSizeInKilobytes" => d.max_message_size_in_kilobytes.to_string(),
            _ => return None,
        })
    }

    /// Writes the description element as the service answers: response order, defaults
    /// and runtime facts included.
    pub fn to_response_xml(&self, runtime: &RuntimeInfo) -> String {
        let kind = self.kind;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<{} xmlns="{SB_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#,
            kind.element_name()
        );
        let omit_details = !runtime.detailed && kind != EntityKind::Subscription;
        for &name in Self::response_order(kind) {
            let text = match name {
                "SizeInBytes" => runtime.size_in_bytes.to_string(),
                "MessageCount" => runtime.message_count.to_string(),
                "SubscriptionCount" => runtime.subscription_count.to_string(),
                "CreatedAt" => format_timestamp(runtime.created_at),
                "UpdatedAt" => format_timestamp(runtime.updated_at),
                "AccessedAt" if omit_details => continue,
                "AccessedAt" => runtime
                    .accessed_at
                    .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), format_timestamp),
                "EntityAvailabilityStatus" => "Available".to_string(),
                "AuthorizationRules" => {
                    out.push_str("<AuthorizationRules/>");
                    continue;
                }
                "CountDetails" if omit_details => continue,
                "CountDetails" => {
                    write_count_details(&mut out, &runtime.counts);
                    continue;
                }
                _ => match self.settable_text(name) {
                    Some(t) => t,
                    None => continue,
                },
            };
            let _ = write!(out, "<{name}>{}</{name}>", escape(&text));
        }
        let _ = write!(out, "</{}>", kind.element_name());
        out
    }

    /// Writes the description element as a client sends it: request order, every settable
    /// element with a value, optional ones omitted when unset.
    pub fn to_request_xml(&self, default_rule: Option<&RuleDescription>) -> String {
        let kind = self.kind;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<{} xmlns="{SB_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#,
            kind.element_name()
        );
        for &name in Self::request_order(kind) {
            if name == "DefaultRuleDescription" {
                if let Some(rule) = default_rule {
                    out.push_str(&rule.to_inner_xml("DefaultRuleDescription", false));
                }
                continue;
            }
            if name == "AuthorizationRules" {
                continue;
            }
            if let Some(text) = self.settable_text(name) {
                let _ = write!(out, "<{name}>{}</{name}>", escape(&text));
            }
        }
        let _ = write!(out, "</{}>", kind.element_name());
        out
    }

    /// Whether `name` is an element that cannot change after creation and differs here.
    pub fn immutable_change(
        &self,
        update: &EntityDescription,
        present: &[&'static str],
    ) -> Option<&'static str> {
        let changed = [
            (
                "RequiresSession",
                self.requires_session != update.requires_session,
            ),
            (
                "RequiresDuplicateDetection",
                self.requires_duplicate_detection != update.requires_duplicate_detection,
            ),
            (
                "EnablePartitioning",
                self.enable_partitioning != update.enable_partitioning,
            ),
            (
                "EnableSubscriptionPartitioning",
                self.enable_subscription_partitioning != update.enable_subscription_partitioning,
            ),
        ];
        changed
            .into_iter()
            .find(|(name, differs)| *differs && present.contains(name))
            .map(|(name, _)| name)
    }
}

fn write_count_details(out: &mut String, c: &CountDetails) {
    let _ = write!(
        out,
        r#"<CountDetails xmlns:d2p1="{COUNT_NS}"><d2p1:ActiveMessageCount>{}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>{}</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>{}</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>{}</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>{}</d2p1:TransferDeadLetterMessageCount></CountDetails>"#,
        c.active, c.dead_letter, c.scheduled, c.transfer, c.transfer_dead_letter
    );
}

/// An empty element means "not set" for the optional string elements (contract 4.5).
fn optional(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

pub(crate) fn span(name: &'static str, text: &str) -> Result<TimeSpan, WireError> {
    TimeSpan::parse(text).map_err(|e| match e {
        WireError::Duration { reason, .. } => {
            WireError::value(name, text, &format!("not a valid xs:duration ({reason})"))
        }
        other => other,
    })
}

fn number(name: &'static str, text: &str) -> Result<u32, WireError> {
    text.parse::<u32>()
        .map_err(|_| WireError::value(name, text, "expected a non-negative whole number"))
}

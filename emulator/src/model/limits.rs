//! The service's quotas, as named values the broker is given (Standard tier by default;
//! the flags raise them).

/// Entity quotas of the Standard tier (learn.microsoft.com, "Service Bus quotas").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Queues and topics together in the namespace (10,000).
    pub entities: usize,
    /// Subscriptions of one topic (2,000).
    pub subscriptions_per_topic: usize,
    /// SQL filters across the subscriptions of one topic (2,000).
    pub sql_filters_per_topic: usize,
    /// Correlation filters across the subscriptions of one topic (100,000).
    pub correlation_filters_per_topic: usize,
}

impl Quotas {
    /// The Standard tier's quotas.
    pub const STANDARD: Quotas = Quotas {
        entities: 10_000,
        subscriptions_per_topic: 2_000,
        sql_filters_per_topic: 2_000,
        correlation_filters_per_topic: 100_000,
    };
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas::STANDARD
    }
}

/// Largest value of one custom property, in bytes (its name and value).
pub const MAX_PROPERTY_BYTES: usize = 32 * 1024;
/// Largest size of all of a message's properties together (system and custom), in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;
/// What a message costs beyond its body and properties (sequence number, times, delivery
/// state), counted against the size limits so that a batch of empty messages is not free.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64;

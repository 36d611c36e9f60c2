//! Why wire data was refused.

/// Why wire data was refused. Each message names what is wrong, for a `400` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// An Atom entry without the element that holds its description.
    #[error("the entry{} has no {missing}", entry_title(.title))]
    MissingContent {
        /// The entry's `<title>`, when it has one.
        title: Option<String>,
        /// What is missing: `<content> element` or `description`.
        missing: &'static str,
    },
    /// A description element outside the Service Bus namespace.
    #[error("<{element}> is not in the Service Bus namespace {namespace}")]
    ForeignNamespace {
        /// The element's local name.
        element: String,
        /// The namespace it should be in.
        namespace: &'static str,
    },
    /// An element that is not a description this crate knows.
    #[error(
        "<{0}> is not a QueueDescription, TopicDescription, SubscriptionDescription or RuleDescription"
    )]
    UnknownDescription(String),
    /// A document whose root is neither an Atom entry nor a feed.
    #[error("expected an Atom entry or feed, found <{0}>")]
    UnexpectedRoot(String),
    /// A duration that is not an `xs:duration`.
    #[error("'{value}' is not a valid duration: {reason}")]
    Duration {
        /// The text as sent.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An element with a bad value.
    #[error("the value '{value}' of {element} is invalid: {reason}")]
    Value {
        /// The element's name.
        element: &'static str,
        /// The text as sent.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A name that breaks the naming rules.
    #[error("the {kind} '{name}' is invalid: {reason}")]
    InvalidName {
        /// What was being named.
        kind: &'static str,
        /// The name as sent.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
}

fn entry_title(title: &Option<String>) -> String {
    title
        .as_ref()
        .map(|t| format!(" '{t}'"))
        .unwrap_or_default()
}

impl WireError {
    pub(crate) fn value(element: &'static str, value: &str, reason: &str) -> Self {
        WireError::Value {
            element,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

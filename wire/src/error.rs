//! Why wire data was refused.

/// Why wire data was refused. Each message names what is wrong, for a `400` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// Well-formed, but not the expected document.
    #[error("{0}")]
    Structure(String),
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

impl WireError {
    pub(crate) fn value(element: &'static str, value: &str, reason: &str) -> Self {
        WireError::Value {
            element,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

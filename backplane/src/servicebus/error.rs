//! Errors of the Service Bus client, classified so callers pick a policy without matching.

use servicebus_wire::ConnectionStringError;

/// A failed Service Bus call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string is malformed (the message names the part).
    #[error("invalid connection string")]
    ConnectionString(#[from] ConnectionStringError),
    /// The entity does not exist (`404` or `410` on an entity, an empty feed on `GET`).
    #[error("not found: {detail}")]
    NotFound {
        /// The service's detail.
        detail: String,
    },
    /// The entity already exists, or a conflicting operation is in progress (`409`).
    #[error("conflict: {detail}")]
    Conflict {
        /// The service's detail.
        detail: String,
    },
    /// The token was refused or lacks a right (`401`, `403` without a quota reason).
    #[error("unauthorized ({status}): {detail}")]
    Unauthorized {
        /// `401` or `403`.
        status: u16,
        /// The service's detail.
        detail: String,
    },
    /// The lock of a message expired or was already used (`404` on a settle).
    #[error("the message lock was lost")]
    LockLost,
    /// The message or batch is over the entity's size limit (`403` with `SubCode=40300`, or `413`).
    #[error("message too large: {detail}")]
    TooLarge {
        /// The service's detail.
        detail: String,
    },
    /// Any other status.
    #[error("service bus answered {status}: {detail}")]
    Service {
        /// The status code.
        status: u16,
        /// The service's detail.
        detail: String,
    },
    /// The request did not get an answer (connection refused, reset, timed out).
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    /// The answer could not be read.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// No bearer token could be had from the token provider.
    #[error("no bearer token: {0}")]
    Token(String),
    /// A namespace name that names no host (see `Client::with_token_provider`).
    #[error("invalid namespace {0:?}")]
    Namespace(String),
    /// A certificate authority to trust could not be read (see `Client::with_ca`).
    #[error("cannot use the certificate authority: {0}")]
    Certificate(String),
    /// A custom property that cannot travel as a header (a standard HTTP header name, or
    /// not a header name at all): the service would drop it.
    #[error(
        "'{0}' cannot be a custom property (it is a standard HTTP header or not a valid header name)"
    )]
    InvalidProperty(String),
}

impl Error {
    /// Whether trying again later may succeed: connection failures and `408`, `429`, `500`,
    /// `502`, `503`, `504`. Client mistakes (other `4xx`) are never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Service { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// Whether the entity does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether it already exists (or a conflicting operation runs).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether the credential was refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// Whether a settle found no lock (the message will be delivered again).
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost)
    }

    /// Whether the message was too large.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }
}

pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Reads `<Detail>` from a Service Bus error body (or returns the body).
pub(crate) fn detail_of(body: &str) -> String {
    servicebus_wire::xml::parse(body)
        .ok()
        .and_then(|e| {
            e.children
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case("Detail"))
                .map(|d| d.text.clone())
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// The error a status means for an ordinary call.
pub(crate) fn from_status(status: u16, body: &str) -> Error {
    let detail = detail_of(body);
    match status {
        404 | 410 => Error::NotFound { detail },
        409 => Error::Conflict { detail },
        413 => Error::TooLarge { detail },
        403 if detail.contains("40300") || detail.to_ascii_lowercase().contains("too large") => {
            Error::TooLarge { detail }
        }
        401 | 403 => Error::Unauthorized { status, detail },
        _ => Error::Service { status, detail },
    }
}

/// Client result.
pub type Result<T> = std::result::Result<T, Error>;

//! The behaviour: entities, rules and (next) messages. It knows nothing of HTTP; the store
//! is its only way to disk.

mod management;

use std::sync::Arc;

use crate::clock::Clock;
use crate::store::{self, Store};

pub use management::{DEFAULT_RULE_NAME, EntityView, Page, PutOutcome};

/// What the broker refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named entity does not exist.
    #[error("{kind} '{path}' does not exist")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its path.
        path: String,
    },
    /// Creation of something that exists (or whose name differs only in case).
    #[error("{kind} '{path}' already exists")]
    Conflict {
        /// What exists.
        kind: &'static str,
        /// Its path.
        path: String,
    },
    /// A request the broker cannot carry out as asked.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error("storage failed")]
    Store(#[from] store::Error),
}

/// Broker result.
pub type Result<T> = std::result::Result<T, Error>;

/// The broker (cheap to clone).
#[derive(Debug, Clone)]
pub struct Broker {
    store: Store,
    clock: Clock,
    /// Serialises management writes so check-then-write (exists? conflict?) is atomic.
    /// Management is rare; the message path (next) does not take this lock.
    management: Arc<tokio::sync::Mutex<()>>,
}

impl Broker {
    /// A broker over an opened store.
    pub fn new(store: Store, clock: Clock) -> Self {
        Broker {
            store,
            clock,
            management: Arc::default(),
        }
    }

    /// The broker's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Flushes the store (shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Flushes and closes the store (shutdown); see [`Store::close`].
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the last flush fails.
    pub async fn close(&self) -> Result<()> {
        Ok(self.store.close().await?)
    }
}

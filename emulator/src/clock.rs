//! The broker's one source of time. `Manual` moves only when told, so tests can move TTL,
//! locks and idle deletion forward without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A clock: the system's, or a manual one shared by every clone.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall-clock UTC.
    System,
    /// Moves only through [`Clock::advance`]. A std mutex: nothing awaits under it.
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(start)))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock); returns the new time.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => {
                let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *t += by;
                *t
            }
        }
    }
}

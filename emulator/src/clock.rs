//! The broker's one source of time. `Manual` moves only when told, so tests can move TTL,
//! locks and idle deletion forward without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::sync::lock;

/// A clock: the system's, or a manual one shared by every clone.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall-clock UTC.
    System,
    /// Moves only through [`Clock::advance`]. A std mutex: nothing awaits under it.
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// The latest time a manual clock may show: a month before the end of year 9999, the
    /// last the service's dates (and RFC 1123 dates) can carry, leaving room for the lock
    /// expiries and schedules computed from it.
    pub const LATEST: DateTime<Utc> = match DateTime::from_timestamp(253_399_622_400, 0) {
        Some(t) => t,
        None => DateTime::<Utc>::MAX_UTC,
    };

    /// A manual clock starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(start)))
    }

    /// Whether it moves only when told.
    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *lock(t),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock); returns the new time,
    /// or `None`, the clock unmoved, when that would be before the current time or after
    /// [`Clock::LATEST`].
    pub fn advance(&self, by: Duration) -> Option<DateTime<Utc>> {
        match self {
            Clock::System => Some(Utc::now()),
            Clock::Manual(t) => {
                let mut t = lock(t);
                let next = t
                    .checked_add_signed(by)
                    .filter(|next| *next >= *t && *next <= Self::LATEST)?;
                *t = next;
                Some(next)
            }
        }
    }
}

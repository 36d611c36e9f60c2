//! Duplicate detection's history: the message ids a queue or topic saw within its
//! `DuplicateDetectionHistoryTimeWindow`, kept in memory in the order they were first seen
//! and on disk (`X` records) so that the history outlives a restart, as on the service.
//!
//! Ids leave the history from its old end as they pass out of the window, so a message
//! costs amortised O(1) however long the history is.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use servicebus_wire::TimeSpan;

use crate::store::{Key, Write};

/// The ids one queue or topic has seen within its window.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// When each remembered id was first seen.
    ids: HashMap<String, DateTime<Utc>>,
    /// The same ids in the order they were first seen (oldest first).
    order: VecDeque<(DateTime<Utc>, String)>,
}

impl History {
    /// Whether `id` was seen within `window` before `now`. An id not seen is remembered,
    /// and the write that keeps it is added to `writes`; ids that left the window are
    /// forgotten, with the writes that delete them.
    pub(crate) fn check(
        &mut self,
        owner: u64,
        id: &str,
        window: TimeSpan,
        now: DateTime<Utc>,
        writes: &mut Vec<Write>,
    ) -> bool {
        self.expire(owner, window, now, writes);
        if self.ids.contains_key(id) {
            return true;
        }
        self.remember(id.to_string(), now);
        writes.push(Write::put(Key::Seen(owner, id.to_string()), &now));
        false
    }

    /// Adds an id seen at `at`; in time order it costs O(1) (start-up sorts what it reads
    /// back before it calls this), out of order it is filed in place.
    pub(crate) fn remember(&mut self, id: String, at: DateTime<Utc>) {
        if self.order.back().is_none_or(|(t, _)| *t <= at) {
            self.order.push_back((at, id.clone()));
        } else {
            let position = self.order.partition_point(|(t, _)| *t <= at);
            self.order.insert(position, (at, id.clone()));
        }
        self.ids.insert(id, at);
    }

    /// Forgets the ids seen at or before `now - window`, adding their deletes to `writes`.
    pub(crate) fn expire(
        &mut self,
        owner: u64,
        window: TimeSpan,
        now: DateTime<Utc>,
        writes: &mut Vec<Write>,
    ) {
        while let Some((at, _)) = self.order.front() {
            if super::runtime::add(*at, window) > now {
                break;
            }
            let Some((at, id)) = self.order.pop_front() else {
                break;
            };
            // Only the entry of the id's current sighting removes it.
            if self.ids.get(&id) == Some(&at) {
                self.ids.remove(&id);
                writes.push(Write::delete(Key::Seen(owner, id)));
            }
        }
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_leave_in_time_order_and_come_back_after_the_window() {
        let t0 = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let window = TimeSpan::from_secs(60);
        let mut h = History::default();
        let mut writes = Vec::new();
        assert!(!h.check(1, "a", window, at(0), &mut writes));
        assert!(!h.check(1, "b", window, at(30), &mut writes));
        assert!(h.check(1, "a", window, at(59), &mut writes));
        assert_eq!(writes.len(), 2);
        // At 60 s `a` leaves the window; `b` stays.
        assert!(!h.check(1, "a", window, at(60), &mut writes));
        assert!(h.check(1, "b", window, at(60), &mut writes));
        assert_eq!(h.len(), 2);
        h.expire(1, window, at(200), &mut writes);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_large_history_costs_little_per_message() {
        let t0 = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let window = TimeSpan::from_secs(600);
        let mut h = History::default();
        let mut writes = Vec::new();
        for i in 0..200_000 {
            assert!(!h.check(1, &format!("id-{i}"), window, t0, &mut writes));
        }
        assert_eq!(h.len(), 200_000);
        // Each check after this touches the front of the queue only.
        for i in 0..200_000 {
            assert!(h.check(1, &format!("id-{i}"), window, t0, &mut writes));
        }
    }
}

//! Reference counts of a topic's stored messages: how many copies still point at each.

use std::collections::VecDeque;

/// How many deliveries point at each stored message of one topic, by sequence number from
/// the oldest still referenced: sequence numbers are dense, so this is 4 bytes a message
/// where a map would take ten times that.
#[derive(Debug, Default)]
pub(super) struct RefCounts {
    pub(super) base: u64,
    pub(super) counts: VecDeque<u32>,
}

impl RefCounts {
    /// Adds `n`; true when the message had none before.
    pub(super) fn add(&mut self, seq: u64, n: u32) -> bool {
        if self.counts.is_empty() {
            self.base = seq;
        }
        while seq < self.base {
            self.counts.push_front(0);
            self.base -= 1;
        }
        let i = usize::try_from(seq - self.base).unwrap_or(usize::MAX);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        let first = self.counts[i] == 0;
        self.counts[i] += n;
        first
    }

    /// Drops one; true when it was the last.
    pub(super) fn release(&mut self, seq: u64) -> bool {
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.counts.len())
        else {
            return false;
        };
        let last = match &mut self.counts[i] {
            0 => return false,
            n => {
                *n -= 1;
                *n == 0
            }
        };
        while self.counts.front() == Some(&0) {
            self.counts.pop_front();
            self.base += 1;
        }
        last
    }
}

//! Per-origin ordering and duplicate suppression.
//!
//! Each origin numbers its events 1, 2, 3, ... (a node id is new per run). Parallel
//! receivers hand events over in any order and the bus may repeat them; this buffer hands
//! them to the application once each, in each origin's order. A missing event never stalls
//! delivery: after `gap_timeout` the buffer skips the gap (counted), and if the missing
//! event turns up later it is still delivered, once, out of order (counted as late)
//! rather than lost.
//!
//! Where an origin's order starts: number 1 when it is seen (numbers start at 1 per run,
//! so a node that saw the origin start knows exactly); otherwise (a node that joined
//! mid-stream) the lowest number seen within a short start window after the first one.
//! Events numbered below the start that turn up later are delivered once, as late ones.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::ids::NodeId;

/// How far below the delivery point skipped and early numbers are remembered; anything
/// older is taken as a duplicate.
const MEMORY: u64 = 65_536;
/// Longest start window (it is also at most the gap timeout).
const MAX_START_WINDOW: Duration = Duration::from_millis(250);

/// What the buffer has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderingCounters {
    /// Events handed to the application.
    pub delivered: u64,
    /// Events dropped as already delivered.
    pub duplicates: u64,
    /// Sequence numbers skipped after the gap timeout.
    pub gaps_skipped: u64,
    /// Events delivered out of order after their gap was skipped.
    pub late: u64,
}

#[derive(Debug)]
struct Origin<T> {
    /// The next number to deliver in order; `None` until the start is known.
    next: Option<u64>,
    /// Where the order started; numbers below it are tracked in `early`.
    floor: u64,
    /// Waiting (for a gap below them to fill, or for the start), with when each arrived.
    pending: BTreeMap<u64, (T, Instant)>,
    /// Numbers below `next` that were skipped (not delivered).
    skipped: BTreeSet<u64>,
    /// Numbers below `floor` that were delivered.
    early: BTreeSet<u64>,
}

/// The reorder buffer over items `T` (the application's events), ordered per key `K`: an
/// origin node, or an origin and a partition.
#[derive(Debug)]
pub struct Reorder<T, K = NodeId> {
    origins: HashMap<K, Origin<T>>,
    gap_timeout: Duration,
    start_window: Duration,
    counters: OrderingCounters,
}

impl<T, K: Clone + Eq + std::hash::Hash> Reorder<T, K> {
    /// A buffer that waits at most `gap_timeout` for a missing event.
    pub fn new(gap_timeout: Duration) -> Self {
        Reorder {
            origins: HashMap::new(),
            gap_timeout,
            start_window: gap_timeout.min(MAX_START_WINDOW),
            counters: OrderingCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> OrderingCounters {
        self.counters
    }

    /// Takes one event; returns what can be delivered now, in order.
    pub fn accept(&mut self, origin: &K, seq: u64, item: T, now: Instant) -> Vec<T> {
        let o = self
            .origins
            .entry(origin.clone())
            .or_insert_with(|| Origin {
                next: None,
                floor: seq,
                pending: BTreeMap::new(),
                skipped: BTreeSet::new(),
                early: BTreeSet::new(),
            });
        if o.next.is_none() && seq == 1 {
            o.next = Some(1);
            o.floor = 1;
        }
        let mut out = Vec::new();
        match o.next {
            Some(_) if seq < o.floor => {
                if o.floor - seq <= MEMORY && o.early.insert(seq) {
                    self.counters.late += 1;
                    out.push(item);
                } else {
                    self.counters.duplicates += 1;
                }
            }
            Some(next) if seq < next => {
                if o.skipped.remove(&seq) {
                    self.counters.late += 1;
                    out.push(item);
                } else {
                    self.counters.duplicates += 1;
                }
            }
            Some(next) if seq == next => {
                out.push(item);
                o.next = Some(next + 1);
                drain(o, &mut out);
            }
            _ => match o.pending.entry(seq) {
                Entry::Occupied(_) => self.counters.duplicates += 1,
                Entry::Vacant(slot) => {
                    slot.insert((item, now));
                }
            },
        }
        self.counters.delivered += out.len() as u64;
        prune(o);
        out
    }

    /// Ends start windows and skips gaps that waited longer than the timeout; returns what
    /// that releases, per origin in order.
    pub fn expire(&mut self, now: Instant) -> Vec<(K, T)> {
        let mut out = Vec::new();
        for (origin, o) in &mut self.origins {
            let mut released = Vec::new();
            if o.next.is_none() {
                let oldest = o.pending.values().map(|(_, since)| *since).min();
                match (o.pending.keys().next().copied(), oldest) {
                    (Some(first), Some(since))
                        if now.duration_since(since) >= self.start_window =>
                    {
                        o.next = Some(first);
                        o.floor = first;
                        drain(o, &mut released);
                    }
                    _ => continue,
                }
            }
            while let Some((&first, &(_, since))) = o.pending.first_key_value() {
                if now.duration_since(since) < self.gap_timeout {
                    break;
                }
                let next = o.next.unwrap_or(first);
                for missing in next..first {
                    o.skipped.insert(missing);
                }
                self.counters.gaps_skipped += first - next;
                o.next = Some(first);
                drain(o, &mut released);
            }
            self.counters.delivered += released.len() as u64;
            out.extend(released.into_iter().map(|t| (origin.clone(), t)));
            prune(o);
        }
        out
    }

    /// When [`Reorder::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.origins
            .values()
            .filter_map(|o| {
                let wait = if o.next.is_none() {
                    self.start_window
                } else {
                    self.gap_timeout
                };
                o.pending
                    .values()
                    .map(|(_, since)| *since)
                    .min()
                    .map(|since| since + wait)
            })
            .min()
    }

    /// Forgets an origin (a node that is gone), dropping what waited for it.
    pub fn forget(&mut self, origin: &K) {
        self.origins.remove(origin);
    }
}

fn drain<T>(o: &mut Origin<T>, out: &mut Vec<T>) {
    let Some(mut next) = o.next else { return };
    while let Some((item, _)) = o.pending.remove(&next) {
        out.push(item);
        next += 1;
    }
    o.next = Some(next);
}

fn prune<T>(o: &mut Origin<T>) {
    let Some(next) = o.next else { return };
    o.skipped = o.skipped.split_off(&next.saturating_sub(MEMORY));
    let keep_early = o.floor.saturating_sub(MEMORY);
    if o.early.first().is_some_and(|f| *f < keep_early) {
        o.early = o.early.split_off(&keep_early);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a() -> NodeId {
        NodeId::new("a").unwrap()
    }

    /// 1..=n shuffled within windows of `w`, with some numbers repeated.
    fn arrivals() -> impl Strategy<Value = (u64, Vec<u64>)> {
        (
            1u64..150,
            1usize..8,
            prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            any::<u64>(),
        )
            .prop_map(|(n, w, dups, seed)| {
                let mut v: Vec<u64> = (1..=n).collect();
                let mut state = seed | 1;
                for chunk in v.chunks_mut(w) {
                    for i in (1..chunk.len()).rev() {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        chunk.swap(i, (state % (i as u64 + 1)) as usize);
                    }
                }
                for d in dups {
                    let x = v[d.index(v.len())];
                    let at = d
                        .index(v.len() + 1)
                        .max(v.iter().position(|y| *y == x).unwrap() + 1);
                    v.insert(at.min(v.len()), x);
                }
                (n, v)
            })
    }

    proptest! {
        /// Reordered and repeated arrivals come out once each, in order, with no timeout.
        #[test]
        fn restores_order_and_drops_duplicates((n, arrivals) in arrivals()) {
            let mut r = Reorder::new(Duration::from_secs(3600));
            let now = Instant::now();
            let mut out = Vec::new();
            // The first arrival sets the start; make it 1 as a node that saw the origin start.
            out.extend(r.accept(&a(), 1, 1, now));
            for seq in arrivals {
                out.extend(r.accept(&a(), seq, seq, now));
            }
            prop_assert_eq!(out, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(r.counters().delivered, n);
            prop_assert_eq!(r.next_deadline(), None);
        }

        /// Lost events are skipped after the timeout; nothing else is lost, repeated or
        /// held, and a lost event that turns up late is delivered once.
        #[test]
        fn gaps_never_stall((n, arrivals) in arrivals(), lost in prop::collection::btree_set(2u64..150, 0..10)) {
            let mut r = Reorder::new(Duration::from_millis(100));
            let t0 = Instant::now();
            let mut out = Vec::new();
            out.extend(r.accept(&a(), 1, 1, t0));
            for seq in arrivals.iter().copied().filter(|s| !lost.contains(s)) {
                out.extend(r.accept(&a(), seq, seq, t0));
            }
            out.extend(r.expire(t0 + Duration::from_secs(1)).into_iter().map(|(_, s)| s));
            let expected: Vec<u64> = (1..=n).filter(|s| !lost.contains(s)).collect();
            prop_assert_eq!(&out, &expected, "every arrived event once, in order");
            for late in lost.iter().copied().filter(|s| *s <= n) {
                let again = r.accept(&a(), late, late, t0 + Duration::from_secs(2));
                let last_delivered = expected.last().copied().unwrap_or(0);
                if late < last_delivered {
                    prop_assert_eq!(again, vec![late], "a late event is delivered once");
                    prop_assert_eq!(r.accept(&a(), late, late, t0 + Duration::from_secs(2)), Vec::<u64>::new());
                }
            }
        }
    }

    #[test]
    fn a_node_joining_mid_stream_starts_at_the_lowest_number_of_the_start_window() {
        let mut r = Reorder::new(Duration::from_secs(2));
        let b = NodeId::new("b").unwrap();
        let t0 = Instant::now();
        // Parallel receivers hand 1058, then 1057 over; 1 was never seen.
        assert_eq!(r.accept(&a(), 1058, "a1058", t0), Vec::<&str>::new());
        assert_eq!(r.accept(&a(), 1057, "a1057", t0), Vec::<&str>::new());
        assert_eq!(
            r.accept(&b, 1, "b1", t0),
            ["b1"],
            "seeing 1 fixes the start at once"
        );
        assert!(r.next_deadline().unwrap() <= t0 + MAX_START_WINDOW);
        assert!(r.expire(t0).is_empty(), "held during the start window");
        let released: Vec<_> = r
            .expire(t0 + MAX_START_WINDOW)
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(
            released,
            ["a1057", "a1058"],
            "in order, from the lowest seen"
        );
        assert_eq!(r.accept(&a(), 1059, "a1059", t0), ["a1059"]);
        assert_eq!(
            r.accept(&a(), 1056, "a1056", t0),
            ["a1056"],
            "below the start: late, not lost"
        );
        assert_eq!(r.accept(&a(), 1056, "a1056", t0), Vec::<&str>::new());
        assert_eq!(
            r.counters(),
            OrderingCounters {
                delivered: 5,
                duplicates: 1,
                gaps_skipped: 0,
                late: 1
            }
        );
        r.forget(&a());
        assert_eq!(
            r.accept(&a(), 1, "a1", t0),
            ["a1"],
            "a forgotten origin starts afresh"
        );
    }
}

//! Unit tests of the runtime: reference counts, the window and the cold path.

use std::collections::BTreeMap;

use super::queue::Loader;
use super::*;

#[test]
fn reference_counts_release_each_message_once() {
    let mut refs = RefCounts::default();
    assert!(refs.add(10, 2));
    assert!(refs.add(12, 1));
    assert!(!refs.add(10, 1));
    assert!(refs.add(8, 1), "an older message extends the front");
    assert!(!refs.release(10));
    assert!(refs.release(8));
    assert!(!refs.release(8), "released twice");
    assert!(!refs.release(99), "never counted");
    assert!(!refs.release(10));
    assert!(refs.release(10));
    assert_eq!(
        (refs.base, refs.counts.len()),
        (12, 1),
        "zeros at the front go"
    );
    assert!(refs.release(12));
    assert!(refs.counts.is_empty());
}

fn delivery(size: u64) -> Delivery {
    Delivery {
        owner: 1,
        delivery_count: 0,
        dead_letter: None,
        expires_at: None,
        scheduled_at: None,
        overridden: false,
        size,
        listed: false,
        settled: false,
        deferred: false,
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        lock_duration: TimeSpan::from_secs(30),
        max_delivery_count: 10,
        dead_letter_on_expiry: false,
    }
}

/// Reads `lo..=hi` of `disk`, as the store would.
fn read(disk: &BTreeMap<u64, Delivery>, lo: u64, hi: u64) -> Vec<(u64, Delivery)> {
    disk.range(lo..=hi).map(|(&s, d)| (s, d.clone())).collect()
}

/// Receives-and-deletes the head of the main subqueue, reading cold deliveries through
/// `load`; the sequence number taken.
fn take(
    queue: &Queue,
    now: DateTime<Utc>,
    load: Loader<'_>,
    effects: &mut Vec<Effect>,
) -> Option<u64> {
    queue
        .take(
            Subqueue::Main,
            ReceiveMode::ReceiveAndDelete,
            &settings(),
            now,
            effects,
            load,
        )
        .unwrap()
        .map(|t| t.entry.seq)
}

#[test]
fn past_the_window_deliveries_wait_on_disk_and_come_back_in_order() {
    let now = Utc::now();
    let queue = Queue::new(2);
    let disk: BTreeMap<u64, Delivery> = (1..=7).map(|s| (s, delivery(s))).collect();
    queue.insert(
        disk.iter().map(|(&seq, d)| Entry {
            seq,
            delivery: d.clone(),
        }),
        now,
    );
    let counts = queue.counts();
    assert_eq!((counts.active, counts.bytes), (7, 28));
    {
        let state = lock(&queue.state);
        assert_eq!(state.main.ready.len(), 2);
        assert_eq!(state.main.cold.count, 5);
    }
    let reads = std::cell::Cell::new(0);
    let load = |_: Subqueue, lo: u64, hi: u64| {
        reads.set(reads.get() + 1);
        Ok(read(&disk, lo, hi))
    };
    let mut taken = Vec::new();
    let mut effects = Vec::new();
    while let Some(seq) = take(&queue, now, &load, &mut effects) {
        taken.push(seq);
    }
    assert_eq!(taken, vec![1, 2, 3, 4, 5, 6, 7]);
    assert!(reads.get() >= 3, "read in a window at a time");
    let counts = queue.counts();
    assert_eq!((counts.active, counts.bytes), (0, 0));
}

#[test]
fn a_cold_delivery_below_the_ready_ones_is_taken_first() {
    // A restart from a snapshot files the held deliveries in no set order: with a
    // full window, a smaller one goes cold behind a larger ready one.
    let now = Utc::now();
    let queue = Queue::new(1);
    let disk: BTreeMap<u64, Delivery> = [3, 5].map(|s| (s, delivery(s))).into();
    for seq in [5, 3] {
        queue.insert(
            [Entry {
                seq,
                delivery: disk[&seq].clone(),
            }],
            now,
        );
    }
    assert_eq!(lock(&queue.state).main.cold.count, 1);
    let load = |_: Subqueue, lo: u64, hi: u64| Ok(read(&disk, lo, hi));
    let mut effects = Vec::new();
    assert_eq!(take(&queue, now, &load, &mut effects), Some(3));
    assert_eq!(take(&queue, now, &load, &mut effects), Some(5));
}

#[test]
fn cold_deliveries_expire_when_read_in_and_the_take_reads_on() {
    let now = Utc::now();
    let queue = Queue::new(1);
    let expired = |seq| Entry {
        seq,
        delivery: Delivery {
            expires_at: Some(now - Duration::seconds(1)),
            ..delivery(1)
        },
    };
    let mut disk: BTreeMap<u64, Delivery> = BTreeMap::new();
    let mut entries: Vec<Entry> = (1..=3).map(expired).collect();
    entries.push(Entry {
        seq: 4,
        delivery: delivery(1),
    });
    for e in &entries {
        disk.insert(e.seq, e.delivery.clone());
    }
    queue.insert(entries, now);
    // Counted until a receiver reaches them, as the service does.
    assert_eq!(queue.counts().active, 4);
    let load = |_: Subqueue, lo: u64, hi: u64| Ok(read(&disk, lo, hi));
    let mut effects = Vec::new();
    assert_eq!(
        take(&queue, now, &load, &mut effects),
        Some(4),
        "past three expired ones"
    );
    let removed: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Remove(seq, _) => Some(*seq),
            Effect::Rewrite(..) => None,
        })
        .collect();
    assert_eq!(removed, vec![1, 2, 3, 4]);
    assert_eq!(queue.counts().active, 0);
}

#[test]
fn a_drain_names_the_cold_deliveries() {
    let queue = Queue::new(1);
    queue.insert(
        (1..=4).map(|seq| Entry {
            seq,
            delivery: delivery(1),
        }),
        Utc::now(),
    );
    let (entries, cold) = queue.drain();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    assert_eq!(cold, vec![2, 3, 4]);
    assert_eq!(queue.counts().active, 0);
}

#[test]
fn a_receiver_that_parks_again_keeps_its_place_among_the_parked() {
    // Each receiver's room tells the claims apart: the first takes 1, the second 2...
    let queue = Queue::new(1);
    let (first, second, third) = (queue.place(), queue.place(), queue.place());
    let mode = ReceiveMode::ReceiveAndDelete;
    let _second = queue.park(second, mode, 2);
    let parked = queue.park(first, mode, 1);
    let _third = queue.park(third, mode, 3);
    // The first woke for nothing and parks again: it is still handed to first.
    drop(parked);
    let _first = queue.park(first, mode, 1);
    let rooms: Vec<usize> = std::iter::from_fn(|| queue.claim().map(|c| c.room)).collect();
    assert_eq!(rooms, [1, 2, 3]);
}

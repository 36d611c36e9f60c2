//! Writes that are durable in the log but not yet applied to sled. The writer acknowledges a
//! cycle as soon as its log record is synced and publishes the record here; the applier
//! thread puts it into sled afterwards and then forgets it here. Readers look here first,
//! so an acknowledged write is visible at once, and sled's apply is off the path of every
//! acknowledgement.
//!
//! A reader that misses here and then reads sled sees the write or a later one: the
//! applier removes an entry only after sled holds it. A range read merges a copy of the
//! pending range with sled's range, the pending value winning.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::RwLock;

use sled::IVec;

use super::wal::Op;
use crate::sync::{read, write};

/// A pending key: its final value (`None`: removed), and the cycle that wrote it.
#[derive(Debug)]
struct Entry {
    value: Option<IVec>,
    generation: u64,
}

/// The pending writes of each tree (`entities`, `messages`).
#[derive(Debug, Default)]
pub(super) struct Overlay {
    trees: RwLock<[BTreeMap<Vec<u8>, Entry>; 2]>,
}

/// A key's state here.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pending {
    /// Not pending: sled has it (or not) as it is.
    No,
    /// Removed by a pending write.
    Removed,
    /// Written by a pending write.
    Value(IVec),
}

impl Overlay {
    /// Makes cycle `generation`'s operations visible (before it is acknowledged).
    pub(super) fn publish(&self, generation: u64, ops: &[Op]) {
        let mut trees = write(&self.trees);
        for op in ops {
            trees[usize::from(op.messages)].insert(
                op.key.clone(),
                Entry {
                    value: op.value.clone(),
                    generation,
                },
            );
        }
    }

    /// Forgets cycle `generation`'s operations, now in sled, except the keys a later
    /// cycle wrote again.
    pub(super) fn applied(&self, generation: u64, ops: &[Op]) {
        let mut trees = write(&self.trees);
        for op in ops {
            let tree = &mut trees[usize::from(op.messages)];
            if tree
                .get(op.key.as_slice())
                .is_some_and(|e| e.generation == generation)
            {
                tree.remove(op.key.as_slice());
            }
        }
    }

    /// Keys pending in both trees.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let trees = read(&self.trees);
        trees[0].len() + trees[1].len()
    }

    /// A key's pending state.
    pub(super) fn get(&self, messages: bool, key: &[u8]) -> Pending {
        match read(&self.trees)[usize::from(messages)].get(key) {
            None => Pending::No,
            Some(Entry { value: None, .. }) => Pending::Removed,
            Some(Entry { value: Some(v), .. }) => Pending::Value(v.clone()),
        }
    }

    /// A copy of the pending keys in a range, in key order.
    pub(super) fn range(
        &self,
        messages: bool,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Option<IVec>)> {
        let trees = read(&self.trees);
        let tree = &trees[usize::from(messages)];
        if tree.is_empty() {
            return Vec::new();
        }
        tree.range::<[u8], _>((from, to))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }
}

/// Sled's records merged with pending ones, in key order (or reverse key order): a pending
/// value replaces sled's, a pending removal hides it.
pub(super) struct Merged<I: Iterator> {
    stored: Peekable<I>,
    pending: Peekable<std::vec::IntoIter<(Vec<u8>, Option<IVec>)>>,
    reverse: bool,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Merged<I> {
    /// `stored` and `pending` must both run in the same order: ascending, or descending
    /// when `reverse`.
    pub(super) fn new(stored: I, pending: Vec<(Vec<u8>, Option<IVec>)>, reverse: bool) -> Self {
        Merged {
            stored: stored.peekable(),
            pending: pending.into_iter().peekable(),
            reverse,
        }
    }
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Merged<I> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.stored.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(_), None) | (Some(Err(_)), _) => return self.stored.next(),
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((stored, _))), Some((pending, _))) => {
                    let order = stored.as_ref().cmp(pending.as_slice());
                    if self.reverse { order.reverse() } else { order }
                }
            };
            match order {
                Ordering::Less => return self.stored.next(),
                Ordering::Equal => {
                    self.stored.next();
                }
                Ordering::Greater => {}
            }
            if let Some((key, Some(value))) = self.pending.next() {
                return Some(Ok((IVec::from(key), value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &[u8], value: Option<&[u8]>) -> Op {
        Op {
            messages: true,
            key: key.to_vec(),
            value: value.map(IVec::from),
        }
    }

    fn stored(items: &[(&[u8], &[u8])]) -> Vec<sled::Result<(IVec, IVec)>> {
        items
            .iter()
            .map(|(k, v)| Ok((IVec::from(*k), IVec::from(*v))))
            .collect()
    }

    fn keys_and_values(
        merged: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        merged
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    #[test]
    fn pending_values_replace_hide_and_add_to_sleds_in_both_directions() {
        let overlay = Overlay::default();
        overlay.publish(
            1,
            &[
                op(b"b", Some(b"new")),
                op(b"c", None),
                op(b"e", Some(b"added")),
            ],
        );
        let sled = stored(&[(b"a", b"1"), (b"b", b"old"), (b"c", b"gone"), (b"d", b"4")]);
        let all = (Bound::Unbounded, Bound::Unbounded);
        let forward = Merged::new(sled.into_iter(), overlay.range(true, all.0, all.1), false);
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            (b"a", &b"1"[..]),
            (b"b", b"new"),
            (b"d", b"4"),
            (b"e", b"added"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(keys_and_values(forward), want);
        let sled = stored(&[(b"a", b"1"), (b"b", b"old"), (b"c", b"gone"), (b"d", b"4")]);
        let mut pending = overlay.range(true, all.0, all.1);
        pending.reverse();
        let backward = Merged::new(sled.into_iter().rev(), pending, true);
        let mut reversed = want;
        reversed.reverse();
        assert_eq!(keys_and_values(backward), reversed);
    }

    #[test]
    fn an_applied_cycle_is_forgotten_unless_written_again() {
        let overlay = Overlay::default();
        overlay.publish(1, &[op(b"a", Some(b"1")), op(b"b", Some(b"1"))]);
        overlay.publish(2, &[op(b"b", None)]);
        overlay.applied(1, &[op(b"a", Some(b"1")), op(b"b", Some(b"1"))]);
        assert_eq!(overlay.get(true, b"a"), Pending::No);
        assert_eq!(overlay.get(true, b"b"), Pending::Removed);
        assert_eq!(overlay.get(false, b"b"), Pending::No);
        overlay.applied(2, &[op(b"b", None)]);
        assert_eq!(overlay.len(), 0);
    }
}

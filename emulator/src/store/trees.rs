//! The stored state as readers see it: sled's two trees with the acknowledged writes the
//! applier has not put into them yet laid over them (`overlay.rs`). Every read of the store
//! goes through here; only the applier (and recovery at open) writes to sled.

use std::ops::Bound;
use std::sync::Arc;

use sled::IVec;

use super::overlay::{Merged, Overlay, Pending};
use super::wal::{Op, Wal};

/// Operations from which a record is applied as one sled batch per tree.
const BATCH_FROM: usize = 64;

/// The sled database, its two trees and the writes not yet applied to them (handles:
/// cloning is cheap).
#[derive(Debug, Clone)]
pub(super) struct Trees {
    pub(super) db: sled::Db,
    pub(super) entities: sled::Tree,
    pub(super) messages: sled::Tree,
    /// Acknowledged writes the applier has not put into sled yet.
    pub(super) overlay: Arc<Overlay>,
}

impl Trees {
    /// The `messages` tree, or the `entities` one.
    pub(super) fn tree(&self, messages: bool) -> &sled::Tree {
        if messages {
            &self.messages
        } else {
            &self.entities
        }
    }

    /// A key's value.
    pub(super) fn get(&self, messages: bool, key: &[u8]) -> sled::Result<Option<IVec>> {
        match self.overlay.get(messages, key) {
            Pending::No => self.tree(messages).get(key),
            Pending::Removed => Ok(None),
            Pending::Value(v) => Ok(Some(v)),
        }
    }

    /// The records from `from` up to `to`, in key order.
    pub(super) fn range(
        &self,
        messages: bool,
        from: &[u8],
        to: Bound<&[u8]>,
    ) -> Merged<sled::Iter> {
        let pending = self.overlay.range(messages, Bound::Included(from), to);
        let stored = self
            .tree(messages)
            .range::<&[u8], _>((Bound::Included(from), to));
        Merged::new(stored, pending, false)
    }

    /// The records whose keys start with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, messages: bool, prefix: &[u8]) -> Merged<sled::Iter> {
        match prefix_end(prefix) {
            Some(end) => self.range(messages, prefix, Bound::Excluded(&end)),
            None => self.range(messages, prefix, Bound::Unbounded),
        }
    }

    /// The last key from `from` to `to` (both included).
    pub(super) fn last_key(
        &self,
        messages: bool,
        from: &[u8],
        to: &[u8],
    ) -> sled::Result<Option<IVec>> {
        let mut pending = self
            .overlay
            .range(messages, Bound::Included(from), Bound::Included(to));
        pending.reverse();
        let stored = self.tree(messages).range(from..=to).rev();
        Merged::new(stored, pending, true)
            .next()
            .transpose()
            .map(|last| last.map(|(key, _)| key))
    }

    /// Applies one record's operations. Small records go in as plain inserts and removes:
    /// each `apply_batch` seals an I/O buffer (see `wal.rs`), which only pays off when it
    /// carries many writes. Atomicity comes from the log either way.
    pub(super) fn apply(&self, ops: &[Op]) -> std::result::Result<(), sled::Error> {
        if ops.len() >= BATCH_FROM {
            for messages in [false, true] {
                let mut batch = sled::Batch::default();
                let mut any = false;
                for op in ops.iter().filter(|o| o.messages == messages) {
                    any = true;
                    match &op.value {
                        Some(v) => batch.insert(op.key.as_slice(), v.clone()),
                        None => batch.remove(op.key.as_slice()),
                    }
                }
                if any {
                    self.tree(messages).apply_batch(batch)?;
                }
            }
            return Ok(());
        }
        for op in ops {
            let tree = self.tree(op.messages);
            match &op.value {
                Some(v) => tree.insert(op.key.as_slice(), v.clone()).map(drop)?,
                None => tree.remove(op.key.as_slice()).map(drop)?,
            }
        }
        Ok(())
    }

    /// Flushes sled, then empties the log: everything the log held is now in sled's own
    /// durable state.
    pub(super) fn checkpoint(&self, wal: &mut Wal) -> std::result::Result<(), sled::Error> {
        self.db.flush()?;
        wal.reset()?;
        Ok(())
    }
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

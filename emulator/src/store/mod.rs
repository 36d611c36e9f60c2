//! The only code that touches sled: key layout, record encoding, and the single writer
//! that applies batches with group commit. See `emulator/ARCHITECTURE.md` for the layout
//! and what "durable" means.

mod codec;
mod keys;
mod snapshot;
mod stats;
mod wal;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use keys::{Key, KeyBytes};
pub use stats::WriterStats;

use writer::{Trees, Writer};

/// Store failures. Every one is fail-stop for the request that hit it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed (I/O, corruption).
    #[error("storage engine failed")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded.
    #[error("stored record under {key} is unreadable")]
    Decode {
        /// The key, printable.
        key: String,
        /// Why.
        #[source]
        source: codec::DecodeError,
    },
    /// A write or its flush failed, so durability cannot be promised.
    #[error("write to disk failed")]
    Flush(#[source] std::sync::Arc<sled::Error>),
    /// The writer is gone (the store is shutting down).
    #[error("store is shut down")]
    ShutDown,
}

/// Store result.
pub type Result<T> = std::result::Result<T, Error>;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on disk, created if missing.
    Directory(PathBuf),
    /// A sled temporary store (in `/dev/shm` where it exists), removed on exit.
    InMemory,
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After an fsync that started after the write (group commit).
    Full,
    /// Once applied; a crash may lose recent writes.
    None,
}

/// Opening options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where.
    pub location: Location,
    /// sled page cache size in bytes.
    pub cache_bytes: u64,
    /// When writes are acknowledged.
    pub durability: Durability,
}

/// One write of a batch (atomic within each tree).
#[derive(Debug)]
pub enum Write {
    /// Insert or replace a record.
    Put(Key, Vec<u8>),
    /// Remove one record.
    Delete(Key),
    /// Remove every record under a key prefix.
    DeletePrefix(Key),
    /// Store a counter as the largest of its stored value and every `Raise` of it in the
    /// batch: concurrent requests reach the writer in any order, and a counter on disk
    /// must never go back.
    Raise(Key, u64),
}

impl Write {
    /// A `Put` of an encoded value.
    pub fn put<T: Serialize>(key: impl Into<Key>, value: &T) -> Self {
        let key = key.into();
        let bytes = codec::encode_for(&key, value);
        Write::Put(key, bytes)
    }

    /// A `Put` of a header and a raw body (see [`Store::get_with_body`]).
    pub fn put_with_body<T: Serialize>(key: impl Into<Key>, header: &T, body: &[u8]) -> Self {
        Write::Put(key.into(), codec::encode_with_body(header, body))
    }

    /// A `Delete`.
    pub fn delete(key: impl Into<Key>) -> Self {
        Write::Delete(key.into())
    }

    /// A `Raise` of a counter to at least `value`.
    pub fn raise(key: impl Into<Key>, value: u64) -> Self {
        Write::Raise(key.into(), value)
    }

    /// A `DeletePrefix`.
    pub fn delete_prefix(key: impl Into<Key>) -> Self {
        Write::DeletePrefix(key.into())
    }
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    trees: Trees,
    writer: Writer,
    /// The folder (none in memory).
    dir: Option<PathBuf>,
    /// The index snapshot found at open, until the runtime takes it.
    snapshot: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Store {
    /// Opens (or creates) the store, replays its write-ahead log and starts its writer
    /// thread.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] when sled cannot open the folder.
    pub fn open(options: &Options) -> Result<Self> {
        // No periodic flush: durability comes from the write-ahead log, and sled is flushed
        // at checkpoints (a flush every 500 ms, the default, wakes all of sled's I/O threads).
        let config = sled::Config::new()
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None);
        let config = match &options.location {
            Location::Directory(dir) => config.path(dir),
            Location::InMemory => config.temporary(true),
        };
        let db = open_waiting_for_lock(&config)?;
        let trees = Trees {
            entities: db.open_tree("entities")?,
            messages: db.open_tree("messages")?,
            db,
        };
        let (wal, snapshot, dir) = match &options.location {
            Location::Directory(dir) => {
                // Taken (and deleted) before any write; trusted only when the log had
                // nothing to replay, so sled is exactly as the shutdown that wrote it left it.
                let snapshot = snapshot::take(dir).map_err(sled::Error::Io)?;
                let (wal, replayed) = recover(&trees, &dir.join(WAL_FILE))?;
                (Some(wal), snapshot.filter(|_| !replayed), Some(dir.clone()))
            }
            Location::InMemory => (None, None, None),
        };
        let writer =
            Writer::start(trees.clone(), wal, options.durability).map_err(sled::Error::Io)?;
        Ok(Store {
            trees,
            writer,
            dir,
            snapshot: Arc::new(Mutex::new(snapshot)),
        })
    }

    /// The index snapshot the last clean shutdown left (see [`Store::close_with_snapshot`]),
    /// once, decoded; `None` when there was none, it was damaged or does not decode as a
    /// `T`, or the store changed since.
    pub fn take_snapshot<T: DeserializeOwned>(&self) -> Option<T> {
        let bytes = crate::sync::lock(&self.snapshot).take()?;
        let decoded = codec::decode_snapshot(&bytes);
        if decoded.is_none() {
            tracing::warn!("index snapshot unreadable; rebuilding the index from the records");
        }
        decoded
    }

    /// How many write requests were ever submitted: equal at two moments means no write
    /// was submitted in between.
    pub fn submitted(&self) -> u64 {
        self.writer.submitted()
    }

    /// As [`Store::close`], then keeps `index` for the next open, provided no write was
    /// submitted since [`Store::submitted`] returned `mark` (else the index may not match
    /// what is stored, and the next open rebuilds it from the records). In memory it is
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] when the last flush fails; writing the snapshot only logs (the next
    /// start then rebuilds the index).
    pub async fn close_with_snapshot<T: Serialize>(&self, mark: u64, index: &T) -> Result<()> {
        self.close().await?;
        if let Some(dir) = &self.dir {
            if self.writer.submitted() != mark {
                tracing::info!("writes after the index was taken; no snapshot kept");
            } else if let Err(e) = snapshot::write(dir, &codec::encode_snapshot(index)) {
                tracing::warn!(error = %e, "index snapshot not written");
            }
        }
        Ok(())
    }

    fn tree(&self, key: &Key) -> &sled::Tree {
        self.trees.tree(!key.is_entity())
    }

    /// Reads one record.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn get<T: DeserializeOwned>(&self, key: impl Into<Key>) -> Result<Option<T>> {
        let key = key.into();
        self.tree(&key)
            .get(key.to_bytes())?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    /// Reads a record written with [`Write::put_with_body`].
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn get_with_body<T: DeserializeOwned>(
        &self,
        key: impl Into<Key>,
    ) -> Result<Option<(T, Vec<u8>)>> {
        let key = key.into();
        match self.tree(&key).get(key.to_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                codec::decode_with_body(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Decode {
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }

    /// Reads every record below `prefix`, in key order.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn scan<T: DeserializeOwned>(&self, prefix: impl Into<Key>) -> Result<Vec<T>> {
        Ok(self
            .scan_with_keys(prefix)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// As [`Store::scan`], with each record's key bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn scan_with_keys<T: DeserializeOwned>(
        &self,
        prefix: impl Into<Key>,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        self.visit(prefix, |key, value| {
            out.push((key.to_vec(), value));
            Ok::<_, Error>(())
        })?;
        Ok(out)
    }

    /// The first key at or after `from` that still starts with `within`'s prefix: a seek,
    /// for walking a layout's owners without reading their records.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`].
    pub fn next_key(
        &self,
        from: impl Into<Key>,
        within: impl Into<Key>,
    ) -> Result<Option<Vec<u8>>> {
        let (from, within) = (from.into(), within.into());
        let prefix = within.to_prefix_bytes();
        match self.tree(&from).range(from.to_bytes()..).keys().next() {
            Some(key) => {
                let key = key?;
                Ok(key.starts_with(&prefix).then(|| key.to_vec()))
            }
            None => Ok(None),
        }
    }

    /// The last key from `from` to `to` (both included), if any: a seek.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`].
    pub fn last_key(&self, from: impl Into<Key>, to: impl Into<Key>) -> Result<Option<Vec<u8>>> {
        let (from, to) = (from.into(), to.into());
        match self
            .tree(&from)
            .range(from.to_bytes()..=to.to_bytes())
            .keys()
            .next_back()
        {
            Some(key) => Ok(Some(key?.to_vec())),
            None => Ok(None),
        }
    }

    /// Calls `visit` with every record below `prefix`, in key order, without holding them
    /// all in memory at once.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`], [`Error::Decode`], or what `visit` returns.
    pub fn visit<T: DeserializeOwned, E: From<Error>>(
        &self,
        prefix: impl Into<Key>,
        mut visit: impl FnMut(&[u8], T) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let prefix = prefix.into();
        walk(
            &prefix,
            self.tree(&prefix).scan_prefix(prefix.to_prefix_bytes()),
            &mut visit,
        )
    }

    /// The records from `from` to `to`, both included (keys of the same tree), in key
    /// order, with each record's key bytes, read as the caller walks them, so a long range
    /// is never all in memory. A record with a body (a stored message) yields its header
    /// alone.
    ///
    /// # Errors
    ///
    /// Each item: [`Error::Sled`] or [`Error::Decode`].
    pub fn iter<T: DeserializeOwned>(
        &self,
        from: impl Into<Key>,
        to: impl Into<Key>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, T)>> {
        let (from, to) = (from.into(), to.into());
        self.tree(&from)
            .range(from.to_bytes()..=to.to_bytes())
            .map(move |item| {
                let (key, bytes) = item?;
                Ok((key.to_vec(), decode(&from, &bytes)?))
            })
    }

    /// Counts records below `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`].
    pub fn count(&self, prefix: impl Into<Key>) -> Result<u64> {
        let prefix = prefix.into();
        let mut n = 0;
        for item in self.tree(&prefix).scan_prefix(prefix.to_prefix_bytes()) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies the writes (after every earlier call; all or none of them survive a crash),
    /// then waits until they are durable (unless durability is `None`).
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] when the write or its flush failed, [`Error::ShutDown`] after `close`.
    pub async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        self.writer.apply(writes).await
    }

    /// Waits until everything written so far is on disk, whatever the durability setting.
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] or [`Error::ShutDown`].
    pub async fn flush(&self) -> Result<()> {
        self.writer.flush().await
    }

    /// Flushes, stops the writer and waits for it, so that once every handle is dropped the
    /// folder can be opened again at once. Later writes fail with [`Error::ShutDown`].
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] when the last flush fails.
    pub async fn close(&self) -> Result<()> {
        self.writer.close().await
    }

    /// Where the writer thread's time went so far; resets [`WriterStats::longest_cycle`].
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Bytes sled reports on disk (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        self.trees.db.size_on_disk().unwrap_or(0)
    }
}

/// The write-ahead log, inside sled's folder (sled ignores files it does not own).
const WAL_FILE: &str = "emulator.wal";

/// Opens the write-ahead log and replays it into sled (the writes since the last
/// checkpoint, some of which sled may not have made durable), then checkpoints.
/// True beside the log when it had records to replay.
fn recover(trees: &Trees, path: &std::path::Path) -> Result<(wal::Wal, bool)> {
    let (mut wal, records) = wal::Wal::open(path).map_err(sled::Error::Io)?;
    if !records.is_empty() {
        tracing::info!(records = records.len(), "replaying the write-ahead log");
        for ops in &records {
            trees.apply(ops)?;
        }
        trees.checkpoint(&mut wal)?;
    }
    Ok((wal, !records.is_empty()))
}

/// How long [`Store::open`] waits for another handle of the same folder to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled, waiting up to [`LOCK_WAIT`] for the folder's file lock: a store closed and
/// dropped in this process keeps the lock until sled's background I/O threads finish with
/// it (seen when restarting an in-process emulator on the same folder).
fn open_waiting_for_lock(config: &sled::Config) -> std::result::Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Decodes each record of `records` (of the tree and layout of `key`) and hands it on.
fn walk<T: DeserializeOwned, E: From<Error>>(
    key: &Key,
    records: sled::Iter,
    visit: &mut impl FnMut(&[u8], T) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    for item in records {
        let (k, bytes) = item.map_err(Error::from)?;
        visit(&k, decode(key, &bytes)?)?;
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|source| Error::Decode {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Address;

    fn on_disk(folder: PathBuf, durability: Durability) -> Options {
        Options {
            location: Location::Directory(folder),
            cache_bytes: 1 << 20,
            durability,
        }
    }

    fn memory() -> Store {
        Store::open(&Options {
            location: Location::InMemory,
            cache_bytes: 1 << 20,
            durability: Durability::Full,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn put_get_scan_delete_prefix() {
        let store = memory();
        let t = Address::Topic("t".into());
        let sub = |t: &str, s: &str| Address::Subscription(t.into(), s.into());
        store
            .apply(vec![
                Write::put(t.clone(), &"topic"),
                Write::put(sub("t", "a"), &"s1"),
                Write::put(sub("t", "b"), &"s2"),
                Write::put(sub("t2", "a"), &"other"),
                Write::put(
                    Address::Rule("t".into(), "a".into(), "$default".into()),
                    &"rule",
                ),
                Write::put(Key::Message(7, 1), &"m"),
                Write::put(Key::Message(7, 2), &"m2"),
                Write::put(Key::Message(8, 1), &"other"),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.get::<String>(t.clone()).unwrap().as_deref(),
            Some("topic")
        );
        assert_eq!(store.scan::<String>(Key::Messages(7)).unwrap(), ["m", "m2"]);
        assert_eq!(store.scan::<String>(sub("t", "")).unwrap(), ["s1", "s2"]);
        assert_eq!(store.count(sub("t", "")).unwrap(), 2);
        store
            .apply(vec![
                Write::delete(t.clone()),
                Write::delete_prefix(sub("t", "")),
                Write::delete_prefix(Address::Rule("t".into(), String::new(), String::new())),
                Write::delete_prefix(Key::Messages(7)),
            ])
            .await
            .unwrap();
        assert!(store.get::<String>(t).unwrap().is_none());
        assert_eq!(store.count(Key::Messages(7)).unwrap(), 0);
        assert_eq!(store.count(Key::Messages(8)).unwrap(), 1);
        assert_eq!(store.count(sub("t", "")).unwrap(), 0);
        assert_eq!(store.count(sub("t2", "")).unwrap(), 1);
    }

    #[tokio::test]
    async fn raised_counters_never_go_back() {
        let store = memory();
        let n = Key::NextSequence(3);
        // Out of order within one batch, then a lower value in a later batch.
        store
            .apply(vec![Write::raise(n.clone(), 7), Write::raise(n.clone(), 6)])
            .await
            .unwrap();
        assert_eq!(store.get::<u64>(n.clone()).unwrap(), Some(7));
        store.apply(vec![Write::raise(n.clone(), 5)]).await.unwrap();
        assert_eq!(store.get::<u64>(n.clone()).unwrap(), Some(7));
        store.apply(vec![Write::raise(n.clone(), 9)]).await.unwrap();
        assert_eq!(store.get::<u64>(n).unwrap(), Some(9));
    }

    #[tokio::test]
    async fn many_concurrent_writers_share_flushes() {
        let store = memory();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.apply(vec![Write::put(Key::Message(1, i), &i)]).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.count(Key::Messages(1)).unwrap(), 64);
    }

    #[tokio::test]
    async fn later_writes_in_a_cycle_win() {
        let store = memory();
        store
            .apply(vec![
                Write::put(Key::Message(9, 1), &"before"),
                Write::delete_prefix(Key::Messages(9)),
                Write::put(Key::Message(9, 2), &"after"),
                Write::put(Key::Message(9, 3), &"first"),
                Write::put(Key::Message(9, 3), &"second"),
                Write::put(Key::Message(9, 4), &"gone"),
                Write::delete(Key::Message(9, 4)),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.scan::<String>(Key::Messages(9)).unwrap(),
            ["after", "second"]
        );
    }

    #[tokio::test]
    async fn opening_replays_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("db");
        let options = on_disk(folder.clone(), Durability::Full);
        let store = Store::open(&options).unwrap();
        store
            .apply(vec![
                Write::put(Key::Message(1, 1), &"kept"),
                Write::put(Key::Message(1, 2), &"removed by the log"),
            ])
            .await
            .unwrap();
        store.close().await.unwrap();
        drop(store);
        // What a killed process leaves: records in the log that sled never made durable.
        {
            let (mut log, records) = wal::Wal::open(&folder.join(WAL_FILE)).unwrap();
            assert!(records.is_empty(), "close checkpoints and empties the log");
            let op = |key: Key, value: Option<Vec<u8>>| wal::Op {
                messages: true,
                key: key.to_bytes(),
                value,
            };
            log.append(&[
                op(Key::Message(1, 2), None),
                op(Key::Message(1, 3), Some(codec::encode(&"replayed"))),
            ])
            .unwrap();
            log.sync().unwrap();
        }
        let store = Store::open(&options).unwrap();
        assert_eq!(
            store.scan::<String>(Key::Messages(1)).unwrap(),
            ["kept", "replayed"]
        );
        assert_eq!(std::fs::metadata(folder.join(WAL_FILE)).unwrap().len(), 0);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_index_snapshot_is_kept_only_by_a_quiet_close_and_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let options = on_disk(dir.path().join("db"), Durability::Full);
        let reopen = |store: Store| {
            drop(store);
            Store::open(&options).unwrap()
        };
        // A write after the mark: the index may not match, so none is kept.
        let store = Store::open(&options).unwrap();
        let mark = store.submitted();
        store
            .apply(vec![Write::put(Key::Message(1, 1), &"late")])
            .await
            .unwrap();
        store
            .close_with_snapshot(mark, &b"stale".to_vec())
            .await
            .unwrap();
        let store = reopen(store);
        assert_eq!(store.take_snapshot::<Vec<u8>>(), None);
        // A quiet close keeps it for exactly one open.
        let mark = store.submitted();
        store
            .close_with_snapshot(mark, &b"index".to_vec())
            .await
            .unwrap();
        let store = reopen(store);
        assert_eq!(
            store.take_snapshot::<Vec<u8>>().as_deref(),
            Some(&b"index"[..])
        );
        assert_eq!(store.take_snapshot::<Vec<u8>>(), None);
        store.close().await.unwrap();
        let store = reopen(store);
        assert_eq!(
            store.take_snapshot::<Vec<u8>>(),
            None,
            "deleted as the store opened"
        );
        // In memory there is nowhere to keep one.
        let memory = memory();
        memory
            .close_with_snapshot(memory.submitted(), &b"x".to_vec())
            .await
            .unwrap();
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn reopen_keeps_records_and_close_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let options = on_disk(dir.path().join("db"), Durability::None);
        {
            let store = Store::open(&options).unwrap();
            store
                .apply(vec![Write::put(Address::Queue("q".into()), &42u32)])
                .await
                .unwrap();
            store.close().await.unwrap();
            assert!(matches!(store.apply(vec![]).await, Err(Error::ShutDown)));
        }
        let store = Store::open(&options).unwrap();
        assert_eq!(
            store.get::<u32>(Address::Queue("q".into())).unwrap(),
            Some(42)
        );
    }
}

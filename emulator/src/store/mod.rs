//! The only code that touches sled: key layout, record encoding, and the single writer
//! that applies batches with group commit. See `emulator/ARCHITECTURE.md` for the layout
//! and what "durable" means.

mod applier;
mod codec;
mod keys;
mod overlay;
mod snapshot;
mod stats;
mod trees;
mod wal;
mod writer;

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use keys::{Key, KeyBytes};
pub use stats::{BATCH_BUCKETS, Buckets, COMMIT_BUCKETS_US, WriterStats};

use trees::Trees;
pub use writer::Durable;
use writer::Writer;

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
            overlay: Arc::default(),
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

    /// True when `key` lives in the `messages` tree.
    fn messages(key: &Key) -> bool {
        !key.is_entity()
    }

    /// Reads one record.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn get<T: DeserializeOwned>(&self, key: impl Into<Key>) -> Result<Option<T>> {
        let key = key.into();
        self.trees
            .get(Self::messages(&key), &key.to_bytes())?
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
        match self.trees.get(Self::messages(&key), &key.to_bytes())? {
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
        let first = self
            .trees
            .range(Self::messages(&from), &from.to_bytes(), Bound::Unbounded)
            .next();
        match first {
            Some(item) => {
                let (key, _) = item?;
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
        let last = self
            .trees
            .last_key(Self::messages(&from), &from.to_bytes(), &to.to_bytes())?;
        Ok(last.map(|key| key.to_vec()))
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
        let records = self
            .trees
            .scan_prefix(Self::messages(&prefix), &prefix.to_prefix_bytes());
        walk(&prefix, records, &mut visit)
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
        let to_bytes = to.to_bytes();
        self.trees
            .range(
                Self::messages(&from),
                &from.to_bytes(),
                Bound::Included(&to_bytes),
            )
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
        let records = self
            .trees
            .scan_prefix(Self::messages(&prefix), &prefix.to_prefix_bytes());
        for item in records {
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
        self.writer.submit(writes)?.wait().await
    }

    /// Queues the writes now, after every earlier call and before every later one (all or
    /// none of them survive a crash); [`Durable::wait`] says when they are durable. What
    /// a caller lets happen between the two is ordered after these writes in the log.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after `close`.
    pub fn submit(&self, writes: Vec<Write>) -> Result<Durable> {
        self.writer.submit(writes)
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

    /// Keeps the writer from starting another cycle while the guard lives (tests only).
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> writer::Hold {
        self.writer.hold()
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
/// checkpoint, some of which sled may not have made durable): first the log a checkpoint
/// in progress left, then the current one. Then checkpoints. True beside the log when
/// there were records to replay.
fn recover(trees: &Trees, path: &std::path::Path) -> Result<(wal::Wal, bool)> {
    let old = wal::old_path(path);
    let earlier = wal::read_records(&old).map_err(sled::Error::Io)?;
    let (mut wal, records) = wal::Wal::open(path).map_err(sled::Error::Io)?;
    let replayed = earlier.len() + records.len();
    if replayed > 0 {
        tracing::info!(records = replayed, "replaying the write-ahead log");
        for ops in earlier.iter().chain(&records) {
            trees.apply(ops)?;
        }
        trees.checkpoint(&mut wal)?;
    }
    if old.exists() {
        wal::remove(&old).map_err(sled::Error::Io)?;
    }
    Ok((wal, replayed > 0))
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
    records: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
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
mod tests;

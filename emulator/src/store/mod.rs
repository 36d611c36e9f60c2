//! The only code that touches sled: key layout, record encoding, atomic batches and group
//! commit. See `emulator/ARCHITECTURE.md` for the layout and what "durable" means.

mod codec;
mod commit;
mod keys;

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use keys::EntityKey;

use commit::GroupCommit;

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
    /// The background flush failed, so durability cannot be promised.
    #[error("flush to disk failed")]
    Flush(#[source] std::sync::Arc<sled::Error>),
    /// The flush task is gone (the store is shutting down).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// After an fsync that started after the write (group commit).
    Full,
    /// At once; a crash may lose recent writes.
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

/// One write of an atomic batch.
#[derive(Debug)]
pub enum Write {
    /// Insert or replace a record.
    Put(EntityKey, Vec<u8>),
    /// Remove one record.
    Delete(EntityKey),
    /// Remove every record under a key prefix.
    DeletePrefix(EntityKey),
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    entities: sled::Tree,
    commit: GroupCommit,
    durability: Durability,
}

impl Store {
    /// Opens (or creates) the store and starts its flush task on the current runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] when sled cannot open the folder.
    pub fn open(options: &Options) -> Result<Self> {
        let config = sled::Config::new().cache_capacity(options.cache_bytes);
        let config = match &options.location {
            Location::Directory(dir) => config.path(dir),
            Location::InMemory => config.temporary(true),
        };
        let db = config.open()?;
        let entities = db.open_tree("entities")?;
        let commit = GroupCommit::start(db.clone());
        Ok(Store {
            db,
            entities,
            commit,
            durability: options.durability,
        })
    }

    /// Encodes a record for [`Write::Put`].
    pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        codec::encode(value)
    }

    /// Reads one record.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn get<T: DeserializeOwned>(&self, key: &EntityKey) -> Result<Option<T>> {
        self.entities
            .get(key.to_bytes())?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// Reads every record strictly below `prefix` (its children and their children), in key
    /// order.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] or [`Error::Decode`].
    pub fn scan<T: DeserializeOwned>(&self, prefix: &EntityKey) -> Result<Vec<T>> {
        let prefix_bytes = prefix.to_prefix_bytes();
        let mut out = Vec::new();
        for item in self.entities.scan_prefix(&prefix_bytes) {
            let (_, bytes) = item?;
            out.push(decode(prefix, &bytes)?);
        }
        Ok(out)
    }

    /// Counts records below `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::Sled`].
    pub fn count(&self, prefix: &EntityKey) -> Result<u64> {
        let mut n = 0;
        for item in self.entities.scan_prefix(prefix.to_prefix_bytes()) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies the writes atomically, then waits until they are durable (unless
    /// durability is `None`).
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] for the write, [`Error::Flush`] or [`Error::ShutDown`] for the wait.
    pub async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
                Write::Put(key, bytes) => batch.insert(key.to_bytes(), bytes),
                Write::Delete(key) => batch.remove(key.to_bytes()),
                Write::DeletePrefix(prefix) => {
                    for item in self.entities.scan_prefix(prefix.to_prefix_bytes()) {
                        let (k, _) = item?;
                        batch.remove(k);
                    }
                }
            }
        }
        self.entities.apply_batch(batch)?;
        match self.durability {
            Durability::Full => self.commit.durable().await,
            Durability::None => Ok(()),
        }
    }

    /// Flushes everything written so far (used on shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Flush`] or [`Error::ShutDown`].
    pub async fn flush(&self) -> Result<()> {
        self.commit.durable().await
    }

    /// Flushes, stops the flush task and waits for it, so that once every handle is dropped
    /// the folder can be opened again at once. Later writes fail with [`Error::ShutDown`].
    pub async fn close(&self) {
        self.commit.close().await;
    }

    /// Bytes sled reports on disk (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn decode<T: DeserializeOwned>(key: &EntityKey, bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|source| Error::Decode {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = EntityKey::Topic("t".into());
        let s1 = EntityKey::Subscription("t".into(), "a".into());
        let s2 = EntityKey::Subscription("t".into(), "b".into());
        let other = EntityKey::Subscription("t2".into(), "a".into());
        let r = EntityKey::Rule("t".into(), "a".into(), "$default".into());
        store
            .apply(vec![
                Write::Put(t.clone(), Store::encode(&"topic")),
                Write::Put(s1, Store::encode(&"s1")),
                Write::Put(s2, Store::encode(&"s2")),
                Write::Put(other, Store::encode(&"other")),
                Write::Put(r, Store::encode(&"rule")),
            ])
            .await
            .unwrap();
        assert_eq!(store.get::<String>(&t).unwrap().as_deref(), Some("topic"));
        let subs: Vec<String> = store
            .scan(&EntityKey::Subscription("t".into(), String::new()))
            .unwrap();
        assert_eq!(subs, ["s1", "s2"]);
        assert_eq!(
            store
                .count(&EntityKey::Subscription("t".into(), String::new()))
                .unwrap(),
            2
        );
        store
            .apply(vec![
                Write::Delete(t.clone()),
                Write::DeletePrefix(EntityKey::Subscription("t".into(), String::new())),
                Write::DeletePrefix(EntityKey::Rule("t".into(), String::new(), String::new())),
            ])
            .await
            .unwrap();
        assert!(store.get::<String>(&t).unwrap().is_none());
        assert_eq!(
            store
                .count(&EntityKey::Subscription("t".into(), String::new()))
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .count(&EntityKey::Subscription("t2".into(), String::new()))
                .unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn reopen_keeps_records() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            location: Location::Directory(dir.path().join("db")),
            cache_bytes: 1 << 20,
            durability: Durability::Full,
        };
        {
            let store = Store::open(&options).unwrap();
            store
                .apply(vec![Write::Put(
                    EntityKey::Queue("q".into()),
                    Store::encode(&42u32),
                )])
                .await
                .unwrap();
            store.close().await;
        }
        let store = Store::open(&options).unwrap();
        assert_eq!(
            store.get::<u32>(&EntityKey::Queue("q".into())).unwrap(),
            Some(42)
        );
    }
}

//! The behaviour: entities, rules and messages. It knows nothing of HTTP; the store is its
//! only way to disk.

mod duplicates;
mod handoff;
#[cfg(test)]
mod handoff_tests;
mod management;
mod receive;
mod recover;
mod runtime;
mod send;
mod sweep;
mod traffic;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use servicebus_wire::EntityStatus;

use crate::clock::Clock;
use crate::filter;
use crate::model::Address;
use crate::model::limits::Quotas;
use crate::model::{EntityRecord, RuleRecord};
use crate::store::{self, Store};
use crate::sync::lock;

pub use management::{DEFAULT_RULE_NAME, EntityView, Page, PutOutcome};
pub use receive::{PeekState, ReceiveTarget, Received};
pub use runtime::{ReceiveMode, Settle};
pub use send::Outgoing;
pub use traffic::EntityTraffic;

/// Receivable deliveries each queue, subscription and dead-letter subqueue keeps in
/// memory by default (see [`Options::window`]).
pub const DEFAULT_WINDOW: usize = runtime::DEFAULT_WINDOW;

/// What the broker refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named entity does not exist.
    #[error("{kind} '{path}' does not exist")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its path.
        path: String,
    },
    /// Creation of something that exists (or whose name differs only in case).
    #[error("{kind} '{path}' already exists")]
    Conflict {
        /// What exists.
        kind: &'static str,
        /// Its path.
        path: String,
    },
    /// A name that breaks the service's naming rules.
    #[error(transparent)]
    Name(servicebus_wire::WireError),
    /// A rule whose filter or action does not compile.
    #[error(transparent)]
    Rule(#[from] crate::filter::FilterError),
    /// A description of another kind than its path names (`found` is the element sent, or
    /// the kind that exists).
    #[error("'{path}' is a {expected} path, but the request is about a {found}")]
    WrongKind {
        /// The path.
        path: String,
        /// What the path names.
        expected: &'static str,
        /// What the request or the existing entity is.
        found: &'static str,
    },
    /// An update that changes a setting fixed at creation.
    #[error("{setting} cannot be changed after the entity is created")]
    CreationOnly {
        /// The setting, by its element name.
        setting: &'static str,
    },
    /// A message property, or all of them together, over the service's limits.
    #[error("the message's {what} is {size} bytes; at most {limit} are allowed")]
    PropertiesTooLarge {
        /// Which: `property 'name'` or `properties`.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The clock is the system clock: it cannot be moved.
    #[error("the clock is the system clock; start the emulator with --clock manual to move it")]
    ClockNotManual,
    /// A clock move backwards, or past `Clock::LATEST` (the clock stays).
    #[error("the clock moves only forward and not past {latest}; it stays at {now}")]
    ClockOutOfRange {
        /// The latest time the clock may show.
        latest: chrono::DateTime<chrono::Utc>,
        /// Where it stays.
        now: chrono::DateTime<chrono::Utc>,
    },
    /// A record the broker's index points at is missing from the store (a fault, not a
    /// request's mistake).
    #[error("stored message {owner}/{seq} is missing")]
    Missing {
        /// Its queue or topic.
        owner: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// No held lock matches (expired, already settled, or the wrong message).
    #[error(
        "the lock {token} was not found: it expired, was already used, or names another message"
    )]
    LockLost {
        /// The token as given.
        token: String,
    },
    /// The entity's status forbids the operation.
    #[error("the entity '{path}' is disabled for {operation}")]
    Disabled {
        /// The entity.
        path: String,
        /// `send` or `receive`.
        operation: &'static str,
    },
    /// A quota of the namespace or topic is reached (`403`).
    #[error("{what}: the quota is {limit}")]
    QuotaExceeded {
        /// What would go past the quota.
        what: String,
        /// The quota.
        limit: usize,
        /// The service's sub-code (40501 SQL filters, 40502 correlation filters, 40503
        /// subscriptions, 40300 otherwise).
        sub_code: u32,
    },
    /// A message over the entity's size limit.
    #[error("the message is {size} bytes, over the entity's limit of {limit} bytes")]
    TooLarge {
        /// The message's size (body and properties).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A front-end could not write a taken message out (the take is undone).
    #[error("the message could not be written out: {reason}")]
    Render {
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error("storage failed")]
    Store(#[from] store::Error),
}

/// Broker result.
pub type Result<T> = std::result::Result<T, Error>;

/// How the broker runs: its memory window and the quotas it enforces.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Receivable deliveries each queue, subscription and dead-letter subqueue keeps in
    /// memory (see [`Broker::open_with_window`]).
    pub window: usize,
    /// Entity quotas.
    pub quotas: Quotas,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: runtime::DEFAULT_WINDOW,
            quotas: Quotas::STANDARD,
        }
    }
}

/// The broker (cheap to clone).
#[derive(Debug, Clone)]
pub struct Broker {
    store: Store,
    clock: Clock,
    quotas: Quotas,
    /// Serialises management writes so check-then-write (exists? conflict?) is atomic.
    /// The message path does not take this lock.
    management: Arc<tokio::sync::Mutex<()>>,
    runtime: Arc<runtime::Runtime>,
    sweeper: Arc<Sweeper>,
}

/// The background task that applies time (lock expiry, scheduled messages, TTL).
#[derive(Debug, Default)]
struct Sweeper {
    stop: Mutex<Option<watch::Sender<bool>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// How often the sweeper applies time when nothing wakes it earlier.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

impl Broker {
    /// A broker over an opened store: rebuilds the runtime index from it and starts the
    /// sweeper on the current runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be read.
    pub async fn open(store: Store, clock: Clock) -> Result<Self> {
        Self::open_with(store, clock, Options::default()).await
    }

    /// As [`Broker::open`], keeping up to `window` receivable deliveries of each queue,
    /// subscription and dead-letter subqueue in memory (1,024 by default); the rest stay
    /// on disk, as sequence-number ranges in memory, and are read in as receivers reach
    /// them. Small windows exercise that path in tests.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be read.
    pub async fn open_with_window(store: Store, clock: Clock, window: usize) -> Result<Self> {
        let options = Options {
            window,
            ..Options::default()
        };
        Self::open_with(store, clock, options).await
    }

    /// As [`Broker::open`], with the given [`Options`].
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be read.
    pub async fn open_with(store: Store, clock: Clock, options: Options) -> Result<Self> {
        let broker = Broker {
            store,
            clock,
            quotas: options.quotas,
            management: Arc::default(),
            runtime: Arc::new(runtime::Runtime::new(options.window)),
            sweeper: Arc::default(),
        };
        let by_id = broker.load_entities().await?;
        if !broker.restore(&by_id).await? {
            broker.recover(&by_id).await?;
        }
        broker.load_history(&by_id).await?;
        broker.start_sweeper();
        Ok(broker)
    }

    /// The live entity at `key`, if it exists.
    pub(super) fn entity(&self, key: &Address) -> Option<Arc<runtime::Entity>> {
        self.runtime.get(key)
    }

    fn register(&self, key: &Address, record: &EntityRecord) -> Arc<runtime::Entity> {
        let path = match key {
            Address::Subscription(topic, _) => {
                Address::Subscription(topic.clone(), record.name.clone()).display_path()
            }
            _ => record.name.clone(),
        };
        // Start-up and updates count as use: a restart does not delete what was idle while down.
        self.runtime.register(
            key,
            record.id,
            record.description.kind,
            path,
            record.description.clone(),
            self.clock.now(),
        )
    }

    /// Recompiles a subscription's rules from the store and installs them on its topic.
    fn refresh_rules(&self, topic: &str, subscription: &str) -> Result<()> {
        let (Some(t), Some(s)) = (
            self.entity(&Address::Topic(topic.to_string())),
            self.entity(&Address::Subscription(
                topic.to_string(),
                subscription.to_string(),
            )),
        ) else {
            return Ok(());
        };
        let mut compiled = Vec::new();
        for rule in self.store.scan::<RuleRecord>(Address::Rule(
            topic.to_string(),
            subscription.to_string(),
            String::new(),
        ))? {
            match filter::compile(&rule.rule) {
                Ok(c) => compiled.push((rule.name, c)),
                // Rules are compiled before they are stored; one that no longer compiles
                // (a stricter version) matches nothing rather than stopping the broker.
                Err(e) => {
                    tracing::warn!(topic, subscription, rule = %rule.name, error = %e, "stored rule does not compile; it is skipped")
                }
            }
        }
        self.runtime.set_rules(&t, s, compiled);
        Ok(())
    }

    fn start_sweeper(&self) {
        let (stop, mut stopping) = watch::channel(false);
        let broker = self.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopping.changed() => break,
                    () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                    () = broker.runtime.sweep.notified() => {}
                }
                if let Err(e) = broker.sweep().await {
                    tracing::error!(error = %e, "sweep failed");
                }
            }
        });
        *lock(&self.sweeper.stop) = Some(stop);
        *lock(&self.sweeper.task) = Some(task);
    }

    /// The broker's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Where the store's writer thread spent its time so far (see [`store::WriterStats`]).
    pub fn writer_stats(&self) -> store::WriterStats {
        self.store.writer_stats()
    }

    /// Flushes the store.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Stops the sweeper, then flushes and closes the store (shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the last flush fails.
    pub async fn close(&self) -> Result<()> {
        let stop = lock(&self.sweeper.stop).take();
        if let Some(stop) = stop {
            let _ = stop.send(true);
        }
        let task = lock(&self.sweeper.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Keep the index for a quick next start when nothing is moving: no management
        // change (its lock), no send between its write and its filing (waited out, within
        // reason), and, checked by the store, no write submitted after the index was taken.
        let _management = self.management.lock().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.runtime.sends_in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        if self.runtime.sends_in_flight() > 0 {
            return Ok(self.store.close().await?);
        }
        let mark = self.store.submitted();
        let index = self.runtime.snapshot();
        Ok(self.store.close_with_snapshot(mark, &index).await?)
    }
}

/// Refuses `operation` (`send` or `receive`) when the entity's status forbids it.
pub(super) fn allowed(
    entity: &runtime::Entity,
    description: &servicebus_wire::EntityDescription,
    operation: &'static str,
) -> Result<()> {
    let forbidden = match operation {
        "send" => matches!(
            description.status,
            EntityStatus::Disabled | EntityStatus::SendDisabled
        ),
        _ => matches!(
            description.status,
            EntityStatus::Disabled | EntityStatus::ReceiveDisabled
        ),
    };
    if forbidden {
        return Err(Error::Disabled {
            path: entity.path.clone(),
            operation,
        });
    }
    Ok(())
}

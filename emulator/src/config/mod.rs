//! Command line and environment (clap), and the official emulator's `Config.json`
//! (`file.rs`).

mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use file::{ConfigFile, DeclaredSubscription, DeclaredTopic};

use crate::auth::{Rights, SharedAccessKey};
use crate::model::limits::Quotas;
use crate::store::{Durability, Location};

/// The official emulator's namespace name, used by default.
pub const DEFAULT_NAMESPACE: &str = "sbemulatorns";
/// The official emulator's well-known key name.
pub const DEFAULT_KEY_NAME: &str = "RootManageSharedAccessKey";
/// The official emulator's well-known key.
pub const DEFAULT_KEY: &str = "SAS_KEY_VALUE";

/// What a `GET` of a missing entity answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingEntityGet {
    /// `200` with an empty "publicly listed services" feed, as Azure does.
    EmptyFeed,
    /// `404` with an error body (strict).
    NotFound,
}

/// `--durability`: the command line's spelling of [`Durability`] (the store knows nothing
/// of flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityFlag {
    /// A write is acknowledged after an fsync that started after it (group commit).
    Full,
    /// At once; a crash may lose recent writes.
    None,
}

impl From<DurabilityFlag> for Durability {
    fn from(flag: DurabilityFlag) -> Self {
        match flag {
            DurabilityFlag::Full => Durability::Full,
            DurabilityFlag::None => Durability::None,
        }
    }
}

/// Where broker time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    /// The system clock.
    System,
    /// Starts at the system time and moves only through `POST /$emulator/clock/advance`.
    Manual,
}

/// An Azure Service Bus REST emulator: ATOM management and HTTP messaging, with SAS auth,
/// persisted on sled.
#[derive(Debug, Parser)]
#[command(name = "emulator", version, about, long_about = None)]
pub struct Cli {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "EMULATOR_BIND", default_value = "127.0.0.1:5300")]
    pub bind: SocketAddr,
    /// Address to listen on for AMQP 1.0, what the current Service Bus SDKs speak (port 0
    /// for any free port).
    #[arg(long, env = "EMULATOR_AMQP_BIND", default_value = "127.0.0.1:5672")]
    pub amqp_bind: SocketAddr,
    /// Address to listen on for AMQP 1.0 over TLS, with --tls only (port 0 for any free
    /// port). The SDKs use TLS when the connection string lacks UseDevelopmentEmulator=true.
    #[arg(long, env = "EMULATOR_AMQPS_BIND", default_value = "127.0.0.1:5671")]
    pub amqps_bind: SocketAddr,
    /// Folder of the sled store, created if missing.
    #[arg(
        long,
        env = "EMULATOR_DATA_DIR",
        default_value = "servicebus-emulator-data"
    )]
    pub data_dir: PathBuf,
    /// Keep everything in memory (a sled temporary store, removed on exit); overrides --data-dir.
    #[arg(long, env = "EMULATOR_IN_MEMORY")]
    pub in_memory: bool,
    /// Name of the primary shared access key (all rights).
    #[arg(long, env = "EMULATOR_KEY_NAME", default_value = DEFAULT_KEY_NAME)]
    pub key_name: String,
    /// Value of the primary shared access key, used as the literal string.
    #[arg(long, env = "EMULATOR_KEY", default_value = DEFAULT_KEY)]
    pub key: String,
    /// Extra key as NAME:RIGHTS:KEY, RIGHTS from Manage, Send, Listen joined by ',' or '+'
    /// (repeat the flag, or separate with ';' in the environment variable).
    #[arg(
        long = "extra-key",
        env = "EMULATOR_EXTRA_KEYS",
        value_delimiter = ';',
        value_name = "NAME:RIGHTS:KEY"
    )]
    pub extra_keys: Vec<SharedAccessKey>,
    /// A Config.json in the official emulator's shape whose entities are created (or updated) at start-up.
    #[arg(long, env = "EMULATOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Namespace name shown in entries, errors and $namespaceinfo.
    #[arg(long, env = "EMULATOR_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// sled page cache in MiB (bounds cached pages, not the whole RSS).
    #[arg(long, env = "EMULATOR_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// When writes are acknowledged: full (after fsync, group commit) or none.
    #[arg(long, env = "EMULATOR_DURABILITY", value_enum, default_value = "full")]
    pub durability: DurabilityFlag,
    /// Ready messages each queue, subscription and dead-letter subqueue keeps in memory; the
    /// rest wait on disk (only their sequence numbers in memory) until receivers reach them.
    #[arg(long, env = "EMULATOR_INDEX_WINDOW", default_value_t = DEFAULT_INDEX_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub index_window: u64,
    /// What GET of a missing entity answers: empty-feed (as Azure) or not-found (404).
    #[arg(
        long,
        env = "EMULATOR_MISSING_ENTITY_GET",
        value_enum,
        default_value = "empty-feed"
    )]
    pub missing_entity_get: MissingEntityGet,
    /// Broker time: system, or manual (moved only by POST /$emulator/clock/advance?seconds=N, for tests).
    #[arg(long, env = "EMULATOR_CLOCK", value_enum, default_value = "system")]
    pub clock: ClockMode,
    /// Most connections served at once; past it a connection is answered 503 ServerBusy.
    #[arg(long, env = "EMULATOR_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Seconds a client may take to send a request's headers or body, and a keep-alive
    /// connection may stay idle, before it is closed.
    #[arg(long, env = "EMULATOR_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// Serve HTTPS too, on the same port as HTTP (a connection that opens with a TLS
    /// handshake gets TLS), with a local CA and certificate generated into --tls-dir on the
    /// first start and reused after. Needed by the SDKs' administration clients.
    #[arg(long, env = "EMULATOR_TLS")]
    pub tls: bool,
    /// Folder of the generated CA and certificate (ca.pem, cert.pem, key.pem); implies
    /// --tls. Default: DATA_DIR/tls, or servicebus-emulator-tls in the system temporary
    /// folder with --in-memory.
    #[arg(long, env = "EMULATOR_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Serve this certificate chain (PEM, leaf first) instead of a generated one; implies
    /// --tls and needs --tls-key.
    #[arg(
        long,
        env = "EMULATOR_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "EMULATOR_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// A fault plan (JSON: seed and rules) to inject from the start; the control API
    /// (PUT /$emulator/faults) can replace it. See the README's "Testing your retry logic".
    #[arg(long, env = "EMULATOR_FAULTS", value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Also accept Microsoft Entra ID bearer tokens (JWT, HS256) signed with this secret:
    /// `aud` `https://servicebus.azure.net`, an `exp` to come, and `roles` among Azure Service
    /// Bus Data Owner / Sender / Receiver (Manage / Send / Listen). Off by default.
    #[arg(
        long,
        env = "EMULATOR_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Most queues and topics together (the Standard tier's quota).
    #[arg(long, env = "EMULATOR_MAX_ENTITIES", default_value_t = Quotas::STANDARD.entities)]
    pub max_entities: usize,
    /// Most subscriptions of one topic (the Standard tier's quota).
    #[arg(long, env = "EMULATOR_MAX_SUBSCRIPTIONS_PER_TOPIC",
          default_value_t = Quotas::STANDARD.subscriptions_per_topic)]
    pub max_subscriptions_per_topic: usize,
    /// Most SQL filters across one topic's subscriptions (the Standard tier's quota).
    #[arg(long, env = "EMULATOR_MAX_SQL_FILTERS_PER_TOPIC",
          default_value_t = Quotas::STANDARD.sql_filters_per_topic)]
    pub max_sql_filters_per_topic: usize,
    /// Most correlation filters across one topic's subscriptions (the Standard tier's quota).
    #[arg(long, env = "EMULATOR_MAX_CORRELATION_FILTERS_PER_TOPIC",
          default_value_t = Quotas::STANDARD.correlation_filters_per_topic)]
    pub max_correlation_filters_per_topic: usize,
}

/// Default of [`Cli::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
/// Default of [`Cli::idle_timeout`], in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;

/// Default of [`Cli::index_window`] (the broker's own default window).
pub const DEFAULT_INDEX_WINDOW: u64 = crate::broker::DEFAULT_WINDOW as u64;

/// Everything the emulator needs to start, independent of how it was given.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace name.
    pub namespace: String,
    /// Shared access keys; the first is the primary one.
    pub keys: Vec<SharedAccessKey>,
    /// Where the store lives.
    pub location: Location,
    /// sled cache in bytes.
    pub cache_bytes: u64,
    /// Write acknowledgement policy.
    pub durability: Durability,
    /// Ready deliveries each subqueue keeps in memory (see [`Cli::index_window`]).
    pub index_window: usize,
    /// Missing-entity GET behaviour.
    pub missing_entity_get: MissingEntityGet,
    /// Entities declared by a Config.json.
    pub entities: Option<ConfigFile>,
    /// Where broker time comes from.
    pub clock: ClockMode,
    /// Most connections served at once (see [`Cli::max_connections`]).
    pub max_connections: usize,
    /// Header, body and keep-alive idle timeout (see [`Cli::idle_timeout`]).
    pub idle_timeout: Duration,
    /// Entity quotas.
    pub quotas: Quotas,
    /// HTTPS beside HTTP on the REST port, with this certificate; `None`: HTTP only.
    pub tls: Option<crate::tls::TlsSource>,
    /// Faults to inject from the start (see [`crate::faults`]); `None`: none until the
    /// control API sets a plan.
    pub faults: Option<crate::faults::FaultPlan>,
    /// The secret Entra ID bearer tokens are checked with (see [`crate::auth::jwt`]);
    /// `None`: bearer tokens are refused.
    pub jwt_secret: Option<String>,
}

impl Settings {
    /// Defaults for an in-memory emulator with the well-known key (tests, embedding).
    pub fn in_memory() -> Self {
        Settings {
            namespace: DEFAULT_NAMESPACE.to_string(),
            keys: vec![SharedAccessKey {
                name: DEFAULT_KEY_NAME.into(),
                key: DEFAULT_KEY.into(),
                rights: Rights::ALL,
            }],
            location: Location::InMemory,
            cache_bytes: 64 << 20,
            durability: Durability::Full,
            index_window: DEFAULT_INDEX_WINDOW as usize,
            missing_entity_get: MissingEntityGet::EmptyFeed,
            entities: None,
            clock: ClockMode::System,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            quotas: Quotas::STANDARD,
            tls: None,
            faults: None,
            jwt_secret: None,
        }
    }
}

impl Cli {
    /// Turns flags into settings, reading the Config.json if one is named.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and what is wrong with it.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let mut keys = vec![SharedAccessKey {
            name: self.key_name,
            key: self.key,
            rights: Rights::ALL,
        }];
        keys.extend(self.extra_keys);
        let entities = self.config.as_deref().map(ConfigFile::load).transpose()?;
        let faults = self.faults.as_deref().map(load_faults).transpose()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsSource::Files { cert, key }),
            _ if self.tls || self.tls_dir.is_some() => Some(crate::tls::TlsSource::Generated {
                dir: self.tls_dir.unwrap_or_else(|| {
                    if self.in_memory {
                        std::env::temp_dir().join("servicebus-emulator-tls")
                    } else {
                        self.data_dir.join("tls")
                    }
                }),
            }),
            _ => None,
        };
        Ok(Settings {
            namespace: self.namespace,
            keys,
            location: if self.in_memory {
                Location::InMemory
            } else {
                Location::Directory(self.data_dir)
            },
            cache_bytes: self.cache_mb.saturating_mul(1 << 20),
            durability: self.durability.into(),
            index_window: usize::try_from(self.index_window).unwrap_or(usize::MAX),
            missing_entity_get: self.missing_entity_get,
            entities,
            clock: self.clock,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            quotas: Quotas {
                entities: self.max_entities,
                subscriptions_per_topic: self.max_subscriptions_per_topic,
                sql_filters_per_topic: self.max_sql_filters_per_topic,
                correlation_filters_per_topic: self.max_correlation_filters_per_topic,
            },
            tls,
            faults,
            jwt_secret: self.jwt_secret,
        })
    }
}

/// Reads and checks a fault plan file.
fn load_faults(path: &std::path::Path) -> Result<crate::faults::FaultPlan, ConfigError> {
    let bad = |reason: String| ConfigError::Faults {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    crate::faults::FaultPlan::parse(&bytes).map_err(bad)
}

/// A Config.json that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fault plan file cannot be read or is not a valid plan.
    #[error("fault file {path}: {reason}")]
    Faults {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is not JSON of the expected shape.
    #[error("config file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location.
        reason: String,
    },
}

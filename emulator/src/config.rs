//! Command line and environment (clap), and the official emulator's `Config.json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use serde_json::Value;
use servicebus_wire::rule::{CorrelationFilter, DEFAULT_COMPATIBILITY_LEVEL, KeyValues};
use servicebus_wire::{
    EntityDescription, EntityKind, Filter, RuleAction, RuleDescription, TypedValue,
};

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

/// A queue or topic with its properties, as written in Config.json.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntity {
    name: String,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    #[serde(default)]
    subscriptions: Vec<RawEntity>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRule {
    name: String,
    properties: BTreeMap<String, Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNamespace {
    name: String,
    #[serde(default)]
    queues: Vec<RawEntity>,
    #[serde(default)]
    topics: Vec<RawEntity>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUserConfig {
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    logging: Option<Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    user_config: RawUserConfig,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// A declared subscription: settings and rules (none: the `$Default` rule).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSubscription {
    /// Name.
    pub name: String,
    /// Settings.
    pub description: EntityDescription,
    /// Rules by name.
    pub rules: Vec<(String, RuleDescription)>,
}

/// A declared topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTopic {
    /// Name.
    pub name: String,
    /// Settings.
    pub description: EntityDescription,
    /// Its subscriptions.
    pub subscriptions: Vec<DeclaredSubscription>,
}

/// The entities of a Config.json, validated, plus what was ignored in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    /// Queues by name.
    pub queues: Vec<(String, EntityDescription)>,
    /// Topics.
    pub topics: Vec<DeclaredTopic>,
    /// Fields that were tolerated but not used, by location (reported at start-up).
    pub ignored: Vec<String>,
}

impl ConfigFile {
    /// Reads and validates a Config.json file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and the first problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses Config.json text. Absent properties take Azure Service Bus defaults.
    ///
    /// # Errors
    ///
    /// A message saying where and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
        let mut ignored = Vec::new();
        note_extra(&mut ignored, "", &raw.extra);
        note_extra(&mut ignored, "UserConfig", &raw.user_config.extra);
        if raw.user_config.logging.is_some() {
            ignored.push("UserConfig.Logging (logs go through RUST_LOG)".into());
        }
        let [namespace] = raw.user_config.namespaces.as_slice() else {
            return Err(format!(
                "UserConfig.Namespaces must hold exactly one namespace, found {}",
                raw.user_config.namespaces.len()
            ));
        };
        let ns_at = format!("namespace '{}'", namespace.name);
        note_extra(&mut ignored, &ns_at, &namespace.extra);
        let mut queues = Vec::new();
        for q in &namespace.queues {
            let at = format!("{ns_at}, queue '{}'", q.name);
            note_extra(&mut ignored, &at, &q.extra);
            queues.push((
                q.name.clone(),
                description(EntityKind::Queue, &q.properties, &at, &mut ignored)?,
            ));
        }
        let mut topics = Vec::new();
        for t in &namespace.topics {
            let at = format!("{ns_at}, topic '{}'", t.name);
            note_extra(&mut ignored, &at, &t.extra);
            let mut subscriptions = Vec::new();
            for s in &t.subscriptions {
                let sat = format!("{at}, subscription '{}'", s.name);
                note_extra(&mut ignored, &sat, &s.extra);
                let mut rules = Vec::new();
                for r in &s.rules {
                    let rat = format!("{sat}, rule '{}'", r.name);
                    note_extra(&mut ignored, &rat, &r.extra);
                    rules.push((r.name.clone(), rule(&r.properties, &rat, &mut ignored)?));
                }
                subscriptions.push(DeclaredSubscription {
                    name: s.name.clone(),
                    description: description(
                        EntityKind::Subscription,
                        &s.properties,
                        &sat,
                        &mut ignored,
                    )?,
                    rules,
                });
            }
            topics.push(DeclaredTopic {
                name: t.name.clone(),
                description: description(EntityKind::Topic, &t.properties, &at, &mut ignored)?,
                subscriptions,
            });
        }
        Ok(ConfigFile {
            queues,
            topics,
            ignored,
        })
    }
}

fn note_extra(ignored: &mut Vec<String>, at: &str, extra: &BTreeMap<String, Value>) {
    for key in extra.keys() {
        ignored.push(if at.is_empty() {
            key.clone()
        } else {
            format!("{at}: {key}")
        });
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn description(
    kind: EntityKind,
    properties: &BTreeMap<String, Value>,
    at: &str,
    ignored: &mut Vec<String>,
) -> Result<EntityDescription, String> {
    let mut d = EntityDescription::defaults(kind);
    for (name, value) in properties {
        let text = value_text(value)
            .ok_or_else(|| format!("{at}: property {name} must be a string, number or boolean"))?;
        // The official file writes "" for unset forwarding targets.
        if text.is_empty() && name.starts_with("Forward") {
            continue;
        }
        if !d
            .apply_setting(name, &text)
            .map_err(|e| format!("{at}: {e}"))?
        {
            ignored.push(format!("{at}: property {name}"));
        }
    }
    d.validate().map_err(|e| format!("{at}: {e}"))?;
    Ok(d)
}

fn typed(v: &Value, at: &str, name: &str) -> Result<TypedValue, String> {
    let xsd = servicebus_wire::xml::XSD_NS.to_string();
    let (type_name, text) = match v {
        Value::String(s) => ("string", s.clone()),
        Value::Bool(b) => ("boolean", b.to_string()),
        Value::Number(n) if n.is_i64() => ("long", n.to_string()),
        Value::Number(n) => ("double", n.to_string()),
        _ => {
            return Err(format!(
                "{at}: property {name} must be a string, number or boolean"
            ));
        }
    };
    Ok(TypedValue {
        type_name: type_name.into(),
        type_ns: xsd,
        text,
    })
}

fn rule(
    properties: &BTreeMap<String, Value>,
    at: &str,
    ignored: &mut Vec<String>,
) -> Result<RuleDescription, String> {
    let get = |name: &str| properties.get(name);
    let sql_of = |v: Option<&Value>, what: &str| -> Result<String, String> {
        v.and_then(|o| o.get("SqlExpression"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{at}: {what}.SqlExpression is missing or empty"))
    };
    let filter = match get("FilterType").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("Sql") => Filter::Sql {
            expression: sql_of(get("SqlFilter"), "SqlFilter")?,
            compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
            parameters: KeyValues::new(),
            requires_preprocessing: None,
        },
        Some(t) if t.eq_ignore_ascii_case("Correlation") => {
            let raw = get("CorrelationFilter")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    format!("{at}: FilterType Correlation needs a CorrelationFilter object")
                })?;
            let mut c = CorrelationFilter::default();
            for (name, value) in raw {
                let text = || {
                    value_text(value)
                        .ok_or_else(|| format!("{at}: CorrelationFilter.{name} must be a string"))
                };
                match name.as_str() {
                    "ContentType" => c.content_type = Some(text()?),
                    "CorrelationId" => c.correlation_id = Some(text()?),
                    "Label" => c.label = Some(text()?),
                    "MessageId" => c.message_id = Some(text()?),
                    "ReplyTo" => c.reply_to = Some(text()?),
                    "ReplyToSessionId" => c.reply_to_session_id = Some(text()?),
                    "SessionId" => c.session_id = Some(text()?),
                    "To" => c.to = Some(text()?),
                    "Properties" => {
                        let props = value.as_object().ok_or_else(|| {
                            format!("{at}: CorrelationFilter.Properties must be an object")
                        })?;
                        for (k, v) in props {
                            c.properties.push((k.clone(), typed(v, at, k)?));
                        }
                    }
                    other => ignored.push(format!("{at}: CorrelationFilter.{other}")),
                }
            }
            Filter::Correlation(c)
        }
        Some(other) => {
            return Err(format!(
                "{at}: FilterType '{other}' is not Sql or Correlation"
            ));
        }
        None => return Err(format!("{at}: FilterType is missing (Sql or Correlation)")),
    };
    let action = match get("Action") {
        None | Some(Value::Null) => RuleAction::Empty,
        Some(a) => RuleAction::Sql {
            expression: sql_of(Some(a), "Action")?,
            compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
            parameters: KeyValues::new(),
        },
    };
    for key in properties.keys() {
        if !["FilterType", "SqlFilter", "CorrelationFilter", "Action"].contains(&key.as_str()) {
            ignored.push(format!("{at}: property {key}"));
        }
    }
    Ok(RuleDescription {
        filter,
        action,
        name: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicebus_wire::TimeSpan;

    #[test]
    fn official_shape_example() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/official-emulator-config/Config.json"
        ))
        .unwrap();
        let config = ConfigFile::parse(&text).unwrap();
        let (name, queue) = &config.queues[0];
        assert_eq!(name, "orders");
        assert!(queue.dead_lettering_on_message_expiration);
        assert_eq!(queue.max_delivery_count, 3);
        assert_eq!(queue.default_message_time_to_live, TimeSpan::from_mins(60));
        let topic = &config.topics[0];
        assert_eq!(topic.name, "chat");
        let sub = &topic.subscriptions[0];
        assert_eq!(sub.rules.len(), 2);
        assert!(
            matches!(&sub.rules[0].1.filter, Filter::Sql { expression, .. } if expression.starts_with("room = '42'"))
        );
        assert!(
            matches!(&sub.rules[0].1.action, RuleAction::Sql { expression, .. } if expression == "SET audited = TRUE")
        );
        let Filter::Correlation(c) = &sub.rules[1].1.filter else {
            panic!()
        };
        assert_eq!(c.to.as_deref(), Some("node-a"));
        assert_eq!(c.properties[0].0, "kind");
        assert_eq!(
            config.ignored,
            ["UserConfig.Logging (logs go through RUST_LOG)"]
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_errors_located() {
        let text = r#"{"UserConfig":{"Namespaces":[{"Name":"n","Queues":[{"Name":"q","Properties":{"Color":"red","MaxDeliveryCount":2},"Extra":1}],"Topics":[]}]},"Version":2}"#;
        let config = ConfigFile::parse(text).unwrap();
        assert_eq!(config.queues[0].1.max_delivery_count, 2);
        assert_eq!(
            config.ignored,
            [
                "Version",
                "namespace 'n', queue 'q': Extra",
                "namespace 'n', queue 'q': property Color"
            ]
        );
        let bad = r#"{"UserConfig":{"Namespaces":[{"Name":"n","Queues":[{"Name":"q","Properties":{"LockDuration":"soon"}}]}]}}"#;
        let e = ConfigFile::parse(bad).unwrap_err();
        assert!(e.contains("queue 'q'") && e.contains("LockDuration"), "{e}");
        assert!(ConfigFile::parse("{").is_err());
        assert!(
            ConfigFile::parse(r#"{"UserConfig":{"Namespaces":[]}}"#)
                .unwrap_err()
                .contains("exactly one")
        );
    }
}

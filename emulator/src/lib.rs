//! An Azure Service Bus emulator: the ATOM management surface (queues, topics,
//! subscriptions, rules), the HTTP messaging runtime (send, peek-lock, settle, receive and
//! delete) and AMQP 1.0 (what the current SDKs speak), over one broker, with SAS auth,
//! persisted on sled, in one small binary that starts at once.
//!
//! Layers, one a folder; data flows down, never up:
//!
//! ```text
//! http (routes, one error mapping) | amqp (connections, links, CBS, $management)
//!      -> auth (SAS + rights) / atom (servicebus-wire)
//!      -> broker (behaviour, no protocol) -> store (the only code that touches sled)
//! config, clock, model: leaves anyone may use
//! ```
//!
//! Embedding (tests do this):
//!
//! ```no_run
//! # async fn run() -> Result<(), emulator::Error> {
//! let emulator = emulator::Emulator::open(emulator::Settings::in_memory()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("{}", emulator::connection_string(listener.local_addr()?, "RootManageSharedAccessKey", "SAS_KEY_VALUE"));
//! emulator.serve(listener, std::future::pending()).await
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod amqp;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod faults;
pub mod filter;
mod http;
pub mod model;
pub mod store;
mod sync;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use servicebus_wire::description::ParsedDescription;

pub use broker::Broker;
pub use clock::Clock;
pub use config::{Cli, Settings};

/// Why the emulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or flushed.
    #[error("store failed")]
    Store(#[from] store::Error),
    /// A declared entity could not be created.
    #[error("cannot create the entities of the config file")]
    Config(#[source] broker::Error),
    /// The broker failed.
    #[error("broker failed")]
    Broker(#[from] broker::Error),
    /// Serving failed.
    #[error("I/O failed")]
    Io(#[from] std::io::Error),
    /// The TLS certificate could not be generated or loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The secret for bearer tokens is unusable.
    #[error("--jwt-secret: {0}")]
    Jwt(#[from] auth::jwt::JwtError),
}

/// Largest request head (request line and headers) accepted; `431` above it. The service
/// caps a message's properties, which travel as headers, at 64 KB (its quotas page); this
/// leaves room for the token and the other headers beside them.
pub const MAX_HEADER_BYTES: usize = 80 * 1024;
/// How long a stop waits for in-flight requests before it drops their connections.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A ready emulator: store open, declared entities created.
#[derive(Debug)]
pub struct Emulator {
    state: Arc<http::AppState>,
    limits: http::ConnectionLimits,
    amqp: Arc<amqp::Context>,
    tls: Option<tls::Tls>,
}

impl Emulator {
    /// Opens the store and creates (or updates) the entities of `settings.entities`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be opened, [`Error::Config`] when a declared
    /// entity is refused, [`Error::Tls`] when the certificate cannot be made or loaded.
    pub async fn open(settings: Settings) -> Result<Self, Error> {
        let clock = match settings.clock {
            config::ClockMode::System => Clock::System,
            config::ClockMode::Manual => Clock::manual(chrono::Utc::now()),
        };
        Self::open_with_clock(settings, clock).await
    }

    /// As [`Emulator::open`], with a given clock (tests use a manual one).
    ///
    /// # Errors
    ///
    /// As [`Emulator::open`].
    pub async fn open_with_clock(settings: Settings, clock: Clock) -> Result<Self, Error> {
        // Before the store: a bad certificate path should not cost a store open.
        let tls = settings.tls.as_ref().map(tls::Tls::load).transpose()?;
        let store = store::Store::open(&store::Options {
            location: settings.location.clone(),
            cache_bytes: settings.cache_bytes,
            durability: settings.durability,
        })?;
        let broker = Broker::open_with(
            store,
            clock.clone(),
            broker::Options {
                window: settings.index_window,
                quotas: settings.quotas,
            },
        )
        .await?;
        if let Some(file) = &settings.entities {
            declare(&broker, file).await.map_err(Error::Config)?;
        }
        // Token expiry is wall-clock time even with a manual broker clock: clients sign
        // tokens with the real time.
        let authenticator = auth::Authenticator::new(settings.keys.clone(), Clock::System)
            .with_jwt(
                settings
                    .jwt_secret
                    .as_deref()
                    .map(auth::jwt::JwtVerifier::new)
                    .transpose()?,
            );
        let live = Arc::new(http::Live::default());
        let amqp = Arc::new(amqp::Context {
            live: live.clone(),
            broker: broker.clone(),
            auth: authenticator.clone(),
            keys: settings.keys.clone(),
            namespace: settings.namespace.clone(),
            max_connections: settings.max_connections,
        });
        let state = http::AppState::new(
            broker,
            authenticator,
            settings.namespace.clone(),
            settings.missing_entity_get,
            settings.idle_timeout,
            Arc::new(faults::Faults::with(settings.faults.clone())),
            live,
        );
        Ok(Emulator {
            state: Arc::new(state),
            limits: http::ConnectionLimits {
                max_connections: settings.max_connections,
                header_read_timeout: settings.idle_timeout,
                max_header_bytes: MAX_HEADER_BYTES,
                shutdown_grace: SHUTDOWN_GRACE,
            },
            amqp,
            tls,
        })
    }

    /// The broker, for embedding and tests.
    pub fn broker(&self) -> &Broker {
        &self.state.broker
    }

    /// The fault injector, for embedding and tests (see [`faults`]).
    pub fn faults(&self) -> Arc<faults::Faults> {
        self.state.faults.clone()
    }

    /// The TLS certificate served beside plain HTTP, when [`Settings::tls`] asked for one.
    pub fn tls(&self) -> Option<&tls::Tls> {
        self.tls.as_ref()
    }

    /// The HTTP surface as a router (for `tower::ServiceExt::oneshot` tests).
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves REST until `shutdown` completes, then answers parked long polls, finishes
    /// in-flight requests (for up to [`SHUTDOWN_GRACE`]) and flushes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when serving fails, [`Error::Broker`] when the final flush fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        self.serve_all(listener, None, shutdown).await
    }

    /// Serves REST on `http` and, when given, AMQP on `amqp`, until `shutdown` completes.
    /// Then AMQP connections are closed with `amqp:connection:forced`, parked long polls
    /// are answered, in-flight requests finish (for up to [`SHUTDOWN_GRACE`]) and the store
    /// is flushed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when serving fails, [`Error::Broker`] when the final flush fails.
    pub async fn serve_all(
        self,
        http: tokio::net::TcpListener,
        amqp: Option<tokio::net::TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let listeners = Listeners {
            http,
            amqp,
            amqps: None,
        };
        self.serve_listeners(listeners, shutdown).await
    }

    /// As [`Emulator::serve_all`], with AMQP over TLS on `listeners.amqps` too when the
    /// emulator has a certificate ([`Settings::tls`]; without one that listener is not
    /// served).
    ///
    /// # Errors
    ///
    /// As [`Emulator::serve_all`].
    pub async fn serve_listeners(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Listeners { http, amqp, amqps } = listeners;
        let broker = self.state.broker.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let amqps = match (amqps, &self.tls) {
            (Some(listener), Some(tls)) => Some((listener, tls.acceptor())),
            (Some(_), None) => {
                tracing::warn!("an AMQPS listener without a certificate (--tls): not served");
                None
            }
            (None, _) => None,
        };
        let amqp_task = amqp.map(|listener| {
            tokio::spawn(amqp::serve(
                listener,
                amqps,
                self.amqp.clone(),
                stop.clone(),
            ))
        });
        let stop_all = stop.clone();
        let served = http::serve(
            http,
            self.router(),
            self.limits,
            self.state.metrics.live.clone(),
            self.tls.as_ref().map(tls::Tls::acceptor),
            self.state.namespace.clone(),
            async move {
                shutdown.await;
                stop_all.cancel();
            },
            move || broker.stop_waiting(),
        )
        .await;
        stop.cancel();
        if let Some(task) = amqp_task {
            let _ = task.await;
        }
        served?;
        self.state.broker.close().await?;
        tracing::info!("stopped; store flushed");
        Ok(())
    }
}

/// Where [`Emulator::serve_listeners`] serves.
#[derive(Debug)]
pub struct Listeners {
    /// REST (and HTTPS beside it with [`Settings::tls`]).
    pub http: tokio::net::TcpListener,
    /// AMQP 1.0 over plain TCP.
    pub amqp: Option<tokio::net::TcpListener>,
    /// AMQP 1.0 over TLS (served beside `amqp`, and only with a certificate).
    pub amqps: Option<tokio::net::TcpListener>,
}

/// The connection string for AMQP over TLS at `addr` (`--tls`): no
/// `UseDevelopmentEmulator`, so the SDKs use TLS. The address as bound (the generated
/// certificate names 127.0.0.1 and ::1 too): `localhost` may resolve to `::1` first, which a
/// listener on 127.0.0.1 refuses, and the PyPI SDK does not try the next address.
pub fn tls_connection_string(addr: SocketAddr, key_name: &str, key: &str) -> String {
    format!("Endpoint=sb://{addr};SharedAccessKeyName={key_name};SharedAccessKey={key};")
}

/// The development connection string for an emulator at `addr`.
pub fn connection_string(addr: SocketAddr, key_name: &str, key: &str) -> String {
    format!(
        "Endpoint=sb://{addr};SharedAccessKeyName={key_name};SharedAccessKey={key};UseDevelopmentEmulator=true;"
    )
}

/// Creates the entities of a Config.json, or brings existing ones to its settings.
async fn declare(broker: &Broker, file: &config::ConfigFile) -> Result<(), broker::Error> {
    let parsed = |d: &servicebus_wire::EntityDescription| ParsedDescription {
        description: d.clone(),
        present: Vec::new(),
        default_rule: None,
    };
    for (name, description) in &file.queues {
        let exists = broker.get_entity(name)?.is_some();
        broker.put_entity(name, parsed(description), exists).await?;
    }
    for topic in &file.topics {
        let exists = broker.get_entity(&topic.name)?.is_some();
        broker
            .put_entity(&topic.name, parsed(&topic.description), exists)
            .await?;
        for sub in &topic.subscriptions {
            let exists = broker.get_subscription(&topic.name, &sub.name)?.is_some();
            let mut p = parsed(&sub.description);
            // Declared rules replace `$Default`: the first becomes the initial rule.
            if let Some((name, rule)) = sub.rules.first() {
                p.default_rule = Some(servicebus_wire::RuleDescription {
                    name: Some(name.clone()),
                    ..rule.clone()
                });
            }
            broker
                .put_subscription(&topic.name, &sub.name, p, exists)
                .await?;
            for (i, (name, rule)) in sub.rules.iter().enumerate() {
                if i == 0 && !exists {
                    continue;
                }
                let rule_exists = broker.get_rule(&topic.name, &sub.name, name)?.is_some();
                broker
                    .put_rule(&topic.name, &sub.name, name, rule.clone(), rule_exists)
                    .await?;
            }
        }
    }
    Ok(())
}

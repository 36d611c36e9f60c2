//! A typed REST client for Azure Service Bus (and the emulator), usable on its own.
//!
//! It signs requests with SAS tokens (cached, refreshed at 80 % of their one-hour life), or
//! sends Microsoft Entra ID bearer tokens from a [`token::TokenProvider`]
//! ([`Client::with_token_provider`]; feature `entra-id` for the `azure_identity`
//! credentials), retries transient failures (connection errors, `408`, `429`, `5xx`) with exponential
//! backoff, jitter and `Retry-After`, never retries client mistakes, and classifies errors
//! ([`Error::is_transient`], [`Error::is_not_found`], [`Error::is_lock_lost`], ...).
//!
//! ```no_run
//! # async fn run() -> Result<(), backplane::servicebus::Error> {
//! use backplane::servicebus::{Client, Message};
//!
//! let client = Client::from_connection_string(
//!     "Endpoint=sb://localhost:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
//! )?;
//! client.create_queue_if_missing("jobs").await?;
//! client.send("jobs", &Message::new("hello")).await?;
//! if let Some(m) = client.peek_lock("jobs", std::time::Duration::from_secs(5)).await? {
//!     client.complete(&m).await?;
//! }
//! # Ok(()) }
//! ```

#[cfg(feature = "entra-id")]
pub mod entra;
mod error;
mod management;
mod retry;
mod runtime;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
pub use servicebus_wire::connection_string::{ConnectionString, ConnectionStringError, Credential};
pub use servicebus_wire::message::{BrokerProperties, PropertyValue};
pub use servicebus_wire::sas;
pub use servicebus_wire::{
    CorrelationFilter, EntityDescription, EntityKind, Filter, RuleAction, RuleDescription, TimeSpan,
};

pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use runtime::{Message, ReceivedMessage};

/// Lifetime of the tokens the client signs.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// `api-version` sent with management requests.
const API_VERSION: &str = "2021-05";
/// Extra time given to an HTTP exchange beyond its long-poll timeout.
const READ_MARGIN: Duration = Duration::from_secs(15);
/// Timeout of requests that do not long-poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A Service Bus client (cheap to clone; clones share connections and the token cache).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `https://ns.servicebus.windows.net` or `http://localhost:5300`, no trailing `/`.
    base: String,
    auth: Auth,
    retry: RetryPolicy,
    /// Until when the namespace said it is busy (`503`/`429` with its wait): every request
    /// of this client and its clones holds back until then, so that a node's publishers
    /// and receivers do not stampede a busy namespace. A std mutex, never held across awaits.
    busy_until: Mutex<Option<Instant>>,
}

/// How requests are signed.
#[derive(Debug)]
enum Auth {
    /// SAS: a key signs tokens, or a given signature is sent as is; beside it, the current
    /// token and when to sign a new one (a std mutex: never held across awaits).
    Sas(Credential, Mutex<Option<(String, Instant)>>),
    /// Entra ID bearer tokens from a provider.
    Bearer(token::BearerCache),
}

/// What one request sends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Call {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout: Option<Duration>,
}

/// What one request got back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Client {
    /// A client from a connection string (`Endpoint=sb://...;SharedAccessKeyName=...;
    /// SharedAccessKey=...[;UseDevelopmentEmulator=true]`).
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionString`] naming the part at fault.
    pub fn from_connection_string(text: &str) -> Result<Self> {
        Ok(Self::new(
            &ConnectionString::parse(text)?,
            RetryPolicy::default(),
        ))
    }

    /// A client for a parsed connection string with a retry policy.
    pub fn new(connection: &ConnectionString, retry: RetryPolicy) -> Self {
        // Building a client with only these settings does not fail.
        let http = Self::http().build().unwrap_or_default();
        Self::with_http(connection, retry, http)
    }

    /// As [`Client::new`], trusting the certificate authorities of `ca_pem` (PEM, one or
    /// more certificates) beside the public roots: for an emulator serving HTTPS with its
    /// own CA (`emulator --tls` writes it as `ca.pem`). The connection string then leaves
    /// out `UseDevelopmentEmulator`, so that the client speaks `https://`.
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] when `ca_pem` holds no readable certificate.
    pub fn with_ca(
        connection: &ConnectionString,
        retry: RetryPolicy,
        ca_pem: &[u8],
    ) -> Result<Self> {
        let unusable = |e: reqwest::Error| Error::Certificate(e.to_string());
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(unusable)?;
        if roots.is_empty() {
            return Err(Error::Certificate("no CERTIFICATE block in the PEM".into()));
        }
        let http = roots
            .into_iter()
            .fold(Self::http(), reqwest::ClientBuilder::add_root_certificate)
            .build()
            .map_err(unusable)?;
        Ok(Self::with_http(connection, retry, http))
    }

    /// The HTTP client's settings.
    fn http() -> reqwest::ClientBuilder {
        reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90))
    }

    fn with_http(connection: &ConnectionString, retry: RetryPolicy, http: reqwest::Client) -> Self {
        Self::build(
            connection.base_url(),
            Auth::Sas(connection.credential.clone(), Mutex::new(None)),
            retry,
            http,
        )
    }

    fn build(base: String, auth: Auth, retry: RetryPolicy, http: reqwest::Client) -> Self {
        Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry,
                busy_until: Mutex::new(None),
            }),
        }
    }

    /// A client for `namespace` that sends Microsoft Entra ID bearer tokens from
    /// `provider` instead of SAS tokens (for namespaces with local authentication disabled).
    /// `namespace` is `my-ns` (meaning `my-ns.servicebus.windows.net`), a host name,
    /// `sb://host/`, or a full `https://` (or, for an emulator, `http://`) URL.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # #[cfg(feature = "entra-id")] {
    /// use backplane::servicebus::{Client, RetryPolicy, entra::EntraCredential};
    /// let credential = EntraCredential::managed_identity(None)?;
    /// let client = Client::with_token_provider("my-ns", credential, RetryPolicy::default())?;
    /// client.create_queue_if_missing("jobs").await?;
    /// # }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Namespace`] for a `namespace` that names no host.
    pub fn with_token_provider(
        namespace: &str,
        provider: Arc<dyn token::TokenProvider>,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let base = namespace_url(namespace)?;
        let http = Self::http().build().unwrap_or_default();
        Ok(Self::build(
            base,
            Auth::Bearer(token::BearerCache::new(provider)),
            retry,
            http,
        ))
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The `Authorization` header; `fresh` re-signs (or asks for a new bearer token).
    async fn authorization(&self, fresh: bool) -> Result<String> {
        match &self.inner.auth {
            Auth::Sas(Credential::Signature(sig), _) => Ok(sig.clone()),
            Auth::Sas(Credential::Key { name, key }, cached) => {
                let mut slot = crate::sync::lock(cached);
                if let Some((token, refresh_at)) = slot.as_ref()
                    && !fresh
                    && Instant::now() < *refresh_at
                {
                    return Ok(token.clone());
                }
                let expiry = chrono::Utc::now().timestamp() + TOKEN_LIFETIME.as_secs() as i64;
                // A namespace-root token covers every entity.
                let token = sas::sign(&format!("{}/", self.inner.base), name, key, expiry);
                *slot = Some((token.clone(), Instant::now() + TOKEN_LIFETIME.mul_f64(0.8)));
                Ok(token)
            }
            Auth::Bearer(cache) => cache.header(fresh).await.map_err(Error::Token),
        }
    }

    /// Whether a `401` is worth one more try with a new token.
    fn can_resign(&self) -> bool {
        !matches!(self.inner.auth, Auth::Sas(Credential::Signature(_), _))
    }

    /// Sends one request, retrying transient failures; a `401` re-signs once. Answers any
    /// non-transient status to the caller, which decides what it means.
    pub(crate) async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        call: Call,
    ) -> Result<Answer> {
        let url = format!("{}{path_and_query}", self.inner.base);
        let mut attempt = 0;
        let mut resigned = false;
        loop {
            self.wait_while_busy().await;
            let mut request = self
                .inner
                .http
                .request(method.clone(), &url)
                .header("authorization", self.authorization(resigned).await?)
                .timeout(call.timeout.map_or(REQUEST_TIMEOUT, |t| t + READ_MARGIN))
                .body(call.body.clone());
            // Bodiless requests still say Content-Length: 0 (contract 2.8).
            if call.body.is_empty() {
                request = request.header("content-length", "0");
            }
            for (k, v) in &call.headers {
                request = request.header(k.as_str(), v.as_str());
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) => Ok(Answer {
                            status,
                            headers,
                            body: body.to_vec(),
                        }),
                        Err(e) => Err(Error::Transport(e)),
                    }
                }
                Err(e) => Err(Error::Transport(e)),
            };
            let retry_after = match &outcome {
                Ok(a) if a.status == StatusCode::UNAUTHORIZED && !resigned && self.can_resign() => {
                    resigned = true;
                    continue;
                }
                Ok(a) if error::is_transient_status(a.status.as_u16()) => Some(
                    a.headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now())),
                ),
                Ok(_) => return outcome,
                Err(e) if e.is_transient() => Some(None),
                Err(_) => return outcome,
            };
            if attempt >= self.inner.retry.max_retries {
                return match outcome {
                    Ok(a) => Err(error::from_status(
                        a.status.as_u16(),
                        &String::from_utf8_lossy(&a.body),
                    )),
                    Err(e) => Err(e),
                };
            }
            let delay = self.inner.retry.delay(attempt, retry_after.flatten());
            if let Ok(a) = &outcome
                && matches!(
                    a.status,
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                )
            {
                self.busy_for(delay);
            }
            tracing::warn!(%method, path = path_and_query, attempt, delay_ms = delay.as_millis() as u64, "transient failure; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Client {
    /// How long the namespace asked this client to hold back (after a `503` ServerBusy or a
    /// `429`), if it still does: every request waits that long first. For health checks
    /// and diagnostics.
    pub fn busy_for_now(&self) -> Option<Duration> {
        let until = (*crate::sync::lock(&self.inner.busy_until))?;
        until.checked_duration_since(Instant::now())
    }

    /// Holds every request back for `delay` from now (the later of two waits wins).
    fn busy_for(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut slot = crate::sync::lock(&self.inner.busy_until);
        if slot.is_none_or(|current| current < until) {
            *slot = Some(until);
        }
    }

    async fn wait_while_busy(&self) {
        if let Some(wait) = self.busy_for_now() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "namespace busy; holding back"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// The base URL of a namespace named as [`Client::with_token_provider`] takes it.
fn namespace_url(namespace: &str) -> Result<String> {
    let given = namespace.trim();
    let (scheme, rest) = match given.split_once("://") {
        Some(("https", rest)) => ("https", rest),
        Some(("http", rest)) => ("http", rest),
        Some(("sb", rest)) => ("https", rest),
        Some(_) => return Err(Error::Namespace(namespace.to_string())),
        None => ("https", given),
    };
    let host = rest.trim_end_matches('/');
    let bad = host.is_empty()
        || host.starts_with('.')
        || host.starts_with(':')
        || host.contains('/')
        || host.contains(char::is_whitespace);
    if bad {
        return Err(Error::Namespace(namespace.to_string()));
    }
    if host.contains('.') || host.contains(':') {
        Ok(format!("{scheme}://{host}"))
    } else {
        Ok(format!("{scheme}://{host}.servicebus.windows.net"))
    }
}

/// The path of a subscription, for receive and settle calls.
pub fn subscription_path(topic: &str, subscription: &str) -> String {
    format!("{topic}/Subscriptions/{subscription}")
}

/// The path of a queue's or subscription's dead-letter subqueue.
pub fn dead_letter_path(receivable: &str) -> String {
    format!("{receivable}/$DeadLetterQueue")
}

pub(crate) fn management_path(path: &str) -> String {
    format!("/{path}?api-version={API_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_name_their_url() {
        for (given, url) in [
            ("my-ns", "https://my-ns.servicebus.windows.net"),
            (
                "my-ns.servicebus.windows.net",
                "https://my-ns.servicebus.windows.net",
            ),
            (
                "sb://my-ns.servicebus.windows.net/",
                "https://my-ns.servicebus.windows.net",
            ),
            (
                "https://my-ns.servicebus.windows.net/",
                "https://my-ns.servicebus.windows.net",
            ),
            ("http://127.0.0.1:5300", "http://127.0.0.1:5300"),
        ] {
            assert_eq!(namespace_url(given).unwrap(), url, "{given}");
        }
        for bad in ["", "https://", "sb://", "https://a/b", "my ns", "ftp://x.y"] {
            assert!(namespace_url(bad).is_err(), "{bad}");
        }
    }
}

//! Microsoft Entra ID (Azure AD) bearer tokens for the REST client: many production
//! namespaces disable SAS keys by policy. A [`TokenProvider`] gives tokens for the audience
//! `https://servicebus.azure.net`; the client caches each and asks for the next before it
//! expires. With the `entra-id` feature, [`super::entra::EntraCredential`] provides them
//! through the official `azure_identity` credentials.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The scope Service Bus tokens are asked for.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// Ask for the next token this long before the current one expires.
const REFRESH_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A bearer token and when it expires, as a [`TokenProvider`] gives it.
///
/// ```
/// use backplane::servicebus::token::AccessToken;
/// let token = AccessToken {
///     token: "eyJ...".to_string(),
///     expires_at: chrono::Utc::now() + chrono::TimeDelta::minutes(60),
/// };
/// // The token itself never shows in logs.
/// assert!(!format!("{token:?}").contains("eyJ"));
/// ```
#[derive(Clone)]
pub struct AccessToken {
    /// The token (a JWT), sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<secret>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a provider's future gives.
pub type TokenResult = Result<AccessToken, Box<dyn std::error::Error + Send + Sync>>;

/// Gives bearer tokens for Service Bus (audience `https://servicebus.azure.net`).
///
/// ```
/// use backplane::servicebus::token::{AccessToken, TokenProvider, TokenResult};
/// use std::{future::Future, pin::Pin};
///
/// /// A token minted elsewhere (a sidecar, a file), valid for an hour.
/// #[derive(Debug)]
/// struct Fixed(String);
///
/// impl TokenProvider for Fixed {
///     fn token(&self) -> Pin<Box<dyn Future<Output = TokenResult> + Send + '_>> {
///         Box::pin(async move {
///             Ok(AccessToken {
///                 token: self.0.clone(),
///                 expires_at: chrono::Utc::now() + chrono::TimeDelta::hours(1),
///             })
///         })
///     }
/// }
/// ```
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A fresh token (the client caches it until shortly before it expires).
    fn token(&self) -> Pin<Box<dyn Future<Output = TokenResult> + Send + '_>>;
}

/// A provider's tokens, cached: one refresh at a time, started five minutes before expiry
/// (or at once when the service refused the current one). A refresh that fails while the
/// current token is still valid keeps the current one.
#[derive(Debug)]
pub(crate) struct BearerCache {
    provider: Arc<dyn TokenProvider>,
    current: tokio::sync::Mutex<Option<AccessToken>>,
}

impl BearerCache {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> Self {
        BearerCache {
            provider,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The `Authorization` header value; `fresh` asks for a new token.
    pub(crate) async fn header(&self, fresh: bool) -> Result<String, String> {
        let mut current = self.current.lock().await;
        let now = Utc::now();
        if let Some(token) = current.as_ref()
            && !fresh
            && token.expires_at - now > REFRESH_BEFORE
        {
            return Ok(format!("Bearer {}", token.token));
        }
        match self.provider.token().await {
            Ok(token) => {
                let header = format!("Bearer {}", token.token);
                *current = Some(token);
                Ok(header)
            }
            Err(e) => match current.as_ref() {
                Some(token) if token.expires_at > now && !fresh => {
                    tracing::warn!(error = %e, "could not refresh the bearer token; using the current one");
                    Ok(format!("Bearer {}", token.token))
                }
                _ => Err(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out "t1", "t2", ... each valid for `life`, or fails when `fail` is set.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        life: chrono::TimeDelta,
        fail: std::sync::atomic::AtomicBool,
    }

    impl TokenProvider for Counting {
        fn token(&self) -> Pin<Box<dyn Future<Output = TokenResult> + Send + '_>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err("the identity endpoint is down".into());
                }
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(AccessToken {
                    token: format!("t{n}"),
                    expires_at: Utc::now() + self.life,
                })
            })
        }
    }

    fn cache(life: chrono::TimeDelta) -> (Arc<Counting>, BearerCache) {
        let provider = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            life,
            fail: false.into(),
        });
        (provider.clone(), BearerCache::new(provider))
    }

    #[tokio::test]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let (provider, cache) = cache(chrono::TimeDelta::hours(1));
        assert_eq!(cache.header(false).await.unwrap(), "Bearer t1");
        assert_eq!(cache.header(false).await.unwrap(), "Bearer t1");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
        // A refused token is replaced at once.
        assert_eq!(cache.header(true).await.unwrap(), "Bearer t2");
    }

    #[tokio::test]
    async fn a_token_near_expiry_is_refreshed_and_a_failed_refresh_keeps_a_valid_one() {
        // Four minutes of life: inside the five-minute refresh window, still valid.
        let (provider, cache) = cache(chrono::TimeDelta::minutes(4));
        assert_eq!(cache.header(false).await.unwrap(), "Bearer t1");
        assert_eq!(cache.header(false).await.unwrap(), "Bearer t2");
        provider.fail.store(true, Ordering::SeqCst);
        assert_eq!(cache.header(false).await.unwrap(), "Bearer t2");
        // Asked for a new one (the service refused t2) with none to be had: an error.
        assert!(cache.header(true).await.is_err());
    }
}

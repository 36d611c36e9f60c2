//! Microsoft Entra ID credentials from the official Azure SDK for Rust (`azure_identity`,
//! `azure_core`), as a [`TokenProvider`] for [`Client::with_token_provider`](super::Client::with_token_provider)
//! (feature `entra-id`). The SDK does the OAuth; this module only asks it for Service Bus
//! tokens and sends its HTTP requests through `reqwest` on rustls, as the client does, so no
//! second HTTP stack or TLS library is built.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use backplane::servicebus::{Client, RetryPolicy, entra::EntraCredential};
//!
//! // On Azure (App Service, VMs, AKS with pod identity): the managed identity.
//! let credential = EntraCredential::managed_identity(None)?;
//! // In AKS with workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE.
//! let credential = EntraCredential::workload_identity()?;
//! // A service principal with a secret.
//! let credential = EntraCredential::client_secret("tenant-id", "client-id", "secret")?;
//! // A developer machine: `az login`.
//! let credential = EntraCredential::azure_cli()?;
//! let client = Client::with_token_provider("my-ns", credential, RetryPolicy::default())?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, ClientOptions, HttpClient, Request, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::token::{AccessToken, SERVICE_BUS_SCOPE, TokenProvider, TokenResult};

/// What building a credential can fail with (the SDK's error).
pub type CredentialError = azure_core::Error;

/// An `azure_identity` credential giving Service Bus tokens.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use backplane::servicebus::{Client, RetryPolicy, entra::EntraCredential};
/// use std::sync::Arc;
///
/// // Any credential of the SDK, with the options the application wants, and the HTTP
/// // transport of `client_options` (the SDK is built without one of its own).
/// let options = azure_identity::ClientSecretCredentialOptions {
///     client_options: backplane::servicebus::entra::client_options(),
/// };
/// let sdk = azure_identity::ClientSecretCredential::new(
///     "tenant-id",
///     "client-id".to_string(),
///     azure_core::credentials::Secret::new("secret".to_string()),
///     Some(options),
/// )?;
/// let client = Client::with_token_provider(
///     "https://my-ns.servicebus.windows.net",
///     EntraCredential::new(sdk),
///     RetryPolicy::default(),
/// )?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EntraCredential {
    credential: Arc<dyn TokenCredential>,
}

impl EntraCredential {
    /// Any `azure_core` credential (built by the caller, with the options it wants and the
    /// transport of [`client_options`]).
    pub fn new(credential: Arc<dyn TokenCredential>) -> Arc<Self> {
        Arc::new(EntraCredential { credential })
    }

    /// The managed identity of the Azure resource the process runs on: system-assigned, or
    /// the user-assigned one with this client id.
    ///
    /// # Errors
    ///
    /// When the SDK cannot build the credential (an unsupported hosting environment).
    pub fn managed_identity(client_id: Option<String>) -> Result<Arc<Self>, CredentialError> {
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(UserAssignedId::ClientId),
            client_options: client_options(),
        }))?;
        Ok(Self::new(credential))
    }

    /// Kubernetes workload identity, from `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    ///
    /// # Errors
    ///
    /// When one of them is missing.
    pub fn workload_identity() -> Result<Arc<Self>, CredentialError> {
        let mut options = WorkloadIdentityCredentialOptions::default();
        options.credential_options.client_options = client_options();
        Ok(Self::new(WorkloadIdentityCredential::new(Some(options))?))
    }

    /// A service principal with a client secret.
    ///
    /// # Errors
    ///
    /// When the tenant id is not valid.
    pub fn client_secret(
        tenant_id: &str,
        client_id: &str,
        secret: &str,
    ) -> Result<Arc<Self>, CredentialError> {
        let credential = ClientSecretCredential::new(
            tenant_id,
            client_id.to_string(),
            Secret::new(secret.to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: client_options(),
            }),
        )?;
        Ok(Self::new(credential))
    }

    /// The account of the Azure CLI (`az login`), for developer machines.
    ///
    /// # Errors
    ///
    /// When the SDK cannot build the credential.
    pub fn azure_cli() -> Result<Arc<Self>, CredentialError> {
        Self::azure_cli_with(AzureCliCredentialOptions::default())
    }

    /// As [`EntraCredential::azure_cli`] with the SDK's options (tenant, subscription, how
    /// the `az` command runs).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), azure_core::Error> {
    /// use azure_identity::AzureCliCredentialOptions;
    /// use backplane::servicebus::entra::EntraCredential;
    ///
    /// let credential = EntraCredential::azure_cli_with(AzureCliCredentialOptions {
    ///     tenant_id: Some("00000000-0000-0000-0000-000000000000".into()),
    ///     ..Default::default()
    /// })?;
    /// # let _ = credential;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// When the SDK cannot build the credential.
    pub fn azure_cli_with(
        options: AzureCliCredentialOptions,
    ) -> Result<Arc<Self>, CredentialError> {
        Ok(Self::new(AzureCliCredential::new(Some(options))?))
    }
}

impl TokenProvider for EntraCredential {
    fn token(&self) -> Pin<Box<dyn Future<Output = TokenResult> + Send + '_>> {
        Box::pin(async move {
            let token = self
                .credential
                .get_token(&[SERVICE_BUS_SCOPE], None)
                .await?;
            let expires_at = chrono::DateTime::from_timestamp(token.expires_on.unix_timestamp(), 0)
                .ok_or("the token's expiry is out of range")?;
            Ok(AccessToken {
                token: token.token.secret().to_string(),
                expires_at,
            })
        })
    }
}

/// The SDK's client options with its requests going through `reqwest` (rustls): give
/// them to a credential built by hand (the SDK is built without an HTTP client of its own).
pub fn client_options() -> ClientOptions {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(SdkHttp(http)))),
        ..ClientOptions::default()
    }
}

/// The SDK's HTTP client trait over `reqwest`, for what credentials send
/// (small buffered bodies).
struct SdkHttp(reqwest::Client);

impl fmt::Debug for SdkHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SdkHttp")
    }
}

#[async_trait::async_trait]
impl HttpClient for SdkHttp {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| azure_core::Error::new(ErrorKind::Other, e))?;
        let mut builder = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.clone(),
            Body::SeekableStream(_) => {
                return Err(azure_core::Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported",
                ));
            }
        };
        let response = builder
            .body(body)
            .send()
            .await
            .map_err(|e| azure_core::Error::new(ErrorKind::Io, e))?;
        let status = response.status().as_u16();
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| azure_core::Error::new(ErrorKind::Io, e))?;
        let body = futures_util::stream::once(async move { Ok(bytes) });
        Ok(AsyncRawResponse::new(
            status.into(),
            headers,
            Box::pin(body),
        ))
    }
}

//! Bearer tokens as Microsoft Entra ID issues them for Service Bus, checked with a key given
//! on the command line (`--jwt-secret`), so the Entra ID path of a client is tested end to
//! end with a locally minted token.
//!
//! A token is a JWT signed HS256 with the secret (Entra ID signs RS256 with its own keys;
//! the emulator cannot hold those). It must carry `aud` = `https://servicebus.azure.net`
//! (with or without a trailing slash, as Entra ID writes it for the scope
//! `https://servicebus.azure.net/.default`) and an `exp` in the future; its `roles` map to
//! rights as Azure's built-in roles do: `Azure Service Bus Data Owner` → Manage, Send,
//! Listen; `... Data Sender` → Send; `... Data Receiver` → Listen. A token covers the whole
//! namespace (role assignments at namespace scope).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Rights;

/// The audience of Service Bus tokens.
pub const AUDIENCE: &str = "https://servicebus.azure.net";
/// The built-in role granting every right.
pub const OWNER: &str = "Azure Service Bus Data Owner";
/// The built-in role granting Send.
pub const SENDER: &str = "Azure Service Bus Data Sender";
/// The built-in role granting Listen.
pub const RECEIVER: &str = "Azure Service Bus Data Receiver";

/// Checks bearer tokens against the configured secret.
///
/// ```
/// use emulator::auth::jwt::{AUDIENCE, JwtVerifier, SENDER, mint};
/// let now = chrono::Utc::now().timestamp();
/// let verifier = JwtVerifier::new("local-secret").unwrap();
/// let token = mint(
///     &serde_json::json!({"aud": AUDIENCE, "exp": now + 60, "roles": [SENDER]}),
///     "local-secret",
/// )
/// .unwrap();
/// assert!(verifier.verify(&token, now).is_ok());
/// // Expired a minute later, with the 401 sub-code of an expired token.
/// assert_eq!(verifier.verify(&token, now + 61).unwrap_err().sub_code(), 40106);
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier { .. }")
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    roles: Vec<String>,
}

/// Why a bearer token was refused (always 401), with the service's sub-code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bearer token: {detail}")]
pub struct JwtError {
    sub_code: u32,
    detail: String,
}

impl JwtError {
    fn new(sub_code: u32, detail: impl Into<String>) -> Self {
        JwtError {
            sub_code,
            detail: detail.into(),
        }
    }

    /// Bearer tokens arrived but the emulator was not started to accept them: no token it
    /// can take (`40102`, as for a missing SAS token).
    pub(super) fn disabled() -> Self {
        Self::new(
            40102,
            "bearer tokens are not accepted: start the emulator with --jwt-secret",
        )
    }

    /// The sub-code the service puts in a 401's detail, as for SAS tokens: `40103` bad
    /// signature, `40104` another audience, `40105` malformed, `40106` expired, `40100` no
    /// Service Bus role.
    pub fn sub_code(&self) -> u32 {
        self.sub_code
    }
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        let sub_code = match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => 40103,
            ErrorKind::InvalidAudience => 40104,
            ErrorKind::ExpiredSignature => 40106,
            _ => 40105,
        };
        Self::new(sub_code, e.to_string())
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret` (its bytes, HS256).
    ///
    /// # Errors
    ///
    /// [`JwtError`] for an empty secret.
    pub fn new(secret: &str) -> Result<Self, JwtError> {
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|_| JwtError::new(40100, "the secret is empty"))?;
        Ok(JwtVerifier { key })
    }

    /// The rights a token grants, after checking its signature, audience and expiry against
    /// `now` (Unix seconds).
    ///
    /// # Errors
    ///
    /// [`JwtError`] for a token that is malformed, unsigned or signed otherwise, for another
    /// audience, expired, or without a Service Bus role.
    pub fn verify(&self, token: &str, now: i64) -> Result<Rights, JwtError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE, "https://servicebus.azure.net/"]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // Expiry is checked below against the emulator's clock, with no leeway.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &validation)?;
        let exp = data.claims.get("exp").and_then(serde_json::Value::as_i64);
        match exp {
            Some(exp) if exp > now => {}
            Some(_) => return Err(JwtError::new(40106, "the token expired")),
            None => return Err(JwtError::new(40105, "exp is not a number")),
        }
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| JwtError::new(40105, format!("roles: {e}")))?;
        let mut rights = Rights::default();
        for role in &claims.roles {
            match role.as_str() {
                OWNER => rights = Rights::ALL,
                SENDER => rights.send = true,
                RECEIVER => rights.listen = true,
                _ => {}
            }
        }
        if rights == Rights::default() {
            return Err(JwtError::new(
                40100,
                format!(
                    "no Service Bus role among {:?} (want {OWNER:?}, {SENDER:?} or {RECEIVER:?})",
                    claims.roles
                ),
            ));
        }
        Ok(rights)
    }
}

/// Mints a token signed with `secret` carrying `claims`, as the emulator checks them (for
/// tests and local tools; Entra ID mints the real ones).
///
/// ```
/// use emulator::auth::jwt::{AUDIENCE, OWNER, mint};
/// let exp = chrono::Utc::now().timestamp() + 3600;
/// let token = mint(
///     &serde_json::json!({"aud": AUDIENCE, "exp": exp, "roles": [OWNER]}),
///     "local-secret",
/// )
/// .unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// ```
///
/// # Errors
///
/// When the claims cannot be encoded.
pub fn mint(claims: &serde_json::Value, secret: &str) -> Result<String, JwtError> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
            .map_err(|_| JwtError::new(40100, "the secret is empty"))?,
    )
    .map_err(JwtError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Right;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn mint(claims: serde_json::Value, secret: &str) -> String {
        super::mint(&claims, secret).unwrap()
    }

    #[test]
    fn roles_map_to_rights() {
        let v = JwtVerifier::new("s3cret").unwrap();
        let token = |roles: &[&str]| {
            mint(
                json!({"aud": AUDIENCE, "exp": NOW + 60, "roles": roles}),
                "s3cret",
            )
        };
        assert_eq!(v.verify(&token(&[OWNER]), NOW), Ok(Rights::ALL));
        let sender = v.verify(&token(&[SENDER]), NOW).unwrap();
        assert!(sender.grants(Right::Send) && !sender.grants(Right::Listen));
        let both = v.verify(&token(&[SENDER, RECEIVER]), NOW).unwrap();
        assert!(both.grants(Right::Send) && both.grants(Right::Listen));
        assert!(!both.grants(Right::Manage));
        assert!(v.verify(&token(&["Reader"]), NOW).is_err());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let v = JwtVerifier::new("s3cret").unwrap();
        let good = json!({"aud": AUDIENCE, "exp": NOW + 60, "roles": [OWNER]});
        let code = |token: &str| v.verify(token, NOW).unwrap_err().sub_code();
        assert_eq!(code(&mint(good.clone(), "other")), 40103);
        let wrong_audience =
            json!({"aud": "https://storage.azure.com", "exp": NOW + 60, "roles": [OWNER]});
        assert_eq!(code(&mint(wrong_audience, "s3cret")), 40104);
        let expired = json!({"aud": AUDIENCE, "exp": NOW - 1, "roles": [OWNER]});
        assert_eq!(code(&mint(expired, "s3cret")), 40106);
        let no_exp = json!({"aud": AUDIENCE, "roles": [OWNER]});
        assert_eq!(code(&mint(no_exp, "s3cret")), 40105);
        // Unsigned ("alg": "none") and garbage.
        let unsigned = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none","typ":"JWT"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                good.to_string()
            )
        );
        // `none` is no algorithm the decoder knows: a malformed token.
        assert_eq!(code(&unsigned), 40105);
        assert_eq!(code("not.a.jwt"), 40105);
        assert_eq!(code(""), 40105);
        assert!(JwtVerifier::new("").is_err());
        // The trailing-slash audience Entra ID also writes.
        let slash =
            json!({"aud": "https://servicebus.azure.net/", "exp": NOW + 60, "roles": [OWNER]});
        assert!(v.verify(&mint(slash, "s3cret"), NOW).is_ok());
    }
}

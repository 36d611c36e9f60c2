//! Who may do what: SAS verification (in `servicebus_wire::sas`) plus the rights each
//! operation needs (contract 2.4, 2.7), and, when enabled, Entra ID bearer tokens ([`jwt`]).

pub mod jwt;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use servicebus_wire::sas::check_claims;
use servicebus_wire::{SasError, SasToken};

use crate::clock::Clock;
use crate::sync::lock;
use jwt::{JwtError, JwtVerifier};

/// A claim a policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Management; implies Send and Listen.
    Manage,
    /// Send to queues and topics.
    Send,
    /// Receive and settle.
    Listen,
}

impl Right {
    fn as_str(self) -> &'static str {
        match self {
            Right::Manage => "Manage",
            Right::Send => "Send",
            Right::Listen => "Listen",
        }
    }
}

/// The rights of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    manage: bool,
    send: bool,
    listen: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Rights = Rights {
        manage: true,
        send: true,
        listen: true,
    };

    /// Whether these rights grant `right` (Manage implies Send and Listen).
    pub fn grants(self, right: Right) -> bool {
        self.manage
            || match right {
                Right::Manage => false,
                Right::Send => self.send,
                Right::Listen => self.listen,
            }
    }
}

impl FromStr for Rights {
    type Err = String;

    /// `Manage`, `Send`, `Listen`, joined by `,` or `+`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rights = Rights::default();
        for word in s.split([',', '+']).map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "manage" => rights.manage = true,
                "send" => rights.send = true,
                "listen" => rights.listen = true,
                _ => {
                    return Err(format!(
                        "unknown right '{word}' (expected Manage, Send or Listen)"
                    ));
                }
            }
        }
        if rights == Rights::default() {
            return Err("no rights given (expected Manage, Send or Listen)".into());
        }
        Ok(rights)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.manage, "Manage"),
            (self.send, "Send"),
            (self.listen, "Listen"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        f.write_str(&names.join(","))
    }
}

/// A shared access policy: name, key and rights.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedAccessKey {
    /// Policy name (`skn`).
    pub name: String,
    /// The key, used as the literal string.
    pub key: String,
    /// What it grants.
    pub rights: Rights,
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessKey")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl FromStr for SharedAccessKey {
    type Err = String;

    /// `NAME:RIGHTS:KEY`, split on the first two `:` (the key may contain anything).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let (Some(name), Some(rights), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "'{s}' is not NAME:RIGHTS:KEY (for example listener:Listen:secret)"
            ));
        };
        if name.is_empty() || key.is_empty() {
            return Err(format!("'{s}' has an empty name or key"));
        }
        Ok(SharedAccessKey {
            name: name.to_string(),
            key: key.to_string(),
            rights: rights.parse()?,
        })
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// One right.
    Right(Right),
    /// Either of two rights (list rules: Manage or Listen).
    Either(Right, Right),
    /// Any valid token (`$namespaceinfo`).
    AnyValidToken,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid token: 401.
    #[error(transparent)]
    Unauthenticated(#[from] SasError),
    /// A bearer token that is not valid, or bearer tokens not enabled: 401.
    #[error(transparent)]
    Bearer(#[from] JwtError),
    /// A valid token whose policy lacks the claim: 403.
    #[error("unauthorized access: '{claim}' claim(s) are required to perform this operation")]
    MissingClaim {
        /// The claim that was needed.
        claim: &'static str,
    },
}

/// Verifies tokens against the configured keys and the broker's clock.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Vec<SharedAccessKey>,
    clock: Clock,
    /// Tokens whose signature checked out, by what they mean (not by header bytes, so
    /// variants of one token padded with ignored fields share an entry). A client sends the
    /// same token for its whole lifetime, so only its first request pays for the HMAC;
    /// expiry and scope are still checked on every request. Keys never change while the
    /// emulator runs, so an entry stays true.
    signed: Arc<Mutex<HashMap<SasToken, Signed>>>,
    /// Checks Entra ID bearer tokens; `None`: they are refused.
    jwt: Option<JwtVerifier>,
}

/// What a token with a good signature grants, whatever the request.
#[derive(Debug, Clone)]
struct Signed {
    /// Index of its key in `keys`.
    key: usize,
    expiry: i64,
    /// `None` when the audience is not an absolute URL: it covers nothing.
    scope: Option<String>,
}

/// Most tokens remembered; past it the memory starts again (tokens are few in practice).
const SIGNED_TOKENS: usize = 1024;
/// Longest `sr` remembered: with [`SIGNED_TOKENS`], the memory stays a few megabytes whatever
/// tokens arrive (longer ones are verified on every request).
const REMEMBERED_RESOURCE_BYTES: usize = 1024;

impl Authenticator {
    /// An authenticator for these keys.
    pub fn new(keys: Vec<SharedAccessKey>, clock: Clock) -> Self {
        Authenticator {
            keys,
            clock,
            signed: Arc::default(),
            jwt: None,
        }
    }

    /// Also accepts Entra ID bearer tokens checked by `jwt` (REST `Authorization: Bearer`,
    /// and JWTs given to `put-token` over AMQP).
    ///
    /// ```
    /// use emulator::auth::jwt::{AUDIENCE, JwtVerifier, RECEIVER, mint};
    /// use emulator::auth::{Authenticator, Need, Right};
    /// use emulator::clock::Clock;
    ///
    /// let auth = Authenticator::new(vec![], Clock::System)
    ///     .with_jwt(Some(JwtVerifier::new("local-secret").unwrap()));
    /// let exp = chrono::Utc::now().timestamp() + 60;
    /// let claims = serde_json::json!({"aud": AUDIENCE, "exp": exp, "roles": [RECEIVER]});
    /// let header = format!("Bearer {}", mint(&claims, "local-secret").unwrap());
    /// assert!(auth.authorize(Some(&header), "/q", Need::Right(Right::Listen)).is_ok());
    /// assert!(auth.authorize(Some(&header), "/q", Need::Right(Right::Send)).is_err());
    /// ```
    pub fn with_jwt(mut self, jwt: Option<JwtVerifier>) -> Self {
        self.jwt = jwt;
        self
    }

    /// The rights of a bearer token, or `None` when `header` is not one.
    fn bearer(&self, header: &str) -> Result<Option<Rights>, AuthError> {
        let token = match header.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => header[7..].trim(),
            // A JWT as CBS `put-token` carries it (type "jwt"): a JSON header, base64url.
            _ if header.starts_with("eyJ") => header,
            _ => return Ok(None),
        };
        let Some(jwt) = &self.jwt else {
            return Err(JwtError::disabled().into());
        };
        Ok(Some(jwt.verify(token, self.clock.now().timestamp())?))
    }

    /// The token's key and claims once its signature is checked (remembered after that).
    fn signed(&self, header: &str) -> Result<Signed, SasError> {
        let token = SasToken::parse(header)?;
        let remembered = lock(&self.signed).get(&token).cloned();
        if let Some(signed) = remembered {
            return Ok(signed);
        }
        let key = self
            .keys
            .iter()
            .position(|k| k.name.eq_ignore_ascii_case(token.key_name()))
            .ok_or_else(|| SasError::UnknownKeyName(token.key_name().to_string()))?;
        if !token.signature_matches(&self.keys[key].key) {
            return Err(SasError::InvalidSignature);
        }
        let signed = Signed {
            key,
            expiry: token.expiry(),
            scope: token.scope_path(),
        };
        if token.raw_resource().len() <= REMEMBERED_RESOURCE_BYTES {
            let mut remembered = lock(&self.signed);
            if remembered.len() >= SIGNED_TOKENS {
                remembered.clear();
            }
            remembered.insert(token, signed.clone());
        }
        Ok(signed)
    }

    /// The primary key (the first configured; all rights).
    pub fn primary(&self) -> Option<&SharedAccessKey> {
        self.keys.first()
    }

    /// Checks an `Authorization` header for a request on `path` that needs `need`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthenticated`] for a missing, malformed, unknown-key, badly signed,
    /// expired or out-of-scope token; [`AuthError::Bearer`] for a bad bearer token (or any,
    /// when they are not enabled); [`AuthError::MissingClaim`] when the key or the token's
    /// roles lack the right.
    pub fn authorize(&self, header: Option<&str>, path: &str, need: Need) -> Result<(), AuthError> {
        let header = header.ok_or(SasError::Missing)?;
        let rights = match self.bearer(header)? {
            // A bearer token covers the namespace.
            Some(rights) => rights,
            None => {
                // Checked in the order `SasToken::verify` checks: signature, expiry, scope.
                let signed = self.signed(header)?;
                check_claims(
                    signed.expiry,
                    signed.scope.as_deref(),
                    self.clock.now().timestamp(),
                    path,
                )?;
                self.keys[signed.key].rights
            }
        };
        let granted = match need {
            Need::AnyValidToken => true,
            Need::Right(r) => rights.grants(r),
            Need::Either(a, b) => rights.grants(a) || rights.grants(b),
        };
        if granted {
            return Ok(());
        }
        let claim = match need {
            Need::Right(r) | Need::Either(r, _) => r.as_str(),
            Need::AnyValidToken => "any",
        };
        Err(AuthError::MissingClaim { claim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicebus_wire::sas::sign;

    fn auth() -> Authenticator {
        Authenticator::new(
            vec![
                SharedAccessKey {
                    name: "root".into(),
                    key: "k1".into(),
                    rights: Rights::ALL,
                },
                "sender:Send:k2".parse().unwrap(),
                "listener:listen:k:3".parse().unwrap(),
            ],
            Clock::manual(chrono::DateTime::from_timestamp(1_000, 0).unwrap()),
        )
    }

    #[test]
    fn rights_and_scopes() {
        let a = auth();
        let root = sign("http://h/", "root", "k1", 2_000);
        assert_eq!(
            a.authorize(Some(&root), "/q", Need::Right(Right::Manage)),
            Ok(())
        );
        assert_eq!(
            a.authorize(Some(&root), "/q", Need::Right(Right::Listen)),
            Ok(())
        );
        let sender = sign("http://h/q", "sender", "k2", 2_000);
        assert_eq!(
            a.authorize(Some(&sender), "/q/messages", Need::Right(Right::Send)),
            Ok(())
        );
        assert_eq!(
            a.authorize(Some(&sender), "/q", Need::Right(Right::Manage)),
            Err(AuthError::MissingClaim { claim: "Manage" })
        );
        assert!(matches!(
            a.authorize(Some(&sender), "/other", Need::Right(Right::Send)),
            Err(AuthError::Unauthenticated(SasError::InvalidAudience { .. }))
        ));
        let listener = sign("http://h/", "listener", "k:3", 2_000);
        assert_eq!(
            a.authorize(
                Some(&listener),
                "/t/Subscriptions/s/Rules",
                Need::Either(Right::Manage, Right::Listen)
            ),
            Ok(())
        );
        assert_eq!(
            a.authorize(Some(&listener), "/", Need::AnyValidToken),
            Ok(())
        );
    }

    #[test]
    fn a_remembered_token_still_expires_and_keeps_its_scope() {
        let a = auth();
        let need = Need::Right(Right::Send);
        let sender = sign("http://h/q", "sender", "k2", 2_000);
        assert_eq!(a.authorize(Some(&sender), "/q/messages", need), Ok(()));
        // Remembered now: the scope and the rights are still those of the token.
        assert!(matches!(
            a.authorize(Some(&sender), "/other/messages", need),
            Err(AuthError::Unauthenticated(SasError::InvalidAudience { .. }))
        ));
        assert_eq!(
            a.authorize(Some(&sender), "/q", Need::Right(Right::Manage)),
            Err(AuthError::MissingClaim { claim: "Manage" })
        );
        // The same claims signed with another key are a different header: checked afresh.
        let forged = sign("http://h/q", "sender", "not-k2", 2_000);
        assert_eq!(
            a.authorize(Some(&forged), "/q/messages", need),
            Err(AuthError::Unauthenticated(SasError::InvalidSignature))
        );
        a.clock.advance(chrono::Duration::seconds(1_000)).unwrap();
        assert_eq!(
            a.authorize(Some(&sender), "/q/messages", need),
            Err(AuthError::Unauthenticated(SasError::Expired(2_000)))
        );
    }

    #[test]
    fn unauthenticated_cases() {
        let a = auth();
        let need = Need::Right(Right::Manage);
        assert_eq!(
            a.authorize(None, "/q", need),
            Err(AuthError::Unauthenticated(SasError::Missing))
        );
        let expired = sign("http://h/", "root", "k1", 1_000);
        assert_eq!(
            a.authorize(Some(&expired), "/q", need),
            Err(AuthError::Unauthenticated(SasError::Expired(1_000)))
        );
        let wrong_key = sign("http://h/", "root", "nope", 2_000);
        assert_eq!(
            a.authorize(Some(&wrong_key), "/q", need),
            Err(AuthError::Unauthenticated(SasError::InvalidSignature))
        );
        let unknown = sign("http://h/", "who", "k1", 2_000);
        assert!(matches!(
            a.authorize(Some(&unknown), "/q", need),
            Err(AuthError::Unauthenticated(SasError::UnknownKeyName(_)))
        ));
    }

    #[test]
    fn key_flag_parsing() {
        assert!("a:Send".parse::<SharedAccessKey>().is_err());
        assert!("a:Fly:k".parse::<SharedAccessKey>().is_err());
        assert!(":Send:k".parse::<SharedAccessKey>().is_err());
        let k: SharedAccessKey = "a:Send+Listen:x=y:z".parse().unwrap();
        assert_eq!(k.key, "x=y:z");
        assert_eq!(k.rights.to_string(), "Send,Listen");
    }
}

//! Shared Access Signature tokens: signing (clients) and verification (the emulator).
//!
//! A token is `SharedAccessSignature sr=..&sig=..&se=..&skn=..` in any field order. The
//! signature is `base64(HMAC-SHA256(key bytes as given, raw sr + "\n" + se))`, computed over
//! `sr` exactly as it appears in the header: clients differ in percent-encoding case and the
//! service accepts all of them (contract section 2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The scheme word of a SAS `Authorization` header.
pub const SAS_SCHEME: &str = "SharedAccessSignature";

/// Everything but the unreserved characters, as .NET `WebUtility.UrlEncode` encodes.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a token was refused. Each maps to a Service Bus sub-code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// No `Authorization` header, or one with another scheme.
    #[error("missing SharedAccessSignature token")]
    Missing,
    /// A field is missing, repeated or not decodable.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `skn` names no configured key.
    #[error("unknown key name '{0}'")]
    UnknownKeyName(String),
    /// The HMAC does not match.
    #[error("invalid signature")]
    InvalidSignature,
    /// `se` is not after now.
    #[error("token expired at {0} (seconds since the Unix epoch)")]
    Expired(i64),
    /// The token's resource does not cover the requested path.
    #[error("token audience '{audience}' does not cover '{path}'")]
    InvalidAudience {
        /// The scope path from `sr`.
        audience: String,
        /// The request path.
        path: String,
    },
}

impl SasError {
    /// The Service Bus sub-code written in error details (`SubCode=40103`).
    pub fn sub_code(&self) -> u32 {
        match self {
            SasError::Missing => 40102,
            SasError::Malformed(_) => 40105,
            SasError::UnknownKeyName(_) | SasError::InvalidSignature => 40103,
            SasError::Expired(_) => 40106,
            SasError::InvalidAudience { .. } => 40104,
        }
    }
}

/// A parsed token, with `sr` and `se` kept exactly as sent (they are what was signed).
/// Equality and hashing cover what the token means (its four fields), not the header's
/// bytes: fields it ignores, their order and the scheme word's case do not count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SasToken {
    raw_resource: String,
    raw_expiry: String,
    signature: Vec<u8>,
    key_name: String,
    expiry: i64,
}

impl SasToken {
    /// Parses the value of an `Authorization` header.
    ///
    /// # Errors
    ///
    /// [`SasError::Missing`] for another scheme, [`SasError::Malformed`] for a missing,
    /// repeated or undecodable field.
    pub fn parse(header: &str) -> Result<Self, SasError> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').ok_or(SasError::Missing)?;
        if !scheme.eq_ignore_ascii_case(SAS_SCHEME) {
            return Err(SasError::Missing);
        }
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for pair in rest.trim().split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| SasError::Malformed(format!("'{pair}' is not key=value")))?;
            let slot = match key.to_ascii_lowercase().as_str() {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::Malformed(format!("'{key}' appears twice")));
            }
        }
        fn field<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str, SasError> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| SasError::Malformed(format!("'{name}' is missing")))
        }
        let sr = field(sr, "sr")?;
        let sig = field(sig, "sig")?;
        let se = field(se, "se")?;
        let skn = field(skn, "skn")?;
        let sig_text = percent_decode_str(sig)
            .decode_utf8()
            .map_err(|_| SasError::Malformed("'sig' is not UTF-8".into()))?;
        let signature = BASE64
            .decode(sig_text.as_bytes())
            .map_err(|_| SasError::Malformed("'sig' is not base64".into()))?;
        let expiry = se
            .parse::<i64>()
            .map_err(|_| SasError::Malformed("'se' is not a whole number of seconds".into()))?;
        let key_name = percent_decode_str(skn)
            .decode_utf8()
            .map_err(|_| SasError::Malformed("'skn' is not UTF-8".into()))?
            .into_owned();
        Ok(SasToken {
            raw_resource: sr.to_string(),
            raw_expiry: se.to_string(),
            signature,
            key_name,
            expiry,
        })
    }

    /// The key (policy) name the token claims to be signed with.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Expiry in seconds since the Unix epoch.
    pub fn expiry(&self) -> i64 {
        self.expiry
    }

    /// `sr` exactly as sent.
    pub fn raw_resource(&self) -> &str {
        &self.raw_resource
    }

    /// Whether the signature matches `key`, compared in constant time.
    pub fn signature_matches(&self, key: &str) -> bool {
        let expected = hmac(key, &string_to_sign(&self.raw_resource, &self.raw_expiry));
        expected.len() == self.signature.len() && bool::from(expected.ct_eq(&self.signature))
    }

    /// The path the token is scoped to: `sr` decoded, without scheme, authority, query or
    /// trailing `/`, ASCII-lower-cased (names compare as [`crate::names::fold`] does). Empty
    /// means the namespace root. `None` when `sr` is not an absolute URL (a scheme such as
    /// `https` or `sb`, `://` and a host): such an audience names nothing under the
    /// namespace and grants nothing.
    pub fn scope_path(&self) -> Option<String> {
        let decoded = percent_decode_str(&self.raw_resource).decode_utf8_lossy();
        let (scheme, without_scheme) = decoded.split_once("://")?;
        let known = ["http", "https", "sb", "amqp", "amqps", "ws", "wss"];
        if !known.iter().any(|k| scheme.eq_ignore_ascii_case(k)) {
            return None;
        }
        let (host, path) = match without_scheme.find(['/', '?', '#']) {
            Some(i) => without_scheme.split_at(i),
            None => (without_scheme, ""),
        };
        if host.is_empty() {
            return None;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.split(['?', '#']).next().unwrap_or("");
        Some(crate::names::fold(path.trim_matches('/')))
    }

    /// Whether the token's scope covers `path` (a request path, with or without leading `/`):
    /// equal to the scope, or below it.
    pub fn covers(&self, path: &str) -> bool {
        self.scope_path()
            .is_some_and(|scope| scope_covers(&scope, path))
    }

    /// Full verification against a key, a clock reading and a request path.
    ///
    /// # Errors
    ///
    /// [`SasError::InvalidSignature`], [`SasError::Expired`] or
    /// [`SasError::InvalidAudience`], checked in that order.
    pub fn verify(&self, key: &str, now_unix: i64, path: &str) -> Result<(), SasError> {
        if !self.signature_matches(key) {
            return Err(SasError::InvalidSignature);
        }
        check_claims(self.expiry, self.scope_path().as_deref(), now_unix, path)
    }
}

/// The checks of [`SasToken::verify`] after the signature, on claims read from a token
/// whose signature was checked before: expiry against `now_unix`, then `scope` (as
/// [`SasToken::scope_path`] gives it; `None` covers nothing) against the request `path`.
///
/// # Errors
///
/// [`SasError::Expired`], [`SasError::InvalidAudience`].
pub fn check_claims(
    expiry: i64,
    scope: Option<&str>,
    now_unix: i64,
    path: &str,
) -> Result<(), SasError> {
    if expiry <= now_unix {
        return Err(SasError::Expired(expiry));
    }
    if !scope.is_some_and(|scope| scope_covers(scope, path)) {
        return Err(SasError::InvalidAudience {
            audience: scope.unwrap_or("(not an absolute URL)").to_string(),
            path: path.to_string(),
        });
    }
    Ok(())
}

/// Whether a token scoped to `scope` (as [`SasToken::scope_path`] gives it) covers `path` (a
/// request path, with or without leading `/`): equal to the scope, or below it. Names
/// compare case-insensitively in ASCII only, as entity names do ([`crate::names::fold`]).
pub fn scope_covers(scope: &str, path: &str) -> bool {
    let path = crate::names::fold(path.trim_matches('/'));
    scope.is_empty()
        || path == scope
        || (path.starts_with(scope) && path.as_bytes().get(scope.len()) == Some(&b'/'))
}

/// Signs a token for `resource_uri`, valid until `expiry_unix`, and returns the whole
/// `Authorization` header value. `sr` is percent-encoded with upper-case hex, as .NET does.
pub fn sign(resource_uri: &str, key_name: &str, key: &str, expiry_unix: i64) -> String {
    let sr = utf8_percent_encode(resource_uri, URL_ENCODE).to_string();
    let se = expiry_unix.to_string();
    let sig = BASE64.encode(hmac(key, &string_to_sign(&sr, &se)));
    format!(
        "{SAS_SCHEME} sr={sr}&sig={}&se={se}&skn={}",
        utf8_percent_encode(&sig, URL_ENCODE),
        utf8_percent_encode(key_name, URL_ENCODE)
    )
}

/// The exact text that is signed: raw `sr`, one LF, `se`.
pub fn string_to_sign(raw_resource: &str, raw_expiry: &str) -> String {
    format!("{raw_resource}\n{raw_expiry}")
}

fn hmac(key: &str, message: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .expect("invariant: HMAC-SHA256 takes a key of any length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Kb0yhT3C5uRFzL9Z1q6mB2pW8vXj4nE7aD0sQ3tY5uI=";

    fn header(sr: &str, sig_b64: &str, se: &str) -> String {
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={se}&skn=RootManageSharedAccessKey",
            utf8_percent_encode(sig_b64, URL_ENCODE)
        )
    }

    #[test]
    fn contract_vector_a_upper_case() {
        let sr = "https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane";
        let t = SasToken::parse(&header(
            sr,
            "SE18HkH5tjeB4SKVgw4WNJkIMfzBj7tML0e7yVPtJIA=",
            "1735689600",
        ))
        .unwrap();
        assert!(t.signature_matches(KEY));
        assert_eq!(
            string_to_sign(sr, "1735689600"),
            "https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane\n1735689600"
        );
        assert_eq!(t.scope_path().as_deref(), Some("socketio-backplane"));
    }

    #[test]
    fn contract_vector_a_full_header() {
        let h = "SharedAccessSignature sr=https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane&sig=SE18HkH5tjeB4SKVgw4WNJkIMfzBj7tML0e7yVPtJIA%3D&se=1735689600&skn=RootManageSharedAccessKey";
        let t = SasToken::parse(h).unwrap();
        assert!(t.signature_matches(KEY));
        assert_eq!(
            t.verify(KEY, 1_735_689_599, "/socketio-backplane/messages"),
            Ok(())
        );
        assert_eq!(
            t.verify(KEY, 1_735_689_600, "/socketio-backplane"),
            Err(SasError::Expired(1_735_689_600))
        );
    }

    #[test]
    fn contract_vector_b_lower_case() {
        let sr = "https%3a%2f%2fcontoso.servicebus.windows.net%2fsocketio-backplane";
        let t = SasToken::parse(&header(
            sr,
            "C0QRVs7SRJzgqMhXCkGFAjKYje0ZBuyHXjolkQoiY/A=",
            "1735689600",
        ))
        .unwrap();
        assert!(t.signature_matches(KEY));
    }

    #[test]
    fn contract_vector_c_base64_decoded_key_is_rejected() {
        let sr = "https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane";
        let t = SasToken::parse(&header(
            sr,
            "aBCXva+DufC6uwG3p/7PlObr60Lsq4Gjo4OQixWlSWo=",
            "1735689600",
        ))
        .unwrap();
        assert!(!t.signature_matches(KEY));
        assert_eq!(
            t.verify(KEY, 0, "/socketio-backplane"),
            Err(SasError::InvalidSignature)
        );
    }

    #[test]
    fn contract_vector_d_emulator_key() {
        let sr = "http%3A%2F%2Flocalhost%3A5300%2F";
        let t = SasToken::parse(&header(
            sr,
            "Atu0I7AimiOGrVK7M6I13z9Vm7GgqKbd+yK+Twv8Y6o=",
            "4102444800",
        ))
        .unwrap();
        assert!(t.signature_matches("SAS_KEY_VALUE"));
        assert_eq!(t.scope_path().as_deref(), Some(""));
        assert!(t.covers("/anything/at/all"));
    }

    #[test]
    fn sign_produces_vector_a() {
        let h = sign(
            "https://contoso.servicebus.windows.net/socketio-backplane",
            "RootManageSharedAccessKey",
            KEY,
            1_735_689_600,
        );
        assert_eq!(
            h,
            "SharedAccessSignature sr=https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane&sig=SE18HkH5tjeB4SKVgw4WNJkIMfzBj7tML0e7yVPtJIA%3D&se=1735689600&skn=RootManageSharedAccessKey"
        );
    }

    #[test]
    fn fields_in_any_order_and_raw_slash_in_sig() {
        let sr = "https%3A%2F%2Fcontoso.servicebus.windows.net%2Fsocketio-backplane";
        let h = format!(
            "SharedAccessSignature skn=RootManageSharedAccessKey&se=1735689600&sig=C0QRVs7SRJzgqMhXCkGFAjKYje0ZBuyHXjolkQoiY/A%3d&sr={}",
            sr.to_lowercase()
        );
        assert!(SasToken::parse(&h).unwrap().signature_matches(KEY));
    }

    #[test]
    fn scope_rules() {
        let token = |resource: &str| SasToken::parse(&sign(resource, "k", "v", 1)).unwrap();
        let scope = |resource: &str| token(resource).scope_path();
        assert_eq!(
            scope("http://127.0.0.1:10100:80/captopic?api-version=2016-07").as_deref(),
            Some("captopic")
        );
        assert_eq!(scope("https://127.0.0.1:10100").as_deref(), Some(""));
        assert_eq!(scope("https://127.0.0.1:10100?x=1").as_deref(), Some(""));
        assert_eq!(
            scope("sb://ns.servicebus.windows.net/Target/").as_deref(),
            Some("target")
        );
        let t = token("http://h/CapTopic");
        assert!(t.covers("/captopic/Subscriptions/x"));
        assert!(t.covers("captopic"));
        assert!(!t.covers("/captopic2"));
        assert!(!t.covers("/other"));
        // An audience that is not an absolute URL under the namespace grants nothing.
        for relative in ["q2", "/q2", "://h/q", "ftp://h/q", "http:///q", "h/q"] {
            assert_eq!(scope(relative), None, "{relative}");
            assert!(!token(relative).covers("/q2"), "{relative}");
        }
        // One case rule for scopes and entity names: ASCII only.
        assert!(!token("http://h/\u{e9}q").covers("/\u{c9}q"));
        assert!(token("http://h/\u{e9}Q").covers("/\u{e9}q"));
        assert!(!token("http://h/k").covers("/\u{212a}"));
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(SasToken::parse("Bearer abc"), Err(SasError::Missing));
        assert_eq!(SasToken::parse(""), Err(SasError::Missing));
        for h in [
            "SharedAccessSignature sr=a&se=1&skn=k",
            "SharedAccessSignature sr=a&sig=!!!&se=1&skn=k",
            "SharedAccessSignature sr=a&sig=AAAA&se=soon&skn=k",
            "SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1&skn=k",
            "SharedAccessSignature garbage",
        ] {
            assert!(
                matches!(SasToken::parse(h), Err(SasError::Malformed(_))),
                "{h}"
            );
        }
    }
}

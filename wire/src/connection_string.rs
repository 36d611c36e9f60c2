//! Service Bus connection strings (contract section 2.9).

use std::fmt;

/// Why a connection string was refused; each names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `;`-separated part is not `key=value`.
    #[error("connection string part '{0}' is not key=value")]
    NotKeyValue(String),
    /// A part has an empty value.
    #[error("connection string part '{0}' has an empty value")]
    EmptyValue(String),
    /// `Endpoint` is absent.
    #[error("connection string has no Endpoint")]
    MissingEndpoint,
    /// `Endpoint` is not `sb://host[:port][/]`.
    #[error("connection string Endpoint '{0}' is not sb://host[:port]/")]
    BadEndpoint(String),
    /// Neither a key pair nor a shared access signature was given.
    #[error(
        "connection string has neither SharedAccessKeyName/SharedAccessKey nor SharedAccessSignature"
    )]
    MissingCredential,
    /// Only one of `SharedAccessKeyName` and `SharedAccessKey` was given.
    #[error("connection string has {0} without its pair")]
    HalfKey(&'static str),
    /// Both a key pair and a shared access signature were given.
    #[error(
        "connection string has both SharedAccessSignature and SharedAccessKeyName/SharedAccessKey"
    )]
    BothCredentials,
}

/// How requests are authorised.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A named key: tokens are signed locally.
    Key {
        /// `SharedAccessKeyName`.
        name: String,
        /// `SharedAccessKey`, used as the literal string.
        key: String,
    },
    /// A ready-made `SharedAccessSignature sr=...` token.
    Signature(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Key { name, .. } => f
                .debug_struct("Key")
                .field("name", name)
                .finish_non_exhaustive(),
            Credential::Signature(_) => f.write_str("Signature(..)"),
        }
    }
}

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Host name from `Endpoint`.
    pub host: String,
    /// Port from `Endpoint`, if given.
    pub port: Option<u16>,
    /// The credential.
    pub credential: Credential,
    /// `EntityPath`, if given.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: plain HTTP, port kept.
    pub use_development_emulator: bool,
}

/// Port of the emulator when a development connection string gives none.
pub const DEFAULT_EMULATOR_PORT: u16 = 5300;

impl ConnectionString {
    /// Parses a connection string: `;`-separated pairs split on the first `=`, keys
    /// case-insensitive, values trimmed, unknown keys ignored.
    ///
    /// # Errors
    ///
    /// A [`ConnectionStringError`] naming the part at fault.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut signature = None;
        let mut entity_path = None;
        let mut emulator = false;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ConnectionStringError::NotKeyValue(part.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            if v.is_empty() {
                return Err(ConnectionStringError::EmptyValue(k.to_string()));
            }
            match k.to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.to_string()),
                "sharedaccesskeyname" => key_name = Some(v.to_string()),
                "sharedaccesskey" => key = Some(v.to_string()),
                "sharedaccesssignature" => signature = Some(v.to_string()),
                "entitypath" => entity_path = Some(v.to_string()),
                "usedevelopmentemulator" => emulator = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::MissingEndpoint)?;
        let authority = endpoint
            .strip_prefix("sb://")
            .or_else(|| endpoint.strip_prefix("SB://"))
            .ok_or_else(|| ConnectionStringError::BadEndpoint(endpoint.clone()))?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(ConnectionStringError::BadEndpoint(endpoint));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| ConnectionStringError::BadEndpoint(endpoint.clone()))?,
                ),
            ),
            None => (authority.to_string(), None),
        };
        let credential = match (key_name, key, signature) {
            (Some(_), Some(_), Some(_)) | (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(ConnectionStringError::BothCredentials);
            }
            (Some(name), Some(key), None) => Credential::Key { name, key },
            (None, None, Some(sig)) => Credential::Signature(sig),
            (Some(_), None, None) => {
                return Err(ConnectionStringError::HalfKey("SharedAccessKeyName"));
            }
            (None, Some(_), None) => return Err(ConnectionStringError::HalfKey("SharedAccessKey")),
            (None, None, None) => return Err(ConnectionStringError::MissingCredential),
        };
        Ok(ConnectionString {
            host,
            port,
            credential,
            entity_path,
            use_development_emulator: emulator,
        })
    }

    /// The HTTP base URL, without trailing `/`: `https://host[:port]`, or for the
    /// development emulator `http://host:port` (port 5300 when absent).
    pub fn base_url(&self) -> String {
        if self.use_development_emulator {
            format!(
                "http://{}:{}",
                self.host,
                self.port.unwrap_or(DEFAULT_EMULATOR_PORT)
            )
        } else {
            match self.port {
                Some(p) if p != 443 => format!("https://{}:{p}", self.host),
                _ => format!("https://{}", self.host),
            }
        }
    }
}

impl fmt::Display for ConnectionString {
    /// Writes the string back in its canonical form (the key included: it is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint=sb://{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(";")?;
        match &self.credential {
            Credential::Key { name, key } => {
                write!(f, "SharedAccessKeyName={name};SharedAccessKey={key};")?
            }
            Credential::Signature(sig) => write!(f, "SharedAccessSignature={sig};")?,
        }
        if let Some(e) = &self.entity_path {
            write!(f, "EntityPath={e};")?;
        }
        if self.use_development_emulator {
            f.write_str("UseDevelopmentEmulator=true;")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_emulator_string() {
        let c = ConnectionString::parse("Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;").unwrap();
        assert_eq!(c.base_url(), "http://localhost:5300");
        assert_eq!(
            c.credential,
            Credential::Key {
                name: "RootManageSharedAccessKey".into(),
                key: "SAS_KEY_VALUE".into()
            }
        );
        let with_port = ConnectionString::parse("Endpoint=sb://127.0.0.1:7777;SharedAccessKeyName=a;SharedAccessKey=b=;UseDevelopmentEmulator=true").unwrap();
        assert_eq!(with_port.base_url(), "http://127.0.0.1:7777");
        assert_eq!(
            ConnectionString::parse(&with_port.to_string()).unwrap(),
            with_port
        );
    }

    #[test]
    fn azure_string() {
        let c = ConnectionString::parse("endpoint=sb://ns.servicebus.windows.net/; sharedaccesskeyname = k ;SharedAccessKey=abc==;EntityPath=t;Other=x").unwrap();
        assert_eq!(c.base_url(), "https://ns.servicebus.windows.net");
        assert_eq!(c.entity_path.as_deref(), Some("t"));
        assert!(!c.use_development_emulator);
    }

    #[test]
    fn errors_name_the_part() {
        use ConnectionStringError::*;
        let cases: [(&str, ConnectionStringError); 7] = [
            ("SharedAccessKeyName=a;SharedAccessKey=b", MissingEndpoint),
            (
                "Endpoint=http://x;SharedAccessKeyName=a;SharedAccessKey=b",
                BadEndpoint("http://x".into()),
            ),
            ("Endpoint=sb://x", MissingCredential),
            (
                "Endpoint=sb://x;SharedAccessKeyName=a",
                HalfKey("SharedAccessKeyName"),
            ),
            (
                "Endpoint=sb://x;SharedAccessKeyName=a;SharedAccessKey=b;SharedAccessSignature=s",
                BothCredentials,
            ),
            ("Endpoint=sb://x;junk", NotKeyValue("junk".into())),
            (
                "Endpoint=;SharedAccessKeyName=a;SharedAccessKey=b",
                EmptyValue("Endpoint".into()),
            ),
        ];
        for (text, err) in cases {
            assert_eq!(ConnectionString::parse(text), Err(err), "{text}");
        }
    }
}

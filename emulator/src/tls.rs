//! HTTPS for clients that insist on it: the `ServiceBusAdministrationClient`s of the npm and
//! PyPI SDKs build `https://{endpoint}` URLs whatever the connection string says.
//!
//! - `--tls` generates a local certificate authority and a server certificate it signs, for
//!   `localhost`, `127.0.0.1`, `::1` and the host name, with `rcgen`, and writes them as PEM
//!   to the TLS folder (`ca.pem`, `cert.pem`, `key.pem`). The next start reuses them, so a
//!   client that trusts `ca.pem` once keeps trusting the emulator. A CA and a leaf, rather
//!   than one self-signed certificate, because verifiers differ on a self-signed leaf used
//!   as a trust anchor (rustls refuses it); a CA is what every one of them accepts.
//! - `--tls-cert` and `--tls-key` serve the user's own certificate chain and key instead.
//!
//! The listener serves HTTPS and plain HTTP on the same port (see `http::serve`): a
//! connection whose first byte opens a TLS handshake gets TLS. So the one connection string
//! works for the admin clients (HTTPS) and for the REST clients that speak plain HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Generated into this folder on the first start, and reused from it after.
    Generated {
        /// The folder holding `ca.pem`, `cert.pem` and `key.pem`.
        dir: PathBuf,
    },
    /// The user's own certificate chain and private key, PEM files.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// Why TLS could not be set up: every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, written or parsed.
    #[error("TLS: {what} {path}: {reason}")]
    File {
        /// What the file is (certificate, key, folder).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate could not be generated or the key does not fit it.
    #[error("TLS: {0}")]
    Setup(String),
}

/// A TLS configuration ready to serve, and where its files are.
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<ServerConfig>,
    /// The certificate authority a client should trust (`None` for the user's own files).
    pub ca: Option<PathBuf>,
    /// The certificate chain served.
    pub cert: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// File names in a generated TLS folder.
const CA: &str = "ca.pem";
const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";

impl Tls {
    /// Loads the certificate `source` names, generating it first when it is a folder
    /// without one.
    ///
    /// # Errors
    ///
    /// [`TlsError::File`] naming the file that cannot be read, written or parsed;
    /// [`TlsError::Setup`] when the key does not match the certificate.
    pub fn load(source: &TlsSource) -> Result<Tls, TlsError> {
        let (ca, cert, key) = match source {
            TlsSource::Generated { dir } => {
                let (ca, cert, key) = (dir.join(CA), dir.join(CERT), dir.join(KEY));
                if !(ca.exists() && cert.exists() && key.exists()) {
                    generate(dir)?;
                    tracing::info!(dir = %dir.display(), "TLS: generated a local CA and certificate");
                }
                (Some(ca), cert, key)
            }
            TlsSource::Files { cert, key } => (None, cert.clone(), key.clone()),
        };
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| file_error("certificate", &cert, e))?;
        if chain.is_empty() {
            return Err(file_error(
                "certificate",
                &cert,
                "no CERTIFICATE block in the file",
            ));
        }
        let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| file_error("key", &key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                TlsError::Setup(format!(
                    "the key {} does not fit the certificate {}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            ca,
            cert,
        })
    }

    /// A TLS acceptor for the listener.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The names the generated certificate is valid for.
fn names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    #[cfg(target_os = "linux")]
    {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        // Only a name a certificate can carry as is (an odd host name must not stop --tls).
        let usable = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if usable && !host.is_empty() && !names.contains(&host) {
            names.push(host);
        }
    }
    names
}

/// Writes a new CA, and a server certificate and key it signs, into `dir`.
fn generate(dir: &Path) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let setup = |e: rcgen::Error| TlsError::Setup(format!("cannot generate a certificate: {e}"));
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let (from, until) = (
        rcgen::date_time_ymd(year - 1, 1, 1),
        rcgen::date_time_ymd(year + 20, 1, 1),
    );
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Service Bus emulator local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (from, until);
    let ca_key = KeyPair::generate().map_err(setup)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(setup)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names()).map_err(setup)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "Service Bus emulator");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (from, until);
    let leaf_key = KeyPair::generate().map_err(setup)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(setup)?;

    std::fs::create_dir_all(dir).map_err(|e| file_error("folder", dir, e))?;
    let write = |name: &str, text: &str, what: &'static str| {
        let path = dir.join(name);
        write_private(&path, text, what == "key").map_err(|e| file_error(what, &path, e))
    };
    // The key first and the CA last: `load` generates again unless all three exist.
    write(KEY, &leaf_key.serialize_pem(), "key")?;
    write(CERT, &(leaf_cert.pem() + &ca_cert.pem()), "certificate")?;
    write(CA, &ca_cert.pem(), "certificate")
}

/// Writes `text` to `path`, readable by its owner only when `private`.
fn write_private(path: &Path, text: &str, private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::Generated {
            dir: dir.path().join("tls"),
        };
        let first = Tls::load(&source).unwrap();
        let ca = std::fs::read(first.ca.as_ref().unwrap()).unwrap();
        let cert = std::fs::read(&first.cert).unwrap();
        let again = Tls::load(&source).unwrap();
        assert_eq!(std::fs::read(again.ca.unwrap()).unwrap(), ca);
        assert_eq!(std::fs::read(again.cert).unwrap(), cert);
        // The served chain is the leaf and the CA.
        let chain = CertificateDer::pem_slice_iter(&cert).count();
        assert_eq!(chain, 2);
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let error = Tls::load(&TlsSource::Files {
            cert: missing.clone(),
            key: missing,
        })
        .unwrap_err();
        assert!(error.to_string().contains("nope.pem"), "{error}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = Tls::load(&TlsSource::Files {
            cert: garbage.clone(),
            key: garbage,
        })
        .unwrap_err();
        assert!(error.to_string().contains("garbage.pem"), "{error}");

        // A key that belongs to another certificate.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        Tls::load(&TlsSource::Generated { dir: a.clone() }).unwrap();
        Tls::load(&TlsSource::Generated { dir: b.clone() }).unwrap();
        let error = Tls::load(&TlsSource::Files {
            cert: a.join(CERT),
            key: b.join(KEY),
        })
        .unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
    }
}

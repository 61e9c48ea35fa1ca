//! TLS on rusher's own listeners (`[server.tls]`): the certificate and key
//! read from PEM files, checked at startup with errors naming the key and
//! the path, and served through a resolver that a reload swaps without a
//! restart.
//!
//! - [`load`]: the PEM files → a checked [`CertifiedKey`] (or a [`LoadError`]).
//! - [`reload`]: the resolver every handshake asks, and the task that
//!   reloads it on SIGHUP and when the files change.
//! - [`expiry`]: the certificate's `notAfter`, for the log and a gauge.
//!
//! rustls with its `ring` provider, the one the HTTP and Redis clients
//! already use, so the binary carries a single TLS stack.

pub mod expiry;
pub mod reload;

use crate::config::TlsSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub use reload::CertResolver;

/// Which of the two files a [`LoadError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `server.tls.cert`: the certificate chain.
    Cert,
    /// `server.tls.key`: the private key.
    Key,
}

impl TlsFile {
    /// The config key that names this file.
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Cert => "server.tls.cert",
            TlsFile::Key => "server.tls.key",
        }
    }
}

/// Why the certificate or key cannot be used; `reason` names the path and
/// is meant for the user as is.
#[derive(Debug, Error)]
#[error("{reason}")]
pub struct LoadError {
    /// The file to fix.
    pub file: TlsFile,
    /// What is wrong, with the path.
    pub reason: String,
}

fn fail(file: TlsFile, reason: String) -> LoadError {
    LoadError { file, reason }
}

/// The crypto provider of every TLS listener: rustls's `ring`, chosen
/// explicitly so that no process-wide default has to be installed (and
/// two providers enabled by dependencies could not make it ambiguous).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the certificate chain and key of `settings`.
///
/// The certificate file holds the server's certificate first, then any
/// intermediates (a `fullchain.pem`); the key file a PKCS#8, PKCS#1 (RSA)
/// or SEC1 (EC) private key (the first one found). Errors: a file missing
/// or unreadable, not PEM, without a certificate or key, a key of a type
/// rustls cannot sign with, a key that does not belong to the certificate.
pub fn load(settings: &TlsSettings) -> Result<CertifiedKey, LoadError> {
    let (cert_path, key_path) = (Path::new(&settings.cert), Path::new(&settings.key));
    let chain = read_certificates(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        fail(
            TlsFile::Key,
            format!("{}: unsupported private key: {e}", key_path.display()),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(fail(
            TlsFile::Key,
            format!(
                "the private key in {} does not match the certificate in {} \
                 (server.tls.cert); were the files of two certificates mixed?",
                key_path.display(),
                cert_path.display()
            ),
        )),
        Err(e) => Err(fail(
            TlsFile::Cert,
            format!(
                "{}: the first certificate cannot be read: {e}",
                cert_path.display()
            ),
        )),
    }
}

/// The PEM text of `path`, or why not; `file` says which key names it.
fn read_pem(path: &Path, file: TlsFile) -> Result<Vec<u8>, LoadError> {
    let bytes = std::fs::read(path)
        .map_err(|e| fail(file, format!("cannot read {}: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(fail(
            file,
            format!(
                "{} is not a PEM file (no -----BEGIN line; DER files must be converted, \
                 e.g. with `openssl x509 -inform der`)",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read_pem(path, TlsFile::Cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            fail(
                TlsFile::Cert,
                format!("{}: invalid PEM: {e}", path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(fail(
            TlsFile::Cert,
            format!(
                "{} holds no certificate (-----BEGIN CERTIFICATE-----); is it the key?",
                path.display()
            ),
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read_pem(path, TlsFile::Key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => fail(
            TlsFile::Key,
            format!(
                "{} holds no private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY \
                 or EC PRIVATE KEY; an encrypted key must be decrypted first)",
                path.display()
            ),
        ),
        e => fail(
            TlsFile::Key,
            format!("{}: invalid PEM: {e}", path.display()),
        ),
    })
}

/// The rustls configuration of every TLS listener: TLS 1.2 and 1.3, no
/// client certificates, the certificate `resolver` gives per handshake.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, rustls::Error> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

impl TlsSettings {
    /// Whether TLS is on (`cert` and `key` both set; validation refuses one alone).
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }

    /// How long a client may take to finish its TLS handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// How often the files are checked for a change; `None` = only on SIGHUP.
    pub fn reload_check(&self) -> Option<Duration> {
        (self.reload_check_secs > 0).then(|| Duration::from_secs(self.reload_check_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn settings(cert: &str, key: &str) -> TlsSettings {
        TlsSettings {
            cert: cert.into(),
            key: key.into(),
            ..TlsSettings::default()
        }
    }

    fn temp_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("rusher-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn error(cert: &str, key: &str) -> LoadError {
        load(&settings(cert, key)).unwrap_err()
    }

    #[test]
    fn the_fixture_certificate_and_key_load() {
        let certified = load(&settings(&fixture("cert.pem"), &fixture("key.pem"))).unwrap();
        assert_eq!(certified.cert.len(), 1);
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let err = error("/nonexistent/cert.pem", &fixture("key.pem"));
        assert_eq!(err.file, TlsFile::Cert);
        assert!(
            err.reason
                .starts_with("cannot read /nonexistent/cert.pem: "),
            "{err}"
        );
        let err = error(&fixture("cert.pem"), "/nonexistent/key.pem");
        assert_eq!(err.file, TlsFile::Key);
    }

    #[test]
    fn a_file_that_is_not_pem_is_said_so() {
        let junk = temp_file("junk.pem", "not a certificate\n");
        let err = error(&junk, &fixture("key.pem"));
        assert_eq!(err.file, TlsFile::Cert);
        assert!(err.reason.contains("is not a PEM file"), "{err}");
    }

    #[test]
    fn swapped_files_say_what_is_missing() {
        let err = error(&fixture("key.pem"), &fixture("cert.pem"));
        assert_eq!(err.file, TlsFile::Cert);
        assert!(err.reason.contains("holds no certificate"), "{err}");
        let err = error(&fixture("cert.pem"), &fixture("cert.pem"));
        assert_eq!(err.file, TlsFile::Key);
        assert!(err.reason.contains("holds no private key"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let err = error(&fixture("cert.pem"), &fixture("other-key.pem"));
        assert_eq!(err.file, TlsFile::Key);
        assert!(
            err.reason.contains("does not match the certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_pem_section_is_refused() {
        let broken = temp_file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        );
        let err = error(&broken, &fixture("key.pem"));
        assert_eq!(err.file, TlsFile::Cert);
        assert!(err.reason.contains("invalid PEM"), "{err}");
    }
}

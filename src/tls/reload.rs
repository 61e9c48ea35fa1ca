//! The certificate each TLS handshake is given, and its reload without a
//! restart.
//!
//! [`CertResolver`] holds the current certificate in an `ArcSwap`: a
//! handshake takes it without a lock, a reload swaps it in one store.
//! Handshakes after the swap get the new certificate; connections already
//! open keep theirs (TLS does not re-present a certificate) and are not
//! touched. [`Reloader`] reloads on SIGHUP and when either file's
//! modification time or size changes (polled every `reload_check_secs`,
//! which works on every file system and with the symlink swaps of certbot
//! and Kubernetes secrets, since the stamps are those of the files pointed
//! to). A reload that fails keeps the certificate in use and logs why.

use super::{expiry, load, LoadError};
use crate::config::TlsSettings;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Gives every handshake the current certificate (whatever the SNI name:
/// one certificate per server, as `[server.tls]` configures).
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `certified` until the first reload.
    pub fn new(certified: CertifiedKey) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(certified),
        }
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What tells that a file changed: its modification time and size (`None`
/// while it cannot be read; a reload then reports why).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &str) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads the certificate of a [`CertResolver`] from the configured files.
pub struct Reloader {
    settings: TlsSettings,
    resolver: Arc<CertResolver>,
    metrics: Metrics,
    /// The files' stamps when they were last loaded (or tried).
    seen: [Stamp; 2],
}

impl Reloader {
    /// A reloader for `resolver`, whose certificate was just loaded from
    /// `settings`; sets the expiry gauge and logs when it expires.
    pub fn new(settings: TlsSettings, resolver: Arc<CertResolver>, metrics: Metrics) -> Self {
        let seen = [stamp(&settings.cert), stamp(&settings.key)];
        // Both results show (at 0) from the start, for alerts on a rate.
        for result in ["ok", "error"] {
            metrics.tls_reloads.with_label_values(&[result]);
        }
        let reloader = Reloader {
            settings,
            resolver,
            metrics,
            seen,
        };
        reloader.report_expiry();
        reloader
    }

    /// Loads the files again: on success new handshakes get the new
    /// certificate; on failure the current one stays and the error is
    /// logged. Counted in `rusher_tls_reloads_total{result}`.
    pub fn reload(&mut self, cause: &'static str) -> Result<(), LoadError> {
        // Stamps before reading: a change while we read is seen next time.
        self.seen = [stamp(&self.settings.cert), stamp(&self.settings.key)];
        match load(&self.settings) {
            Ok(certified) => {
                self.resolver.current.store(Arc::new(certified));
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cause, cert = %self.settings.cert, "TLS certificate reloaded");
                self.report_expiry();
                Ok(())
            }
            Err(error) => {
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    cause,
                    key = error.file.key(),
                    "TLS certificate not reloaded, the previous one is still served: {error}"
                );
                Err(error)
            }
        }
    }

    /// Whether either file changed since it was last loaded.
    fn files_changed(&self) -> bool {
        [stamp(&self.settings.cert), stamp(&self.settings.key)] != self.seen
    }

    fn report_expiry(&self) {
        let certified = self.resolver.current();
        let Some(not_after) = certified
            .end_entity_cert()
            .ok()
            .and_then(|der| expiry::not_after(der))
        else {
            tracing::warn!(cert = %self.settings.cert, "cannot read the certificate's expiry date");
            return;
        };
        self.metrics.tls_certificate_expiry.set(not_after);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let days_left = (not_after - now).div_euclid(86_400);
        if not_after <= now {
            tracing::warn!(cert = %self.settings.cert, not_after, "the TLS certificate has expired: clients will refuse it");
        } else {
            tracing::info!(cert = %self.settings.cert, not_after, days_left, "TLS certificate in use");
        }
    }

    /// Starts reloading on SIGHUP and, every `reload_check_secs`, when the
    /// files changed. The SIGHUP handler is in place when this returns, so
    /// a SIGHUP from then on reloads instead of ending the process.
    pub fn start(mut self) {
        #[cfg(unix)]
        let mut hangup = {
            use tokio::signal::unix::{signal, SignalKind};
            signal(SignalKind::hangup())
                .map_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; the certificate is reloaded on file change only");
                })
                .ok()
        };
        let check = self.settings.reload_check();
        actix_web::rt::spawn(async move {
            let mut ticker = check.map(|every| {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            loop {
                #[cfg(unix)]
                let hangup_received = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup_received = std::future::pending::<Option<()>>();
                let tick = async {
                    match ticker.as_mut() {
                        Some(ticker) => {
                            ticker.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    received = hangup_received => {
                        if received.is_none() {
                            return;
                        }
                        let _ = self.reload("SIGHUP");
                    }
                    () = tick => {
                        if self.files_changed() {
                            let _ = self.reload("file change");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_and_a_good_one_replaces_it() {
        let dir = std::env::temp_dir().join(format!("rusher-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::copy(fixture("cert.pem"), &cert).unwrap();
        std::fs::copy(fixture("key.pem"), &key).unwrap();
        let settings = TlsSettings {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            ..TlsSettings::default()
        };
        let first = Arc::new(CertResolver::new(load(&settings).unwrap()));
        let metrics = Metrics::new();
        let mut reloader = Reloader::new(settings, first.clone(), metrics.clone());
        let before = first.current();
        assert!(!reloader.files_changed());

        std::fs::copy(fixture("other-key.pem"), &key).unwrap();
        assert!(reloader.reload("test").is_err());
        assert!(Arc::ptr_eq(&before, &first.current()), "kept on failure");
        assert!(
            !reloader.files_changed(),
            "a failed load is not retried until the files change again"
        );

        std::fs::copy(fixture("key.pem"), &key).unwrap();
        reloader.reload("test").unwrap();
        assert!(
            !Arc::ptr_eq(&before, &first.current()),
            "swapped on success"
        );
        let counts = |result| metrics.tls_reloads.with_label_values(&[result]).get();
        assert_eq!((counts("ok"), counts("error")), (1, 1));
        assert_eq!(metrics.tls_certificate_expiry.get(), 4_949_584_273);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

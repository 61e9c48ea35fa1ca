//! VAPID (RFC 8292): an app's P-256 key, its public key for browsers
//! (`applicationServerKey`), and the `Authorization: vapid t=<JWT>, k=<key>`
//! header of each Web Push request, signed once per push-service origin
//! and reused for an hour.
//!
//! Keys are accepted in the forms pushi accepts (`vapid_key`): a PEM EC
//! private key (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`), the raw
//! 32-byte scalar in base64url (py_vapid's `from_string`, what
//! `web-push generate-vapid-keys` prints), or a DER key in base64.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use p256::SecretKey;

/// Lifetime of a JWT: `exp` is this far ahead (RFC 8292 §2: at most 24 h).
pub const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A cached JWT is signed again once it is this old (so it always has
/// at least 11 h left, and one origin costs one signature an hour).
pub const JWT_REFRESH: Duration = Duration::from_secs(3600);
/// Most origins whose JWT is cached per app; past it the cache is emptied
/// (a few push services exist, so this only bounds a misbehaving input).
const MAX_CACHED_ORIGINS: usize = 256;

/// Why a VAPID setting is refused (messages never echo the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VapidError {
    /// The private key is not in an accepted form, or not a valid P-256 key.
    #[error("{0}")]
    BadKey(String),
    /// The subject is not a `mailto:` or `https:` URI.
    #[error("{0}")]
    BadSubject(String),
}

/// One app's VAPID identity: key, subject, and its JWTs cached per origin.
pub struct Vapid {
    key: SigningKey,
    public_key: String,
    subject: String,
    /// origin → (JWT, when it was signed). Touched once per push request
    /// of this app, not on the delivery path.
    cache: Mutex<HashMap<String, (String, SystemTime)>>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// Builds the identity from the configured key text (see the module doc
    /// for the forms) and subject (see [`normalize_subject`]).
    pub fn new(private_key: &str, subject: &str) -> Result<Self, VapidError> {
        let secret = parse_private_key(private_key)?;
        let subject = normalize_subject(subject)?;
        Ok(Vapid {
            public_key: URL_SAFE_NO_PAD.encode(super::ece::public_key_bytes(&secret.public_key())),
            key: SigningKey::from(secret),
            subject,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The app's VAPID identity from its config: `None` when it has no
    /// `vapid_private_key` (it cannot send Web Push).
    pub fn from_app(app: &crate::config::AppConfig) -> Result<Option<Self>, VapidError> {
        match &app.vapid_private_key {
            None => Ok(None),
            Some(key) => {
                let subject = app.vapid_subject.as_deref().ok_or_else(|| {
                    VapidError::BadSubject(
                        "vapid_subject is required with vapid_private_key (a mailto: or https: contact URI)"
                            .into(),
                    )
                })?;
                Vapid::new(key, subject).map(Some)
            }
        }
    }

    /// The public key, base64url (no padding) of the uncompressed point:
    /// what a browser passes as `applicationServerKey` and what `k=` carries.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The subject (`sub` claim), normalized.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `Authorization` header value for a request to `origin`
    /// (`scheme://host[:port]`, the JWT's `aud`), at time `now`: a cached
    /// JWT while it is younger than [`JWT_REFRESH`], else a new one
    /// expiring [`JWT_LIFETIME`] after `now`.
    pub fn authorization(&self, origin: &str, now: SystemTime) -> String {
        let jwt = {
            // A poisoned lock only means another request panicked mid-insert:
            // the map itself is still valid.
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(origin) {
                Some((jwt, signed))
                    if now
                        .duration_since(*signed)
                        .is_ok_and(|age| age < JWT_REFRESH) =>
                {
                    jwt.clone()
                }
                _ => {
                    let jwt = self.sign_jwt(origin, now);
                    if cache.len() >= MAX_CACHED_ORIGINS {
                        cache.clear();
                    }
                    cache.insert(origin.to_string(), (jwt.clone(), now));
                    jwt
                }
            }
        };
        format!("vapid t={jwt}, k={}", self.public_key)
    }

    /// An ES256 JWT `{"typ":"JWT","alg":"ES256"}.{"aud","exp","sub"}`
    /// (RFC 8292 §2, RFC 7515 with the 64-byte `r|s` signature).
    fn sign_jwt(&self, origin: &str, now: SystemTime) -> String {
        let exp = (now + JWT_LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": origin, "exp": exp, "sub": self.subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Parses a VAPID private key: PEM (SEC1 or PKCS#8), a base64url or base64
/// 32-byte scalar, or base64 DER (SEC1 or PKCS#8).
pub fn parse_private_key(text: &str) -> Result<SecretKey, VapidError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(VapidError::BadKey("vapid_private_key is empty".into()));
    }
    if text.starts_with("-----BEGIN") {
        return SecretKey::from_sec1_pem(text)
            .ok()
            .or_else(|| SecretKey::from_pkcs8_pem(text).ok())
            .ok_or_else(|| {
                VapidError::BadKey(
                    "vapid_private_key is PEM but not a P-256 (prime256v1) EC private key \
                     (`EC PRIVATE KEY` or unencrypted PKCS#8 `PRIVATE KEY`)"
                        .into(),
                )
            });
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = URL_SAFE_NO_PAD
        .decode(compact.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(&compact))
        .map_err(|_| {
            VapidError::BadKey(
                "vapid_private_key is neither PEM nor base64url/base64 (expected the raw \
                 32-byte P-256 private key in base64url, or a PEM EC private key)"
                    .into(),
            )
        })?;
    if bytes.len() == 32 {
        return SecretKey::from_slice(&bytes).map_err(|_| {
            VapidError::BadKey(
                "vapid_private_key is 32 bytes but not a valid P-256 private key (zero or not below the group order)"
                    .into(),
            )
        });
    }
    SecretKey::from_sec1_der(&bytes)
        .ok()
        .or_else(|| SecretKey::from_pkcs8_der(&bytes).ok())
        .ok_or_else(|| {
            VapidError::BadKey(format!(
                "vapid_private_key decodes to {} bytes: not a raw 32-byte P-256 key nor a DER EC private key",
                bytes.len()
            ))
        })
}

/// The public key of a configured private key, base64url (no padding) of
/// the uncompressed point: what pushi's `GET /vapid_key` answers.
pub fn public_key_base64url(private_key: &str) -> Result<String, VapidError> {
    let secret = parse_private_key(private_key)?;
    Ok(URL_SAFE_NO_PAD.encode(super::ece::public_key_bytes(&secret.public_key())))
}

/// The `sub` claim: a `mailto:` or `https:` URI (RFC 8292 §2.1); a bare
/// e-mail address gets `mailto:` in front, as pushi does.
pub fn normalize_subject(subject: &str) -> Result<String, VapidError> {
    let subject = subject.trim();
    let ok = |rest: &str| !rest.is_empty() && !rest.chars().any(char::is_whitespace);
    if let Some(rest) = subject.strip_prefix("mailto:") {
        if ok(rest) && rest.contains('@') {
            return Ok(subject.to_string());
        }
    } else if let Some(rest) = subject.strip_prefix("https://") {
        if ok(rest) {
            return Ok(subject.to_string());
        }
    } else if ok(subject) && subject.contains('@') && !subject.contains(':') {
        return Ok(format!("mailto:{subject}"));
    }
    Err(VapidError::BadSubject(
        "vapid_subject must be a mailto: or https: URI (e.g. mailto:ops@example.com), \
         the contact push services use when this app misbehaves"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::ece::tests::{b64, AS_PRIVATE, AS_PUBLIC};
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;

    // Made with `openssl ecparam -name prime256v1 -genkey -noout` and
    // `openssl pkcs8 -topk8 -nocrypt` from it (same key).
    const SEC1_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFO4kFNEbJd3bSkxEp+wFB2pFZ5Mq9oKIWO4vp2dilkdoAoGCCqGSM49
AwEHoUQDQgAEtDyaeq6gK8JIovMba+47DCdnVOHa3rWVtXVGq+8qJJbHFJ5Jb14r
c+C1+RGpMh8ZqBGTh0baAD/1z1aJ97L0+w==
-----END EC PRIVATE KEY-----
";
    const PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgU7iQU0Rsl3dtKTES
n7AUHakVnkyr2gohY7i+nZ2KWR2hRANCAAS0PJp6rqArwkii8xtr7jsMJ2dU4dre
tZW1dUar7yoklscUnklvXitz4LX5EakyHxmoEZOHRtoAP/XPVon3svT7
-----END PRIVATE KEY-----
";
    /// `openssl ec -pubout` of that key: the last 65 bytes, base64url.
    const PEM_PUBLIC: &str =
        "BLQ8mnquoCvCSKLzG2vuOwwnZ1Th2t61lbV1RqvvKiSWxxSeSW9eK3PgtfkRqTIfGagRk4dG2gA_9c9Wifey9Ps";

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn accepts_pushi_key_forms() {
        // The RFC 8291 §5 sender key: raw base64url → its published public key.
        assert_eq!(public_key_base64url(AS_PRIVATE).unwrap(), AS_PUBLIC);
        // The same scalar in standard base64 with padding, and with spaces.
        let std = STANDARD.encode(b64(AS_PRIVATE));
        assert_eq!(public_key_base64url(&std).unwrap(), AS_PUBLIC);
        assert_eq!(
            public_key_base64url(&format!("  {AS_PRIVATE}\n")).unwrap(),
            AS_PUBLIC
        );
        // SEC1 and PKCS#8 PEM of one key (what py_vapid's private_pem writes)
        // give one public key, and DER of it in base64 too.
        let a = public_key_base64url(SEC1_PEM).unwrap();
        assert_eq!(a, PEM_PUBLIC);
        assert_eq!(public_key_base64url(PKCS8_PEM).unwrap(), PEM_PUBLIC);
        let der: String = SEC1_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(public_key_base64url(&der).unwrap(), a);
    }

    #[test]
    fn bad_keys_are_clear_errors() {
        let cases = [
            ("", "empty"),
            ("not a key!", "neither PEM nor base64"),
            (&URL_SAFE_NO_PAD.encode([7u8; 31]), "31 bytes"),
            (&URL_SAFE_NO_PAD.encode([0u8; 32]), "not a valid P-256"),
            (&URL_SAFE_NO_PAD.encode([0xffu8; 32]), "not a valid P-256"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK==\n-----END RSA PRIVATE KEY-----\n",
                "not a P-256",
            ),
        ];
        for (key, want) in cases {
            let err = parse_private_key(key).unwrap_err().to_string();
            assert!(err.contains(want), "{key:?}: {err}");
            assert!(err.contains("vapid_private_key"), "{err}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(normalize_subject("mailto:a@b.c").unwrap(), "mailto:a@b.c");
        assert_eq!(normalize_subject("a@b.c").unwrap(), "mailto:a@b.c");
        assert_eq!(
            normalize_subject("https://example.com/contact").unwrap(),
            "https://example.com/contact"
        );
        for bad in [
            "",
            "mailto:",
            "http://example.com",
            "ops",
            "https://",
            "mailto:a b@c",
        ] {
            let err = normalize_subject(bad).unwrap_err().to_string();
            assert!(err.contains("vapid_subject"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn jwt_header_claims_and_signature() {
        let vapid = Vapid::new(AS_PRIVATE, "ops@example.com").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = vapid.authorization("https://push.example.net", now);
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, AS_PUBLIC);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]),
            serde_json::json!({"typ": "JWT", "alg": "ES256"})
        );
        assert_eq!(
            decode_part(parts[1]),
            serde_json::json!({
                "aud": "https://push.example.net",
                "exp": 1_700_000_000 + 12 * 3600,
                "sub": "mailto:ops@example.com",
            })
        );
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let key = VerifyingKey::from_sec1_bytes(&b64(k)).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(key.verify(input.as_bytes(), &signature).is_ok());
        assert!(key.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn jwt_cached_per_origin_for_an_hour() {
        let vapid = Vapid::new(AS_PRIVATE, "mailto:ops@example.com").unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = vapid.authorization("https://a.example", t0);
        assert_eq!(
            vapid.authorization("https://a.example", t0 + Duration::from_secs(3599)),
            a,
            "reused within the hour"
        );
        assert_ne!(
            vapid.authorization("https://b.example", t0),
            a,
            "per origin"
        );
        let later = vapid.authorization("https://a.example", t0 + JWT_REFRESH);
        assert_ne!(later, a, "signed again after an hour");
        let exp = decode_part(later.split('.').nth(1).unwrap())["exp"]
            .as_u64()
            .unwrap();
        assert_eq!(exp, 1_700_000_000 + 3600 + 12 * 3600);
    }

    #[test]
    fn from_app_needs_a_subject() {
        let mut app = crate::config::AppConfig::with_credentials("a", "k", "s");
        assert!(Vapid::from_app(&app).unwrap().is_none());
        app.vapid_private_key = Some(AS_PRIVATE.into());
        let err = Vapid::from_app(&app).unwrap_err().to_string();
        assert!(err.contains("vapid_subject"), "{err}");
        app.vapid_subject = Some("mailto:ops@example.com".into());
        let vapid = Vapid::from_app(&app).unwrap().unwrap();
        assert_eq!(vapid.public_key(), AS_PUBLIC);
    }
}

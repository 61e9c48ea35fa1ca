//! The console's login session: a signed cookie naming one app.
//!
//! After login the browser holds no secret, only
//! `rusher_console=<app id, base64url>.<expiry, Unix seconds>.<proof>.<HMAC-SHA256, hex>`,
//! `HttpOnly` (page scripts cannot read it), `SameSite=Strict` (no other
//! site's page can make the browser send it), `Path=/console`, `Secure`
//! when served over TLS, valid [`SESSION_LIFETIME`]. Nothing is stored on
//! the server: any node with the same key accepts it. The key is
//! `[console] session_secret` (hashed), else random per process — then a
//! restart logs everyone out, and nodes behind one load balancer must share
//! a `session_secret` or a console request that lands on another node is 401.
//!
//! A session is bound to what proved the login (`<proof>`: `s` the app's
//! secret, `a` the admin token): the HMAC also covers that credential's
//! current value, looked up again on every call, so rotating the app's
//! secret (admin API, apps store) ends every session opened with the old one
//! at once. The cookie carries only the HMAC, keyed by the session key, so
//! it reveals nothing of the credential.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cookie's name.
pub const COOKIE: &str = "rusher_console";

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(3600);

/// Signs and checks session cookies.
pub struct SessionKeys {
    key: [u8; 32],
}

/// What proved a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The app's secret.
    AppSecret,
    /// The `[admin] token`.
    AdminToken,
}

impl Proof {
    fn mark(self) -> &'static str {
        match self {
            Proof::AppSecret => "s",
            Proof::AdminToken => "a",
        }
    }

    fn from_mark(mark: &str) -> Option<Proof> {
        match mark {
            "s" => Some(Proof::AppSecret),
            "a" => Some(Proof::AdminToken),
            _ => None,
        }
    }
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SessionKeys {
    /// Keys from `secret` (every node configured alike accepts the same
    /// cookies), or random ones for this process.
    pub fn new(secret: Option<&str>) -> Self {
        let key = match secret {
            Some(secret) => Sha256::digest(secret.as_bytes()).into(),
            None => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                key
            }
        };
        SessionKeys { key }
    }

    /// The HMAC of the cookie's signed part and the credential it is bound
    /// to (after a newline, which the signed part never holds).
    fn mac(&self, signed: &str, credential: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(signed.as_bytes());
        mac.update(b"\n");
        mac.update(credential.as_bytes());
        mac
    }

    /// The cookie value of a session of `app_id` starting at `now`, proven
    /// by `proof` whose value is `credential` (the secret or token given).
    pub fn issue(&self, app_id: &str, proof: Proof, credential: &str, now: SystemTime) -> String {
        let expires = unix(now) + SESSION_LIFETIME.as_secs();
        let signed = format!(
            "{}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(app_id),
            proof.mark()
        );
        let tag = hex::encode(self.mac(&signed, credential).finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The app of a valid, unexpired cookie `value` whose credential is
    /// still what `credential(app, proof)` says now (`None`: the app or the
    /// admin token is gone); `None` for anything else. The tag is compared
    /// in constant time.
    pub fn verify(
        &self,
        value: &str,
        now: SystemTime,
        credential: impl FnOnce(&str, Proof) -> Option<String>,
    ) -> Option<String> {
        let (signed, tag) = value.rsplit_once('.')?;
        let mut parts = signed.split('.');
        let (app, expires, proof) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let proof = Proof::from_mark(proof)?;
        let tag = hex::decode(tag).ok()?;
        let app = String::from_utf8(URL_SAFE_NO_PAD.decode(app).ok()?).ok()?;
        let credential = credential(&app, proof)?;
        self.mac(signed, &credential).verify_slice(&tag).ok()?;
        if expires.parse::<u64>().ok()? <= unix(now) {
            return None;
        }
        Some(app)
    }
}

/// The `Set-Cookie` value carrying `value` (empty with `Max-Age=0` logs out).
pub fn set_cookie(value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The session cookie's value among a request's `Cookie` header values.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every app's secret is `secret`, the admin token `token`.
    fn current(app: &str, proof: Proof) -> Option<String> {
        Some(match proof {
            Proof::AppSecret => format!("secret-of-{app}"),
            Proof::AdminToken => "token".to_owned(),
        })
    }

    #[test]
    fn a_cookie_names_its_app_until_it_expires() {
        let keys = SessionKeys::new(Some("a-shared-console-secret"));
        let now = SystemTime::now();
        let cookie = keys.issue(
            "app.with-dots",
            Proof::AppSecret,
            "secret-of-app.with-dots",
            now,
        );
        assert_eq!(
            keys.verify(&cookie, now, current).as_deref(),
            Some("app.with-dots")
        );
        // Another node with the same secret accepts it; one without does not.
        let same = SessionKeys::new(Some("a-shared-console-secret"));
        assert!(same.verify(&cookie, now, current).is_some());
        assert!(SessionKeys::new(None)
            .verify(&cookie, now, current)
            .is_none());
        let later = now + SESSION_LIFETIME + Duration::from_secs(1);
        assert_eq!(keys.verify(&cookie, later, current), None);
    }

    #[test]
    fn a_session_ends_when_its_credential_changes() {
        let keys = SessionKeys::new(None);
        let now = SystemTime::now();
        let cookie = keys.issue("a", Proof::AppSecret, "secret-of-a", now);
        assert!(!cookie.contains("secret-of-a"));
        let rotated = |_: &str, _: Proof| Some("rotated".to_owned());
        assert_eq!(keys.verify(&cookie, now, rotated), None);
        assert_eq!(keys.verify(&cookie, now, |_, _| None), None, "app gone");
        let admin = keys.issue("a", Proof::AdminToken, "token", now);
        assert_eq!(keys.verify(&admin, now, current).as_deref(), Some("a"));
        assert_eq!(keys.verify(&admin, now, rotated), None);
        // The proof mark is signed: an admin session cannot pass as a secret one.
        let swapped = admin.replacen(".a.", ".s.", 1);
        assert_eq!(
            keys.verify(&swapped, now, |_, _| Some("token".to_owned())),
            None
        );
    }

    #[test]
    fn a_cookie_changed_anywhere_is_refused() {
        let keys = SessionKeys::new(None);
        let now = SystemTime::now();
        let cookie = keys.issue("a", Proof::AppSecret, "secret-of-a", now);
        let other_app = cookie.replacen(
            &URL_SAFE_NO_PAD.encode("a"),
            &URL_SAFE_NO_PAD.encode("b"),
            1,
        );
        assert_eq!(keys.verify(&other_app, now, current), None);
        let (signed, _) = cookie.rsplit_once('.').expect("a tag");
        let (app, _) = signed.split_once('.').expect("an expiry");
        let longer = format!("{app}.{}.s.{}", u64::MAX, "00".repeat(32));
        assert_eq!(keys.verify(&longer, now, current), None);
        for junk in ["", ".", "..", "a.b.c", "YQ.1.zz", "YQ.1.s.zz", "YQ.1.x.00"] {
            assert_eq!(keys.verify(junk, now, current), None, "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let headers = ["a=1; rusher_console=v.1.t", "b=2"];
        assert_eq!(cookie_value(headers.into_iter()), Some("v.1.t"));
        assert_eq!(cookie_value(["a=1"].into_iter()), None);
        let cookie = set_cookie("x", SESSION_LIFETIME, true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
    }
}

//! pushi's session tokens (`sid`), stateless: a token is signed with the
//! app's secret and carries the app id and its expiry, so every node of a
//! cluster accepts it without shared state, and it survives a restart.
//!
//! Token: `{hex(app_id)}.{expiry}.{nonce}.{signature}`, where `expiry` is
//! Unix seconds, `nonce` 16 random bytes in hex (so two logins never give
//! the same token), and `signature` the hex HMAC-SHA256, keyed with the app
//! secret, of `pushi-session\n{app_id}\n{expiry}\n{nonce}`. Changing the
//! app's secret invalidates its tokens. Every character is URL-safe, as the
//! client sends it in the query string (`?sid=`).
//!
//! `logout` revokes a token: the nonce is kept (bounded, see [`Revoked`])
//! until the token would expire anyway, on the node that serves it at once
//! and on the other nodes of a Redis cluster as the announcement reaches
//! them ([`crate::hub::invalidation`]). A node cut off from Redis then, or
//! started after, still accepts the token until its expiry (README).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use thiserror::Error;

/// Why a token is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not `hex.digits.hex.hex`.
    #[error("malformed session token")]
    Malformed,
    /// Names an app this server does not have.
    #[error("the session's app does not exist")]
    UnknownApp,
    /// The signature does not verify with the app's secret.
    #[error("invalid session token")]
    BadSignature,
    /// Past its expiry.
    #[error("session expired, log in again")]
    Expired,
    /// Logged out.
    #[error("session ended by logout, log in again")]
    Revoked,
}

/// The parts of a well-formed token, before its signature is checked.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenParts {
    /// The app the session is for.
    pub app_id: String,
    /// Unix seconds after which the token is refused.
    pub expiry: u64,
    /// Random, unique per login; what logout revokes.
    pub nonce: String,
    signature: Vec<u8>,
}

fn mac(secret: &str, app_id: &str, expiry: u64, nonce: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(format!("pushi-session\n{app_id}\n{expiry}\n{nonce}").as_bytes());
    mac
}

/// A new token for `app_id`, valid until `expiry` (Unix seconds).
pub fn issue(app_id: &str, secret: &str, expiry: u64) -> String {
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let signature = hex::encode(mac(secret, app_id, expiry, &nonce).finalize().into_bytes());
    format!("{}.{expiry}.{nonce}.{signature}", hex::encode(app_id))
}

/// Splits a token; says nothing about its validity yet.
pub fn parse(token: &str) -> Result<TokenParts, TokenError> {
    let mut parts = token.split('.');
    let (Some(app), Some(expiry), Some(nonce), Some(signature), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let app_id = hex::decode(app)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or(TokenError::Malformed)?;
    let expiry = expiry.parse().map_err(|_| TokenError::Malformed)?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed);
    }
    let signature = hex::decode(signature).map_err(|_| TokenError::Malformed)?;
    Ok(TokenParts {
        app_id,
        expiry,
        nonce: nonce.to_owned(),
        signature,
    })
}

/// Checks the signature (constant time) with the app's `secret` and the
/// expiry against `now` (Unix seconds).
pub fn verify(parts: &TokenParts, secret: &str, now: u64) -> Result<(), TokenError> {
    mac(secret, &parts.app_id, parts.expiry, &parts.nonce)
        .verify_slice(&parts.signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now >= parts.expiry {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// Nonces of logged-out tokens, each kept until its token's expiry; at most
/// `cap` of them (the ones expiring first are dropped to make room). Only
/// `logout` and session checks take the lock, never event delivery.
#[derive(Debug)]
pub struct Revoked {
    cap: usize,
    nonces: Mutex<HashMap<String, u64>>,
}

impl Revoked {
    /// An empty set holding at most `cap` nonces.
    pub fn new(cap: usize) -> Self {
        Revoked {
            cap: cap.max(1),
            nonces: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding it leaves a plain map: still usable.
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revokes the token with `nonce` until `expiry`.
    pub fn revoke(&self, nonce: &str, expiry: u64, now: u64) {
        let mut nonces = self.lock();
        if nonces.len() >= self.cap {
            nonces.retain(|_, expiry| *expiry > now);
        }
        while nonces.len() >= self.cap {
            let Some(first) = nonces
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(nonce, _)| nonce.clone())
            else {
                break;
            };
            nonces.remove(&first);
        }
        nonces.insert(nonce.to_owned(), expiry);
    }

    /// Whether the token with `nonce` was logged out.
    pub fn contains(&self, nonce: &str) -> bool {
        self.lock().contains_key(nonce)
    }

    /// How many nonces are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_with_its_secret_only_until_expiry() {
        let token = issue("app-id", "secret", 1000);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        let parts = parse(&token).unwrap();
        assert_eq!(parts.app_id, "app-id");
        assert_eq!(parts.expiry, 1000);
        assert_eq!(verify(&parts, "secret", 999), Ok(()));
        assert_eq!(verify(&parts, "secret", 1000), Err(TokenError::Expired));
        assert_eq!(verify(&parts, "other", 999), Err(TokenError::BadSignature));
        assert_ne!(issue("app-id", "secret", 1000), token, "nonce per login");
    }

    #[test]
    fn a_changed_app_id_or_expiry_breaks_the_signature() {
        let token = issue("a", "secret", 1000);
        let mut fields: Vec<String> = token.split('.').map(str::to_owned).collect();
        fields[1] = "999999".into();
        let longer = parse(&fields.join(".")).unwrap();
        assert_eq!(verify(&longer, "secret", 1), Err(TokenError::BadSignature));
        fields[1] = "1000".into();
        fields[0] = hex::encode("b");
        let other_app = parse(&fields.join(".")).unwrap();
        assert_eq!(
            verify(&other_app, "secret", 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in [
            "",
            "abc",
            "61.1.00.00.00",
            "zz.1.00000000000000000000000000000000.00",
            "61.x.00000000000000000000000000000000.00",
            "61.1.short.00",
            "61.1.00000000000000000000000000000000.zz",
        ] {
            assert_eq!(parse(token), Err(TokenError::Malformed), "{token:?}");
        }
    }

    #[test]
    fn revoked_nonces_are_bounded_dropping_the_expired_then_the_earliest() {
        let revoked = Revoked::new(2);
        revoked.revoke("a", 10, 0);
        revoked.revoke("b", 20, 0);
        assert!(revoked.contains("a") && revoked.contains("b"));
        revoked.revoke("c", 30, 0);
        assert_eq!(revoked.len(), 2);
        assert!(!revoked.contains("a"), "earliest expiry dropped first");
        revoked.revoke("d", 40, 25);
        assert!(!revoked.contains("b") && revoked.contains("c") && revoked.contains("d"));
    }
}

//! Signatures: the HTTP API request signature (PROTOCOL.md §5) and presence
//! channel auth (§2).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Lowercase hex MD5 of `body`.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Path and signed query of an API request:
/// `{path}?auth_key=..&auth_timestamp=..&auth_version=1.0&body_md5=..&auth_signature=..`.
///
/// The signature covers `METHOD\nPATH\nQUERY` where QUERY is every parameter
/// but `auth_signature`, sorted by key (the order written here is sorted).
pub fn signed_uri(
    method: &str,
    path: &str,
    key: &str,
    secret: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    signed_uri_with(method, path, key, secret, body, timestamp, &[])
}

/// [`signed_uri`] with more query parameters (`extra`, values that need no
/// escaping), signed along with the auth ones, all sorted by key.
pub fn signed_uri_with(
    method: &str,
    path: &str,
    key: &str,
    secret: &str,
    body: &[u8],
    timestamp: u64,
    extra: &[(&str, &str)],
) -> String {
    let md5 = md5_hex(body);
    let timestamp = timestamp.to_string();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("auth_key", key),
        ("auth_timestamp", &timestamp),
        ("auth_version", "1.0"),
        ("body_md5", &md5),
    ];
    pairs.extend_from_slice(extra);
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signature = hmac_hex(secret, &format!("{method}\n{path}\n{query}"));
    format!("{path}?{query}&auth_signature={signature}")
}

/// `auth` for a presence subscription: `key:hex(hmac(secret, socket_id:channel:channel_data))`.
pub fn presence_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
) -> String {
    let signature = hmac_hex(secret, &format!("{socket_id}:{channel}:{channel_data}"));
    format!("{key}:{signature}")
}

/// `auth` for a private subscription: `key:hex(hmac(secret, socket_id:channel))`.
pub fn private_auth(key: &str, secret: &str, socket_id: &str, channel: &str) -> String {
    format!(
        "{key}:{}",
        hmac_hex(secret, &format!("{socket_id}:{channel}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_auth_matches_pusher_docs_example() {
        assert_eq!(
            private_auth(
                "278d425bdf160c739803",
                "7ad3773142a6692b25b8",
                "1234.1234",
                "private-foobar"
            ),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn request_signature_matches_pusher_docs_example() {
        // Pusher's REST API docs: "Worked authentication example".
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(md5_hex(body), "ec365a775a4cd0599faeb73354201b6f");
        let uri = signed_uri(
            "POST",
            "/apps/3/events",
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            body,
            1353088179,
        );
        assert_eq!(
            uri,
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn presence_auth_covers_channel_data() {
        let a = presence_auth("k", "s", "1.2", "presence-x", r#"{"user_id":"u1"}"#);
        let b = presence_auth("k", "s", "1.2", "presence-x", r#"{"user_id":"u2"}"#);
        assert!(a.starts_with("k:"));
        assert_ne!(a, b);
    }
}

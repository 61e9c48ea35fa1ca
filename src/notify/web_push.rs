//! The Web Push sender: one encrypted message (RFC 8291, [`super::ece`])
//! POSTed to a subscription's push-service endpoint (RFC 8030 §5) with a
//! VAPID `Authorization` ([`super::vapid`], RFC 8292), and the push
//! service's answer classified for the caller (delivered, gone, retry,
//! failed). Queues, retries and deleting gone registrations belong to the
//! caller (the notification dispatch).

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::PublicKey;
use serde::{Deserialize, Serialize};

use super::ece::{self, AUTH_SECRET_LEN, PUBLIC_KEY_LEN};
use super::vapid::Vapid;

/// How long one request to a push service may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `TTL` of a message, seconds (pushi's `WEB_PUSH_TTL`: one day).
pub const DEFAULT_TTL_SECS: u32 = 86_400;
/// Longest `TTL` accepted in the config (push services keep a message at
/// most about four weeks and clamp anything longer).
pub const MAX_TTL_SECS: u32 = 28 * 86_400;

/// A browser's push subscription as `PushSubscription.toJSON()` gives it:
/// the endpoint URL and the `keys.p256dh` / `keys.auth` strings (base64url;
/// standard base64 and padding are accepted too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    /// The push service's URL for this subscription (https, or http for
    /// local test services).
    pub endpoint: String,
    /// The subscription's P-256 public key: a 65-byte uncompressed point.
    pub p256dh: String,
    /// The subscription's 16-byte authentication secret.
    pub auth: String,
}

/// Why a subscription is refused (a 400 for whoever registered it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The endpoint is not an absolute http(s) URL with a host.
    #[error("web_push.endpoint must be an https:// (or http://) URL")]
    Endpoint,
    /// `p256dh` is not base64url of a 65-byte point on P-256.
    #[error("web_push.p256dh must be the subscription's P-256 public key: 65 bytes (uncompressed point), base64url")]
    P256dh,
    /// `auth` is not base64url of 16 bytes.
    #[error("web_push.auth must be the subscription's 16-byte auth secret, base64url")]
    Auth,
}

/// A subscription checked and decoded, ready to encrypt for.
#[derive(Debug, Clone)]
pub struct SubscriptionKeys {
    /// The endpoint, parsed.
    pub endpoint: reqwest::Url,
    /// `scheme://host[:port]` of the endpoint: the VAPID `aud`.
    pub origin: String,
    /// The subscription's public key.
    pub public_key: PublicKey,
    /// The subscription's auth secret.
    pub auth: [u8; AUTH_SECRET_LEN],
}

impl WebPushSubscription {
    /// Checks the endpoint and decodes the keys (the registration route
    /// calls it to refuse a bad subscription with 400 at once).
    pub fn validate(&self) -> Result<SubscriptionKeys, SubscriptionError> {
        let endpoint =
            reqwest::Url::parse(self.endpoint.trim()).map_err(|_| SubscriptionError::Endpoint)?;
        if !matches!(endpoint.scheme(), "https" | "http") || endpoint.host_str().is_none() {
            return Err(SubscriptionError::Endpoint);
        }
        let origin = endpoint.origin().ascii_serialization();
        let p256dh = decode_b64(&self.p256dh).ok_or(SubscriptionError::P256dh)?;
        if p256dh.len() != PUBLIC_KEY_LEN || p256dh[0] != 0x04 {
            return Err(SubscriptionError::P256dh);
        }
        let public_key =
            PublicKey::from_sec1_bytes(&p256dh).map_err(|_| SubscriptionError::P256dh)?;
        let auth = decode_b64(&self.auth)
            .and_then(|bytes| <[u8; AUTH_SECRET_LEN]>::try_from(bytes).ok())
            .ok_or(SubscriptionError::Auth)?;
        Ok(SubscriptionKeys {
            endpoint,
            origin,
            public_key,
            auth,
        })
    }
}

/// base64url without padding as browsers send it; padding or the standard
/// alphabet are tolerated (some client libraries send either).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(text))
        .ok()
}

/// RFC 8030 §5.3 `Urgency` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// `very-low`: on power and Wi-Fi only.
    VeryLow,
    /// `low`: on power or Wi-Fi.
    Low,
    /// `normal`: the push service's default.
    Normal,
    /// `high`: now, even on low battery.
    High,
}

impl Urgency {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx (201 Created): the push service took it.
    Delivered,
    /// 404 or 410: the subscription is gone; the caller deletes the
    /// registration and does not retry.
    Gone,
    /// 429, 5xx or a network error / timeout: try again later, not sooner
    /// than `after` when the push service said so (`Retry-After` seconds).
    Retry {
        /// What happened, for logs.
        reason: String,
        /// The push service's `Retry-After`, when given in seconds.
        after: Option<Duration>,
    },
    /// Not worth retrying: a bad subscription, a payload over the record
    /// limit, or another 4xx (400 bad request, 401/403 VAPID refused, 413).
    Failed(String),
}

/// Sends `payload` (at most [`ece::MAX_PLAINTEXT_LEN`] bytes) to one
/// subscription: encrypts it, signs (or reuses) the VAPID JWT for the
/// endpoint's origin, POSTs it with `Content-Encoding: aes128gcm`, `TTL:
/// ttl_secs` and `Urgency` when given, and classifies the answer
/// ([`classify`]). Never panics; every error is an outcome.
pub async fn send(
    client: &reqwest::Client,
    vapid: &Vapid,
    sub: &WebPushSubscription,
    payload: &[u8],
    ttl_secs: u32,
    urgency: Option<Urgency>,
) -> SendOutcome {
    let keys = match sub.validate() {
        Ok(keys) => keys,
        Err(err) => return SendOutcome::Failed(err.to_string()),
    };
    let body = match ece::encrypt(&keys.public_key, &keys.auth, payload) {
        Ok(body) => body,
        Err(err) => return SendOutcome::Failed(err.to_string()),
    };
    let mut request = client
        .post(keys.endpoint.clone())
        .timeout(REQUEST_TIMEOUT)
        .header("Content-Encoding", "aes128gcm")
        .header("Content-Type", "application/octet-stream")
        .header("TTL", ttl_secs.to_string())
        .header(
            "Authorization",
            vapid.authorization(&keys.origin, SystemTime::now()),
        )
        .body(body);
    if let Some(urgency) = urgency {
        request = request.header("Urgency", urgency.as_str());
    }
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            classify(status, retry_after.as_deref())
        }
        Err(err) => SendOutcome::Retry {
            reason: format!("push service unreachable: {err}"),
            after: None,
        },
    };
    tracing::debug!(origin = %keys.origin, ?outcome, "web push sent");
    outcome
}

/// The outcome of a push service's answer (RFC 8030 §5-§8, and what
/// browsers' push services document): 2xx delivered; 404/410 gone; 429
/// and 5xx retried, after `Retry-After` seconds when given (an HTTP-date
/// there is ignored: the caller's back-off applies); other statuses failed.
pub fn classify(status: u16, retry_after: Option<&str>) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::Delivered,
        404 | 410 => SendOutcome::Gone,
        429 | 500..=599 => SendOutcome::Retry {
            reason: format!("push service answered {status}"),
            after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        413 => SendOutcome::Failed("push service answered 413: payload too large".into()),
        _ => SendOutcome::Failed(format!("push service answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::ece::tests::{AS_PRIVATE, AUTH, UA_PUBLIC};

    fn sub(endpoint: &str, p256dh: &str, auth: &str) -> WebPushSubscription {
        WebPushSubscription {
            endpoint: endpoint.into(),
            p256dh: p256dh.into(),
            auth: auth.into(),
        }
    }

    #[test]
    fn validates_subscriptions() {
        let keys = sub("https://push.example.net:8443/wp/abc?x=1", UA_PUBLIC, AUTH)
            .validate()
            .unwrap();
        assert_eq!(keys.origin, "https://push.example.net:8443");
        let keys = sub("https://fcm.googleapis.com/fcm/send/x", UA_PUBLIC, AUTH)
            .validate()
            .unwrap();
        assert_eq!(
            keys.origin, "https://fcm.googleapis.com",
            "default port dropped"
        );
        // Padding and the standard alphabet are tolerated.
        let padded = STANDARD.encode(URL_SAFE_NO_PAD.decode(AUTH).unwrap());
        assert!(sub("http://127.0.0.1:9/p", UA_PUBLIC, &padded)
            .validate()
            .is_ok());

        let compressed = {
            let mut bytes = URL_SAFE_NO_PAD.decode(UA_PUBLIC).unwrap();
            bytes.truncate(33);
            bytes[0] = 0x02;
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let off_curve = {
            let mut bytes = URL_SAFE_NO_PAD.decode(UA_PUBLIC).unwrap();
            bytes[64] ^= 1;
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let cases = [
            (sub("", UA_PUBLIC, AUTH), SubscriptionError::Endpoint),
            (
                sub("push.example.net/x", UA_PUBLIC, AUTH),
                SubscriptionError::Endpoint,
            ),
            (
                sub("ftp://push.example.net/x", UA_PUBLIC, AUTH),
                SubscriptionError::Endpoint,
            ),
            (sub("https://x/p", "", AUTH), SubscriptionError::P256dh),
            (sub("https://x/p", "!!!", AUTH), SubscriptionError::P256dh),
            (
                sub("https://x/p", &compressed, AUTH),
                SubscriptionError::P256dh,
            ),
            (
                sub("https://x/p", &off_curve, AUTH),
                SubscriptionError::P256dh,
            ),
            (sub("https://x/p", AUTH, AUTH), SubscriptionError::P256dh),
            (sub("https://x/p", UA_PUBLIC, ""), SubscriptionError::Auth),
            (
                sub("https://x/p", UA_PUBLIC, "AAAA"),
                SubscriptionError::Auth,
            ),
            (
                sub("https://x/p", UA_PUBLIC, UA_PUBLIC),
                SubscriptionError::Auth,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.validate().unwrap_err(), want, "{s:?}");
        }
    }

    #[test]
    fn classifies_push_service_answers() {
        assert_eq!(classify(201, None), SendOutcome::Delivered);
        assert_eq!(classify(202, None), SendOutcome::Delivered);
        assert_eq!(classify(404, None), SendOutcome::Gone);
        assert_eq!(classify(410, None), SendOutcome::Gone);
        assert_eq!(
            classify(429, Some(" 30 ")),
            SendOutcome::Retry {
                reason: "push service answered 429".into(),
                after: Some(Duration::from_secs(30)),
            }
        );
        assert!(matches!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            SendOutcome::Retry { after: None, .. }
        ));
        assert!(matches!(classify(500, None), SendOutcome::Retry { .. }));
        for status in [400, 401, 403, 413, 301] {
            assert!(
                matches!(classify(status, None), SendOutcome::Failed(_)),
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn bad_input_fails_without_a_request() {
        // Port 9 (discard) on 127.0.0.1: a request would be a Retry, so
        // a Failed proves nothing was sent.
        let client = reqwest::Client::new();
        let vapid = Vapid::new(AS_PRIVATE, "mailto:ops@example.com").unwrap();
        let good = sub("http://127.0.0.1:9/p", UA_PUBLIC, AUTH);
        let too_big = vec![b'x'; ece::MAX_PLAINTEXT_LEN + 1];
        match send(&client, &vapid, &good, &too_big, 60, None).await {
            SendOutcome::Failed(reason) => assert!(reason.contains("3993"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let bad = sub("http://127.0.0.1:9/p", "xyz", AUTH);
        assert_eq!(
            send(&client, &vapid, &bad, b"{}", 60, None).await,
            SendOutcome::Failed(SubscriptionError::P256dh.to_string())
        );
        // A push service that is not there: retried, not failed.
        assert!(matches!(
            send(&client, &vapid, &good, b"{}", 60, Some(Urgency::High)).await,
            SendOutcome::Retry { .. }
        ));
    }
}

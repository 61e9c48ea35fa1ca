//! Notification registrations: what they are and how an API request becomes
//! one (validated here, pure, so the rules are unit tested).
//!
//! A registration is a target (an HTTP callback URL, an e-mail address, or a
//! Web Push subscription) on a channel, like pushi's `Web`, `Smtp` and
//! `WebPush` models on an "event". `user_id: "u1"` is shorthand for the
//! channel `personal-u1`, which receives every channel `u1` follows.

use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The handler kinds, as named in the API, the config and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A signed JSON POST to a URL (pushi's "webs").
    Web,
    /// An e-mail through the configured SMTP server (pushi's "smtp").
    Email,
    /// A Web Push message (RFC 8030/8291/8292), pushi's "web_push".
    WebPush,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 3] = [Kind::Web, Kind::Email, Kind::WebPush];

    /// `web`, `email` or `web_push`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Web => "web",
            Kind::Email => "email",
            Kind::WebPush => "web_push",
        }
    }
}

/// A Web Push subscription's keys, base64url as browsers give them
/// (`PushSubscription.toJSON().keys`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PushKeys {
    /// The user agent's P-256 public key (65 bytes uncompressed once decoded).
    pub p256dh: String,
    /// The authentication secret (16 bytes once decoded).
    pub auth: String,
}

/// One registration of one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registration {
    /// The channel whose events it receives (`personal-{u}` for a user).
    pub channel: String,
    /// The handler.
    pub kind: Kind,
    /// The URL, the e-mail address, or the push endpoint: with `channel`
    /// and `kind`, what identifies the registration.
    pub target: String,
    /// The Web Push keys (`None` for the other kinds).
    pub keys: Option<PushKeys>,
}

impl Registration {
    /// The user of a `personal-{u}` registration.
    pub fn user_id(&self) -> Option<&str> {
        self.channel.strip_prefix("personal-")
    }
}

/// The body (or query) of `subscribe` / `unsubscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The channel.
    pub channel: Option<String>,
    /// Shorthand for `personal-{user_id}` (a string or a number).
    pub user_id: Option<serde_json::Value>,
    /// An HTTP callback.
    pub url: Option<String>,
    /// An e-mail address.
    pub email: Option<String>,
    /// A Web Push subscription.
    pub web_push: Option<WebPushRequest>,
}

/// The `web_push` object of a request (the browser's `PushSubscription.toJSON()`
/// flattened: `endpoint`, `p256dh`, `auth`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushRequest {
    /// The push service URL.
    pub endpoint: Option<String>,
    /// The P-256 public key, base64url.
    pub p256dh: Option<String>,
    /// The auth secret, base64url.
    pub auth: Option<String>,
}

/// Longest callback URL or push endpoint accepted (bytes): every
/// registration is kept in memory and in the store, so its size is bounded
/// like its number (`max_per_channel`, `max_per_app`); push services'
/// endpoints are a few hundred bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// What to say when the request names no target.
pub const EXPECTED: &str = "expected `channel` or `user_id`, and exactly one of `url`, `email` or `web_push` {endpoint, p256dh, auth}";

/// The channel of a request: `channel`, or `personal-{user_id}`.
pub fn channel_of(request: &Request, max_channel_name_length: usize) -> Result<String, String> {
    let user_id = match &request.user_id {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err("`user_id` must be a string".into()),
    };
    let channel = match (&request.channel, user_id) {
        (Some(_), Some(_)) => return Err("give `channel` or `user_id`, not both".into()),
        (None, None) => return Err(format!("missing `channel` or `user_id`: {EXPECTED}")),
        (Some(channel), None) => channel.clone(),
        (None, Some(user_id)) if user_id.is_empty() => {
            return Err("`user_id` must not be empty".into())
        }
        (None, Some(user_id)) => format!("personal-{user_id}"),
    };
    validate_channel_name(&channel, max_channel_name_length)
        .map_err(|e| format!("invalid channel `{channel}`: {e}"))?;
    if channel_type(&channel).kind == ChannelKind::ServerToUser {
        return Err(format!("`{channel}` is internal and cannot be registered"));
    }
    Ok(channel)
}

/// The registration a `subscribe` request asks for, fully validated: the
/// URL is http(s), the address is an e-mail address, the push endpoint is
/// http(s) and its keys decode to 65 and 16 bytes. With `keys_required`
/// false (`unsubscribe`), a `web_push` needs only its endpoint.
pub fn parse(
    request: &Request,
    max_channel_name_length: usize,
    keys_required: bool,
) -> Result<Registration, String> {
    let channel = channel_of(request, max_channel_name_length)?;
    let given = [
        request.url.is_some(),
        request.email.is_some(),
        request.web_push.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given != 1 {
        return Err(format!(
            "{} targets given: {EXPECTED}",
            if given == 0 { "no" } else { "several" }
        ));
    }
    let (kind, target, keys) = if let Some(url) = &request.url {
        (Kind::Web, http_url("url", url)?, None)
    } else if let Some(email) = &request.email {
        let address = lettre::Address::from_str(email.trim())
            .map_err(|e| format!("`email` `{email}` is not an e-mail address: {e}"))?;
        (Kind::Email, address.to_string(), None)
    } else if let Some(push) = &request.web_push {
        let endpoint = push
            .endpoint
            .as_deref()
            .ok_or("`web_push.endpoint` is missing")?;
        let endpoint = http_url("web_push.endpoint", endpoint)?;
        let keys = match (&push.p256dh, &push.auth) {
            (Some(p256dh), Some(auth)) => Some(PushKeys {
                p256dh: key("web_push.p256dh", p256dh, 65)?,
                auth: key("web_push.auth", auth, 16)?,
            }),
            _ if keys_required => {
                return Err("`web_push` needs `endpoint`, `p256dh` and `auth`".into())
            }
            _ => None,
        };
        if let Some(keys) = &keys {
            // The key must also be a point on P-256, which only the
            // sender's own check (the one it encrypts with) can say.
            super::web_push::WebPushSubscription {
                endpoint: endpoint.clone(),
                p256dh: keys.p256dh.clone(),
                auth: keys.auth.clone(),
            }
            .validate()
            .map_err(|error| error.to_string())?;
        }
        (Kind::WebPush, endpoint, keys)
    } else {
        return Err(EXPECTED.into());
    };
    Ok(Registration {
        channel,
        kind,
        target,
        keys,
    })
}

/// An absolute http or https URL with a host, as given (trimmed).
fn http_url(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.len() > MAX_URL_BYTES {
        return Err(format!(
            "`{name}` is {} bytes long, at most {MAX_URL_BYTES} allowed",
            value.len()
        ));
    }
    let url = reqwest::Url::parse(value).map_err(|e| format!("`{name}` `{value}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{name}` `{value}` must be an http or https URL"));
    }
    Ok(value.to_owned())
}

/// A base64url key (padding tolerated) that decodes to `bytes` bytes,
/// returned without padding.
fn key(name: &str, value: &str, bytes: usize) -> Result<String, String> {
    let trimmed = value.trim().trim_end_matches('=');
    let decoded = URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|e| format!("`{name}` is not base64url: {e}"))?;
    if decoded.len() != bytes {
        return Err(format!(
            "`{name}` decodes to {} bytes, expected {bytes}",
            decoded.len()
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    fn ok(json: &str) -> Registration {
        parse(&request(json), 200, true).unwrap()
    }

    fn err(json: &str) -> String {
        parse(&request(json), 200, true).unwrap_err()
    }

    #[test]
    fn each_kind_and_the_user_shorthand() {
        let web = ok(r#"{"channel":"news","url":"http://127.0.0.1:9/hook"}"#);
        assert_eq!((web.kind, web.channel.as_str()), (Kind::Web, "news"));
        let email = ok(r#"{"user_id":"u1","email":" a@example.com "}"#);
        assert_eq!(email.channel, "personal-u1");
        assert_eq!(email.user_id(), Some("u1"));
        assert_eq!(email.target, "a@example.com");
        // RFC 8291 §5's user agent public key: a point on P-256.
        let p256dh = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let auth = base64::engine::general_purpose::URL_SAFE.encode([1u8; 16]);
        let push = ok(&format!(
            r#"{{"user_id":7,"web_push":{{"endpoint":"https://push.example/x","p256dh":"{p256dh}","auth":"{auth}"}}}}"#
        ));
        assert_eq!(push.channel, "personal-7");
        assert_eq!(push.keys.unwrap().auth, auth.trim_end_matches('='));
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert!(err(r#"{"url":"http://x"}"#).contains("missing `channel` or `user_id`"));
        assert!(err(r#"{"channel":"a","user_id":"u"}"#).contains("not both"));
        assert!(err(r#"{"channel":"a"}"#).contains("no targets"));
        assert!(err(r#"{"channel":"a","url":"http://x","email":"a@b.c"}"#).contains("several"));
        assert!(err(r#"{"channel":"a","url":"ftp://x/y"}"#).contains("http or https"));
        assert!(err(r#"{"channel":"a","url":"not a url"}"#).contains("`url`"));
        assert!(err(r#"{"channel":"a","email":"nope"}"#).contains("not an e-mail"));
        assert!(err(r#"{"channel":"a b","email":"a@b.c"}"#).contains("invalid channel"));
        assert!(err(r##"{"channel":"#server-to-user-u","email":"a@b.c"}"##).contains("internal"));
        assert!(err(
            r#"{"channel":"a","web_push":{"endpoint":"https://p/x","p256dh":"AAAA","auth":"AAAAAAAAAAAAAAAAAAAAAA"}}"#
        )
        .contains("decodes to 3 bytes, expected 65"));
        assert!(
            err(r#"{"channel":"a","web_push":{"endpoint":"https://p/x"}}"#)
                .contains("needs `endpoint`, `p256dh` and `auth`")
        );
        // Unsubscribing needs only the endpoint.
        let gone = parse(
            &request(r#"{"channel":"a","web_push":{"endpoint":"https://p/x"}}"#),
            200,
            false,
        )
        .unwrap();
        assert_eq!(gone.keys, None);
        assert!(serde_json::from_str::<Request>(r#"{"channel":"a","uri":"x"}"#).is_err());
    }
}

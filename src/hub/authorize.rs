//! Who may subscribe to what: channel names, signatures and presence data,
//! decided without I/O so every refusal is unit-tested.

use crate::apps::App;
use crate::protocol::auth::verify_channel_auth;
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use crate::protocol::frames::SubscribeRequest;
use crate::protocol::presence::{parse_channel_data, PresenceMember};

/// A refused subscription, sent as `pusher:subscription_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionError {
    /// `type` as pusher-js reads it (`AuthError`, `InvalidChannel`, `LimitReached`).
    pub kind: &'static str,
    /// Human-readable reason.
    pub message: String,
    /// HTTP-like status.
    pub status: u16,
}

impl SubscriptionError {
    fn auth(message: impl Into<String>) -> Self {
        SubscriptionError {
            kind: "AuthError",
            message: message.into(),
            status: 401,
        }
    }

    /// The presence member limit is reached.
    pub fn member_limit(max: usize) -> Self {
        SubscriptionError {
            kind: "LimitReached",
            message: format!("Presence channel is full: at most {max} members"),
            status: 403,
        }
    }
}

/// Checks a subscribe request; for presence channels returns the member.
pub fn authorize(
    app: &App,
    socket_id: &str,
    request: &SubscribeRequest,
) -> Result<Option<PresenceMember>, SubscriptionError> {
    let channel = request.channel.as_str();
    validate_channel_name(channel, app.max_channel_name_length).map_err(|e| SubscriptionError {
        kind: "InvalidChannel",
        message: e.to_string(),
        status: 400,
    })?;
    let kind = channel_type(channel).kind;
    let channel_data = match kind {
        ChannelKind::Public => return Ok(None),
        ChannelKind::ServerToUser => {
            return Err(SubscriptionError {
                kind: "AuthError",
                message: "Server-to-user channels are joined through pusher:signin".into(),
                status: 403,
            })
        }
        ChannelKind::Private | ChannelKind::PrivateEncrypted => None,
        ChannelKind::Presence => Some(
            request
                .channel_data
                .as_deref()
                .ok_or_else(|| SubscriptionError::auth("Presence channels need channel_data"))?,
        ),
    };
    let auth = request
        .auth
        .as_deref()
        .ok_or_else(|| SubscriptionError::auth("Missing auth signature"))?;
    if !verify_channel_auth(
        &app.key,
        &app.secret,
        socket_id,
        channel,
        channel_data,
        auth,
    ) {
        return Err(SubscriptionError::auth(
            "Invalid signature: expected HMAC-SHA256 of socket_id:channel with the app secret",
        ));
    }
    match channel_data {
        Some(data) => parse_channel_data(data, app.max_presence_user_info_bytes)
            .map(Some)
            .map_err(|e| SubscriptionError {
                kind: "InvalidChannelData",
                message: format!("Invalid channel_data: {e}"),
                status: 400,
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::protocol::auth::sign;

    fn request(
        channel: &str,
        auth: Option<String>,
        channel_data: Option<&str>,
    ) -> SubscribeRequest {
        SubscribeRequest {
            channel: channel.into(),
            auth,
            channel_data: channel_data.map(Into::into),
        }
    }

    fn app() -> App {
        AppConfig::with_credentials("id", "key", "secret")
    }

    #[test]
    fn public_channels_need_nothing() {
        assert!(matches!(
            authorize(&app(), "1.1", &request("news", None, None)),
            Ok(None)
        ));
    }

    #[test]
    fn private_channel_bad_inputs_are_auth_errors() {
        let good = format!("key:{}", sign("secret", "1.1:private-a"));
        assert!(authorize(
            &app(),
            "1.1",
            &request("private-a", Some(good.clone()), None)
        )
        .is_ok());
        for (socket, channel, auth) in [
            ("1.2", "private-a", Some(good.clone())),
            ("1.1", "private-b", Some(good.clone())),
            ("1.1", "private-a", Some("key:forged".to_string())),
            ("1.1", "private-a", None),
        ] {
            let error = authorize(&app(), socket, &request(channel, auth, None)).unwrap_err();
            assert_eq!((error.kind, error.status), ("AuthError", 401));
        }
    }

    #[test]
    fn presence_returns_the_signed_member() {
        let data = r#"{"user_id":"u1","user_info":{"name":"A"}}"#;
        let auth = format!("key:{}", sign("secret", &format!("1.1:presence-r:{data}")));
        let member = authorize(
            &app(),
            "1.1",
            &request("presence-r", Some(auth.clone()), Some(data)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(member.user_id, "u1");
        let forged = r#"{"user_id":"admin"}"#;
        let error = authorize(
            &app(),
            "1.1",
            &request("presence-r", Some(auth), Some(forged)),
        );
        assert_eq!(error.unwrap_err().kind, "AuthError");
    }

    #[test]
    fn invalid_names_and_reserved_channels_are_refused() {
        let error = authorize(&app(), "1.1", &request("bad name", None, None)).unwrap_err();
        assert_eq!(error.kind, "InvalidChannel");
        let error =
            authorize(&app(), "1.1", &request("#server-to-user-u1", None, None)).unwrap_err();
        assert_eq!(error.status, 403);
    }
}

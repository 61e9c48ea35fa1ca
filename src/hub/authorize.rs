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

    /// Granting it would authorize a connection of an app with
    /// `authorized_connections` that is at `max_connections`: the session
    /// closes the connection with 4004 instead of answering
    /// ([`SubscriptionError::closes_connection`]).
    pub fn over_connection_quota() -> Self {
        SubscriptionError {
            kind: "OverConnectionQuota",
            message: crate::protocol::error::ErrorCode::OverConnectionQuota
                .message()
                .into(),
            status: 4004,
        }
    }

    /// The close code this refusal ends the connection with, if it does.
    pub fn closes_connection(&self) -> Option<crate::protocol::error::ErrorCode> {
        (self.kind == "OverConnectionQuota")
            .then_some(crate::protocol::error::ErrorCode::OverConnectionQuota)
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

/// What a subscribe request was granted.
#[derive(Debug)]
pub enum Grant {
    /// Public, private or encrypted: nothing more to record.
    Plain,
    /// Presence: the member joining.
    Member(PresenceMember),
    /// `personal-{user_id}`: catch up on messages after `since`.
    Personal {
        /// The user whose followed channels the socket receives.
        user_id: String,
        /// Only messages with a greater sequence.
        since: u64,
    },
    /// A peer channel without a signature: allowed only if the socket is one
    /// of the two peer members (checked by the hub, which knows the members).
    PeerByMembership,
}

fn since_from(channel_data: Option<&str>) -> Option<u64> {
    let data: serde_json::Value = serde_json::from_str(channel_data?).ok()?;
    data.get("since")?.as_u64()
}

/// Checks a subscribe request against the channel's rules. `signed_in` is
/// the user the socket signed in as, if any.
pub fn authorize(
    app: &App,
    socket_id: &str,
    request: &SubscribeRequest,
    signed_in: Option<&str>,
) -> Result<Grant, SubscriptionError> {
    let channel = request.channel.as_str();
    validate_channel_name(channel, app.max_channel_name_length).map_err(|e| SubscriptionError {
        kind: "InvalidChannel",
        message: e.to_string(),
        status: 400,
    })?;
    let kind = channel_type(channel).kind;
    // pusher-js sends `"auth": ""` for channels it does not sign.
    let auth = request.auth.as_deref().filter(|auth| !auth.is_empty());
    let signed_data = match kind {
        ChannelKind::Public => return Ok(Grant::Plain),
        ChannelKind::ServerToUser => {
            return Err(SubscriptionError {
                kind: "AuthError",
                message: "Server-to-user channels are joined through pusher:signin".into(),
                status: 403,
            })
        }
        ChannelKind::Peer if auth.is_none() => return Ok(Grant::PeerByMembership),
        // pusher-js sends no auth for names without `private-`: a socket
        // signed in (pusher:signin) as the channel's user is authorised by that.
        ChannelKind::Personal if auth.is_none() => {
            let user_id = channel.trim_start_matches("personal-");
            return match signed_in {
                Some(signed_in) if signed_in == user_id => Ok(Grant::Personal {
                    user_id: user_id.to_owned(),
                    since: request.since.unwrap_or(0),
                }),
                _ => Err(SubscriptionError::auth(format!(
                    "personal-{user_id} needs a signature, or a socket signed in as {user_id} (pusher.signin())"
                ))),
            };
        }
        ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Peer => None,
        // A personal channel may carry signed data (e.g. `{"since": N}`).
        ChannelKind::Personal => request.channel_data.as_deref(),
        ChannelKind::Presence => Some(
            request
                .channel_data
                .as_deref()
                .ok_or_else(|| SubscriptionError::auth("Presence channels need channel_data"))?,
        ),
    };
    let auth = auth.ok_or_else(|| SubscriptionError::auth("Missing auth signature"))?;
    if !verify_channel_auth(&app.key, &app.secret, socket_id, channel, signed_data, auth) {
        // Name what was signed: with channel_data (presence, signed personal
        // data) the string is longer, and a wrong hint sends users astray.
        let signed = match signed_data {
            Some(_) => "socket_id:channel:channel_data",
            None => "socket_id:channel",
        };
        return Err(SubscriptionError::auth(format!(
            "Invalid signature: expected {{app key}}:HMAC-SHA256 of {signed} with the app secret"
        )));
    }
    match kind {
        ChannelKind::Presence => parse_channel_data(
            signed_data.unwrap_or_default(),
            app.max_presence_user_info_bytes,
        )
        .map(Grant::Member)
        .map_err(|e| SubscriptionError {
            kind: "InvalidChannelData",
            message: format!("Invalid channel_data: {e}"),
            status: 400,
        }),
        ChannelKind::Personal => Ok(Grant::Personal {
            user_id: channel.trim_start_matches("personal-").to_owned(),
            since: request
                .since
                .or_else(|| since_from(signed_data))
                .unwrap_or(0),
        }),
        _ => Ok(Grant::Plain),
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
            since: None,
        }
    }

    #[test]
    fn personal_channel_is_signed_and_reads_since() {
        let auth = format!("key:{}", sign("secret", "1.1:personal-u1"));
        let grant = authorize_as(&app(), "1.1", &request("personal-u1", Some(auth), None));
        assert!(matches!(grant, Ok(Grant::Personal { ref user_id, since: 0 }) if user_id == "u1"));
        let data = r#"{"since":7}"#;
        let auth = format!("key:{}", sign("secret", &format!("1.1:personal-u1:{data}")));
        let grant = authorize_as(
            &app(),
            "1.1",
            &request("personal-u1", Some(auth), Some(data)),
        );
        assert!(matches!(grant, Ok(Grant::Personal { since: 7, .. })));
        let unsigned = authorize_as(&app(), "1.1", &request("personal-u1", None, None));
        assert_eq!(unsigned.unwrap_err().status, 401);
    }

    #[test]
    fn peer_channel_without_auth_defers_to_membership() {
        let grant = authorize_as(&app(), "1.1", &request("peer-room:a&b", None, None));
        assert!(matches!(grant, Ok(Grant::PeerByMembership)));
    }

    fn authorize_as(
        app: &App,
        socket_id: &str,
        request: &SubscribeRequest,
    ) -> Result<Grant, SubscriptionError> {
        authorize(app, socket_id, request, None)
    }

    #[test]
    fn personal_channel_is_open_to_its_signed_in_user_only() {
        let request = request("personal-u1", None, None);
        assert!(matches!(
            authorize(&app(), "1.1", &request, Some("u1")),
            Ok(Grant::Personal { .. })
        ));
        assert!(authorize(&app(), "1.1", &request, Some("u2")).is_err());
        assert!(authorize(&app(), "1.1", &request, None).is_err());
    }

    fn app() -> App {
        AppConfig::with_credentials("id", "key", "secret")
    }

    #[test]
    fn public_channels_need_nothing() {
        assert!(matches!(
            authorize_as(&app(), "1.1", &request("news", None, None)),
            Ok(Grant::Plain)
        ));
    }

    #[test]
    fn private_channel_bad_inputs_are_auth_errors() {
        let good = format!("key:{}", sign("secret", "1.1:private-a"));
        assert!(authorize_as(
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
            let error = authorize_as(&app(), socket, &request(channel, auth, None)).unwrap_err();
            assert_eq!((error.kind, error.status), ("AuthError", 401));
        }
        let forged = authorize_as(
            &app(),
            "1.1",
            &request("private-a", Some("key:00".into()), None),
        )
        .unwrap_err();
        assert!(forged
            .message
            .ends_with("of socket_id:channel with the app secret"));
    }

    #[test]
    fn presence_returns_the_signed_member() {
        let data = r#"{"user_id":"u1","user_info":{"name":"A"}}"#;
        let auth = format!("key:{}", sign("secret", &format!("1.1:presence-r:{data}")));
        let grant = authorize_as(
            &app(),
            "1.1",
            &request("presence-r", Some(auth.clone()), Some(data)),
        );
        let Ok(Grant::Member(member)) = grant else {
            panic!("expected a member, got {grant:?}");
        };
        assert_eq!(member.user_id, "u1");
        let forged = r#"{"user_id":"admin"}"#;
        let error = authorize_as(
            &app(),
            "1.1",
            &request("presence-r", Some(auth), Some(forged)),
        )
        .unwrap_err();
        assert_eq!(error.kind, "AuthError");
        // The hint names what a presence signature covers.
        assert!(
            error.message.contains("socket_id:channel:channel_data"),
            "{}",
            error.message
        );
    }

    #[test]
    fn invalid_names_and_reserved_channels_are_refused() {
        let error = authorize_as(&app(), "1.1", &request("bad name", None, None)).unwrap_err();
        assert_eq!(error.kind, "InvalidChannel");
        let error =
            authorize_as(&app(), "1.1", &request("#server-to-user-u1", None, None)).unwrap_err();
        assert_eq!(error.status, 403);
    }
}

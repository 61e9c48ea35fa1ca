//! Peer channels: `peer-{base}:{a}&{b}` for two members of `presence-{base}`
//! whose channel_data carries `"peer": true`.

use super::authorize::SubscriptionError;
use super::channels::AppChannels;
use crate::protocol::channel::{validate_channel_name, MAX_CHANNEL_NAME_LENGTH};

/// The peer channel of two users of `presence-{base}` (ids sorted), or
/// `None` when no usable channel can name the pair: an id containing `&`
/// would make the name ambiguous (`a&b` + `c` and `a` + `b&c`), and an id
/// with characters or a length a channel name cannot have could never be
/// subscribed. Such pairs are not offered a peer channel at all.
pub fn peer_channel(presence_channel: &str, a: &str, b: &str) -> Option<String> {
    let base = presence_channel.strip_prefix("presence-")?;
    if a.contains('&') || b.contains('&') {
        return None;
    }
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let name = format!("peer-{base}:{first}&{second}");
    validate_channel_name(&name, MAX_CHANNEL_NAME_LENGTH).ok()?;
    Some(name)
}

/// Splits `peer-{base}:{a}&{b}` into (`presence-{base}`, a, b).
pub fn parse_peer_channel(channel: &str) -> Option<(String, &str, &str)> {
    let rest = channel.strip_prefix("peer-")?;
    let (base, users) = rest.rsplit_once(':')?;
    let (a, b) = users.split_once('&')?;
    (!base.is_empty() && !a.is_empty() && !b.is_empty()).then(|| (format!("presence-{base}"), a, b))
}

/// Allows an unsigned peer-channel subscription only for a socket that is
/// one of the two users on the presence channel, while both are peer members.
pub fn check_membership(
    channels: &AppChannels,
    channel: &str,
    socket_id: &str,
) -> Result<(), SubscriptionError> {
    let refuse = |message: &str| SubscriptionError {
        kind: "AuthError",
        message: message.into(),
        status: 403,
    };
    let (presence, a, b) =
        parse_peer_channel(channel).ok_or_else(|| refuse("Invalid peer channel name"))?;
    let user = channels
        .subscriber_user(&presence, socket_id)
        .flatten()
        .ok_or_else(|| refuse("Only members of the presence channel may join its peer channels"))?;
    if *user != *a && *user != *b {
        return Err(refuse("This peer channel belongs to two other users"));
    }
    if !(channels.is_peer_member(&presence, a) && channels.is_peer_member(&presence, b)) {
        return Err(refuse(
            "Both users must be peer members of the presence channel",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_channel_names_sort_user_ids() {
        assert_eq!(
            peer_channel("presence-room", "b", "a").as_deref(),
            Some("peer-room:a&b")
        );
        assert_eq!(peer_channel("room", "a", "b"), None);
        // Ambiguous or unsubscribable names are not offered.
        assert_eq!(peer_channel("presence-room", "a&b", "c"), None);
        assert_eq!(peer_channel("presence-room", "u 1", "c"), None);
        assert_eq!(peer_channel("presence-room", &"x".repeat(170), "c"), None);
        assert_eq!(
            parse_peer_channel("peer-room:a&b"),
            Some(("presence-room".to_string(), "a", "b"))
        );
        assert_eq!(parse_peer_channel("peer-room"), None);
    }
}

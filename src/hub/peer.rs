//! Peer channels: `peer-{base}:{a}&{b}` for two members of `presence-{base}`
//! whose channel_data carries `"peer": true`.
//!
//! Across a cluster, the adapter decides when a peer member joins or leaves
//! the presence channel deployment-wide ([`crate::adapter::Adapter::peer_changed`])
//! and every node tells its own peer members ([`tell_local_peers`]).

use super::authorize::SubscriptionError;
use super::channels::AppChannels;
use crate::protocol::channel::{validate_channel_name, MAX_CHANNEL_NAME_LENGTH};
use crate::protocol::frames;

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

fn refuse(message: &str) -> SubscriptionError {
    SubscriptionError {
        kind: "AuthError",
        message: message.into(),
        status: 403,
    }
}

/// The refusal when the other user of a peer channel is no peer member of
/// its presence channel anywhere.
pub fn not_both_peers() -> SubscriptionError {
    refuse("Both users must be peer members of the presence channel")
}

/// The first half of allowing an unsigned peer-channel subscription: the
/// socket is one of the two users, as a peer member of the presence channel
/// on this node. Returns the presence channel and the other user, whom the
/// caller checks is a peer member too (on any node of the deployment).
pub fn check_membership<'c>(
    channels: &AppChannels,
    channel: &'c str,
    socket_id: &str,
) -> Result<(String, &'c str), SubscriptionError> {
    let (presence, a, b) =
        parse_peer_channel(channel).ok_or_else(|| refuse("Invalid peer channel name"))?;
    let user = channels
        .subscriber_user(&presence, socket_id)
        .flatten()
        .ok_or_else(|| refuse("Only members of the presence channel may join its peer channels"))?;
    let other = if *user == *a {
        b
    } else if *user == *b {
        a
    } else {
        return Err(refuse("This peer channel belongs to two other users"));
    };
    if !channels.is_peer_member(&presence, &user) {
        return Err(not_both_peers());
    }
    Ok((presence, other))
}

/// Tells this node's peer members of `presence` (other than `user_id`) that
/// the peer member `user_id` joined (`pusher:peer_added`) or left
/// (`pusher:peer_removed`, and their peer channel with the user ends here).
/// Every node does it for its own members, whichever node the user is on.
pub fn tell_local_peers(channels: &AppChannels, presence: &str, user_id: &str, added: bool) {
    let event = if added {
        "pusher:peer_added"
    } else {
        "pusher:peer_removed"
    };
    for other in channels.peer_members(presence, user_id) {
        let Some(peer) = peer_channel(presence, user_id, &other) else {
            continue;
        };
        if !added {
            channels.close_channel(&peer);
        }
        let frame = frames::peer_frame(event, presence, &peer, user_id);
        for socket in channels.user_sockets(presence, &other) {
            socket.send(frame.clone());
        }
    }
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

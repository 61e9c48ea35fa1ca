//! Channel names: validation and the kind a prefix selects.

use thiserror::Error;

/// Longest channel name the protocol allows.
pub const MAX_CHANNEL_NAME_LENGTH: usize = 164;

/// What a channel's name makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-`: needs a signature.
    Private,
    /// `private-encrypted-`: signed, end-to-end encrypted, routed without inspection.
    PrivateEncrypted,
    /// `presence-`: signed, with member tracking.
    Presence,
    /// `#server-to-user-{id}`: joined only through sign-in.
    ServerToUser,
    /// `personal-{user_id}`: signed like private; aggregates the channels the
    /// user follows offline (persistence extension).
    Personal,
    /// `peer-{base}:{a}&{b}`: two peer members of `presence-{base}`.
    Peer,
}

/// A channel's kind plus whether it is a cache variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelType {
    /// The base kind.
    pub kind: ChannelKind,
    /// Whether the last event is remembered for new subscribers.
    pub cache: bool,
}

impl ChannelType {
    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self.kind,
            ChannelKind::Private
                | ChannelKind::PrivateEncrypted
                | ChannelKind::Presence
                | ChannelKind::Personal
                | ChannelKind::Peer
        )
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelNameError {
    /// Empty name.
    #[error("channel name is empty")]
    Empty,
    /// Longer than allowed.
    #[error("channel name is longer than {max} characters")]
    TooLong {
        /// The limit in force.
        max: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("channel name contains invalid characters")]
    InvalidCharacters,
}

/// Classifies a channel name by its prefix.
pub fn channel_type(name: &str) -> ChannelType {
    let (cache, kind) = if let Some(rest) = name.strip_prefix("private-encrypted-") {
        (rest.starts_with("cache-"), ChannelKind::PrivateEncrypted)
    } else if let Some(rest) = name.strip_prefix("private-") {
        (rest.starts_with("cache-"), ChannelKind::Private)
    } else if let Some(rest) = name.strip_prefix("presence-") {
        (rest.starts_with("cache-"), ChannelKind::Presence)
    } else if name.starts_with("#server-to-user-") {
        (false, ChannelKind::ServerToUser)
    } else if name.starts_with("personal-") {
        (false, ChannelKind::Personal)
    } else if name.starts_with("peer-") {
        (false, ChannelKind::Peer)
    } else {
        (name.starts_with("cache-"), ChannelKind::Public)
    };
    ChannelType { kind, cache }
}

impl ChannelKind {
    /// Why a `client-*` event is refused on this kind of channel, or `None`
    /// where clients may send them: private and presence channels (as with
    /// hosted Pusher) and peer channels (extension). Sent as `pusher:error`.
    pub fn client_event_refusal(self) -> Option<&'static str> {
        match self {
            ChannelKind::Private | ChannelKind::Presence | ChannelKind::Peer => None,
            ChannelKind::Public => {
                Some("Client events are only allowed on private, presence and peer channels")
            }
            // Pusher refuses them too: the server cannot check what it cannot read.
            ChannelKind::PrivateEncrypted => Some(
                "Client events are not allowed on end-to-end encrypted channels (private-encrypted-)",
            ),
            ChannelKind::ServerToUser => {
                Some("Client events are not allowed on server-to-user channels")
            }
            ChannelKind::Personal => Some(
                "Client events are not allowed on personal channels: they carry the events of followed channels",
            ),
        }
    }
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// Checks a name a client or the HTTP API may use, with the app's length limit.
pub fn validate_channel_name(name: &str, max_len: usize) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max_len {
        return Err(ChannelNameError::TooLong { max: max_len });
    }
    // `#server-to-user-` channels are reserved for sign-in; the HTTP API may
    // address them, so the `#` is allowed only as that exact prefix.
    let body = name.strip_prefix("#server-to-user-").unwrap_or(name);
    // Peer channel names join two user ids: `peer-{base}:{a}&{b}`.
    let peer = name.starts_with("peer-");
    let allowed = |c: char| valid_char(c) || (peer && (c == ':' || c == '&'));
    if body.is_empty() || !body.chars().all(allowed) {
        return Err(ChannelNameError::InvalidCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_the_kind() {
        assert_eq!(channel_type("news").kind, ChannelKind::Public);
        assert_eq!(channel_type("private-a").kind, ChannelKind::Private);
        assert_eq!(
            channel_type("private-encrypted-a").kind,
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(channel_type("presence-room").kind, ChannelKind::Presence);
        assert_eq!(
            channel_type("#server-to-user-u1").kind,
            ChannelKind::ServerToUser
        );
        assert_eq!(channel_type("personal-u1").kind, ChannelKind::Personal);
        assert_eq!(channel_type("peer-room:a&b").kind, ChannelKind::Peer);
    }

    #[test]
    fn client_events_are_refused_with_the_reason_of_the_channel_kind() {
        for allowed in ["private-a", "presence-a", "private-cache-a", "peer-r:a&b"] {
            assert_eq!(channel_type(allowed).kind.client_event_refusal(), None);
        }
        let refusal = |name| channel_type(name).kind.client_event_refusal().unwrap();
        assert!(refusal("news").contains("only allowed on private, presence and peer"));
        assert!(refusal("cache-news").contains("only allowed on private"));
        // An encrypted channel is private: the reason must be the encryption.
        assert!(refusal("private-encrypted-a").contains("end-to-end encrypted"));
        assert!(!refusal("private-encrypted-a").contains("only allowed on private"));
        assert!(refusal("#server-to-user-u").contains("server-to-user"));
        assert!(refusal("personal-u").contains("personal"));
    }

    #[test]
    fn cache_variants_are_recognised() {
        assert!(channel_type("cache-a").cache);
        assert!(channel_type("private-cache-a").cache);
        assert!(channel_type("private-encrypted-cache-a").cache);
        assert!(channel_type("presence-cache-a").cache);
        assert!(!channel_type("private-a").cache);
        assert!(!channel_type("a-cache-b").cache);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_channel_name("a-Z_0=@,.;", 164).is_ok());
        assert_eq!(validate_channel_name("", 164), Err(ChannelNameError::Empty));
        assert_eq!(
            validate_channel_name("bad channel!", 164),
            Err(ChannelNameError::InvalidCharacters)
        );
        assert_eq!(
            validate_channel_name(&"a".repeat(165), 164),
            Err(ChannelNameError::TooLong { max: 164 })
        );
        assert!(validate_channel_name("#server-to-user-u1", 164).is_ok());
        assert!(validate_channel_name("peer-room:a&b", 164).is_ok());
        assert!(validate_channel_name("room:a&b", 164).is_err());
        assert!(validate_channel_name("#other", 164).is_err());
    }
}

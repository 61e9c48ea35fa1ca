//! Pusher error codes (close codes and `pusher:error` codes) in one place.

/// A Pusher protocol error code, sent in `pusher:error` and as WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The app key in the URL matches no app.
    AppNotFound = 4001,
    /// The app exists but is switched off.
    AppDisabled = 4003,
    /// The app has reached its connection quota.
    OverConnectionQuota = 4004,
    /// The URL path is not `/app/{key}`.
    PathNotFound = 4005,
    /// The `protocol` query parameter is not a number.
    InvalidVersionFormat = 4006,
    /// The protocol version is outside 5..=7.
    UnsupportedProtocol = 4007,
    /// The `protocol` query parameter is missing.
    NoProtocol = 4008,
    /// A signature (user sign-in) did not verify.
    Unauthorized = 4009,
    /// The server is over capacity (for example, a client too slow to keep up).
    OverCapacity = 4100,
    /// Generic "reconnect now", sent when the server shuts down.
    ServerShuttingDown = 4200,
    /// The client did not answer a ping in time.
    PongNotReceived = 4201,
    /// Closed after inactivity.
    ClosedAfterInactivity = 4202,
    /// The client sent client events faster than allowed.
    ClientEventRateLimit = 4301,
    /// A `pusher:ack` (extension) was malformed, named a message that is not
    /// pending on the connection, or came on an app without acknowledged
    /// delivery. In the 4300 range ("other"): the connection stays open.
    AckRefused = 4302,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The message sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::AppNotFound => "Application does not exist",
            ErrorCode::AppDisabled => "Application disabled",
            ErrorCode::OverConnectionQuota => "Application is over connection quota",
            ErrorCode::PathNotFound => "Path not found",
            ErrorCode::InvalidVersionFormat => "Invalid version string format",
            ErrorCode::UnsupportedProtocol => "Unsupported protocol version",
            ErrorCode::NoProtocol => "No protocol version supplied",
            ErrorCode::Unauthorized => "Connection is unauthorized",
            ErrorCode::OverCapacity => "Over capacity",
            ErrorCode::ServerShuttingDown => "Server is shutting down",
            ErrorCode::PongNotReceived => "Pong reply not received",
            ErrorCode::ClosedAfterInactivity => "Closed after inactivity",
            ErrorCode::ClientEventRateLimit => "Client event rejected: rate limit exceeded",
            ErrorCode::AckRefused => "Acknowledgement refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_published_protocol() {
        assert_eq!(ErrorCode::AppNotFound.code(), 4001);
        assert_eq!(ErrorCode::NoProtocol.code(), 4008);
        assert_eq!(ErrorCode::OverCapacity.code(), 4100);
        assert_eq!(ErrorCode::ServerShuttingDown.code(), 4200);
        assert_eq!(ErrorCode::PongNotReceived.code(), 4201);
        assert_eq!(ErrorCode::ClientEventRateLimit.code(), 4301);
    }
}

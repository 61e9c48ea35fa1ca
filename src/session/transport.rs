//! The seam between a connection's protocol state ([`Session`]) and what
//! carries its frames: a WebSocket (`ws/`), pusher-js's HTTP fallbacks
//! (`xhr/`) or Server-Sent Events (`sse/`). The hub never sees it: it queues encoded frames on the
//! connection, the session hands them to its transport.

use super::{ClaimedDeliveries, CloseRequest, Session};
use actix::dev::ToEnvelope;
use actix::{ActorContext, AsyncContext};
use bytestring::ByteString;
use std::time::Duration;

/// Per-connection settings taken from the server config, the same for
/// every transport.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Silence before the server pings (announced to the client).
    pub activity_timeout: Duration,
    /// Wait for an answer to our ping before closing with 4201.
    pub pong_timeout: Duration,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// How long a subscription waits for the sign-in or presence membership
    /// that would authorise it (see `hub::held`); zero refuses at once.
    pub subscribe_wait: Duration,
}

/// The outgoing side of one connection: how the session's frames, probes
/// and close reach the client. One implementation per transport; every
/// method is called on the session's actor, in order.
pub trait Transport: Sized + Unpin + 'static {
    /// The actor context the session runs in with this transport.
    type Context: ActorContext
        + AsyncContext<Session<Self>>
        + ToEnvelope<Session<Self>, ClaimedDeliveries>
        + ToEnvelope<Session<Self>, CloseRequest>;

    /// The transport's name in logs and metrics (`ws`, `sse`, ...).
    const NAME: &'static str;

    /// This connection's transport name, for a transport type that
    /// carries several (`xhr_streaming` and `xhr_polling`).
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Whether the client answers `pusher:ping` with `pusher:pong`. When it
    /// cannot (Server-Sent Events are receive-only), the session sends no
    /// ping and never closes with 4201: the transport keeps its own
    /// liveness (heartbeats; a response the client closed ends the session).
    const CLIENT_ANSWERS_PINGS: bool = true;

    /// The session's actor started and sent `pusher:connection_established`:
    /// start what the transport runs beside it (heartbeats, a watch on the
    /// client going away).
    fn started(&mut self, _ctx: &mut Self::Context) {}

    /// A subscription to `channel` succeeded; called just before its
    /// `pusher_internal:subscription_succeeded` is written. `position` is,
    /// on a channel with history, the serial up to which the client has
    /// every event or has it queued before the live ones (the `since` it
    /// recovers from, else the channel's latest serial), for a transport
    /// that tells the client where it stands (SSE event ids).
    fn subscribed(&mut self, _ctx: &mut Self::Context, _channel: &str, _position: Option<u64>) {}

    /// Writes one encoded Pusher frame (a JSON text) to the client.
    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString);

    /// Asks the client to prove it read everything written so far; the
    /// transport calls [`Session::probe_answered`] with `id` when it has
    /// that proof (a WebSocket pong echoing it, the next HTTP request).
    fn probe(&mut self, ctx: &mut Self::Context, id: u64);

    /// Pings below the Pusher protocol, for a client that never answers
    /// `pusher:ping` (pushi.js): a WebSocket ping frame, which browsers and
    /// `ws` answer by themselves, its pong counting as activity. False when
    /// the transport has no such ping (the session then sends `pusher:ping`).
    fn transport_ping(&mut self, _ctx: &mut Self::Context) -> bool {
        false
    }

    /// Closes the connection with a Pusher close `code` (4000-4999) and
    /// its `reason`, after the session wrote the matching `pusher:error`.
    /// The session stops its actor right after.
    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str);

    /// The session's actor stopped (any cause): release what the
    /// transport holds.
    fn stopped(&mut self, _ctx: &mut Self::Context) {}
}

/// Which transports are served and the HTTP transports' limits, from
/// `[transports]` (see `config::TransportsConfig`), with the waits clamped
/// to half the activity timeout so an idle HTTP session is never taken for
/// a dead one.
#[derive(Debug, Clone, Copy)]
pub struct TransportSettings {
    /// WebSocket at `/app/{key}`.
    pub ws: bool,
    /// pusher-js `xhr_streaming`.
    pub xhr_streaming: bool,
    /// pusher-js `xhr_polling`.
    pub xhr_polling: bool,
    /// Server-Sent Events.
    pub sse: bool,
    /// How long a poll waits for frames.
    pub long_poll_timeout: Duration,
    /// Most frames in one poll response.
    pub max_batch_size: usize,
    /// Time between heartbeats on a streaming response.
    pub heartbeat: Duration,
    /// Most HTTP sessions open at once on this node.
    pub max_sessions: usize,
}

impl TransportSettings {
    /// The settings for `config`, with `activity_timeout` in seconds.
    pub fn new(config: &crate::config::TransportsConfig, activity_timeout: u64) -> Self {
        // Half the activity timeout, in milliseconds, at least 1 ms.
        let most = Duration::from_millis((activity_timeout.saturating_mul(500)).max(1));
        TransportSettings {
            ws: config.ws,
            xhr_streaming: config.xhr_streaming,
            xhr_polling: config.xhr_polling,
            sse: config.sse,
            long_poll_timeout: Duration::from_secs(config.long_poll_timeout).min(most),
            max_batch_size: config.max_batch_size,
            heartbeat: Duration::from_secs(config.heartbeat).min(most),
            max_sessions: config.max_sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportsConfig;

    #[test]
    fn waits_are_clamped_to_half_the_activity_timeout() {
        let config = TransportsConfig::default();
        let settings = TransportSettings::new(&config, 120);
        assert_eq!(settings.long_poll_timeout, Duration::from_secs(30));
        assert_eq!(settings.heartbeat, Duration::from_secs(25));
        let settings = TransportSettings::new(&config, 4);
        assert_eq!(settings.long_poll_timeout, Duration::from_secs(2));
        assert_eq!(settings.heartbeat, Duration::from_secs(2));
    }
}

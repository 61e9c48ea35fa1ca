//! The transport a subscriber connects with (`--transport`), and one
//! connection type over all of them, so the scenarios open, subscribe and
//! listen the same way whatever carries the frames: a WebSocket
//! ([`crate::ws`]) or an HTTP session ([`crate::http_session`]). Every
//! transport hands the listener each Pusher frame's JSON text, so latency is
//! read from the same `ts=` stamp on every path.

use crate::frame;
use crate::http_session::{Endpoint, HttpKind, HttpSession};
use crate::ws::{self, Ending, Ws};
use anyhow::{anyhow, bail, Result};
use tokio_util::sync::CancellationToken;

/// How subscribers reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// WebSocket at `/app/{key}`.
    #[default]
    Ws,
    /// pusher-js's HTTP streaming fallback.
    #[value(name = "xhr_streaming")]
    XhrStreaming,
    /// pusher-js's HTTP long-polling fallback.
    #[value(name = "xhr_polling")]
    XhrPolling,
    /// Server-Sent Events at `/apps/{app_id}/events/stream?channels=...`
    /// (receive only; the channels are named when connecting).
    Sse,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::XhrStreaming => "xhr_streaming",
            Transport::XhrPolling => "xhr_polling",
            Transport::Sse => "sse",
        }
    }

    /// Whether the channels must be known when connecting (SSE).
    pub fn channels_at_connect(self) -> bool {
        self == Transport::Sse
    }

    fn http_kind(self) -> Option<HttpKind> {
        match self {
            Transport::Ws => None,
            Transport::XhrStreaming => Some(HttpKind::XhrStreaming),
            Transport::XhrPolling => Some(HttpKind::XhrPolling),
            Transport::Sse => Some(HttpKind::Sse),
        }
    }
}

const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// A subscriber's connection over any transport.
pub enum Conn {
    Ws(Box<Ws>),
    Http(Box<HttpSession>),
}

impl Conn {
    /// Connects and waits for `pusher:connection_established`; returns the
    /// connection and its socket id. `channels` are subscribed at once where
    /// the transport names them in the URL (SSE), and ignored otherwise.
    pub async fn open(
        transport: Transport,
        endpoint: &Endpoint,
        channels: &[&str],
    ) -> Result<(Conn, String)> {
        let Some(kind) = transport.http_kind() else {
            let (ws, socket_id) = ws::connect(endpoint.addr, &endpoint.app_key).await?;
            return Ok((Conn::Ws(Box::new(ws)), socket_id));
        };
        if kind == HttpKind::Sse && channels.is_empty() {
            bail!("an SSE connection needs at least one channel");
        }
        let mut session = HttpSession::new(kind, endpoint, channels);
        let work = async {
            loop {
                let text = session.next_frame().await.map_err(ending_error)?;
                match frame::event_name(&text) {
                    Some("pusher:connection_established") => {
                        return frame::socket_id(&text)
                            .map(str::to_owned)
                            .ok_or_else(|| anyhow!("no socket_id in {text}"));
                    }
                    Some("pusher:error") => bail!("refused: {text}"),
                    _ => continue,
                }
            }
        };
        let socket_id = tokio::time::timeout(ws::SETUP_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("no connection_established within {:?}", ws::SETUP_TIMEOUT))??;
        Ok((Conn::Http(Box::new(session)), socket_id))
    }

    /// Subscribes to a public `channel` and waits for
    /// `pusher_internal:subscription_succeeded` (SSE: only waits, the
    /// channel was in the URL). A `pusher:subscription_error` fails.
    pub async fn subscribe(&mut self, channel: &str) -> Result<()> {
        let session = match self {
            Conn::Ws(ws) => return ws::subscribe(ws, channel).await,
            Conn::Http(session) => session,
        };
        if session.kind() != HttpKind::Sse {
            let frame = serde_json::json!({
                "event": "pusher:subscribe",
                "data": { "channel": channel },
            })
            .to_string();
            session.send(&[&frame]).await?;
        }
        let work = async {
            loop {
                let text = session.next_frame().await.map_err(ending_error)?;
                match frame::event_name(&text) {
                    Some("pusher_internal:subscription_succeeded") if text.contains(channel) => {
                        return Ok(())
                    }
                    Some("pusher:subscription_error") | Some("pusher:error") => {
                        bail!("subscription to {channel} refused: {text}")
                    }
                    Some("pusher:ping") if session.kind() != HttpKind::Sse => {
                        session.send(&[PONG]).await?
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(ws::SETUP_TIMEOUT, work)
            .await
            .map_err(|_| {
                anyhow!(
                    "no subscription_succeeded for {channel} within {:?}",
                    ws::SETUP_TIMEOUT
                )
            })??;
        session.idle();
        Ok(())
    }

    /// Reads frames until the connection ends or `stop` fires, as
    /// [`ws::listen_until_stopped`] does: `on_text` sees every frame first
    /// and says whether it took it; the rest get the common handling
    /// (answer `pusher:ping`, collect `pusher:error` codes).
    pub async fn listen_until_stopped(
        self,
        stop: &CancellationToken,
        on_text: impl FnMut(&str) -> bool,
    ) -> (Ending, Vec<Option<u64>>) {
        match self {
            Conn::Ws(ws) => ws::listen_until_stopped(*ws, stop, on_text).await,
            Conn::Http(session) => listen_http(*session, stop, on_text).await,
        }
    }
}

async fn listen_http(
    mut session: HttpSession,
    stop: &CancellationToken,
    mut on_text: impl FnMut(&str) -> bool,
) -> (Ending, Vec<Option<u64>>) {
    let mut pusher_errors = Vec::new();
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let ending = loop {
        tokio::select! {
            biased;
            next = session.next_frame() => {
                let text = match next {
                    Ok(text) => text,
                    Err(ending) => break ending,
                };
                if on_text(&text) {
                    continue;
                }
                match frame::event_name(&text) {
                    Some("pusher:ping") if session.kind() != HttpKind::Sse => {
                        if let Err(e) = session.send(&[PONG]).await {
                            break Ending::Dropped(format!("cannot answer ping: {e:#}"));
                        }
                    }
                    Some("pusher:error") => pusher_errors.push(frame::error_code(&text)),
                    _ => {}
                }
            }
            // Dropping the session drops its requests: the server sees the
            // client leave, as when pusher-js closes its socket.
            _ = &mut cancelled => break Ending::ByUs,
        }
    };
    (ending, pusher_errors)
}

/// How a session ended during set-up, as an error.
fn ending_error(ending: Ending) -> anyhow::Error {
    match ending {
        Ending::Closed(code) => anyhow!("closed by server: {code}"),
        Ending::Dropped(why) => anyhow!("{why}"),
        Ending::ByUs => anyhow!("closed"),
    }
}

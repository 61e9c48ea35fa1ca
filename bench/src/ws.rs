//! A Pusher WebSocket client connection, as lean as the generator needs.

use crate::frame;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// How long a handshake or a subscription may take before it counts as failed.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Small buffers: thousands of connections live in one process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Why a connection ended or could not be set up.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Closed by the generator at the end of the run.
    ByUs,
    /// The server sent a close frame (code) or a `pusher:error` (code).
    Closed(u16),
    /// The stream ended or failed without a close code.
    Dropped(String),
}

/// Opens a connection to `/app/{key}?protocol=7` and waits for
/// `pusher:connection_established`; returns the stream and the socket id.
pub async fn connect(addr: SocketAddr, key: &str) -> Result<(Ws, String)> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let url = format!(
            "ws://{addr}/app/{key}?protocol=7&client=rusher-bench&version=0.1.0&flash=false"
        );
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config()))
            .await
            .context("WebSocket handshake failed")?;
        loop {
            let text = next_text(&mut ws).await?;
            match frame::event_name(&text) {
                Some("pusher:connection_established") => {
                    let socket_id = frame::socket_id(&text)
                        .ok_or_else(|| anyhow!("no socket_id in {text}"))?
                        .to_owned();
                    return Ok((ws, socket_id));
                }
                Some("pusher:error") => bail!("refused: {text}"),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("no connection_established within {SETUP_TIMEOUT:?}"))?
}

/// The next text frame; answers WebSocket pings on the way (tungstenite
/// queues the pong, the next read or write sends it).
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(close))) => {
                bail!("closed by server: {close:?}")
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Sends a subscribe frame (with `auth` and `channel_data` when given).
pub async fn send_subscribe(
    ws: &mut Ws,
    channel: &str,
    auth: Option<&str>,
    channel_data: Option<&str>,
) -> Result<()> {
    let mut data = serde_json::json!({ "channel": channel });
    if let Some(auth) = auth {
        data["auth"] = auth.into();
    }
    if let Some(channel_data) = channel_data {
        data["channel_data"] = channel_data.into();
    }
    let text = serde_json::json!({ "event": "pusher:subscribe", "data": data }).to_string();
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Sends an unsubscribe frame (there is no reply).
pub async fn send_unsubscribe(ws: &mut Ws, channel: &str) -> Result<()> {
    let text = format!(r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{channel}"}}}}"#);
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Waits for `pusher_internal:subscription_succeeded` on `channel`, passing
/// every other frame to `other`. A `pusher:subscription_error` fails.
pub async fn await_subscribed(
    ws: &mut Ws,
    channel: &str,
    mut other: impl FnMut(&str),
) -> Result<()> {
    let work = async {
        loop {
            let text = next_text(ws).await?;
            match frame::event_name(&text) {
                Some("pusher_internal:subscription_succeeded") if text.contains(channel) => {
                    return Ok(())
                }
                Some("pusher:subscription_error") | Some("pusher:error") => {
                    bail!("subscription to {channel} refused: {text}")
                }
                Some("pusher:ping") => pong(ws).await?,
                _ => other(&text),
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("no subscription_succeeded for {channel} within {SETUP_TIMEOUT:?}"))?
}

/// Subscribes and waits for success.
pub async fn subscribe(ws: &mut Ws, channel: &str) -> Result<()> {
    send_subscribe(ws, channel, None, None).await?;
    await_subscribed(ws, channel, |_| {}).await
}

/// Answers a `pusher:ping`.
pub async fn pong(ws: &mut Ws) -> Result<()> {
    ws.send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
        .await?;
    Ok(())
}

/// What ended a stream item: a close frame's code, an error or the end.
pub fn ending_of(
    item: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Option<Ending> {
    match item {
        Some(Ok(Message::Close(close))) => Some(match close {
            Some(frame) => Ending::Closed(u16::from(frame.code)),
            None => Ending::Dropped("close without code".into()),
        }),
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(Ending::Dropped(e.to_string())),
        None => Some(Ending::Dropped("connection ended".into())),
    }
}

/// Reads frames until the connection ends or `stop` fires: `on_text` sees
/// every text frame first and says whether it took it; the rest get the
/// common handling (answer `pusher:ping`, collect `pusher:error` codes).
pub async fn listen_until_stopped(
    mut ws: Ws,
    stop: &tokio_util::sync::CancellationToken,
    mut on_text: impl FnMut(&str) -> bool,
) -> (Ending, Vec<Option<u64>>) {
    let mut pusher_errors = Vec::new();
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let ending = loop {
        tokio::select! {
            biased;
            item = ws.next() => {
                if let Some(Ok(Message::Text(text))) = &item {
                    if !on_text(text) {
                        match frame::event_name(text) {
                            Some("pusher:ping") if pong(&mut ws).await.is_err() => {
                                break Ending::Dropped("cannot answer ping".into());
                            }
                            Some("pusher:error") => pusher_errors.push(frame::error_code(text)),
                            _ => {}
                        }
                    }
                    continue;
                }
                if let Some(ending) = ending_of(item) {
                    break ending;
                }
            }
            _ = &mut cancelled => {
                close(ws).await;
                break Ending::ByUs;
            }
        }
    };
    (ending, pusher_errors)
}

/// Closes politely, without waiting long for the server's answer.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

//! A Pusher session over one of the HTTP transports, as lean as the
//! generator needs (hyper's HTTP/1.1 client connection, no pool):
//!
//! - `xhr_streaming`: `POST /pusher/app/{key}/{server}/{session}/xhr_streaming`,
//!   one long response of lines; a heartbeat `h` is answered with an empty
//!   send, as pusher-js does;
//! - `xhr_polling`: `POST .../xhr`, answered with what waits, then polled
//!   again at once on the same keep-alive connection;
//! - `sse`: `GET /apps/{app_id}/events/stream?channels=a,b` (`text/event-stream`),
//!   receive only: the channels are in the URL.
//!
//! The client's frames (subscribe, pong, heartbeat answers) go on
//! `POST .../xhr_send` (a JSON array of frame texts) over a second
//! connection, opened when needed and dropped by [`HttpSession::idle`], so
//! an idle session holds one connection like a WebSocket. Lines are parsed
//! by [`crate::lines`]; what comes out is each Pusher frame's JSON text,
//! exactly what a WebSocket text message carries.

use crate::lines::{parse_xhr_line, LineBuffer, SseParser, XhrLine};
use crate::ws::Ending;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpStream;

/// Which HTTP transport a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    XhrStreaming,
    XhrPolling,
    Sse,
}

impl HttpKind {
    /// The transport's name (as `--transport` spells it).
    pub fn name(self) -> &'static str {
        match self {
            HttpKind::XhrStreaming => "xhr_streaming",
            HttpKind::XhrPolling => "xhr_polling",
            HttpKind::Sse => "sse",
        }
    }
}

/// What identifies the session's endpoint on the server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub app_key: String,
    pub app_id: String,
}

type Sender = SendRequest<Full<Bytes>>;

/// Sessions opened by this process, for unique session ids.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// One session: its receive request (a stream, or the current poll) and
/// the frames parsed from it but not yet taken.
pub struct HttpSession {
    kind: HttpKind,
    addr: SocketAddr,
    /// Path and query of the receive request.
    receive_uri: String,
    /// Path of `xhr_send` (none for SSE).
    send_uri: Option<String>,
    receive: Option<Sender>,
    body: Option<Incoming>,
    /// The first receive request was made.
    started: bool,
    lines: LineBuffer,
    sse: SseParser,
    frames: VecDeque<String>,
    sender: Option<Sender>,
}

/// Opens an HTTP/1.1 client connection; its driver runs on its own task.
async fn connect(addr: SocketAddr) -> Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP handshake failed")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A live connection in `slot` (a new one when there is none or the server
/// closed it).
async fn ready(slot: &mut Option<Sender>, addr: SocketAddr) -> Result<&mut Sender> {
    let usable = match slot.as_mut() {
        Some(sender) if !sender.is_closed() => sender.ready().await.is_ok(),
        _ => false,
    };
    if !usable {
        let mut sender = connect(addr).await?;
        sender
            .ready()
            .await
            .context("new HTTP connection not ready")?;
        *slot = Some(sender);
    }
    slot.as_mut().ok_or_else(|| anyhow!("no connection"))
}

/// The start of a refused response's body, for the error message.
async fn body_start(body: Incoming) -> String {
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
        }
        Err(e) => format!("(body unreadable: {e})"),
    }
}

impl HttpSession {
    /// A session of `kind` on `endpoint`, not yet opened: the first
    /// [`next_frame`](Self::next_frame) makes the receive request. `channels`
    /// go in the SSE URL (the other kinds subscribe with [`send`](Self::send)).
    pub fn new(kind: HttpKind, endpoint: &Endpoint, channels: &[&str]) -> Self {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        // `{server}/{session}` as pusher-js makes them: 0-999, then a few
        // letters and digits (here unique per process and session).
        let base = format!(
            "/pusher/app/{}/{}/{:x}x{n:x}",
            endpoint.app_key,
            n % 1000,
            std::process::id()
        );
        let query = "protocol=7&client=rusher-bench&version=0.1.0&flash=false";
        let (receive_uri, send_uri) = match kind {
            HttpKind::XhrStreaming => (
                format!("{base}/xhr_streaming?{query}"),
                Some(format!("{base}/xhr_send")),
            ),
            HttpKind::XhrPolling => (
                format!("{base}/xhr?{query}"),
                Some(format!("{base}/xhr_send")),
            ),
            HttpKind::Sse => (
                format!(
                    "/apps/{}/events/stream?channels={}",
                    endpoint.app_id,
                    channels.join(",")
                ),
                None,
            ),
        };
        HttpSession {
            kind,
            addr: endpoint.addr,
            receive_uri,
            send_uri,
            receive: None,
            body: None,
            started: false,
            lines: LineBuffer::default(),
            sse: SseParser::default(),
            frames: VecDeque::new(),
            sender: None,
        }
    }

    fn request(&self, method: Method, uri: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, self.addr.to_string());
        builder = if self.kind == HttpKind::Sse {
            builder.header(ACCEPT, "text/event-stream")
        } else {
            builder.header(CONTENT_TYPE, "application/json")
        };
        builder.body(Full::new(body)).context("bad request")
    }

    /// Makes the receive request (the stream, or the next poll).
    async fn start_receive(&mut self) -> Result<()> {
        let method = if self.kind == HttpKind::Sse {
            Method::GET
        } else {
            Method::POST
        };
        let request = self.request(method, &self.receive_uri, Bytes::new())?;
        self.started = true;
        let sender = ready(&mut self.receive, self.addr).await?;
        let response = sender
            .send_request(request)
            .await
            .context("receive request failed")?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = body_start(response.into_body()).await;
            // Not the URL: it is unique per session, and set-up errors are
            // grouped by their text.
            bail!(
                "HTTP {status} on the {} receive request: {text}",
                self.kind.name()
            );
        }
        self.body = Some(response.into_body());
        Ok(())
    }

    /// Reads the next chunk of the receive response into the line buffer,
    /// re-polling at once when a poll's answer ended.
    async fn fill(&mut self) -> Result<(), Ending> {
        loop {
            let Some(body) = self.body.as_mut() else {
                if self.kind == HttpKind::XhrPolling || !self.started {
                    self.start_receive()
                        .await
                        .map_err(|e| Ending::Dropped(format!("{e:#}")))?;
                    continue;
                }
                return Err(Ending::Dropped("the server ended the response".into()));
            };
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                        return Ok(());
                    }
                }
                Some(Err(e)) => {
                    self.body = None;
                    return Err(Ending::Dropped(format!("response failed: {e}")));
                }
                None => {
                    self.body = None;
                    if self.kind != HttpKind::XhrPolling {
                        return Err(Ending::Dropped("the server ended the response".into()));
                    }
                }
            }
        }
    }

    /// Acts on one line: frames are queued, a close ends the session.
    async fn take_line(&mut self, line: &str) -> Result<(), Ending> {
        if self.kind == HttpKind::Sse {
            if let Some(event) = self.sse.line(line) {
                self.frames.push_back(event.data);
            }
            return Ok(());
        }
        match parse_xhr_line(line) {
            Ok(XhrLine::Open) => Ok(()),
            Ok(XhrLine::Frames(frames)) => {
                self.frames.extend(frames);
                Ok(())
            }
            // pusher-js answers a streaming heartbeat with an empty send; a
            // poll's heartbeat only ends the poll.
            Ok(XhrLine::Heartbeat) if self.kind == HttpKind::XhrStreaming => self
                .send(&[])
                .await
                .map_err(|e| Ending::Dropped(format!("cannot answer a heartbeat: {e:#}"))),
            Ok(XhrLine::Heartbeat) => Ok(()),
            Ok(XhrLine::Close(code, _)) => Err(Ending::Closed(code)),
            Err(e) => Err(Ending::Dropped(format!("{e:#}"))),
        }
    }

    /// The next Pusher frame (its JSON text), in the order the server sent them.
    pub async fn next_frame(&mut self) -> Result<String, Ending> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            match self.lines.next_line() {
                Some(Ok(line)) => self.take_line(&line).await?,
                Some(Err(e)) => return Err(Ending::Dropped(format!("{e:#}"))),
                None => self.fill().await?,
            }
        }
    }

    /// Sends frames on `xhr_send` (none = the heartbeat answer); the server
    /// answers 204 once the session took them. SSE cannot send.
    pub async fn send(&mut self, frames: &[&str]) -> Result<()> {
        let Some(uri) = self.send_uri.clone() else {
            bail!("SSE is receive-only: nothing can be sent");
        };
        let body = Bytes::from(serde_json::to_vec(frames)?);
        let mut request = self.request(Method::POST, &uri, body)?;
        for _ in 0..2 {
            let sender = ready(&mut self.sender, self.addr).await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        // Read the (empty) body so the connection can be reused.
                        let _ = response.into_body().collect().await;
                        return Ok(());
                    }
                    let text = body_start(response.into_body()).await;
                    bail!("xhr_send answered HTTP {status}: {text}");
                }
                // The kept-alive connection closed before the request left:
                // send it again on a new one (it was not seen by the server).
                Err(mut error) => match error.take_message() {
                    Some(unsent) => {
                        self.sender = None;
                        request = unsent;
                    }
                    None => return Err(error.into_error()).context("xhr_send failed"),
                },
            }
        }
        bail!("the server closed the send connection twice before a request went out")
    }

    /// Drops the send connection until the next send: an idle session then
    /// holds only its receive request (the server closes an idle keep-alive
    /// connection after a few seconds anyway).
    pub fn idle(&mut self) {
        self.sender = None;
    }

    /// Which transport this session uses.
    pub fn kind(&self) -> HttpKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_what_pusher_js_and_eventsource_request() {
        let endpoint = Endpoint {
            addr: "127.0.0.1:6001".parse().unwrap(),
            app_key: "key".into(),
            app_id: "id".into(),
        };
        let xhr = HttpSession::new(HttpKind::XhrPolling, &endpoint, &[]);
        assert!(xhr.receive_uri.starts_with("/pusher/app/key/"));
        assert!(xhr.receive_uri.contains("/xhr?protocol=7&"));
        let send = xhr.send_uri.clone().unwrap();
        assert!(send.ends_with("/xhr_send"));
        // `{server}/{session}`: letters and digits only, as rusher accepts.
        let parts: Vec<&str> = send.split('/').collect();
        assert_eq!(parts.len(), 7, "{send}");
        assert!(parts[4..6]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())));
        let other = HttpSession::new(HttpKind::XhrStreaming, &endpoint, &[]);
        assert_ne!(other.send_uri, xhr.send_uri, "session ids are unique");
        assert!(other.receive_uri.contains("/xhr_streaming?protocol=7&"));
        let sse = HttpSession::new(HttpKind::Sse, &endpoint, &["a", "b"]);
        assert_eq!(sse.receive_uri, "/apps/id/events/stream?channels=a,b");
        assert_eq!(sse.send_uri, None);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// The request log and the answer of a canned server, by request.
    type Answer = dyn Fn(&str, &str) -> String + Send + Sync;

    /// A canned HTTP/1.1 server on a free port (a thread per connection):
    /// `answer(request line, body)` gives each whole response; one that says
    /// `connection: close` ends its connection. Returns the address and the
    /// log of `request line + body`.
    fn canned_server(answer: Arc<Answer>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (answer, log) = (answer.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let request = line.trim_end().to_owned();
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            reader.read_line(&mut header).unwrap();
                            if header.trim_end().is_empty() {
                                break;
                            }
                            if let Some(value) =
                                header.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = value.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let body = String::from_utf8(body).unwrap();
                        log.lock().unwrap().push(format!("{request} {body}"));
                        let response = answer(&request, &body);
                        if writer.write_all(response.as_bytes()).is_err()
                            || response.contains("connection: close")
                        {
                            return;
                        }
                    }
                });
            }
        });
        (addr, log)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            app_key: "key".into(),
            app_id: "id".into(),
        }
    }

    const ESTABLISHED: &str = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
    const SUBSCRIBED: &str =
        r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#;

    fn bench_frame(ts: u64) -> String {
        format!(r#"{{"event":"bench","channel":"c","data":"ts={ts};seq=0;xx"}}"#)
    }

    /// Listens like the fan-out does: stamps taken, the rest left to the
    /// common handling.
    async fn stamps_of(conn: Conn) -> (Vec<u64>, Ending, Vec<Option<u64>>) {
        let stop = CancellationToken::new();
        let mut stamps = Vec::new();
        let (ending, errors) = conn
            .listen_until_stopped(&stop, |text| match frame::stamp(text) {
                Some(ts) => {
                    stamps.push(ts);
                    true
                }
                None => false,
            })
            .await;
        (stamps, ending, errors)
    }

    #[tokio::test]
    async fn sse_events_reach_the_listener_as_frames() {
        let mut stream = String::from(": hi\n\n");
        for frame in [ESTABLISHED, SUBSCRIBED] {
            let name = frame::event_name(frame).unwrap();
            stream.push_str(&format!("event: {name}\ndata: {frame}\n\n"));
        }
        stream.push_str(&format!(
            "id: 1\nevent: bench\ndata: {}\n\n",
            bench_frame(42)
        ));
        stream.push_str(": heartbeat\n\n");
        stream.push_str(&format!(
            "event: bench\r\ndata: {}\r\n\r\n",
            bench_frame(43)
        ));
        let error = r#"{"event":"pusher:error","data":{"code":4100,"message":"slow"}}"#;
        stream.push_str(&format!("event: pusher:error\ndata: {error}\n\n"));
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{stream}"
        );
        let (addr, log) = canned_server(Arc::new(move |_: &str, _: &str| response.clone()));

        let (mut conn, socket_id) = Conn::open(Transport::Sse, &endpoint(addr), &["c"])
            .await
            .unwrap();
        assert_eq!(socket_id, "1.2");
        conn.subscribe("c").await.unwrap();
        let (stamps, ending, errors) = stamps_of(conn).await;
        assert_eq!(stamps, vec![42, 43]);
        assert_eq!(errors, vec![Some(4100)]);
        assert!(
            matches!(ending, Ending::Dropped(ref why) if why.contains("ended")),
            "{ending:?}"
        );
        assert_eq!(
            *log.lock().unwrap(),
            vec!["GET /apps/id/events/stream?channels=c HTTP/1.1 ".to_owned()]
        );
    }

    #[tokio::test]
    async fn sse_refused_with_404_fails_set_up_with_the_status() {
        let (addr, _) = canned_server(Arc::new(|_: &str, _: &str| {
            "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}".to_owned()
        }));
        let error = Conn::open(Transport::Sse, &endpoint(addr), &["c"])
            .await
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("HTTP 404"), "{error:#}");
        let error = Conn::open(Transport::Sse, &endpoint(addr), &[])
            .await
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("needs at least one channel"));
    }

    #[tokio::test]
    async fn long_polling_subscribes_on_xhr_send_and_polls_again_at_once() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answers = [
            format!("o\na[{}]\n", serde_json::to_string(ESTABLISHED).unwrap()),
            format!("a[{}]\n", serde_json::to_string(SUBSCRIBED).unwrap()),
            // A poll that timed out, then two deliveries in one answer.
            "h\n".to_owned(),
            format!(
                "a[{},{}]\n",
                serde_json::to_string(&bench_frame(7)).unwrap(),
                serde_json::to_string(&bench_frame(8)).unwrap()
            ),
            "c[4100,\"Over capacity\"]\n".to_owned(),
        ];
        let counter = polls.clone();
        let (addr, log) = canned_server(Arc::new(move |request: &str, _: &str| {
            if request.contains("/xhr_send ") {
                return "HTTP/1.1 204 No Content\r\n\r\n".to_owned();
            }
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ok(&answers[n.min(answers.len() - 1)])
        }));

        let (mut conn, socket_id) = Conn::open(Transport::XhrPolling, &endpoint(addr), &[])
            .await
            .unwrap();
        assert_eq!(socket_id, "1.2");
        conn.subscribe("c").await.unwrap();
        let (stamps, ending, _) = stamps_of(conn).await;
        assert_eq!(stamps, vec![7, 8]);
        assert!(matches!(ending, Ending::Closed(4100)), "{ending:?}");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 6, "{log:?}");
        assert!(log[0].starts_with("POST /pusher/app/key/") && log[0].contains("/xhr?protocol=7"));
        let send = log.iter().find(|l| l.contains("/xhr_send ")).unwrap();
        // The body: a JSON array of frame texts, here the one subscribe.
        let body: Vec<String> = serde_json::from_str(&send[send.find('[').unwrap()..]).unwrap();
        let frames: Vec<serde_json::Value> = body
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(
            frames,
            vec![serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "c"}})]
        );
        // Every poll (five) went to the same session.
        let session = &log[0][..log[0].find("/xhr?").unwrap()];
        assert_eq!(log.iter().filter(|l| l.starts_with(session)).count(), 6);
    }
}

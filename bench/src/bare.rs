//! The bare broadcast server: the limit the real servers are measured
//! against. It speaks just enough of the protocol for the load generator —
//! `connection_established`, `subscription_succeeded` (with presence
//! members), `member_added`/`member_removed`, `pusher:pong` — and
//! `POST /apps/{id}/events` (and `batch_events`) broadcasts one pre-encoded
//! frame per channel to its subscribers. No signatures are checked, no
//! limits applied, no queue bounded: it is the cost of moving the bytes.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Outbox = UnboundedSender<Message>;

#[derive(Default)]
struct Channel {
    subscribers: HashMap<u64, Outbox>,
    /// Presence: user id → (user_info JSON, sockets of that user here).
    members: HashMap<String, (Value, u32)>,
    /// Presence: socket → its user id.
    member_of: HashMap<u64, String>,
}

#[derive(Default)]
pub struct Bare {
    channels: RwLock<HashMap<String, Channel>>,
    next_socket: AtomicU64,
}

fn frame(event: &str, channel: &str, data: &str) -> Message {
    Message::text(json!({ "event": event, "channel": channel, "data": data }).to_string())
}

impl Bare {
    /// Sends `data` as event `name` to every subscriber of each channel:
    /// the frame is encoded once per channel and shared.
    fn broadcast(&self, name: &str, channels: &[String], data: &str) {
        let all = self.channels.read().expect("channels lock");
        for channel in channels {
            if let Some(state) = all.get(channel) {
                let message = frame(name, channel, data);
                for outbox in state.subscribers.values() {
                    let _ = outbox.send(message.clone());
                }
            }
        }
    }

    fn subscribe(&self, socket: u64, outbox: &Outbox, channel: &str, channel_data: Option<&str>) {
        let mut all = self.channels.write().expect("channels lock");
        let state = all.entry(channel.to_owned()).or_default();
        if !channel.starts_with("presence-") {
            state.subscribers.insert(socket, outbox.clone());
            let _ = outbox.send(frame(
                "pusher_internal:subscription_succeeded",
                channel,
                "{}",
            ));
            return;
        }
        let member: Value = channel_data
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        let user_id = match &member["user_id"] {
            Value::String(s) => s.clone(),
            Value::Null => socket.to_string(),
            other => other.to_string(),
        };
        let info = member.get("user_info").cloned().unwrap_or(json!({}));
        if state.member_of.contains_key(&socket) {
            // Subscribing twice: answer success again, nothing changes.
        } else {
            let entry = state
                .members
                .entry(user_id.clone())
                .or_insert((info.clone(), 0));
            entry.1 += 1;
            if entry.1 == 1 {
                let added = frame(
                    "pusher_internal:member_added",
                    channel,
                    &json!({ "user_id": user_id, "user_info": info }).to_string(),
                );
                for outbox in state.subscribers.values() {
                    let _ = outbox.send(added.clone());
                }
            }
            state.member_of.insert(socket, user_id);
            state.subscribers.insert(socket, outbox.clone());
        }
        let ids: Vec<&String> = state.members.keys().collect();
        let hash: serde_json::Map<String, Value> = state
            .members
            .iter()
            .map(|(id, (info, _))| (id.clone(), info.clone()))
            .collect();
        let data = json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } });
        let _ = outbox.send(frame(
            "pusher_internal:subscription_succeeded",
            channel,
            &data.to_string(),
        ));
    }

    fn unsubscribe(&self, socket: u64, channel: &str) {
        let mut all = self.channels.write().expect("channels lock");
        let Some(state) = all.get_mut(channel) else {
            return;
        };
        state.subscribers.remove(&socket);
        if let Some(user_id) = state.member_of.remove(&socket) {
            let last = match state.members.get_mut(&user_id) {
                Some(entry) => {
                    entry.1 -= 1;
                    entry.1 == 0
                }
                None => false,
            };
            if last {
                state.members.remove(&user_id);
                let removed = frame(
                    "pusher_internal:member_removed",
                    channel,
                    &json!({ "user_id": user_id }).to_string(),
                );
                for outbox in state.subscribers.values() {
                    let _ = outbox.send(removed.clone());
                }
            }
        }
        if state.subscribers.is_empty() {
            all.remove(channel);
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
}

async fn connection(bare: Arc<Bare>, ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) {
    let socket = bare.next_socket.fetch_add(1, Ordering::Relaxed) + 1;
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut inbox) = unbounded_channel::<Message>();
    let established = format!(
        r#"{{"event":"pusher:connection_established","data":"{{\"socket_id\":\"{}.{}\",\"activity_timeout\":120}}"}}"#,
        std::process::id(),
        socket
    );
    let _ = outbox.send(Message::text(established));
    // Writer: everything queued goes out in one flush.
    let writer = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(more) = inbox.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut channels: Vec<String> = Vec::new();
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let data = &value["data"];
        match value["event"].as_str() {
            Some("pusher:subscribe") => {
                if let Some(channel) = data["channel"].as_str() {
                    bare.subscribe(socket, &outbox, channel, data["channel_data"].as_str());
                    if !channels.iter().any(|c| c == channel) {
                        channels.push(channel.to_owned());
                    }
                }
            }
            Some("pusher:unsubscribe") => {
                if let Some(channel) = data["channel"].as_str() {
                    bare.unsubscribe(socket, channel);
                    channels.retain(|c| c != channel);
                }
            }
            Some("pusher:ping") => {
                let _ = outbox.send(Message::text(r#"{"event":"pusher:pong","data":"{}"}"#));
            }
            _ => {}
        }
    }
    for channel in &channels {
        bare.unsubscribe(socket, channel);
    }
    drop(outbox);
    let _ = writer.await;
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

/// Publishes one event object `{"name","data","channels"|"channel"}`.
fn publish(bare: &Bare, event: &Value) -> bool {
    let Some(name) = event["name"].as_str() else {
        return false;
    };
    let data = match &event["data"] {
        Value::String(s) => s.clone(),
        Value::Null => return false,
        other => other.to_string(),
    };
    let channels: Vec<String> = match (&event["channels"], &event["channel"]) {
        (Value::Array(list), _) => list
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        (_, Value::String(one)) => vec![one.clone()],
        _ => return false,
    };
    bare.broadcast(name, &channels, &data);
    true
}

async fn handle(
    bare: Arc<Bare>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/app/") {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                r#"{"error":"WebSocket upgrade expected"}"#,
            ));
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                connection(bare, ws).await;
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            )
            .body(Full::new(Bytes::new()))
            .expect("valid response");
        return Ok(response);
    }
    if req.method() == Method::POST && path.starts_with("/apps/") {
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                r#"{"error":"cannot read body"}"#,
            ));
        };
        let Ok(value) = serde_json::from_slice::<Value>(&body) else {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid JSON"}"#,
            ));
        };
        let ok = if path.ends_with("/batch_events") {
            value["batch"]
                .as_array()
                .is_some_and(|batch| batch.iter().all(|event| publish(&bare, event)))
        } else if path.ends_with("/events") {
            publish(&bare, &value)
        } else {
            return Ok(respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#));
        };
        return Ok(if ok {
            respond(StatusCode::OK, "{}")
        } else {
            respond(StatusCode::BAD_REQUEST, r#"{"error":"bad event"}"#)
        });
    }
    Ok(respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#))
}

/// Serves on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener: TcpListener = socket.listen(4096)?;
    eprintln!("bare-server listening on {}", listener.local_addr()?);
    let bare = Arc::new(Bare::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait and go on.
                eprintln!("bare-server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let bare = bare.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(bare.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

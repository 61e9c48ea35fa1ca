//! HTTP fallback sessions (`xhr_streaming`, `xhr_polling`) through any
//! node: the Redis side of [`crate::xhr::relay`].
//!
//! - Ownership: the node that opens a session records itself under the
//!   session's key ([`Keys::xhr_session`], `SET NX PX`, one key per
//!   command), refreshed by every request that reaches the session, for
//!   [`Host::ownership`] after the last one. A node that gets a request
//!   for a session it does not hold reads the key: no owner (or itself) —
//!   the session is unknown, as on one node, and a receive request opens
//!   it here; another node — the request is relayed to it.
//! - Relayed requests travel on the bus addressed to the owner
//!   ([`BusMessage::XhrSend`], [`BusMessage::XhrAttach`]); only it acts,
//!   and answers with a [`BusMessage::XhrReply`]. An attached receive
//!   request then gets the lines the session wrote ([`BusMessage::XhrLine`],
//!   in order: one node's bus messages arrive in the order sent) and its
//!   end ([`BusMessage::XhrEnd`]); the relaying node tells the owner when
//!   its client went away or read too slowly ([`BusMessage::XhrGone`]).
//! - No answer within the operation timeout (the owner died, Redis is
//!   down): the session is unknown; a receive request takes the session
//!   over and opens it here.
//! - Bounded: requests waiting for an answer plus relayed responses open
//!   on this node ([`MAX_RELAYED`], beyond: a 503), responses this node
//!   serves to others ([`MAX_SERVED`]), and the lines of one relayed
//!   response (the relaying node's response holds as many chunks as a
//!   local one; full: the session closes as for a slow client). A relayed
//!   response with no line for longer than a healthy session allows (its
//!   owner died) is ended.

use super::bus::BusMessage;
use super::keys::SEP;
use super::slots::SlotBatch;
use super::RedisAdapter;
use crate::http::streamed::{BodyWriter, WriteError};
use crate::xhr::framing;
use crate::xhr::relay::{AttachAnswer, Host, Owner, Relayed, SendAnswer, XhrRelay};
use crate::xhr::transport::Kind;
use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most relayed requests waiting for their owner's answer plus relayed
/// responses open on this node; beyond, a 503.
pub const MAX_RELAYED: usize = 4096;

/// Most responses this node writes for other nodes at once; beyond, the
/// relaying node answers 503.
pub const MAX_SERVED: usize = 4096;

/// Ownership refreshes waiting to be written (dropped beyond: the next
/// request of the session refreshes it).
const REFRESH_QUEUE: usize = 4096;

/// Most refreshes written in one pipeline.
const REFRESH_BATCH: usize = 512;

/// The relay's state in the adapter.
pub struct State {
    /// This node's sessions, once the HTTP server runs.
    host: OnceLock<Arc<Host>>,
    next_request: AtomicU64,
    /// Answers awaited by this node's relayed requests, by request id.
    pending: DashMap<u64, oneshot::Sender<String>>,
    /// Relayed responses open on this node, by request id.
    relaying: DashMap<u64, Relaying>,
    /// Responses this node writes for other nodes, by (node, request):
    /// told whether the client was slow when the relaying node gives up.
    served: DashMap<(String, u64), oneshot::Sender<bool>>,
    refresh: mpsc::Sender<String>,
    /// Taken by the refresh task when the relay starts serving.
    refresh_queue: Mutex<Option<mpsc::Receiver<String>>>,
}

/// A response on this node carrying the lines of a session another node holds.
struct Relaying {
    writer: BodyWriter,
    owner: String,
    /// When the last line (or the attach) came.
    last: Instant,
}

impl State {
    /// An idle relay (no host yet: every session is unknown).
    pub fn new() -> Self {
        let (refresh, queue) = mpsc::channel(REFRESH_QUEUE);
        State {
            host: OnceLock::new(),
            next_request: AtomicU64::new(1),
            pending: DashMap::new(),
            relaying: DashMap::new(),
            served: DashMap::new(),
            refresh,
            refresh_queue: Mutex::new(Some(queue)),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// The encoded answers of [`BusMessage::XhrReply`].
mod answer {
    pub const TAKEN: &str = "taken";
    pub const CLOSED: &str = "closed";
    pub const UNKNOWN: &str = "unknown";
    pub const BUSY: &str = "busy";
    pub const ATTACHED: &str = "attached";
    pub const OTHER_KIND: &str = "other_kind";
    /// Followed by the session's close line.
    pub const ENDED: &str = "ended:";
}

fn send_answer(sent: SendAnswer) -> &'static str {
    match sent {
        SendAnswer::Taken => answer::TAKEN,
        SendAnswer::Closed => answer::CLOSED,
        SendAnswer::Unknown => answer::UNKNOWN,
    }
}

fn attach_answer(attached: &AttachAnswer) -> String {
    match attached {
        AttachAnswer::Attached => answer::ATTACHED.to_owned(),
        AttachAnswer::OtherKind => answer::OTHER_KIND.to_owned(),
        AttachAnswer::Closed(line) => format!("{}{line}", answer::ENDED),
        AttachAnswer::Unknown => answer::UNKNOWN.to_owned(),
    }
}

/// Who holds a session, as Redis says.
enum Claim {
    /// This node: it was free (now claimed) or already this node's, or
    /// Redis could not tell.
    Ours,
    /// Another node.
    Theirs(String),
}

impl RedisAdapter {
    /// Sends a relay message addressed to node `to` on that node's group
    /// ([`super::keys::Keys::node_group`]): every message to one node (a
    /// response's lines, then its end) keeps its order.
    fn tell_node(&self, to: &str, message: &BusMessage) {
        self.tell_other_nodes(self.keys.node_group(to), message);
    }

    /// Answers a relaying node's `request` (an [`answer`] word).
    fn xhr_reply(&self, to: &str, request: u64, answer: &str) {
        self.tell_node(
            to,
            &BusMessage::XhrReply {
                to,
                request,
                answer,
            },
        );
    }

    fn xhr_host(&self) -> Option<Arc<Host>> {
        self.xhr.host.get().cloned()
    }

    fn xhr_relayed(&self, kind: &str) {
        self.metrics.xhr_relayed.with_label_values(&[kind]).inc();
    }

    /// The owner of session `id` per Redis, other than this node.
    async fn xhr_owner(&self, id: &str) -> Option<String> {
        let key = self.keys.xhr_session(id);
        let owner: Option<String> = self
            .run(|mut connection| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await
            .flatten();
        owner.filter(|owner| *owner != self.node_id)
    }

    /// Claims session `id` for this node unless another node holds it.
    async fn xhr_claim(&self, id: &str, ttl: Duration) -> Claim {
        let key = self.keys.xhr_session(id);
        let node = self.node_id.clone();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let claimed: Option<Option<String>> = self
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(node)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await;
        match claimed {
            Some(None) => match self.xhr_owner(id).await {
                Some(owner) => Claim::Theirs(owner),
                None => Claim::Ours,
            },
            _ => Claim::Ours,
        }
    }

    /// Records this node as the owner of `id`, whoever held it (its owner
    /// did not answer, or no longer has it).
    async fn xhr_take_over(&self, id: &str, ttl: Duration) {
        let key = self.keys.xhr_session(id);
        let node = self.node_id.clone();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run(|mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(node)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut connection)
                .await
        })
        .await;
    }

    /// A new request id with its answer's receiver, or `None` when
    /// [`MAX_RELAYED`] are in flight.
    fn xhr_request(&self) -> Option<(u64, oneshot::Receiver<String>)> {
        if self.xhr.pending.len() + self.xhr.relaying.len() >= MAX_RELAYED {
            self.xhr_relayed("busy");
            return None;
        }
        let request = self.xhr.next_request.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        self.xhr.pending.insert(request, answered);
        Some((request, answer))
    }

    /// The owner's answer to `request`, or `None` after the operation timeout.
    async fn xhr_answer(&self, request: u64, answer: oneshot::Receiver<String>) -> Option<String> {
        let answer = tokio::time::timeout(self.timeout(), answer).await;
        self.xhr.pending.remove(&request);
        match answer {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                self.xhr_relayed("timeout");
                None
            }
        }
    }

    async fn xhr_relay_send(
        &self,
        owner: &Owner,
        id: &str,
        frames: &[String],
    ) -> Relayed<SendAnswer> {
        let Some((request, answer)) = self.xhr_request() else {
            return Relayed::Busy;
        };
        // A Vec<String> always serializes.
        let frames = serde_json::to_string(frames).unwrap_or_else(|_| "[]".to_owned());
        self.tell_node(
            &owner.0,
            &BusMessage::XhrSend {
                to: &owner.0,
                from: &self.node_id,
                request,
                session: id,
                frames: &frames,
            },
        );
        let Some(answer) = self.xhr_answer(request, answer).await else {
            return Relayed::NoOwner;
        };
        self.xhr_relayed("send");
        match answer.as_str() {
            answer::TAKEN => Relayed::Answer(SendAnswer::Taken),
            answer::CLOSED => Relayed::Answer(SendAnswer::Closed),
            answer::BUSY => Relayed::Busy,
            _ => Relayed::Answer(SendAnswer::Unknown),
        }
    }

    async fn xhr_relay_attach(
        self: &Arc<Self>,
        id: &str,
        kind: Kind,
        writer: BodyWriter,
    ) -> Relayed<AttachAnswer> {
        let Some(host) = self.xhr_host() else {
            return Relayed::NoOwner;
        };
        let ttl = host.ownership();
        let owner = match self.xhr_claim(id, ttl).await {
            Claim::Ours => return Relayed::NoOwner,
            Claim::Theirs(owner) => owner,
        };
        let Some((request, answer)) = self.xhr_request() else {
            return Relayed::Busy;
        };
        // Listed before the request leaves: the owner's lines may come
        // right behind its answer, before this task runs again.
        let closed = writer.closed();
        self.xhr.relaying.insert(
            request,
            Relaying {
                writer,
                owner: owner.clone(),
                last: Instant::now(),
            },
        );
        self.tell_node(
            &owner,
            &BusMessage::XhrAttach {
                to: &owner,
                from: &self.node_id,
                request,
                session: id,
                streaming: kind == Kind::Streaming,
            },
        );
        let answer = self.xhr_answer(request, answer).await;
        if answer.as_deref() == Some(answer::ATTACHED) {
            self.xhr_relayed("attach");
            tokio::spawn(watch_relayed(
                self.clone(),
                request,
                closed,
                host.quiet_most() + self.timeout(),
            ));
            return Relayed::Answer(AttachAnswer::Attached);
        }
        self.xhr.relaying.remove(&request);
        match answer.as_deref() {
            Some(answer::OTHER_KIND) => {
                self.xhr_relayed("attach");
                Relayed::Answer(AttachAnswer::OtherKind)
            }
            Some(answer::BUSY) => Relayed::Busy,
            Some(text) if text.starts_with(answer::ENDED) => {
                self.xhr_relayed("attach");
                Relayed::Answer(AttachAnswer::Closed(text[answer::ENDED.len()..].to_owned()))
            }
            // The owner no longer has it, or did not answer (dead, or
            // Redis is down): the session is this node's from now on.
            _ => {
                self.xhr_take_over(id, ttl).await;
                Relayed::NoOwner
            }
        }
    }

    /// Ends relayed response `request` on this node, telling its owner why.
    fn xhr_give_up(&self, request: u64, slow: bool) {
        if let Some((_, relaying)) = self.xhr.relaying.remove(&request) {
            self.tell_node(
                &relaying.owner,
                &BusMessage::XhrGone {
                    to: &relaying.owner,
                    from: &self.node_id,
                    request,
                    slow,
                },
            );
        }
    }

    /// Handles a relay message of the bus (addressed to this node).
    pub(super) fn on_xhr_message(self: &Arc<Self>, message: BusMessage) {
        match message {
            BusMessage::XhrReply {
                to,
                request,
                answer,
            } if to == self.node_id => {
                if let Some((_, answered)) = self.xhr.pending.remove(&request) {
                    let _ = answered.send(answer.to_owned());
                }
            }
            BusMessage::XhrLine { to, request, line } if to == self.node_id => {
                let written = match self.xhr.relaying.get_mut(&request) {
                    Some(mut relaying) => {
                        relaying.last = Instant::now();
                        relaying.writer.write(line.to_owned())
                    }
                    None => return,
                };
                match written {
                    Ok(()) => {}
                    Err(WriteError::Full) => self.xhr_give_up(request, true),
                    Err(WriteError::Closed) => self.xhr_give_up(request, false),
                }
            }
            BusMessage::XhrEnd { to, request } if to == self.node_id => {
                // Dropping the writer ends the response.
                self.xhr.relaying.remove(&request);
            }
            BusMessage::XhrGone {
                to,
                from,
                request,
                slow,
            } if to == self.node_id => {
                if let Some((_, stop)) = self.xhr.served.remove(&(from.to_owned(), request)) {
                    let _ = stop.send(slow);
                }
            }
            BusMessage::XhrSend {
                to,
                from,
                request,
                session,
                frames,
            } if to == self.node_id => self.xhr_serve_send(from, request, session, frames),
            BusMessage::XhrAttach {
                to,
                from,
                request,
                session,
                streaming,
            } if to == self.node_id => {
                let kind = if streaming {
                    Kind::Streaming
                } else {
                    Kind::Polling
                };
                self.xhr_serve_attach(from, request, session, kind);
            }
            _ => {}
        }
    }

    /// Another node's `xhr_send` for a session here.
    fn xhr_serve_send(self: &Arc<Self>, from: &str, request: u64, session: &str, frames: &str) {
        let Some(host) = self.xhr_host() else {
            return;
        };
        let from = from.to_owned();
        // Checked by the relaying node; a body that does not parse here
        // finds no session.
        let Ok(frames) = framing::parse_send(frames.as_bytes()) else {
            return self.xhr_reply(&from, request, answer::UNKNOWN);
        };
        self.xhr_relayed("served_send");
        self.xhr_refresh(session);
        // Queued on the session now, so sends keep the order they came in.
        let taken = host.send(session, frames);
        let adapter = self.clone();
        tokio::spawn(async move {
            let answer = send_answer(taken.await);
            adapter.xhr_reply(&from, request, answer);
        });
    }

    /// Another node's receive request for a session here: attached as a
    /// local one, its lines sent to that node until the session ends the
    /// response or that node gives up on it.
    fn xhr_serve_attach(self: &Arc<Self>, from: &str, request: u64, session: &str, kind: Kind) {
        let Some(host) = self.xhr_host() else {
            return;
        };
        let from = from.to_owned();
        if self.xhr.served.len() >= MAX_SERVED {
            self.xhr_relayed("busy");
            return self.xhr_reply(&from, request, answer::BUSY);
        }
        self.xhr_relayed("served_attach");
        self.xhr_refresh(session);
        let attaching = host.attach(session, kind);
        let adapter = self.clone();
        tokio::spawn(async move {
            let (attached, remote) = attaching.await;
            let Some(remote) = remote else {
                let answer = attach_answer(&attached);
                return adapter.xhr_reply(&from, request, &answer);
            };
            let key = (from.clone(), request);
            let (stop, mut stopped) = oneshot::channel();
            adapter.xhr.served.insert(key.clone(), stop);
            adapter.xhr_reply(&from, request, answer::ATTACHED);
            let mut body = remote.body;
            loop {
                tokio::select! {
                    chunk = body.next() => match chunk {
                        Some(Ok(chunk)) => adapter.tell_node(&from, &BusMessage::XhrLine {
                            to: &from,
                            request,
                            line: &String::from_utf8_lossy(&chunk),
                        }),
                        Some(Err(never)) => match never {},
                        None => {
                            adapter.tell_node(&from, &BusMessage::XhrEnd { to: &from, request });
                            break;
                        }
                    },
                    slow = &mut stopped => {
                        if slow == Ok(true) {
                            remote.slow.signal();
                        }
                        break;
                    }
                }
            }
            adapter.xhr.served.remove(&key);
            // Dropping the body tells the session its client went away
            // (unless it ended the response itself).
            drop(body);
        });
    }

    /// Queues a refresh of this node's ownership of session `id`.
    fn xhr_refresh(&self, id: &str) {
        let _ = self.xhr.refresh.try_send(id.to_owned());
    }
}

/// Watches relayed response `request` on this node: its client going away
/// (`closed`) or no line for `quiet_most` (the owner died) ends it.
async fn watch_relayed(
    adapter: Arc<RedisAdapter>,
    request: u64,
    closed: impl std::future::Future<Output = ()>,
    quiet_most: Duration,
) {
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return adapter.xhr_give_up(request, false),
            () = tokio::time::sleep(quiet_most) => {
                let quiet = match adapter.xhr.relaying.get(&request) {
                    Some(relaying) => relaying.last.elapsed() >= quiet_most,
                    None => return,
                };
                if quiet {
                    tracing::debug!(request, "a relayed HTTP session response got no line from its owner: ended");
                    return adapter.xhr_give_up(request, false);
                }
            }
        }
    }
}

/// Writes this node's ownership of the sessions requests reached, batched.
async fn refresh(adapter: Arc<RedisAdapter>, mut queue: mpsc::Receiver<String>, ttl: Duration) {
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, REFRESH_BATCH).await > 0 {
        batch.sort_unstable();
        batch.dedup();
        // Sessions' keys are spread over slots: one pipeline per slot on a cluster.
        let mut pipe = SlotBatch::new(adapter.client.is_cluster(), |_| {});
        for id in &batch {
            let key = adapter.keys.xhr_session(id);
            pipe.add(key.as_bytes(), |pipe| {
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(&adapter.node_id)
                    .arg("PX")
                    .arg(ttl_ms);
            });
        }
        batch.clear();
        adapter
            .run(|connection| async move { pipe.query::<redis::Value>(&connection).await })
            .await;
    }
}

/// [`XhrRelay`] over the Redis bus.
pub struct RedisXhrRelay(pub Arc<RedisAdapter>);

#[async_trait]
impl XhrRelay for RedisXhrRelay {
    fn serve(&self, host: Arc<Host>) {
        let ttl = host.ownership();
        if self.0.xhr.host.set(host).is_err() {
            return;
        }
        let queue = self
            .0
            .xhr
            .refresh_queue
            .lock()
            .ok()
            .and_then(|mut queue| queue.take());
        if let Some(queue) = queue {
            tokio::spawn(refresh(self.0.clone(), queue, ttl));
        }
    }

    async fn locate(&self, id: &str) -> Option<Owner> {
        if id.contains(SEP) || self.0.xhr_host().is_none() {
            return None;
        }
        self.0.xhr_owner(id).await.map(Owner)
    }

    async fn send(&self, owner: &Owner, id: &str, frames: &[String]) -> Relayed<SendAnswer> {
        self.0.xhr_relay_send(owner, id, frames).await
    }

    async fn attach(&self, id: &str, kind: Kind, writer: BodyWriter) -> Relayed<AttachAnswer> {
        if id.contains(SEP) {
            return Relayed::NoOwner;
        }
        self.0.xhr_relay_attach(id, kind, writer).await
    }

    fn held(&self, id: &str) {
        self.0.xhr_refresh(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart() {
        assert_eq!(send_answer(SendAnswer::Taken), answer::TAKEN);
        assert_eq!(send_answer(SendAnswer::Unknown), answer::UNKNOWN);
        let closed = attach_answer(&AttachAnswer::Closed("c[4009,\"x\"]\n".into()));
        assert_eq!(closed.strip_prefix(answer::ENDED), Some("c[4009,\"x\"]\n"));
        assert_eq!(attach_answer(&AttachAnswer::Attached), answer::ATTACHED);
        assert_eq!(attach_answer(&AttachAnswer::OtherKind), answer::OTHER_KIND);
    }
}

//! The seam between this node's HTTP sessions and the other nodes of a
//! cluster, so a session works whichever node a request lands on.
//!
//! pusher-js makes a new HTTP request for every poll, every reopened stream
//! and every `xhr_send`, all with the same session id: a load balancer
//! without sticky routing spreads them over the nodes. A session lives on
//! the node that opened it (its owner); a node that gets a request for a
//! session it does not hold asks its [`XhrRelay`]:
//!
//! - a receive request (stream or poll) is attached to the session on its
//!   owner, which writes the lines it would have written to a local
//!   response ([`Host::attach`]) — same framing, heartbeats, poll ends,
//!   close lines and slow-client rule — and the relay copies them into
//!   this node's response;
//! - an `xhr_send` is handed to the owner's session ([`Host::send`]) and
//!   this node answers what the owner answered.
//!
//! The transport knows nothing of how nodes talk: the Redis adapter
//! implements the relay over its bus (`adapter::redis::xhr_relay`); the
//! local adapter uses [`NoRelay`] (one node holds every session).

use super::registry::{Entry, Registry};
use super::transport::{Attach, ClientFrames, Kind, SlowRemote, Xhr};
use crate::http::streamed;
use crate::http::streamed::BodyWriter;
use crate::session::Session;
use actix::Addr;
use actix_web::web::Bytes;
use async_trait::async_trait;
use futures_util::Stream;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What the owner answered to a relayed `xhr_send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAnswer {
    /// The session took the frames: a 204.
    Taken,
    /// The session closed between the lookup and the hand-over: a 404.
    Closed,
    /// The owner holds no open session by that id: the 404 of an unknown one.
    Unknown,
}

/// What the owner answered to a relayed receive request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachAnswer {
    /// Attached: the owner's lines are written into the relaying node's
    /// response, which ends when the owner ends it.
    Attached,
    /// The session uses the other HTTP transport: a 400.
    OtherKind,
    /// The session closed lately: a 200 carrying its close line (`c[...]`).
    Closed(String),
    /// The owner holds no such session: the relaying node opens it.
    Unknown,
}

/// What a relay came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed<T> {
    /// The answer of the node holding the session.
    Answer(T),
    /// No other node holds the session (or none answered within the
    /// operation timeout): this node answers as for an unknown session.
    NoOwner,
    /// This node has its maximum of relayed requests in flight: a 503.
    Busy,
}

/// Another node holding a session, as [`XhrRelay::locate`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

/// How a node reaches the sessions other nodes hold.
#[async_trait]
pub trait XhrRelay: Send + Sync {
    /// Gives the relay this node's sessions, for the requests other nodes
    /// relay here. Called once, when the HTTP server starts.
    fn serve(&self, host: Arc<Host>);

    /// The node holding session `id` (not in this node's registry), if
    /// another node does.
    async fn locate(&self, id: &str) -> Option<Owner>;

    /// Hands `frames` (an `xhr_send`, already checked) to session `id` on `owner`.
    async fn send(&self, owner: &Owner, id: &str, frames: &[String]) -> Relayed<SendAnswer>;

    /// A receive request of `kind` for session `id`, which this node does
    /// not hold: attaches it on the node that does, whose lines are then
    /// written to `writer` (this node's response body) until it ends them.
    /// [`Relayed::NoOwner`]: no node holds it, this node is now its owner
    /// and opens it.
    async fn attach(&self, id: &str, kind: Kind, writer: BodyWriter) -> Relayed<AttachAnswer>;

    /// A request reached session `id` on this node: other nodes keep
    /// relaying to this one. Never waits.
    fn held(&self, id: &str);
}

/// The relay of a single node (the local adapter): no other node holds
/// a session, so every session unknown here is unknown.
pub struct NoRelay;

#[async_trait]
impl XhrRelay for NoRelay {
    fn serve(&self, _host: Arc<Host>) {}

    async fn locate(&self, _id: &str) -> Option<Owner> {
        None
    }

    async fn send(&self, _owner: &Owner, _id: &str, _frames: &[String]) -> Relayed<SendAnswer> {
        Relayed::NoOwner
    }

    async fn attach(&self, _id: &str, _kind: Kind, _writer: BodyWriter) -> Relayed<AttachAnswer> {
        Relayed::NoOwner
    }

    fn held(&self, _id: &str) {}
}

/// A receive request of another node attached to a session here: the
/// lines the session writes come out of `body`, which ends when the
/// session ends the response. Dropping it tells the session its client
/// went away (as a local client dropping its request does).
pub struct RemoteAttach {
    /// The lines written to the response, each chunk whole lines.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>,
    /// Tells the session its client reads too slowly.
    pub slow: SlowSignal,
}

/// Tells a session that a response relayed to another node filled up there.
pub struct SlowSignal(Addr<Session<Xhr>>);

impl SlowSignal {
    /// The relaying node could not write as fast as the session did: the
    /// session closes with 4100, as for a slow local client.
    pub fn signal(&self) {
        self.0.do_send(SlowRemote);
    }
}

/// This node's sessions, as other nodes' relayed requests reach them.
pub struct Host {
    registry: Arc<Registry>,
    /// Chunks a streaming response holds before its client counts as slow.
    stream_capacity: usize,
    activity_timeout: Duration,
    /// The longest a healthy attached response goes without a line: a
    /// heartbeat or a poll's end comes before that.
    quiet_most: Duration,
}

impl Host {
    /// The host of `registry`'s sessions; `stream_capacity` is the
    /// connection queue size, `activity_timeout` the sessions' own, and
    /// `heartbeat`/`long_poll_timeout` the transports' settings.
    pub fn new(
        registry: Arc<Registry>,
        stream_capacity: usize,
        activity_timeout: Duration,
        heartbeat: Duration,
        long_poll_timeout: Duration,
    ) -> Self {
        Host {
            registry,
            stream_capacity,
            activity_timeout,
            quiet_most: heartbeat.max(long_poll_timeout),
        }
    }

    /// How long another node should take this node as the owner of a
    /// session after the last request reached it: the session closes after
    /// `activity_timeout` without a request, and its close line is kept
    /// for [`super::registry::CLOSED_KEPT`] more.
    pub fn ownership(&self) -> Duration {
        self.activity_timeout + super::registry::CLOSED_KEPT
    }

    /// The longest an attached response goes without a line from its
    /// session while the owner is alive (a heartbeat or a poll's end comes
    /// before); a relaying node ends a response quiet for longer.
    pub fn quiet_most(&self) -> Duration {
        self.quiet_most
    }

    /// Whether this node holds session `id` (open or closed lately).
    pub fn holds(&self, id: &str) -> bool {
        self.registry.get(id).is_some()
    }

    /// Hands `frames` to session `id`. They are queued on the session at
    /// once (before this returns), so relayed sends keep their order; the
    /// future tells when the session took them.
    pub fn send(&self, id: &str, frames: Vec<String>) -> impl Future<Output = SendAnswer> {
        let request = match self.registry.get(id) {
            Some(Entry::Open(session)) => Some(session.send(ClientFrames(frames))),
            _ => None,
        };
        async move {
            match request {
                None => SendAnswer::Unknown,
                Some(request) => match request.await {
                    Ok(()) => SendAnswer::Taken,
                    Err(_) => SendAnswer::Closed,
                },
            }
        }
    }

    /// Attaches a receive request of `kind` relayed from another node to
    /// session `id`, as a local request would be (the newest request wins,
    /// wherever it is). Queued on the session at once; the future gives
    /// the answer and, when attached, the response's lines.
    pub fn attach(
        &self,
        id: &str,
        kind: Kind,
    ) -> impl Future<Output = (AttachAnswer, Option<RemoteAttach>)> {
        let found = self.registry.get(id);
        let started = match found {
            Some(Entry::Open(session)) => {
                let (writer, body) =
                    streamed::body(super::body_capacity(kind, self.stream_capacity));
                let request = session.send(Attach { writer, kind });
                Ok((session, request, body))
            }
            Some(Entry::Closed(line, _)) => Err(AttachAnswer::Closed(line)),
            None => Err(AttachAnswer::Unknown),
        };
        async move {
            let (session, request, body) = match started {
                Ok(started) => started,
                Err(answer) => return (answer, None),
            };
            match request.await {
                Ok(true) => {
                    let body = Box::pin(body);
                    let slow = SlowSignal(session);
                    (AttachAnswer::Attached, Some(RemoteAttach { body, slow }))
                }
                Ok(false) => (AttachAnswer::OtherKind, None),
                Err(_) => (
                    AttachAnswer::Closed(super::framing::close(1006, "Session closed")),
                    None,
                ),
            }
        }
    }
}

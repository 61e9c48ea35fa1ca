//! The hub's handle on one connection: its socket id, a bounded outgoing
//! queue of already-encoded frames, and a signal asking the transport to close.
//!
//! The transport (ws/) owns the receiving ends; the hub never knows how frames
//! reach the client.

use super::frame_queue::{self, FrameQueue, TrySendError};
use crate::protocol::pushi::Dialect;
use bytestring::ByteString;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

/// Socket id: two decimal integers joined by a dot, unique per connection.
pub type SocketId = Arc<str>;

/// What happened when a frame was offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued.
    Queued,
    /// The queue was full: the connection has been asked to close with 4100.
    Overflowed,
    /// The connection is gone or closing.
    Closed,
}

/// The shared side of one connection.
pub struct Connection {
    /// The connection's socket id.
    pub socket_id: SocketId,
    /// The id of the app the connection belongs to.
    pub app_id: Arc<str>,
    /// Frames for the client, inline: a delivery touches this connection's
    /// memory only (see `frame_queue`).
    outgoing: FrameQueue,
    close_code: AtomicU16,
    closer: OnceLock<Closer>,
    /// False while a connection of an app with `authorized_connections` has
    /// not signed in or subscribed to a signed channel (see [`Connection::authorize`]).
    authorized: AtomicBool,
    /// Set once, before the connection subscribes, for a pushi.js client
    /// (`/{key}`): the fan-out gives it pushi's frames.
    pushi: AtomicBool,
}

impl AsRef<FrameQueue> for Connection {
    fn as_ref(&self) -> &FrameQueue {
        &self.outgoing
    }
}

/// How the transport is told to close; registered once it runs.
pub type Closer = Box<dyn Fn(u16) + Send + Sync>;

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("socket_id", &self.socket_id)
            .field("app_id", &self.app_id)
            .field("close_code", &self.close_code())
            .finish_non_exhaustive()
    }
}

/// What the transport keeps: the receiving ends of the queue and of the close signal.
pub struct ConnectionReceiver {
    /// Frames to write to the client, in order.
    pub outgoing: frame_queue::Receiver<Connection>,
    /// The shared side, to await close requests on.
    pub connection: Arc<Connection>,
}

impl Connection {
    /// A connection with an outgoing queue of `capacity` frames.
    pub fn new(
        socket_id: SocketId,
        app_id: Arc<str>,
        capacity: usize,
    ) -> (Arc<Connection>, ConnectionReceiver) {
        let connection = Arc::new(Connection {
            socket_id,
            app_id,
            outgoing: FrameQueue::new(capacity),
            close_code: AtomicU16::new(0),
            closer: OnceLock::new(),
            authorized: AtomicBool::new(true),
            pushi: AtomicBool::new(false),
        });
        let receiver = ConnectionReceiver {
            outgoing: frame_queue::Receiver::new(connection.clone()),
            connection: connection.clone(),
        };
        (connection, receiver)
    }

    /// Marks the connection as speaking pushi's dialect (set by the
    /// transport before its first subscription).
    pub fn set_dialect(&self, dialect: Dialect) {
        self.pushi
            .store(dialect == Dialect::Pushi, Ordering::Relaxed);
    }

    /// The frames this connection speaks.
    pub fn dialect(&self) -> Dialect {
        if self.pushi.load(Ordering::Relaxed) {
            Dialect::Pushi
        } else {
            Dialect::Pusher
        }
    }

    /// Offers a frame without waiting. A full queue means the client cannot
    /// keep up: rather than grow memory, the connection is closed with 4100.
    pub fn send(&self, frame: ByteString) -> Delivery {
        if self.is_closing() {
            return Delivery::Closed;
        }
        match self.outgoing.try_send(frame) {
            Ok(()) => Delivery::Queued,
            Err(TrySendError::Full(_)) => {
                self.request_close(crate::protocol::error::ErrorCode::OverCapacity.code());
                Delivery::Overflowed
            }
            Err(TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Queues a probe marker (an empty frame, which no Pusher frame is): the
    /// transport answers it by asking the client to confirm what it read
    /// (`hub::recovery`). Only while the queue is at most half full, and
    /// never closing the connection: false when not queued.
    pub fn send_probe(&self) -> bool {
        if self.is_closing() || self.free_capacity() * 2 < self.outgoing.max_capacity() {
            return false;
        }
        self.outgoing.try_send(ByteString::new()).is_ok()
    }

    /// Frames the outgoing queue can still take before it overflows.
    pub fn free_capacity(&self) -> usize {
        self.outgoing.capacity()
    }

    /// Asks the transport to close with `code`; the first request wins.
    pub fn request_close(&self, code: u16) {
        if self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Some(closer) = self.closer.get() {
                closer(code);
            }
        }
    }

    /// Registers how the transport closes. A close requested before this
    /// is passed on at once. (Being told twice is harmless: a closed
    /// transport ignores it.)
    pub fn on_close_request(&self, closer: Closer) {
        if self.closer.set(closer).is_ok() {
            let code = self.close_code.load(Ordering::Acquire);
            if code != 0 {
                if let Some(closer) = self.closer.get() {
                    closer(code);
                }
            }
        }
    }

    /// Marks a new connection as not authorized yet (apps with
    /// `authorized_connections`); every connection starts authorized.
    pub fn set_unauthorized(&self) {
        self.authorized.store(false, Ordering::Release);
    }

    /// Whether the connection is authorized: always, unless its app has
    /// `authorized_connections` and it has not signed in or subscribed to a
    /// channel that needs a signature yet.
    pub fn is_authorized(&self) -> bool {
        self.authorized.load(Ordering::Acquire)
    }

    /// Marks the connection authorized; true when it was not before (the
    /// caller moves it from the unauthorized count to the authorized one).
    pub fn authorize(&self) -> bool {
        !self.authorized.swap(true, Ordering::AcqRel)
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::Acquire) != 0
    }

    /// The close code requested, 0 while open.
    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_requests_close_with_4100() {
        let (connection, mut receiver) = Connection::new("1.1".into(), "app".into(), 2);
        assert_eq!(connection.send("a".into()), Delivery::Queued);
        assert_eq!(connection.send("b".into()), Delivery::Queued);
        assert_eq!(connection.send("c".into()), Delivery::Overflowed);
        assert_eq!(connection.close_code(), 4100);
        assert_eq!(connection.send("d".into()), Delivery::Closed);
        assert_eq!(receiver.outgoing.recv().await.as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn a_probe_is_queued_only_while_the_queue_is_at_most_half_full() {
        let (connection, mut receiver) = Connection::new("1.1".into(), "app".into(), 4);
        assert!(connection.send_probe());
        assert_eq!(receiver.outgoing.recv().await.as_deref(), Some(""));
        for _ in 0..3 {
            connection.send("a".into());
        }
        assert!(!connection.send_probe());
        assert!(!connection.is_closing(), "a refused probe never closes");
    }

    #[test]
    fn first_close_request_wins_and_reaches_a_late_closer() {
        let (connection, _receiver) = Connection::new("1.1".into(), "app".into(), 2);
        connection.request_close(4200);
        connection.request_close(4100);
        let told = std::sync::Arc::new(AtomicU16::new(0));
        let seen = told.clone();
        connection.on_close_request(Box::new(move |code| seen.store(code, Ordering::Release)));
        assert_eq!(told.load(Ordering::Acquire), 4200);
    }
}

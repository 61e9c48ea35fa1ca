//! The stream of frames the hub queued for one connection, read so that a
//! connection woken by a fan-out writes after the fan-out's other work, not
//! in the middle of it.
//!
//! Why: the workers run their tasks first in, first out. A publish wakes
//! every subscriber's session; read at once, each writes its one frame in
//! its own socket write (a syscall and a TCP segment per frame), and the
//! next publish (an HTTP request, a bus message) is read only after all of
//! them. So under load each event is written alone, at several times the
//! CPU per delivery of writing a few events together. Here a session that
//! finds frames waiting after being idle steps to the back of the queue
//! once before reading them: the requests and bus messages already waiting
//! run first, their frames join the queue, and the session writes them all
//! in one write. When the node is idle the step costs one more poll of the
//! session (no timer, no delay beyond the tasks already queued); nothing is
//! taken out of the queue early, so nothing is reordered or lost on close.

use bytestring::ByteString;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Frames from the connection's bounded queue, in order (see the module doc).
pub struct Outgoing {
    queue: mpsc::Receiver<ByteString>,
    /// True from the step to the back of the queue until the queue is
    /// drained again (frames that arrive meanwhile are read without a step).
    stepped: bool,
}

impl Outgoing {
    /// Reads `queue`.
    pub fn new(queue: mpsc::Receiver<ByteString>) -> Self {
        Outgoing {
            queue,
            stepped: false,
        }
    }
}

impl Stream for Outgoing {
    type Item = ByteString;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ByteString>> {
        if !self.stepped && !self.queue.is_empty() {
            self.stepped = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.queue.poll_recv(cx) {
            Poll::Pending => {
                self.stepped = false;
                Poll::Pending
            }
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    fn poll(stream: &mut Outgoing) -> Poll<Option<ByteString>> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(stream).poll_next(&mut cx)
    }

    #[test]
    fn steps_back_once_then_reads_everything_in_order() {
        let (tx, rx) = mpsc::channel(8);
        let mut outgoing = Outgoing::new(rx);
        assert_eq!(poll(&mut outgoing), Poll::Pending, "idle and empty");
        tx.try_send("a".into()).unwrap();
        assert_eq!(poll(&mut outgoing), Poll::Pending, "the step back");
        tx.try_send("b".into()).unwrap();
        assert_eq!(poll(&mut outgoing), Poll::Ready(Some("a".into())));
        assert_eq!(poll(&mut outgoing), Poll::Ready(Some("b".into())));
        assert_eq!(poll(&mut outgoing), Poll::Pending, "drained");
        tx.try_send("c".into()).unwrap();
        assert_eq!(
            poll(&mut outgoing),
            Poll::Pending,
            "a step again after idle"
        );
        assert_eq!(poll(&mut outgoing), Poll::Ready(Some("c".into())));
        drop(tx);
        assert_eq!(
            poll(&mut outgoing),
            Poll::Ready(None),
            "ends with the queue"
        );
    }
}

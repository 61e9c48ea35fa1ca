//! The stream of frames the hub queued for one connection, woken through
//! its worker's [`Pacer`] so that a fan-out's sessions run in rounds with
//! the worker's sockets read between them (see [`super::pacer`] for why).
//!
//! The frames themselves are read exactly as queued: in order, all that
//! are there when the session runs, nothing dropped or reordered; only
//! when the session's task is woken for new frames changes.

use super::pacer::{PacedWaker, Pacer};
use crate::hub::connection::Connection;
use crate::hub::frame_queue;
use bytestring::ByteString;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Frames from the connection's bounded queue, in order.
pub struct Outgoing {
    queue: frame_queue::Receiver<Connection>,
    /// Holds the session task's waker; `waker` is this as a `Waker`.
    paced: Arc<PacedWaker>,
    waker: Waker,
}

impl Outgoing {
    /// Reads `queue`, woken through this worker's pacer.
    pub fn paced(queue: frame_queue::Receiver<Connection>) -> Self {
        let paced = PacedWaker::new(Pacer::current());
        let waker = Waker::from(paced.clone());
        Outgoing {
            queue,
            paced,
            waker,
        }
    }
}

impl Stream for Outgoing {
    type Item = ByteString;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ByteString>> {
        let this = &mut *self;
        this.paced.register(cx);
        this.queue.poll_recv(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::connection::Delivery;
    use crate::hub::frame_queue::FrameQueue;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_stream_ends_with_the_queue() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (connection, receiver) = Connection::new("1.1".into(), "app".into(), 8);
                let mut outgoing = Outgoing::paced(receiver.outgoing);
                let reader = tokio::task::spawn_local(async move {
                    let mut got = Vec::new();
                    while let Some(frame) = outgoing.next().await {
                        got.push(frame);
                    }
                    got
                });
                for frame in ["a", "b", "c"] {
                    assert_eq!(connection.send(frame.into()), Delivery::Queued);
                    tokio::task::yield_now().await;
                }
                assert_eq!(connection.send("d".into()), Delivery::Queued);
                AsRef::<FrameQueue>::as_ref(&*connection).close_sender();
                let got = reader.await.expect("reader");
                assert_eq!(got, ["a", "b", "c", "d"].map(ByteString::from));
            })
            .await;
    }
}

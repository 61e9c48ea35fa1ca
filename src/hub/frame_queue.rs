//! A connection's bounded queue of encoded frames, kept inside the hub's
//! `Connection`: the hub sends from any thread, one [`Receiver`] (the
//! connection's transport task) reads.
//!
//! Not tokio's `mpsc`: its channel allocates its first block of 32 slots
//! (about 1 KiB) when it is created, for every connection, idle or not,
//! and that block is part of each idle connection's memory. This queue
//! allocates when the first frame arrives, and gives a burst's large
//! buffer back once the transport has drained it, so an idle connection
//! keeps a few words. Frames are read in the order they were queued, all
//! of them; a full queue refuses (the caller closes the connection, 4100).

use bytestring::ByteString;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Buffer capacity, in frames, an empty queue may keep; a larger one
/// (left by a burst) is freed when the queue drains.
const RETAINED_CAPACITY: usize = 64;

/// Why a frame was not queued; the frame is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds its capacity.
    Full(ByteString),
    /// The receiving side is gone.
    Closed(ByteString),
}

struct State {
    frames: VecDeque<ByteString>,
    /// The receiver's task, when it waits for a frame.
    waker: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
}

/// The queue itself, kept inline in its owner (the hub's `Connection`):
/// a delivery then touches the connection's own memory, not one more
/// allocation. The owner sends; one [`Receiver`] reads.
pub struct FrameQueue {
    state: Mutex<State>,
    capacity: usize,
}

impl FrameQueue {
    /// A queue of at most `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> Self {
        FrameQueue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                waker: None,
                sender_alive: true,
                receiver_alive: true,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; a poisoned one is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` without waiting, waking the receiver.
    pub fn try_send(&self, frame: ByteString) -> Result<(), TrySendError> {
        let waker = {
            let mut state = self.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(frame));
            }
            if state.frames.len() >= self.capacity {
                return Err(TrySendError::Full(frame));
            }
            state.frames.push_back(frame);
            state.waker.take()
        };
        // Woken outside the lock: the receiver may run at once elsewhere.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Frames the queue can still take.
    pub fn capacity(&self) -> usize {
        self.capacity.saturating_sub(self.lock().frames.len())
    }

    /// The queue's capacity, in frames.
    pub fn max_capacity(&self) -> usize {
        self.capacity
    }

    /// No more frames will be sent: the receiver reads what is queued,
    /// then its stream ends.
    pub fn close_sender(&self) {
        let waker = {
            let mut state = self.lock();
            state.sender_alive = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl AsRef<FrameQueue> for FrameQueue {
    fn as_ref(&self) -> &FrameQueue {
        self
    }
}

/// The receiving side of the queue kept in `O` (one per queue): when it
/// is dropped, sends are refused as closed and queued frames are freed.
pub struct Receiver<O: AsRef<FrameQueue>> {
    owner: Arc<O>,
}

impl<O: AsRef<FrameQueue>> Receiver<O> {
    /// Reads the queue of `owner`; make one per queue.
    pub fn new(owner: Arc<O>) -> Self {
        Receiver { owner }
    }

    fn queue(&self) -> &FrameQueue {
        (*self.owner).as_ref()
    }

    /// The next frame; `Pending` (with `cx` woken by the next send) while
    /// empty; `None` once empty and the sender has closed.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ByteString>> {
        let mut state = self.queue().lock();
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > RETAINED_CAPACITY {
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next frame, waiting for one; `None` once the sender has closed
    /// and every frame was read.
    pub async fn recv(&mut self) -> Option<ByteString> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<ByteString> {
        self.queue().lock().frames.pop_front()
    }
}

impl<O: AsRef<FrameQueue>> Drop for Receiver<O> {
    fn drop(&mut self) {
        let mut state = self.queue().lock();
        state.receiver_alive = false;
        // Nobody will read them: free them now, not with the owner.
        state.frames = VecDeque::new();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    fn channel(capacity: usize) -> (Arc<FrameQueue>, Receiver<FrameQueue>) {
        let queue = Arc::new(FrameQueue::new(capacity));
        (queue.clone(), Receiver::new(queue))
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn frames_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = channel(3);
        assert_eq!(tx.max_capacity(), 3);
        for frame in ["a", "b", "c"] {
            assert_eq!(tx.try_send(frame.into()), Ok(()));
        }
        assert_eq!(tx.capacity(), 0);
        assert_eq!(tx.try_send("d".into()), Err(TrySendError::Full("d".into())));
        assert_eq!(rx.try_recv().as_deref(), Some("a"));
        assert_eq!(tx.capacity(), 1);
        assert_eq!(tx.try_send("e".into()), Ok(()));
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest, ["b", "c", "e"].map(ByteString::from));
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_per_wait_and_ends_when_sending_closes() {
        let (tx, mut rx) = channel(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.try_send("a".into()).expect("queued");
        tx.try_send("b".into()).expect("queued");
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake per wait");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("a".into())));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("b".into())));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.close_sender();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "woken by the close");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn frames_queued_before_sending_closed_are_still_read() {
        let (tx, mut rx) = channel(2);
        tx.try_send("last".into()).expect("queued");
        tx.close_sender();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("last".into())));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn sending_to_a_dropped_receiver_is_closed() {
        let (tx, rx) = channel(2);
        tx.try_send("a".into()).expect("queued");
        drop(rx);
        assert_eq!(
            tx.try_send("b".into()),
            Err(TrySendError::Closed("b".into()))
        );
        assert_eq!(tx.capacity(), 2, "the unread frame was freed");
    }

    #[test]
    fn an_idle_queue_holds_no_buffer_and_a_drained_burst_gives_its_back() {
        let (tx, mut rx) = channel(1000);
        assert_eq!(tx.lock().frames.capacity(), 0, "nothing before a frame");
        for _ in 0..500 {
            tx.try_send("x".into()).expect("queued");
        }
        assert!(tx.lock().frames.capacity() >= 500);
        while rx.try_recv().is_some() {}
        // try_recv leaves the buffer; the transport's poll_recv frees it.
        tx.try_send("y".into()).expect("queued");
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("y".into())));
        assert_eq!(tx.lock().frames.capacity(), 0);
        // A small queue keeps its buffer: no allocation per frame.
        tx.try_send("z".into()).expect("queued");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("z".into())));
        assert!(tx.lock().frames.capacity() > 0);
    }

    #[test]
    fn senders_on_other_threads_lose_nothing() {
        let (tx, mut rx) = channel(100_000);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        tx.try_send(format!("{t}:{i}").into()).expect("room");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("sender");
        }
        let mut last = [-1i64; 4];
        let mut read = 0;
        while let Some(frame) = rx.try_recv() {
            let (t, i) = frame.split_once(':').expect("t:i");
            let (t, i): (usize, i64) = (t.parse().expect("t"), i.parse().expect("i"));
            assert!(i > last[t], "in order per sender");
            last[t] = i;
            read += 1;
        }
        assert_eq!(read, 40_000);
    }
}

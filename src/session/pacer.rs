//! Fan-out wakes, paced per worker thread: the sessions a publish wakes run
//! in rounds of [`ROUND`], and between rounds the worker reads its sockets
//! and runs what they woke (the next publishes' requests, bus messages).
//!
//! Why: a worker runs its tasks first in, first out (actix's `LocalSet`). A
//! publish to 10,000 subscribers queues 10,000 session wakes at once; run
//! straight through, each session writes its one frame in its own socket
//! write, and the next publish's request is read only after all of them. So
//! a worker under load wrote every event alone: with one worker (a 1-CPU
//! machine or container), 10,000 subscribers at max rate made 2 deliveries
//! per socket write against the bare server's 27, at 11x its CPU per
//! delivery. Paced, the publishes read between rounds put their frames in
//! the queues of the sessions not yet run, and those write several events
//! in one write: what tokio's work-stealing scheduler gives the bare server
//! by running newly woken I/O ahead of a long backlog.
//!
//! Cost: a session's wake goes through its worker's pacer queue (a short
//! mutex push) instead of straight to the worker's task queue; a fan-out of
//! N local sessions adds N / [`ROUND`] polls of the pacer's task. Nothing
//! waits on a timer: an idle worker runs each round at once. The queue is
//! bounded by the sessions of the worker (a session is in it at most once).

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Sessions woken per round before the worker reads its sockets again.
pub const ROUND: usize = 256;

/// One worker thread's queue of woken sessions and its draining task.
#[derive(Default)]
pub struct Pacer {
    woken: Mutex<VecDeque<Arc<PacedWaker>>>,
    /// The draining task's waker, and whether a wake of it is pending.
    drainer: Mutex<Option<Waker>>,
    scheduled: AtomicBool,
}

thread_local! {
    static PACER: OnceCell<Arc<Pacer>> = const { OnceCell::new() };
}

impl Pacer {
    /// This worker's pacer, its draining task spawned on first use. Must be
    /// called on an actix worker (a `LocalSet`): sessions are created there.
    pub fn current() -> Arc<Pacer> {
        PACER.with(|cell| {
            cell.get_or_init(|| {
                let pacer = Arc::new(Pacer::default());
                actix::spawn(pacer.clone().drain());
                pacer
            })
            .clone()
        })
    }

    fn push(&self, waker: Arc<PacedWaker>) {
        if let Ok(mut woken) = self.woken.lock() {
            woken.push_back(waker);
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let drainer = self.drainer.lock().ok().and_then(|d| d.clone());
            if let Some(drainer) = drainer {
                drainer.wake();
            }
        }
    }

    /// Takes up to [`ROUND`] woken sessions, or registers the task to be
    /// woken for more (`scheduled` cleared, then the queue checked again, so
    /// a push racing with this is never missed).
    fn poll_round(&self, cx: &mut Context<'_>) -> Poll<Vec<Arc<PacedWaker>>> {
        let take = |pacer: &Pacer| -> Vec<Arc<PacedWaker>> {
            let Ok(mut woken) = pacer.woken.lock() else {
                return Vec::new();
            };
            let n = woken.len().min(ROUND);
            woken.drain(..n).collect()
        };
        let round = take(self);
        if !round.is_empty() {
            return Poll::Ready(round);
        }
        if let Ok(mut drainer) = self.drainer.lock() {
            if !drainer.as_ref().is_some_and(|d| d.will_wake(cx.waker())) {
                *drainer = Some(cx.waker().clone());
            }
        }
        self.scheduled.store(false, Ordering::Release);
        let round = take(self);
        if round.is_empty() {
            Poll::Pending
        } else {
            self.scheduled.store(true, Ordering::Release);
            Poll::Ready(round)
        }
    }

    /// The draining task: wakes the sessions a round at a time, stepping to
    /// the back of the worker's queue (after its next socket poll) between
    /// rounds. Runs as long as the worker.
    async fn drain(self: Arc<Self>) {
        loop {
            let round = poll_fn(|cx| self.poll_round(cx)).await;
            for session in round {
                session.queued.store(false, Ordering::Release);
                let inner = session.inner.lock().ok().and_then(|w| w.clone());
                if let Some(inner) = inner {
                    inner.wake();
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The waker a session's outgoing queue holds: waking it queues the
/// session on its worker's pacer (once) instead of waking its task.
pub struct PacedWaker {
    pacer: Arc<Pacer>,
    /// The session task's own waker (the last one it polled with).
    inner: Mutex<Option<Waker>>,
    /// In the pacer's queue now.
    queued: AtomicBool,
}

impl PacedWaker {
    /// A waker paced by `pacer`.
    pub fn new(pacer: Arc<Pacer>) -> Arc<Self> {
        Arc::new(PacedWaker {
            pacer,
            inner: Mutex::new(None),
            queued: AtomicBool::new(false),
        })
    }

    /// Remembers the session task's waker `cx` (when it changed).
    pub fn register(&self, cx: &Context<'_>) {
        if let Ok(mut inner) = self.inner.lock() {
            if !inner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *inner = Some(cx.waker().clone());
            }
        }
    }
}

impl Wake for PacedWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.pacer.push(self.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn wakes_go_through_the_pacer_once_each_in_rounds() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let pacer = Pacer::current();
                let count = Arc::new(Count(AtomicUsize::new(0)));
                let inner = Waker::from(count.clone());
                let sessions: Vec<_> = (0..ROUND + 10)
                    .map(|_| {
                        let paced = PacedWaker::new(pacer.clone());
                        paced.register(&Context::from_waker(&inner));
                        paced
                    })
                    .collect();
                for paced in &sessions {
                    Waker::from(paced.clone()).wake_by_ref();
                    // A second wake before the round: still queued once.
                    Waker::from(paced.clone()).wake();
                }
                assert_eq!(count.0.load(Ordering::Relaxed), 0, "nothing woken inline");
                // The first round, then the rest after the drainer's step.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(count.0.load(Ordering::Relaxed), ROUND + 10);
                assert!(sessions.iter().all(|s| !s.queued.load(Ordering::Relaxed)));
                // Woken again later: queued again.
                Waker::from(sessions[0].clone()).wake();
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(count.0.load(Ordering::Relaxed), ROUND + 11);
            })
            .await;
    }
}

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
//!
//! If the worker's task set is dropped while its thread lives on (a runtime
//! stopped and another started on the same thread, as tests do), the
//! draining task is gone: the pacer marks itself dead, its wakes go straight
//! to the sessions, and the next session on that thread gets a new pacer.

use std::cell::RefCell;
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
    /// Cleared when the draining task is dropped.
    alive: AtomicBool,
}

/// Clears the pacer's `alive` when the draining task is dropped, and wakes
/// what it still held so no session waits on a pacer that will not run.
struct DrainGuard(Arc<Pacer>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        // Cleared while the queue's lock is held (see `push`).
        let woken = self.0.woken.lock();
        self.0.alive.store(false, Ordering::Release);
        let left: Vec<_> = woken
            .map(|mut woken| woken.drain(..).collect())
            .unwrap_or_default();
        for session in left {
            session.wake_inner();
        }
    }
}

thread_local! {
    static PACER: RefCell<Option<Arc<Pacer>>> = const { RefCell::new(None) };
}

impl Pacer {
    /// This worker's pacer, its draining task spawned on first use. Must be
    /// called on an actix worker (a `LocalSet`): sessions are created there.
    pub fn current() -> Arc<Pacer> {
        PACER.with(|cell| {
            let mut current = cell.borrow_mut();
            if let Some(pacer) = current.as_ref().filter(|p| p.alive.load(Ordering::Acquire)) {
                return pacer.clone();
            }
            let pacer = Arc::new(Pacer {
                alive: AtomicBool::new(true),
                ..Pacer::default()
            });
            actix::spawn(pacer.clone().drain());
            *current = Some(pacer.clone());
            pacer
        })
    }

    fn push(&self, waker: Arc<PacedWaker>) {
        // `alive` is read under the queue's lock, which the draining task's
        // guard holds while it clears it: a wake is queued for a live
        // drainer or given straight to the session, never left behind.
        let waker = match self.woken.lock() {
            Ok(mut woken) if self.alive.load(Ordering::Acquire) => {
                woken.push_back(waker);
                None
            }
            _ => Some(waker),
        };
        if let Some(waker) = waker {
            return waker.wake_inner();
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
    fn drain(self: Arc<Self>) -> impl std::future::Future<Output = ()> {
        // Made before the first poll: a task set dropped before it ever ran
        // the task still marks the pacer dead.
        let guard = DrainGuard(self);
        async move {
            let pacer = &guard.0;
            loop {
                let round = poll_fn(|cx| pacer.poll_round(cx)).await;
                for session in round {
                    session.wake_inner();
                }
                tokio::task::yield_now().await;
            }
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

    /// Out of the pacer's queue: wakes the session's task.
    fn wake_inner(&self) {
        self.queued.store(false, Ordering::Release);
        let inner = self.inner.lock().ok().and_then(|w| w.clone());
        if let Some(inner) = inner {
            inner.wake();
        }
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

    #[test]
    fn a_pacer_whose_task_set_is_gone_wakes_directly_and_is_replaced() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let first = tokio::task::LocalSet::new();
        let old = first.block_on(&runtime, async { Pacer::current() });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let inner = Waker::from(count.clone());
        let paced = PacedWaker::new(old.clone());
        paced.register(&Context::from_waker(&inner));
        Waker::from(paced.clone()).wake();
        // The task set goes with the queued wake: the session is woken anyway.
        drop(first);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(!old.alive.load(Ordering::Relaxed));
        // Later wakes of the dead pacer's sessions go straight to them.
        Waker::from(paced.clone()).wake();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        // A new task set on the same thread gets a new, working pacer.
        let second = tokio::task::LocalSet::new();
        let new = second.block_on(&runtime, async { Pacer::current() });
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(new.alive.load(Ordering::Relaxed));
        let again = second.block_on(&runtime, async { Pacer::current() });
        assert!(Arc::ptr_eq(&new, &again), "one pacer per live task set");
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

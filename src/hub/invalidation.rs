//! Changes to what every node caches from the store — the follow index
//! ([`super::persistence`]), the notification registrations
//! ([`crate::notify`]), pushi's logged-out tokens ([`crate::pushi_api`]) —
//! made known to every node at once instead of at its next periodic reload.
//!
//! One seam for every such cache: the node that changed the store calls
//! [`Invalidations::announce`] once the write succeeded; the cluster adapter
//! (Redis, see `adapter::redis::invalidate`) carries it to the other nodes,
//! which hand it to [`Invalidations::received`]; each cache has one task
//! that takes its kind's changes in order ([`Invalidations::subscribe`]) and
//! reloads what a change names from the store. The store is the truth: of a
//! follow and an unfollow made at once through two nodes, whichever message
//! comes last makes a read that sees both writes, so every node ends on the
//! store's state, whatever order the messages arrive in. The node that made
//! the change gets it too (after its own immediate update), which settles a
//! race between its update and another node's change the same way.
//!
//! Best effort: the bus loses what is sent during a Redis outage, and a
//! flood overflows a kind's bounded queue ([`Received::Missed`]: the cache
//! reloads everything), so every cache keeps its periodic reload as the
//! safety net. With one node nothing leaves the process.

use std::sync::OnceLock;
use tokio::sync::broadcast;

/// Changes a kind's queue holds before the slowest taker misses some.
const QUEUE: usize = 1024;

/// A change one node made to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `user_id` followed or unfollowed `channel` (the persistence API).
    Follow {
        /// App id.
        app_id: String,
        /// The follower.
        user_id: String,
        /// The channel followed or no longer.
        channel: String,
    },
    /// A notification registration on `channel` was added or removed.
    Registrations {
        /// App id.
        app_id: String,
        /// The registration's channel (`personal-{u}` for a user's).
        channel: String,
    },
    /// A pushi session token was logged out.
    Logout {
        /// The token's nonce (what revocation keys on; not a credential).
        nonce: String,
        /// The token's expiry (Unix seconds): kept revoked until then.
        expiry: u64,
    },
}

/// Which cache a [`Change`] is for: each has its own queue, so a flood of
/// one kind never makes another's taker miss changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Change::Follow`].
    Follows,
    /// [`Change::Registrations`].
    Registrations,
    /// [`Change::Logout`].
    Logouts,
}

impl Change {
    /// The cache this change is for.
    pub fn kind(&self) -> Kind {
        match self {
            Change::Follow { .. } => Kind::Follows,
            Change::Registrations { .. } => Kind::Registrations,
            Change::Logout { .. } => Kind::Logouts,
        }
    }
}

/// Where a node's changes leave for the other nodes (the cluster adapter).
type Outlet = Box<dyn Fn(&Change) + Send + Sync>;

/// The changes of this node and of the others, per kind.
pub struct Invalidations {
    follows: broadcast::Sender<Change>,
    registrations: broadcast::Sender<Change>,
    logouts: broadcast::Sender<Change>,
    outlet: OnceLock<Outlet>,
}

impl Default for Invalidations {
    fn default() -> Self {
        Invalidations {
            follows: broadcast::channel(QUEUE).0,
            registrations: broadcast::channel(QUEUE).0,
            logouts: broadcast::channel(QUEUE).0,
            outlet: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidations")
            .field("clustered", &self.outlet.get().is_some())
            .finish()
    }
}

impl Invalidations {
    /// Sends this node's changes through `outlet` too (the cluster adapter;
    /// it must not block). Only the first call counts.
    pub fn connect(&self, outlet: impl Fn(&Change) + Send + Sync + 'static) {
        if self.outlet.set(Box::new(outlet)).is_err() {
            tracing::warn!("invalidations already connected to a cluster adapter");
        }
    }

    /// A change this node made, once the store accepted it: to the other
    /// nodes, and to this node's own cache task. Never waits.
    pub fn announce(&self, change: Change) {
        if let Some(outlet) = self.outlet.get() {
            outlet(&change);
        }
        self.received(change);
    }

    /// A change another node made (from the cluster adapter). Never waits:
    /// a full queue makes its taker miss the oldest ones.
    pub fn received(&self, change: Change) {
        // No taker (the cache is off on this node): nothing to do.
        let _ = self.sender(change.kind()).send(change);
    }

    /// The changes of `kind` from now on, for the one task that applies them.
    pub fn subscribe(&self, kind: Kind) -> Subscription {
        Subscription(self.sender(kind).subscribe())
    }

    fn sender(&self, kind: Kind) -> &broadcast::Sender<Change> {
        match kind {
            Kind::Follows => &self.follows,
            Kind::Registrations => &self.registrations,
            Kind::Logouts => &self.logouts,
        }
    }
}

/// What a cache task takes next.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Apply this change (reload what it names).
    Change(Change),
    /// Changes were lost (the queue overflowed): reload everything.
    Missed,
}

/// One kind's changes, in the order they were received.
pub struct Subscription(broadcast::Receiver<Change>);

impl Subscription {
    /// The next change; waits for one.
    pub async fn next(&mut self) -> Received {
        loop {
            match self.0.recv().await {
                Ok(change) => return Received::Change(change),
                Err(broadcast::error::RecvError::Lagged(_)) => return Received::Missed,
                // The senders live as long as `Invalidations`, which the
                // subscriber's owner keeps: never closed while it runs.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn follow(user: &str) -> Change {
        Change::Follow {
            app_id: "a".into(),
            user_id: user.into(),
            channel: "c".into(),
        }
    }

    #[tokio::test]
    async fn an_announced_change_reaches_the_outlet_and_this_nodes_taker_of_its_kind() {
        let invalidations = Invalidations::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let outlet = sent.clone();
        invalidations.connect(move |change| outlet.lock().unwrap().push(change.clone()));
        let mut follows = invalidations.subscribe(Kind::Follows);
        let mut logouts = invalidations.subscribe(Kind::Logouts);
        invalidations.announce(follow("u"));
        invalidations.received(Change::Logout {
            nonce: "n".into(),
            expiry: 9,
        });
        assert_eq!(
            *sent.lock().unwrap(),
            vec![follow("u")],
            "received ones are not sent on"
        );
        assert_eq!(follows.next().await, Received::Change(follow("u")));
        assert_eq!(
            logouts.next().await,
            Received::Change(Change::Logout {
                nonce: "n".into(),
                expiry: 9
            })
        );
    }

    #[tokio::test]
    async fn a_taker_that_fell_behind_is_told_to_reload_everything_then_goes_on() {
        let invalidations = Invalidations::default();
        let mut follows = invalidations.subscribe(Kind::Follows);
        for i in 0..=QUEUE {
            invalidations.received(follow(&i.to_string()));
        }
        assert_eq!(follows.next().await, Received::Missed);
        assert_eq!(follows.next().await, Received::Change(follow("1")));
    }

    #[test]
    fn without_a_taker_or_outlet_a_change_is_dropped_quietly() {
        Invalidations::default().announce(follow("u"));
    }
}

//! The console's event log across nodes (see [`crate::console::tap`]): a
//! console watching app A on one node sees A's events of every node, each
//! once, and costs nothing while no console is open anywhere.
//!
//! - A node with a console stream of A open says so on the bus
//!   ([`BusMessage::ConsoleWatch`]) when its first stream of A opens, again
//!   every `[console] lease_ms` while one is open (a lease: a node started
//!   later learns within one period), and once more, ended, when its last
//!   stream of A closes.
//! - Every node keeps the leases of the others ([`Leases`]) and forgets one
//!   not renewed for [`LEASES_KEPT`] periods (a crashed node's console
//!   stops costing anything). While A holds a lease, the tap's `is_watched`
//!   is true and each of A's events happening here is encoded once and
//!   queued on the bus ([`BusMessage::ConsoleLog`]) through the bounded
//!   outbox: never waiting, dropped and counted
//!   (`rusher_console_forward_dropped_total`) when the queue is full.
//! - A node receiving a [`BusMessage::ConsoleLog`] hands it to its own
//!   watchers of A only, never forwarding it again. Events are forwarded
//!   where they happen (a publish through the API, a client event, a
//!   subscribe...), not where they are delivered, so each is shown once.
//!
//! Both messages travel on the sending node's node-wide bus channel (its
//! shard group's, as usage reports do): on a Redis Cluster every node
//! listens to every group's channel.

use super::bus::BusMessage;
use super::RedisAdapter;
use crate::console::tap::{ConsoleForward, ConsoleTap};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// Lease periods a lease outlives its last renewal.
pub const LEASES_KEPT: u32 = 3;

/// The other nodes' console leases: app → node → last renewal. Pure
/// bookkeeping; each method says whether the app's "watched elsewhere"
/// changed, for the tap's count.
#[derive(Debug, Default)]
pub struct Leases {
    apps: HashMap<String, HashMap<String, Instant>>,
}

impl Leases {
    /// `node` watches `app_id` (a new or renewed lease); `true` when the
    /// app was watched by no other node before.
    pub fn renew(&mut self, node: &str, app_id: &str, now: Instant) -> bool {
        let nodes = self.apps.entry(app_id.to_owned()).or_default();
        let new = nodes.is_empty();
        nodes.insert(node.to_owned(), now);
        new
    }

    /// `node` no longer watches `app_id`; `true` when no other node does now.
    pub fn end(&mut self, node: &str, app_id: &str) -> bool {
        let Some(nodes) = self.apps.get_mut(app_id) else {
            return false;
        };
        if nodes.remove(node).is_none() || !nodes.is_empty() {
            return false;
        }
        self.apps.remove(app_id);
        true
    }

    /// Forgets the leases last renewed `ttl` or more before `now`; the
    /// number of apps no other node watches any more.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.apps.len();
        self.apps.retain(|_, nodes| {
            nodes.retain(|_, renewed| now.saturating_duration_since(*renewed) < ttl);
            !nodes.is_empty()
        });
        before - self.apps.len()
    }

    /// Whether another node watches `app_id`.
    pub fn watched(&self, app_id: &str) -> bool {
        self.apps.contains_key(app_id)
    }

    /// Apps another node watches.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether no other node watches anything.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

/// This node's end of the console's bus traffic: the tap's
/// [`ConsoleForward`], and the receiver of the others' messages.
pub struct ConsoleLink {
    adapter: Weak<RedisAdapter>,
    tap: Arc<ConsoleTap>,
    leases: RwLock<Leases>,
    lease: Duration,
}

impl ConsoleLink {
    fn send(&self, adapter: &RedisAdapter, message: &BusMessage) -> bool {
        let group = adapter.keys.node_group(&adapter.node_id);
        adapter.outbox.send(group, message.encode())
    }

    fn watch_message<'a>(node: &'a str, app_id: &'a str, watching: bool) -> BusMessage<'a> {
        BusMessage::ConsoleWatch {
            node,
            watching,
            app_id,
        }
    }

    /// A lease of another node started, was renewed or ended.
    fn on_watch(&self, node: &str, app_id: &str, watching: bool) {
        let Ok(mut leases) = self.leases.write() else {
            return;
        };
        if watching {
            if leases.renew(node, app_id, Instant::now()) {
                self.tap.remote_watch_started();
            }
        } else if leases.end(node, app_id) {
            self.tap.remote_watch_ended();
        }
        self.set_gauge(&leases);
    }

    /// Forgets the leases not renewed for [`LEASES_KEPT`] periods.
    fn expire(&self, now: Instant) {
        let Ok(mut leases) = self.leases.write() else {
            return;
        };
        for _ in 0..leases.expire(now, self.lease * LEASES_KEPT) {
            self.tap.remote_watch_ended();
        }
        self.set_gauge(&leases);
    }

    fn set_gauge(&self, leases: &Leases) {
        if let Some(adapter) = self.adapter.upgrade() {
            adapter
                .metrics
                .console_remote_watched
                .set(leases.len() as i64);
        }
    }
}

impl ConsoleForward for ConsoleLink {
    fn watched_elsewhere(&self, app_id: &str) -> bool {
        self.leases
            .read()
            .is_ok_and(|leases| leases.watched(app_id))
    }

    fn forward(&self, app_id: &str, json: &str) {
        let Some(adapter) = self.adapter.upgrade() else {
            return;
        };
        let message = BusMessage::ConsoleLog {
            node: &adapter.node_id,
            app_id,
            json,
        };
        if self.send(&adapter, &message) {
            adapter.metrics.console_forwarded.inc();
        } else {
            adapter.metrics.console_forward_dropped.inc();
        }
    }

    fn local_watch_changed(&self, app_id: &str, watching: bool) {
        let Some(adapter) = self.adapter.upgrade() else {
            return;
        };
        let message = Self::watch_message(&adapter.node_id, app_id, watching);
        if !self.send(&adapter, &message) {
            // The next renewal (or the lease's expiry) makes up for it.
            adapter.metrics.redis_bus_dropped.inc();
        }
    }
}

impl RedisAdapter {
    /// Links the console's `tap` to the other nodes, renewing this node's
    /// leases every `lease` (`[console] lease_ms`). Once.
    pub fn share_console(self: &Arc<Self>, tap: Arc<ConsoleTap>, lease: Duration) {
        let link = Arc::new(ConsoleLink {
            adapter: Arc::downgrade(self),
            tap: tap.clone(),
            leases: RwLock::new(Leases::default()),
            lease,
        });
        if self.console.set(link.clone()).is_err() {
            tracing::warn!("redis adapter: console shared twice");
            return;
        }
        tap.link(link.clone(), &self.node_id);
        tokio::spawn(renew(Arc::downgrade(self), link));
    }

    /// A console message of another node (own ones are ignored).
    pub(super) fn on_console_message(&self, message: &BusMessage) {
        let Some(link) = self.console.get() else {
            return;
        };
        match *message {
            BusMessage::ConsoleWatch {
                node,
                watching,
                app_id,
            } if node != self.node_id => link.on_watch(node, app_id, watching),
            BusMessage::ConsoleLog { node, app_id, json } if node != self.node_id => {
                link.tap.deliver_remote(app_id, json)
            }
            _ => {}
        }
    }
}

/// Every lease period: renews this node's leases and forgets the others'
/// stale ones, for as long as the adapter lives.
async fn renew(adapter: Weak<RedisAdapter>, link: Arc<ConsoleLink>) {
    let mut tick = tokio::time::interval(link.lease);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(adapter) = adapter.upgrade() else {
            return;
        };
        for app_id in link.tap.watched_apps() {
            let message = ConsoleLink::watch_message(&adapter.node_id, &app_id, true);
            if !link.send(&adapter, &message) {
                adapter.metrics.redis_bus_dropped.inc();
            }
        }
        link.expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_is_watched_elsewhere_while_one_node_holds_a_lease() {
        let mut leases = Leases::default();
        let start = Instant::now();
        assert!(!leases.watched("a"));
        assert!(leases.renew("n1", "a", start), "the first lease");
        assert!(!leases.renew("n2", "a", start), "a second node's");
        assert!(!leases.renew("n1", "a", start), "a renewal");
        assert!(leases.watched("a") && !leases.watched("b"));
        assert!(!leases.end("n1", "a"), "n2 still watches");
        assert!(!leases.end("n3", "a"), "never watched");
        assert!(!leases.end("n1", "b"), "unknown app");
        assert!(leases.end("n2", "a"), "the last one ended");
        assert!(leases.is_empty());
    }

    #[test]
    fn leases_not_renewed_expire() {
        let mut leases = Leases::default();
        let start = Instant::now();
        let ttl = Duration::from_secs(3);
        leases.renew("crashed", "a", start);
        leases.renew("crashed", "b", start);
        leases.renew("alive", "b", start);
        assert_eq!(leases.expire(start + Duration::from_secs(2), ttl), 0);
        leases.renew("alive", "b", start + Duration::from_secs(2));
        assert_eq!(leases.expire(start + ttl, ttl), 1, "a is gone, b renewed");
        assert!(!leases.watched("a") && leases.watched("b"));
        assert_eq!(leases.expire(start + Duration::from_secs(5), ttl), 1);
        assert!(leases.is_empty());
    }
}

//! The other nodes' open connections, as their last reports said: one entry
//! per node, replaced by each report, dropped when the node has not
//! reported for `redis.node_timeout_secs` or was reaped. Pure: the caller
//! gives the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most other nodes tracked: a bus shared by mistake with many clusters
/// cannot grow the table without bound (reports of further nodes are
/// ignored until one expires).
pub const MAX_NODES: usize = 1024;

/// Connections of one app open on other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenConnections {
    /// Authorized ones (`max_connections`).
    pub authorized: u64,
    /// Not authorized yet (`max_unauthorized_connections`).
    pub unauthorized: u64,
}

#[derive(Debug)]
struct NodeUsage {
    /// When its last report arrived.
    seen: Instant,
    /// Its open connections per app (apps without any are absent).
    apps: HashMap<String, OpenConnections>,
}

/// The last counts of every other node that reported.
#[derive(Debug, Default)]
pub struct RemoteNodes {
    nodes: HashMap<String, NodeUsage>,
}

impl RemoteNodes {
    /// Replaces `node`'s counts with its new report's; false when the
    /// node is new and [`MAX_NODES`] are tracked already (ignored).
    pub fn update(
        &mut self,
        node: &str,
        apps: HashMap<String, OpenConnections>,
        now: Instant,
    ) -> bool {
        if let Some(entry) = self.nodes.get_mut(node) {
            *entry = NodeUsage { seen: now, apps };
            return true;
        }
        if self.nodes.len() >= MAX_NODES {
            return false;
        }
        self.nodes
            .insert(node.to_owned(), NodeUsage { seen: now, apps });
        true
    }

    /// Forgets a node (reaped as dead); whether it was tracked.
    pub fn forget(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// Forgets the nodes whose last report is `timeout` old or older;
    /// whether any was.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> bool {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, usage| now.saturating_duration_since(usage.seen) < timeout);
        self.nodes.len() != before
    }

    /// Nodes tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Per app, the connections open on every tracked node together.
    pub fn sums(&self) -> HashMap<String, OpenConnections> {
        let mut sums: HashMap<String, OpenConnections> = HashMap::new();
        for usage in self.nodes.values() {
            for (app_id, open) in &usage.apps {
                let sum = sums.entry(app_id.clone()).or_default();
                sum.authorized = sum.authorized.saturating_add(open.authorized);
                sum.unauthorized = sum.unauthorized.saturating_add(open.unauthorized);
            }
        }
        sums
    }
}

/// The places left on this node under a deployment-wide cap `max` (0 =
/// unlimited) when `elsewhere` are taken on the other nodes: `Some(0)` for
/// unlimited (the local count's convention), `Some(n)` for a cap of `n`
/// here, `None` when the deployment is full.
pub fn room(max: u64, elsewhere: u64) -> Option<u64> {
    match max {
        0 => Some(0),
        max if elsewhere >= max => None,
        max => Some(max - elsewhere),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(app: &str, authorized: u64, unauthorized: u64) -> HashMap<String, OpenConnections> {
        HashMap::from([(
            app.to_owned(),
            OpenConnections {
                authorized,
                unauthorized,
            },
        )])
    }

    #[test]
    fn counts_are_summed_replaced_and_expire() {
        let t0 = Instant::now();
        let mut nodes = RemoteNodes::default();
        assert!(nodes.update("n1", open("a", 2, 1), t0));
        assert!(nodes.update("n2", open("a", 3, 0), t0 + Duration::from_secs(5)));
        assert_eq!(
            nodes.sums()["a"],
            OpenConnections {
                authorized: 5,
                unauthorized: 1
            }
        );
        // A new report replaces the node's counts (absent app: none open).
        nodes.update("n1", HashMap::new(), t0 + Duration::from_secs(1));
        assert_eq!(nodes.sums()["a"].authorized, 3);
        // n1 last reported at t0 + 1 s: gone 10 s later; n2 stays.
        assert!(!nodes.expire(t0 + Duration::from_millis(10_999), Duration::from_secs(10)));
        assert!(nodes.expire(t0 + Duration::from_secs(11), Duration::from_secs(10)));
        assert_eq!(nodes.len(), 1);
        assert!(nodes.forget("n2"));
        assert!(!nodes.forget("n2"));
        assert!(nodes.is_empty() && nodes.sums().is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut nodes = RemoteNodes::default();
        for n in 0..MAX_NODES {
            assert!(nodes.update(&format!("n{n}"), HashMap::new(), now));
        }
        assert!(!nodes.update("one-more", open("a", 1, 0), now));
        assert!(
            nodes.update("n0", open("a", 1, 0), now),
            "known nodes still update"
        );
        assert_eq!(nodes.len(), MAX_NODES);
    }

    #[test]
    fn room_under_a_deployment_cap() {
        assert_eq!(room(0, 1_000), Some(0), "unlimited");
        assert_eq!(room(3, 0), Some(3));
        assert_eq!(room(3, 2), Some(1));
        assert_eq!(room(3, 3), None);
        assert_eq!(room(3, 7), None);
    }
}

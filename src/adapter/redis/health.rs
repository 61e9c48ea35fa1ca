//! Whether Redis answers, per shard group: on a Redis Cluster one master
//! down fails only the operations of the groups whose slots it serves, so
//! the node keeps one flag per group (and one for node-wide keys: the
//! nodes ZSET, sequences, idempotency keys, per-user keys) instead of one
//! for the whole deployment. Otherwise an operation answered by a healthy
//! shard would mark Redis "reachable" and the next one on the stopped shard
//! "unreachable", again and again: history on the healthy shards would
//! answer "unavailable" now and then, and the node would re-announce every
//! group at every heartbeat.
//!
//! Each group also remembers whether it must be re-announced (its shard may
//! have lost or reaped this node's share) and whether its bus channel must
//! be subscribed again (see [`super::liveness`]); the node-wide flag stands
//! for the node's entry in the nodes ZSET and its sign-ins.
//!
//! On one redis-server ([`Health::new`] with `shared`) every group lives on
//! the same server: any failure or success is the whole server's, as before.
//!
//! The hot path (every operation's success) is one atomic load: no lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What an operation touches: one shard group's keys (one slot on a
/// cluster), or node-wide keys outside the groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Keys tagged `{prefix:g<group>}` (see [`super::keys::Keys::group`]).
    Group(u16),
    /// Keys outside the groups (nodes ZSET, sequences, idempotency keys,
    /// per-user keys, reaping locks).
    Node,
}

/// What a failure or success changed, for the caller to log once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing (already in that state).
    None,
    /// The first group or node-wide scope of a healthy node failed.
    Degraded,
    /// The last failed scope answered again: every group is healthy.
    Recovered,
    /// A scope changed, but the node neither became nor stopped being degraded.
    Other,
}

/// Per-group and node-wide health, re-announce and re-subscribe flags.
#[derive(Debug)]
pub struct Health {
    /// One redis-server: every scope is the whole server.
    shared: bool,
    healthy: Box<[AtomicBool]>,
    resync: Box<[AtomicBool]>,
    resubscribe: Box<[AtomicBool]>,
    node_healthy: AtomicBool,
    node_resync: AtomicBool,
    /// Groups not healthy, plus one when the node-wide scope is not.
    unhealthy: AtomicUsize,
}

impl Health {
    /// `groups` groups (at least 1), all unhealthy and due for a resync
    /// until a first answer: nothing has been announced yet. `shared`: one
    /// redis-server for every group.
    pub fn new(groups: u16, shared: bool) -> Self {
        let flags = |value: bool| {
            (0..groups.max(1))
                .map(|_| AtomicBool::new(value))
                .collect::<Box<[_]>>()
        };
        let healthy = flags(false);
        let count = healthy.len() + 1;
        Health {
            shared,
            healthy,
            resync: flags(true),
            resubscribe: flags(false),
            node_healthy: AtomicBool::new(false),
            node_resync: AtomicBool::new(true),
            unhealthy: AtomicUsize::new(count),
        }
    }

    /// The number of groups.
    pub fn groups(&self) -> u16 {
        self.healthy.len() as u16
    }

    /// Whether `group`'s shard answered last (beyond the groups: the last).
    pub fn group_healthy(&self, group: u16) -> bool {
        self.healthy[self.index(group)].load(Ordering::Acquire)
    }

    /// Groups (and the node-wide scope, counted as one) not answering.
    pub fn unhealthy(&self) -> usize {
        self.unhealthy.load(Ordering::Acquire)
    }

    /// Groups whose shard does not answer (not counting the node-wide scope).
    pub fn unhealthy_groups(&self) -> usize {
        self.healthy
            .iter()
            .filter(|flag| !flag.load(Ordering::Acquire))
            .count()
    }

    fn index(&self, group: u16) -> usize {
        usize::from(group).min(self.healthy.len() - 1)
    }

    /// An operation of `scope` was answered: marks it healthy.
    pub fn succeeded(&self, scope: Scope) -> Change {
        if self.shared {
            // Fast path: nothing to change (one load).
            if self.unhealthy.load(Ordering::Acquire) == 0 {
                return Change::None;
            }
            let mut changed = false;
            for index in 0..self.healthy.len() {
                changed |= self.mark(index, true);
            }
            changed |= self.mark_node(true);
            return self.change(changed, false);
        }
        let changed = match scope {
            Scope::Group(group) => {
                let index = self.index(group);
                if self.healthy[index].load(Ordering::Acquire) {
                    return Change::None;
                }
                self.mark(index, true)
            }
            Scope::Node => {
                if self.node_healthy.load(Ordering::Acquire) {
                    return Change::None;
                }
                self.mark_node(true)
            }
        };
        self.change(changed, false)
    }

    /// An operation of `scope` met an outage: marks it unhealthy, due for a
    /// resync (and a group's bus channel for a re-subscription).
    pub fn failed(&self, scope: Scope) -> Change {
        let mut changed = false;
        let mut fail_group = |index: usize| {
            self.resync[index].store(true, Ordering::Release);
            self.resubscribe[index].store(true, Ordering::Release);
            changed |= self.mark(index, false);
        };
        match (self.shared, scope) {
            (true, _) => {
                (0..self.healthy.len()).for_each(&mut fail_group);
            }
            (false, Scope::Group(group)) => fail_group(self.index(group)),
            (false, Scope::Node) => {}
        }
        if self.shared || scope == Scope::Node {
            self.node_resync.store(true, Ordering::Release);
            changed |= self.mark_node(false);
        }
        self.change(changed, true)
    }

    /// Flips one group; whether it changed (and the count with it).
    fn mark(&self, index: usize, healthy: bool) -> bool {
        let changed = self.healthy[index].swap(healthy, Ordering::AcqRel) != healthy;
        self.count(changed, healthy);
        changed
    }

    fn mark_node(&self, healthy: bool) -> bool {
        let changed = self.node_healthy.swap(healthy, Ordering::AcqRel) != healthy;
        self.count(changed, healthy);
        changed
    }

    fn count(&self, changed: bool, healthy: bool) {
        if changed && healthy {
            self.unhealthy.fetch_sub(1, Ordering::AcqRel);
        } else if changed {
            self.unhealthy.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// What a flip means for the node as a whole.
    fn change(&self, changed: bool, failed: bool) -> Change {
        if !changed {
            return Change::None;
        }
        let now = self.unhealthy.load(Ordering::Acquire);
        let whole = self.healthy.len() + 1;
        match (failed, now) {
            // 1 failed scope now, or all of them on one server.
            (true, n) if n == 1 || (self.shared && n == whole) => Change::Degraded,
            (false, 0) => Change::Recovered,
            _ => Change::Other,
        }
    }

    /// Marks every group (and the node-wide scope) due for a resync: the
    /// node may have been reaped, or its bus connection was lost.
    pub fn resync_all(&self) {
        for flag in self.resync.iter() {
            flag.store(true, Ordering::Release);
        }
        self.node_resync.store(true, Ordering::Release);
    }

    /// Marks one group due for a resync (its bus channel was subscribed
    /// again: messages may have been missed).
    pub fn resync_group(&self, group: u16) {
        self.resync[self.index(group)].store(true, Ordering::Release);
    }

    /// Marks the node-wide part (nodes ZSET entry, sign-ins) due for a resync.
    pub fn resync_node(&self) {
        self.node_resync.store(true, Ordering::Release);
    }

    /// Takes the groups due for a resync (cleared; give back those that
    /// failed with [`Self::resync_group`]) and whether the node-wide part is.
    pub fn take_resync(&self) -> (Vec<u16>, bool) {
        let groups = (0..self.healthy.len())
            .filter(|&index| self.resync[index].swap(false, Ordering::AcqRel))
            .map(|index| index as u16)
            .collect();
        (groups, self.node_resync.swap(false, Ordering::AcqRel))
    }

    /// Marks every group's bus channel due for a re-subscription (a shard's
    /// connection was lost: which groups it served is not known).
    pub fn resubscribe_all(&self) {
        for flag in self.resubscribe.iter() {
            flag.store(true, Ordering::Release);
        }
    }

    /// Whether `group`'s bus channel is due for a re-subscription (its shard
    /// failed since); cleared.
    pub fn take_resubscribe(&self, group: u16) -> bool {
        self.resubscribe[self.index(group)].swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(groups: u16, shared: bool) -> Health {
        let health = Health::new(groups, shared);
        for group in 0..groups {
            health.succeeded(Scope::Group(group));
        }
        health.succeeded(Scope::Node);
        let _ = health.take_resync();
        health
    }

    #[test]
    fn a_new_node_is_unhealthy_and_due_for_a_full_resync() {
        let health = Health::new(4, false);
        assert!(!health.group_healthy(0));
        assert_eq!(health.unhealthy(), 5);
        assert_eq!(health.take_resync(), (vec![0, 1, 2, 3], true));
        assert_eq!(health.take_resync(), (vec![], false));
    }

    #[test]
    fn on_a_cluster_one_group_fails_alone() {
        let health = started(4, false);
        assert_eq!(health.unhealthy(), 0);
        assert_eq!(health.failed(Scope::Group(2)), Change::Degraded);
        assert_eq!(health.failed(Scope::Group(2)), Change::None);
        // A success elsewhere does not hide it.
        assert_eq!(health.succeeded(Scope::Group(1)), Change::None);
        assert_eq!(health.succeeded(Scope::Node), Change::None);
        assert!(!health.group_healthy(2));
        assert!(health.group_healthy(1));
        assert_eq!(health.unhealthy_groups(), 1);
        assert_eq!(health.take_resync(), (vec![2], false));
        assert!(health.take_resubscribe(2));
        assert!(!health.take_resubscribe(2));
        assert!(!health.take_resubscribe(1));
        assert_eq!(health.failed(Scope::Group(3)), Change::Other);
        assert_eq!(health.succeeded(Scope::Group(2)), Change::Other);
        assert_eq!(health.succeeded(Scope::Group(3)), Change::Recovered);
        assert_eq!(health.unhealthy(), 0);
    }

    #[test]
    fn node_wide_failures_leave_the_groups_alone() {
        let health = started(4, false);
        assert_eq!(health.failed(Scope::Node), Change::Degraded);
        assert!((0..4).all(|group| health.group_healthy(group)));
        assert_eq!(health.unhealthy_groups(), 0);
        assert_eq!(health.take_resync(), (vec![], true));
        assert_eq!(health.succeeded(Scope::Node), Change::Recovered);
    }

    #[test]
    fn on_one_server_every_group_fails_and_recovers_together() {
        let health = started(4, true);
        assert_eq!(health.failed(Scope::Group(1)), Change::Degraded);
        assert!((0..4).all(|group| !health.group_healthy(group)));
        assert_eq!(health.failed(Scope::Node), Change::None);
        assert_eq!(health.take_resync(), (vec![0, 1, 2, 3], true));
        assert_eq!(health.succeeded(Scope::Node), Change::Recovered);
        assert!((0..4).all(|group| health.group_healthy(group)));
        assert_eq!(health.succeeded(Scope::Group(0)), Change::None);
    }

    #[test]
    fn resync_marks_are_taken_once_and_given_back() {
        let health = started(3, false);
        health.resync_group(1);
        health.resync_group(9); // beyond: the last
        assert_eq!(health.take_resync(), (vec![1, 2], false));
        health.resync_all();
        assert_eq!(health.take_resync(), (vec![0, 1, 2], true));
        health.resubscribe_all();
        assert!((0..3).all(|group| health.take_resubscribe(group)));
        assert!(!health.take_resubscribe(0));
    }
}

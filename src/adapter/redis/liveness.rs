//! The background tasks of a node: listening on the bus (re-subscribing
//! after Redis comes back), heartbeats, and reaping dead nodes.

use super::connection::{Client, Connection};
use super::health::Scope;
use super::{bus, now_ms, RedisAdapter};
use futures_util::StreamExt;
use redis::{AsyncCommands, FromRedisValue, PushKind};
use std::sync::Arc;
use std::time::Duration;

/// Listens on the bus (every shard group's channel) forever; after every
/// (re)connection the node re-announces its state, since Redis may have
/// lost or reaped it.
pub async fn listen(adapter: Arc<RedisAdapter>) {
    if adapter.client.is_cluster() {
        return listen_sharded(adapter).await;
    }
    let Client::Single(client) = adapter.client.clone() else {
        return;
    };
    let buses: Vec<String> = (0..adapter.keys.groups())
        .map(|group| adapter.keys.bus(group).to_owned())
        .collect();
    let mut wait = Duration::from_millis(200);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&buses).await {
                Ok(()) => {
                    wait = Duration::from_millis(200);
                    tracing::info!(channels = buses.len(), "listening on the redis bus");
                    // Messages were missed while the bus was down, and Redis
                    // may have lost this node's share: re-announce it.
                    adapter.health.resync_all();
                    // History mirrors must be contiguous: start them again.
                    adapter.node.forget_history_mirrors();
                    adapter.resync_if_needed().await;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match message.get_payload::<String>() {
                            Ok(text) => adapter.on_bus_payload(&text),
                            Err(error) => tracing::warn!(%error, "unreadable bus payload"),
                        }
                    }
                    adapter.failed(Scope::Node, "bus connection lost");
                    adapter.node.forget_history_mirrors();
                }
                Err(error) => adapter.failed(Scope::Node, &error.to_string()),
            },
            Err(error) => adapter.failed(Scope::Node, &error.to_string()),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The sharded bus of a Redis Cluster: `SSUBSCRIBE` to every group's
/// channel (one call each: a call stays in one slot), then the pushes the
/// command connection hands over (bounded, see [`super::connection`]). The
/// library subscribes again after a reconnection or a slot move, and says
/// so with an `ssubscribe` push: the node then re-announces its state
/// (the shard may have restarted empty) and restarts its history mirrors.
async fn listen_sharded(adapter: Arc<RedisAdapter>) {
    let taken = adapter
        .pushes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut pushes) = taken else {
        return;
    };
    let mut wait = Duration::from_millis(200);
    'subscribe: loop {
        let Some(mut connection) = adapter.connection().await else {
            adapter.failed(Scope::Node, "not connected");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            continue;
        };
        if let Connection::Cluster(cluster) = &mut connection {
            for group in 0..adapter.keys.groups() {
                if let Err(error) = cluster.ssubscribe(adapter.keys.bus(group)).await {
                    adapter.failed(Scope::Group(group), &error.to_string());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue 'subscribe;
                }
            }
        }
        break;
    }
    tracing::info!(
        channels = adapter.keys.groups(),
        "listening on the sharded redis bus"
    );
    adapter.health.resync_all();
    adapter.node.forget_history_mirrors();
    adapter.resync_if_needed().await;
    let mut confirmed = vec![false; usize::from(adapter.keys.groups())];
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                match push.data.get(1).map(String::from_redis_value_ref) {
                    Some(Ok(text)) => adapter.on_bus_payload(&text),
                    _ => tracing::warn!("unreadable bus payload"),
                }
            }
            PushKind::SSubscribe => {
                // A re-subscription: messages may have been missed on that
                // group's channel (the shard restarted or failed over). The
                // first one of each group answers the subscription above,
                // already followed by a resync.
                let channel = push.data.first().map(String::from_redis_value_ref);
                match channel
                    .and_then(Result::ok)
                    .and_then(|c| adapter.keys.bus_group(&c))
                {
                    Some(group) if !confirmed[usize::from(group)] => {
                        confirmed[usize::from(group)] = true;
                        continue;
                    }
                    Some(group) => adapter.health.resync_group(group),
                    None => adapter.health.resync_all(),
                }
                adapter.node.forget_history_mirrors();
            }
            PushKind::Disconnection => {
                // Which shard is not said: its groups' own operations fail
                // (and mark them) if it is really gone. Every group's bus
                // channel is subscribed again once its shard answers (a
                // failover may have moved it), and each re-subscription
                // re-announces its group.
                adapter.metrics.redis_errors.inc();
                adapter.health.resubscribe_all();
                adapter.node.forget_history_mirrors();
            }
            _ => {}
        }
    }
}

/// Heartbeats every `heartbeat_secs`; the [`upkeep`] task (started here)
/// reaps nodes silent for `node_timeout_secs` and re-announces what failed.
/// The beat never waits on that work: a resync or reap on a stopped shard
/// takes up to `operation_timeout_ms`, and a late beat would make this node
/// look dead to the others (and to itself, see [`may_have_been_reaped`]).
pub async fn heartbeat(adapter: Arc<RedisAdapter>) {
    // At most one round waiting: a busy upkeep skips beats, never queues them.
    let (rounds, due) = tokio::sync::mpsc::channel(1);
    tokio::spawn(upkeep(adapter.clone(), due));
    let period = Duration::from_secs(adapter.settings.heartbeat_secs);
    let timeout_ms = adapter.settings.node_timeout_secs * 1000;
    let mut tick = tokio::time::interval(period);
    // Every group counts as unreachable until the first resync reaches it.
    let mut reported = usize::from(adapter.keys.groups());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (nodes, node) = (adapter.keys.nodes(), adapter.node_id.clone());
        let now = now_ms();
        let beat = adapter
            .run(|mut connection| async move {
                let before: Option<f64> = connection.zscore(&nodes, &node).await?;
                connection.zadd::<_, _, _, ()>(&nodes, &node, now).await?;
                let dead = connection
                    .zrangebyscore::<_, _, _, Vec<String>>(
                        &nodes,
                        "-inf",
                        now.saturating_sub(timeout_ms),
                    )
                    .await?;
                Ok((before, dead))
            })
            .await;
        let dead = match beat {
            Some((before, dead)) => {
                if may_have_been_reaped(before.map(|at| at as u64), now, timeout_ms) {
                    // Another node may have taken this one for dead and
                    // removed its shares in any group: announce them all.
                    adapter.health.resync_all();
                }
                dead
            }
            None => Vec::new(),
        };
        report_unhealthy(&adapter, &mut reported);
        let _ = rounds.try_send(dead);
    }
}

/// After each heartbeat (`due` brings the nodes found dead): re-announces
/// what failed, retries history writes and reaps the dead nodes.
async fn upkeep(adapter: Arc<RedisAdapter>, mut due: tokio::sync::mpsc::Receiver<Vec<String>>) {
    while let Some(dead) = due.recv().await {
        adapter.resync_if_needed().await;
        adapter.resubscribe_pending().await;
        adapter.retry_history_writes();
        for node in dead.iter().filter(|id| **id != adapter.node_id) {
            adapter.reap(node).await;
        }
    }
}

/// Whether the node's last heartbeat (`before`, unix ms; `None`: not
/// listed) is old enough that another node may have reaped it: beyond half
/// of `timeout_ms` (a margin for the nodes' clocks).
fn may_have_been_reaped(before: Option<u64>, now: u64, timeout_ms: u64) -> bool {
    before.is_none_or(|at| now.saturating_sub(at) > timeout_ms / 2)
}

/// Logs how many shard groups do not answer whenever that number changed
/// since the last heartbeat (one line per change, not one per group).
fn report_unhealthy(adapter: &RedisAdapter, reported: &mut usize) {
    let unhealthy = adapter.health.unhealthy_groups();
    if unhealthy != *reported && unhealthy > 0 {
        tracing::warn!(
            unhealthy_groups = unhealthy,
            groups = adapter.keys.groups(),
            "redis shard groups unreachable"
        );
    }
    *reported = unhealthy;
}

impl RedisAdapter {
    /// Subscribes again, all at once, the bus channels of the groups due
    /// for it ([`super::health::Health::take_resubscribe`]: their shard
    /// failed, or a shard's connection was lost) whose shard answers again.
    /// The library subscribes again after a reconnection or a slot move it
    /// sees, but after a replica failover it did not always (the channel's
    /// messages stopped reaching this node): SSUBSCRIBE is idempotent, and
    /// one that fails is tried again at the next heartbeat.
    pub(super) async fn resubscribe_pending(&self) {
        if !self.client.is_cluster() {
            return;
        }
        let due: Vec<u16> = (0..self.keys.groups())
            .filter(|&group| {
                self.health.group_healthy(group) && self.health.take_resubscribe(group)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(Connection::Cluster(cluster)) = self.connection().await else {
            for group in due {
                self.failed(Scope::Group(group), "not connected");
            }
            return;
        };
        let subscribing = due.iter().map(|&group| {
            let mut cluster = cluster.clone();
            async move {
                let subscribing = cluster.ssubscribe(self.keys.bus(group));
                let result = tokio::time::timeout(self.timeout(), subscribing).await;
                (group, result)
            }
        });
        for (group, result) in futures_util::future::join_all(subscribing).await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => self.failed(Scope::Group(group), &error.to_string()),
                Err(_) => self.failed(Scope::Group(group), "ssubscribe timed out"),
            }
        }
    }

    /// One Redis message of the bus: a message, or a batch whose members are
    /// handled in order, as if each came alone (see [`bus::BusBatch`]).
    fn on_bus_payload(self: &Arc<Self>, text: &str) {
        match bus::batch_members(text) {
            Some(members) => {
                for member in members {
                    self.on_bus_message(member);
                }
            }
            None => tracing::warn!("malformed batch on the redis bus"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_missing_heartbeat_may_have_been_reaped() {
        assert!(may_have_been_reaped(None, 10_000, 3000));
        assert!(may_have_been_reaped(Some(8_000), 10_000, 3000));
        assert!(!may_have_been_reaped(Some(9_000), 10_000, 3000));
        assert!(!may_have_been_reaped(Some(11_000), 10_000, 3000));
    }
}

//! The background tasks of a node: listening on the bus (re-subscribing
//! after Redis comes back), heartbeats, and reaping dead nodes.

use super::connection::{Client, Connection};
use super::{bus, now_ms, RedisAdapter};
use futures_util::StreamExt;
use redis::{AsyncCommands, FromRedisValue, PushKind};
use std::sync::atomic::Ordering;
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
                    adapter.needs_resync.store(true, Ordering::Release);
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
                    adapter.failed("bus connection lost");
                    adapter.node.forget_history_mirrors();
                }
                Err(error) => adapter.failed(&error.to_string()),
            },
            Err(error) => adapter.failed(&error.to_string()),
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
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            continue;
        };
        if let Connection::Cluster(cluster) = &mut connection {
            for group in 0..adapter.keys.groups() {
                if let Err(error) = cluster.ssubscribe(adapter.keys.bus(group)).await {
                    adapter.failed(&error.to_string());
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
    adapter.needs_resync.store(true, Ordering::Release);
    adapter.node.forget_history_mirrors();
    adapter.resync_if_needed().await;
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                match push.data.get(1).map(String::from_redis_value_ref) {
                    Some(Ok(text)) => adapter.on_bus_payload(&text),
                    _ => tracing::warn!("unreadable bus payload"),
                }
            }
            PushKind::SSubscribe => {
                // A (re)subscription: messages may have been missed on it.
                adapter.needs_resync.store(true, Ordering::Release);
                adapter.node.forget_history_mirrors();
            }
            PushKind::Disconnection => {
                adapter.failed("bus connection to a shard lost");
                adapter.node.forget_history_mirrors();
            }
            _ => {}
        }
    }
}

/// Heartbeats every `heartbeat_secs` and reaps nodes silent for `node_timeout_secs`.
pub async fn heartbeat(adapter: Arc<RedisAdapter>) {
    let period = Duration::from_secs(adapter.settings.heartbeat_secs);
    let timeout_ms = adapter.settings.node_timeout_secs * 1000;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (nodes, node) = (adapter.keys.nodes(), adapter.node_id.clone());
        let now = now_ms();
        let dead = adapter
            .run(|mut connection| async move {
                connection.zadd::<_, _, _, ()>(&nodes, &node, now).await?;
                connection
                    .zrangebyscore::<_, _, _, Vec<String>>(
                        &nodes,
                        "-inf",
                        now.saturating_sub(timeout_ms),
                    )
                    .await
            })
            .await
            .unwrap_or_default();
        adapter.resync_if_needed().await;
        adapter.retry_history_writes();
        for node in dead.iter().filter(|id| **id != adapter.node_id) {
            adapter.reap(node).await;
        }
    }
}

impl RedisAdapter {
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

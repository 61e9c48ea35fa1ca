//! The background tasks of a node: listening on the bus (re-subscribing
//! after Redis comes back), heartbeats, and reaping dead nodes.

use super::{bus, now_ms, RedisAdapter};
use futures_util::StreamExt;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;

/// Listens on the bus forever; after every (re)connection the node
/// re-announces its state, since Redis may have lost or reaped it.
pub async fn listen(adapter: Arc<RedisAdapter>) {
    let bus = adapter.keys.bus();
    let mut wait = Duration::from_millis(200);
    loop {
        match adapter.client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&bus).await {
                Ok(()) => {
                    wait = Duration::from_millis(200);
                    tracing::info!(%bus, "listening on the redis bus");
                    // Messages were missed while the bus was down, and Redis
                    // may have lost this node's share: re-announce it.
                    adapter
                        .needs_resync
                        .store(true, std::sync::atomic::Ordering::Release);
                    // History mirrors must be contiguous: start them again.
                    adapter.node.forget_history_mirrors();
                    adapter.resync_if_needed().await;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match message.get_payload::<String>() {
                            // A batch's members, in order, as if each came alone.
                            Ok(text) => match bus::batch_members(&text) {
                                Some(members) => {
                                    for member in members {
                                        adapter.on_bus_message(member);
                                    }
                                }
                                None => tracing::warn!("malformed batch on the redis bus"),
                            },
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

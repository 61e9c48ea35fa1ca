//! The Redis adapter: many nodes behave as one.
//!
//! - Fan-out: a publish is delivered locally, then sent once on a Redis
//!   pub/sub channel ([`bus`]) through the [`outbox`], in order and without
//!   waiting; every other node delivers it to its own subscribers (socket
//!   exclusion and client events work across nodes).
//! - Shared state: each node records its share of every channel (sockets,
//!   presence members) with atomic Lua [`scripts`], so occupied/vacated and
//!   member_added/removed are decided once for the whole cluster.
//! - Liveness ([`liveness`]): nodes heartbeat; a node whose heartbeat stops
//!   is reaped by another, with the member_removed and vacated that follow.
//! - Redis down: every operation has a timeout and falls back to this node's
//!   own state, so local delivery never stops; when Redis is back the node
//!   re-announces its share ([`RedisAdapter::resync_if_needed`]). Whether
//!   Redis answers is kept per shard group ([`health`]): on a Redis Cluster
//!   one shard down marks and re-announces only its own groups. A command
//!   Redis answers with an error is not an outage ([`failure`]).
//! - History ([`history`]): channel histories in Redis Streams, one serial
//!   order for the cluster, delivered from the bus on every node.

//! - Held-back leave webhooks ([`held`]): `channel_vacated` and
//!   `member_removed` wait in Redis, so a rejoin on any node cancels them
//!   and exactly one node sends them once due (also a dead node's).
//! - Subscription counts ([`counts`]): cluster-wide counts sent to every
//!   node's subscribers, coalesced once per interval for the whole cluster.
//! - Idempotent publish ([`idempotency`]): keys claimed with `SET NX PX`, so
//!   a repeat reaching any node is answered once.
//! - Recovery positions ([`positions`]): signed-in users' confirmed
//!   positions, one hash per user, read by whichever node the user comes back to.
//! - Acknowledged delivery's shared store ([`delivery`]): signed-in users'
//!   unacknowledged messages, claimed by exactly one connection.
//! - Redis Cluster ([`connection`], [`keys`]): channels are spread over
//!   shard groups, each one hash tag (one slot) with its own bus channel;
//!   every script touches one group, and what spans groups (resync, reaping,
//!   listing an app's channels) is one call per group, so one shard down
//!   only fails the operations of its own groups.
//! - Sign-ins ([`signins`]): where each user is signed in, so watchlist
//!   `online`/`offline` is decided once for the cluster. Peer members carry
//!   their flag in the presence members hash (see [`scripts::join`]).
//! - Usage reports ([`usage`]): open connections and admissions shared over
//!   the bus, so app and abuse limits hold for the deployment.
//! - HTTP fallback sessions through any node ([`xhr_relay`]): a request for
//!   a session another node holds is relayed to it over the bus.
//! - Invalidations ([`invalidate`]): follows, notification registrations and
//!   pushi logouts made through one node take effect on every node at once.
//! - The console ([`console`]): a console on one node shows its app's events
//!   of every node, forwarded only while a console watches the app.

pub mod bus;
pub mod connection;
pub mod console;
pub mod counts;
pub mod delivery;
pub mod failure;
pub mod health;
pub mod held;
pub mod history;
pub mod idempotency;
pub mod invalidate;
pub mod keys;
pub mod liveness;
pub mod outbox;
pub mod positions;
pub mod scripts;
pub mod signins;
pub mod slots;
pub mod usage;
pub mod xhr_relay;

use super::local::{
    announce_watchlist_locally, close_user_sockets, local_joined, local_left, tell_peers_locally,
};
use super::{Adapter, ChannelStats, CountSent, Joined, KeyClaim, Left, MemberJoin, MemberLimit};
use crate::config::RedisConfig;
use crate::hub::channels::{FanOut, Subscribed, Unsubscribed};
use crate::hub::idempotency::{Answer, ClaimToken};
use crate::hub::node::Node;
use crate::metrics::Metrics;
use crate::protocol::frames;
/// Unix time in ms (shared with the submodules).
use crate::store::now_ms;
use crate::throttled_log::ThrottledLog;
use crate::webhooks::Webhooks;
use async_trait::async_trait;
use bus::BusMessage;
use bytestring::ByteString;
use connection::{BoundedPushSender, Client, Connection};
use futures_util::future::join_all;
use health::Scope;
use keys::{Keys, SEP};
use redis::{AsyncCommands, PushInfo, RedisResult, Value};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};

/// Channels reaped per script call (each brings 4 keys).
const REAP_BATCH: usize = 256;

/// What a resync could not re-announce (retried by the heartbeat).
struct Unsynced {
    groups: Vec<u16>,
    node: bool,
}

/// The Lua scripts, hashed once.
struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    reap: redis::Script,
    release_held: redis::Script,
    next_sequence: redis::Script,
    idempotency_claim: redis::Script,
    idempotency_store: redis::Script,
    idempotency_release: redis::Script,
    delivery_sync: redis::Script,
    delivery_claim: redis::Script,
}

/// Shares state and messages with the other nodes through Redis.
pub struct RedisAdapter {
    node_id: String,
    node: Arc<Node>,
    keys: Keys,
    client: Client,
    connection: OnceCell<Connection>,
    /// The cluster's pushes (sharded bus), taken by the listener.
    pushes: Mutex<Option<mpsc::Receiver<PushInfo>>>,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster (also passed to scripts).
    publish_command: &'static str,
    outbox: outbox::Outbox,
    settings: RedisConfig,
    scripts: Scripts,
    webhooks: Webhooks,
    metrics: Metrics,
    /// Per shard group: whether Redis answers, and what is due to be
    /// re-announced (see [`health`]).
    health: health::Health,
    refusal_log: ThrottledLog,
    /// Channel histories in Redis Streams (see [`history`]).
    history: history::State,
    /// Sign-in changes waiting to be written (see [`signins`]).
    sign_ins: tokio::sync::mpsc::Sender<signins::Change>,
    /// Usage shared with the other nodes, once [`RedisAdapter::share_usage`].
    usage: std::sync::OnceLock<Arc<crate::usage::ClusterUsage>>,
    /// HTTP sessions relayed between nodes (see [`xhr_relay`]).
    xhr: xhr_relay::State,
    /// This node's cached-state invalidations (see [`invalidate`]).
    invalidations: std::sync::OnceLock<Arc<crate::hub::invalidation::Invalidations>>,
    /// The console's link to the other nodes (see [`console`]).
    console: std::sync::OnceLock<Arc<console::ConsoleLink>>,
}

impl RedisAdapter {
    /// Creates the adapter and starts its background tasks (connection,
    /// bus listener, heartbeat and reaper) on the current runtime.
    pub fn start(
        node: Arc<Node>,
        settings: &RedisConfig,
        webhooks: Webhooks,
        metrics: Metrics,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let (push_sender, pushes) =
            BoundedPushSender::new(connection::PUSH_CAPACITY, metrics.clone());
        let timeout = Duration::from_millis(settings.operation_timeout_ms);
        let client = Client::open(
            &settings.url,
            settings.cluster_seeds(),
            push_sender,
            timeout,
        )?;
        let publish_command = if client.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let buckets = if client.is_cluster() {
            settings.shard_groups
        } else {
            1
        };
        let (outbox, outgoing) = outbox::Outbox::new(buckets);
        let health = health::Health::new(settings.shard_groups, !client.is_cluster());
        let (sign_ins, sign_in_changes) = signins::queue();
        let adapter = Arc::new(RedisAdapter {
            node_id: format!("{:016x}", rand::random::<u64>()),
            node,
            keys: Keys::new(&settings.prefix, settings.shard_groups),
            client,
            connection: OnceCell::new(),
            pushes: Mutex::new(Some(pushes)),
            publish_command,
            outbox,
            settings: settings.clone(),
            scripts: Scripts {
                join: scripts::join(),
                leave: scripts::leave(),
                reap: scripts::reap(),
                release_held: scripts::release_held(),
                next_sequence: scripts::next_sequence(),
                idempotency_claim: idempotency::claim_script(),
                idempotency_store: idempotency::store_script(),
                idempotency_release: idempotency::release_script(),
                delivery_sync: delivery::sync_script(),
                delivery_claim: delivery::claim_script(),
            },
            webhooks,
            metrics,
            health,
            refusal_log: ThrottledLog::new(10_000),
            history: history::State::new(settings.history_retry_queue),
            sign_ins,
            usage: std::sync::OnceLock::new(),
            xhr: xhr_relay::State::new(),
            invalidations: std::sync::OnceLock::new(),
            console: std::sync::OnceLock::new(),
        });
        tracing::info!(
            node_id = %adapter.node_id,
            url = %redact(&settings.url),
            cluster = adapter.client.is_cluster(),
            shard_groups = adapter.keys.groups(),
            "redis adapter starting"
        );
        tokio::spawn(liveness::listen(adapter.clone()));
        tokio::spawn(liveness::heartbeat(adapter.clone()));
        tokio::spawn(outbox::run(adapter.clone(), outgoing));
        tokio::spawn(held::release(adapter.clone()));
        tokio::spawn(signins::run(adapter.clone(), sign_in_changes));
        Ok(adapter)
    }

    /// Shares this node's usage with the others and counts theirs in
    /// `usage` (see [`crate::usage`]): starts the report task. Once.
    pub fn share_usage(self: &Arc<Self>, usage: Arc<crate::usage::ClusterUsage>) {
        if self.usage.set(usage.clone()).is_ok() {
            tokio::spawn(usage::report(self.clone(), usage));
        }
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.operation_timeout_ms)
    }

    /// The command connection, created on first success and then kept
    /// (it reconnects by itself).
    async fn connection(&self) -> Option<Connection> {
        let connect = async {
            let connecting = self.client.connect();
            match tokio::time::timeout(self.timeout(), connecting).await {
                Ok(Ok(connection)) => Ok(connection),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        };
        match self.connection.get_or_try_init(|| connect).await {
            Ok(connection) => Some(connection.clone()),
            Err(error) => {
                tracing::debug!(%error, "redis connection failed");
                None
            }
        }
    }

    /// Runs one node-wide Redis operation (keys outside the shard groups:
    /// nodes ZSET, sequences, idempotency and per-user keys); see [`Self::run_in`].
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_in(Scope::Node, op).await
    }

    /// Runs one Redis operation on `scope`'s keys with the timeout; `None`
    /// when it failed (counted every time). An outage marks that scope
    /// unhealthy and due for a resync (on a Redis Cluster only that shard
    /// group: see [`health`]); a refused command only fails this operation
    /// (see [`failure::is_outage`]).
    async fn run_in<T, F, Fut>(&self, scope: Scope, op: F) -> Option<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(connection) = self.connection().await else {
            self.failed(scope, "not connected");
            return None;
        };
        match tokio::time::timeout(self.timeout(), op(connection)).await {
            Ok(Ok(value)) => {
                let change = self.health.succeeded(scope);
                self.health_changed(change);
                Some(value)
            }
            Ok(Err(error)) if failure::is_outage(&error) => {
                self.failed(scope, &error.to_string());
                None
            }
            Ok(Err(error)) => {
                self.refused(&error);
                None
            }
            Err(_) => {
                self.failed(scope, "operation timed out");
                None
            }
        }
    }

    /// Whether `group`'s shard answered last (history reads and writes
    /// wait for it; see [`history`]).
    fn group_healthy(&self, group: u16) -> bool {
        self.health.group_healthy(group)
    }

    /// Queues a message for the other nodes on a group's bus channel (see
    /// [`outbox`]): a channel's own group keeps its messages in order.
    fn tell_other_nodes(&self, group: u16, message: &BusMessage) {
        if !self.outbox.send(group, message.encode()) {
            self.metrics.redis_bus_dropped.inc();
        }
    }

    /// An outage on `scope` (counted; logged once per transition of the
    /// node, not per group).
    fn failed(&self, scope: Scope, error: &str) {
        self.metrics.redis_errors.inc();
        let change = self.health.failed(scope);
        if change == health::Change::Degraded {
            if self.client.is_cluster() {
                tracing::error!(%error, ?scope, "redis shard unreachable: its shard groups serve this node's clients only until it returns");
            } else {
                tracing::error!(%error, "redis unreachable: serving this node's clients only until it returns");
            }
        }
        self.health_changed(change);
    }

    /// Keeps `rusher_redis_unhealthy_groups` and the log in step with a
    /// change of health.
    fn health_changed(&self, change: health::Change) {
        if change == health::Change::None {
            return;
        }
        let unhealthy = self.health.unhealthy_groups();
        self.metrics.redis_unhealthy_groups.set(unhealthy as i64);
        if change == health::Change::Recovered {
            tracing::info!("redis reachable: cluster state shared");
        }
    }

    /// Redis answered with an error: it is reachable and still holds this
    /// node's share (only an outage can lose or reap it, and a resync would
    /// not make Redis accept the command), so the node stays in the cluster;
    /// the caller falls back to its own state for this one operation.
    fn refused(&self, error: &redis::RedisError) {
        self.metrics.redis_errors.inc();
        if let Some(suppressed) = self.refusal_log.ready() {
            tracing::warn!(%error, also_refused = suppressed, "redis refused a command; answered from this node's state");
        }
    }

    /// The health scope of a channel's keys: its shard group.
    fn channel_scope(&self, app_id: &str, channel: &str) -> Scope {
        Scope::Group(self.keys.group(app_id, channel))
    }

    /// A join/leave script call with the channel's keys and the arguments
    /// both share (node, node channel id, channel); the rest is added by the caller.
    fn channel_script<'s>(
        &self,
        script: &'s redis::Script,
        app_id: &str,
        channel: &str,
    ) -> redis::ScriptInvocation<'s> {
        let keys = &self.keys;
        let group = keys.group(app_id, channel);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.subs(app_id, channel))
            .key(keys.members(app_id, channel))
            .key(keys.info(app_id, channel))
            .key(keys.node_channels(&self.node_id, group))
            .key(keys.app_channels(app_id, group))
            .key(keys.held(app_id, group))
            .arg(&self.node_id)
            .arg(Keys::node_channel_id(app_id, channel))
            .arg(channel);
        invocation
    }

    /// Handles a message another node sent on the bus.
    fn on_bus_message(self: &Arc<Self>, text: &str) {
        match BusMessage::decode(text) {
            Some(BusMessage::Publish {
                node,
                app_id,
                channel,
                except,
                frame,
            }) if node != self.node_id => {
                let except = (!except.is_empty()).then_some(except);
                let report = self
                    .node
                    .deliver(app_id, channel, &ByteString::from(frame), except);
                report.record(&self.metrics);
            }
            Some(BusMessage::History {
                node,
                app_id,
                channel,
                except,
                live,
                serial,
                frame,
            }) => {
                // A write retried after an outage reached only its own node's
                // subscribers then: every other node delivers it now, late
                // rather than never.
                let own = node == self.node_id;
                let live = live || !own;
                self.on_history_event(own, app_id, channel, except, live, serial, frame)
            }
            Some(BusMessage::Marker { node, token }) if node == self.node_id => {
                self.on_marker(token);
            }
            Some(BusMessage::Terminate {
                node,
                app_id,
                user_id,
            }) if node != self.node_id => {
                close_user_sockets(&self.node, app_id, user_id);
            }
            Some(BusMessage::Watchlist {
                node,
                app_id,
                online,
                user_id,
            }) if node != self.node_id => {
                announce_watchlist_locally(&self.node, app_id, user_id, online);
            }
            Some(BusMessage::Peer {
                node,
                app_id,
                added,
                channel,
                user_id,
            }) if node != self.node_id => {
                tell_peers_locally(&self.node, app_id, channel, user_id, added);
            }
            Some(BusMessage::Usage { node, report }) if node != self.node_id => {
                if let Some(usage) = self.usage.get() {
                    usage.apply(node, report, std::time::Instant::now());
                }
            }
            Some(
                message @ (BusMessage::XhrSend { .. }
                | BusMessage::XhrAttach { .. }
                | BusMessage::XhrReply { .. }
                | BusMessage::XhrLine { .. }
                | BusMessage::XhrEnd { .. }
                | BusMessage::XhrGone { .. }),
            ) => self.on_xhr_message(message),
            Some(
                message @ (BusMessage::Follow { .. }
                | BusMessage::Registrations { .. }
                | BusMessage::Logout { .. }),
            ) => self.on_invalidation(&message),
            Some(message @ (BusMessage::ConsoleWatch { .. } | BusMessage::ConsoleLog { .. })) => {
                self.on_console_message(&message)
            }
            Some(_) => {}
            None => tracing::warn!("unreadable message on the redis bus"),
        }
    }

    /// Re-announces this node's state where a failure happened since the
    /// last time: only the shard groups that failed (or whose bus channel
    /// was subscribed again), and the node-wide part (nodes ZSET entry,
    /// sign-ins) when it failed; what fails again is retried by the heartbeat.
    pub async fn resync_if_needed(&self) {
        let (groups, node) = self.health.take_resync();
        if groups.is_empty() && !node {
            return;
        }
        let failed = self.resync(&groups, node).await;
        for group in &failed.groups {
            self.health.resync_group(*group);
        }
        if failed.node {
            self.health.resync_node();
        }
    }

    /// Removes the share this node had in each of `groups` and records its
    /// current state there again, and with `node` its nodes ZSET entry and
    /// sign-ins: after an outage (or being reaped as dead), Redis matches
    /// this node's clients once more. One step per group, all at once: a
    /// group whose shard is down fails alone. Returns what failed.
    async fn resync(&self, groups: &[u16], node_wide: bool) -> Unsynced {
        let keys = &self.keys;
        let node = self.node_id.clone();
        let wanted: BTreeSet<u16> = groups.iter().copied().collect();
        let mut pipes: BTreeMap<u16, redis::Pipeline> = BTreeMap::new();
        for app_id in self.node.app_ids() {
            let app_id = app_id.as_str();
            let Some(channels) = self.node.channels(app_id) else {
                continue;
            };
            for share in channels.snapshot() {
                let channel = &share.channel;
                let group = keys.group(app_id, channel);
                if !wanted.contains(&group) {
                    continue;
                }
                let pipe = pipes.entry(group).or_insert_with(redis::pipe);
                pipe.hset(keys.subs(app_id, channel), &node, share.subscribers)
                    .ignore()
                    .sadd(
                        keys.node_channels(&node, group),
                        Keys::node_channel_id(app_id, channel),
                    )
                    .ignore()
                    .sadd(keys.app_channels(app_id, group), channel)
                    .ignore();
                for (user_id, info) in &share.members {
                    // 2: a peer member (see scripts::join).
                    let member = if share.peers.contains(user_id) { 2 } else { 1 };
                    pipe.hset(
                        keys.members(app_id, channel),
                        format!("{node}{SEP}{user_id}"),
                        member,
                    )
                    .ignore()
                    .hset(
                        keys.info(app_id, channel),
                        user_id,
                        info.as_deref().unwrap_or("null"),
                    )
                    .ignore();
                }
            }
        }
        let listed = !node_wide || {
            let (nodes, now) = (keys.nodes(), now_ms());
            self.run(|mut connection| {
                let node = node.clone();
                async move { connection.zadd::<_, _, _, ()>(nodes, node, now).await }
            })
            .await
            .is_some()
        };
        let steps = wanted.iter().map(|&group| {
            let pipe = pipes.remove(&group).unwrap_or_else(redis::pipe);
            let node = node.as_str();
            async move {
                let done = self
                    .run_in(Scope::Group(group), |mut connection| async move {
                        // Forget the old share (no events: nothing changed for clients)...
                        self.reap_group(&mut connection, node, group).await?;
                        // ...and record the present one.
                        failure::query_pipeline::<()>(&pipe, &mut connection).await
                    })
                    .await
                    .is_some();
                (group, done)
            }
        });
        let failed: Vec<u16> = join_all(steps)
            .await
            .into_iter()
            .filter_map(|(group, done)| (!done).then_some(group))
            .collect();
        let synced = wanted.len() - failed.len();
        self.metrics.redis_resynced_groups.inc_by(synced as u64);
        // Sign-ins after channels: a watcher hearing `online` finds the
        // user's channels there already.
        let node_done = !node_wide || (listed && failed.is_empty() && self.resync_sign_ins().await);
        if synced > 0 || (node_wide && node_done) {
            tracing::info!(
                groups = synced,
                failed = failed.len(),
                node_wide = node_wide && node_done,
                "node state re-announced to redis"
            );
        }
        Unsynced {
            groups: failed,
            node: !node_done,
        }
    }

    /// Removes `node`'s shares in one shard group: its set of the group,
    /// then the reap script on those channels, a batch at a time (each
    /// call one slot). Returns the script's flat `kind, app, channel, user`
    /// list (see [`scripts::reap`]).
    async fn reap_group(
        &self,
        connection: &mut Connection,
        node: &str,
        group: u16,
    ) -> RedisResult<Vec<String>> {
        let keys = &self.keys;
        let own = keys.node_channels(node, group);
        let ids: Vec<String> = connection.smembers(&own).await?;
        let mut events = Vec::new();
        for batch in ids.chunks(REAP_BATCH) {
            let mut invocation = self.scripts.reap.prepare_invoke();
            invocation.key(&own).arg(node);
            for id in batch {
                let Some((app_id, channel)) = id.split_once(SEP) else {
                    continue;
                };
                invocation
                    .key(keys.subs(app_id, channel))
                    .key(keys.members(app_id, channel))
                    .key(keys.info(app_id, channel))
                    .key(keys.app_channels(app_id, group))
                    .arg(app_id)
                    .arg(channel);
            }
            let out: Vec<String> = invocation.invoke_async(connection).await?;
            events.extend(out);
        }
        Ok(events)
    }

    /// Reaps a dead node: removes its shares, group by group, and announces
    /// what that means. The node leaves the nodes ZSET only once every
    /// group is done: a group whose shard is down is reaped on a later try
    /// (the lock expires after `node_timeout_secs`).
    async fn reap(&self, dead: &str) {
        // Its connections no longer count against the limits.
        if let Some(usage) = self.usage.get() {
            usage.forget(dead);
        }
        let keys = &self.keys;
        let lock = keys.reaping(dead);
        let lock_ms = self.settings.node_timeout_secs * 1000;
        let locked = self
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
                    .map(Some)
            })
            .await
            .flatten()
            .is_some();
        if !locked {
            return;
        }
        let groups = (0..keys.groups()).map(|group| async move {
            self.run_in(Scope::Group(group), |mut connection| async move {
                self.reap_group(&mut connection, dead, group).await
            })
            .await
        });
        let results = join_all(groups).await;
        let complete = results.iter().all(Option::is_some);
        let events: Vec<String> = results.into_iter().flatten().flatten().collect();
        if complete {
            let nodes = keys.nodes();
            self.run(
                |mut connection| async move { connection.zrem::<_, _, ()>(nodes, dead).await },
            )
            .await;
        }
        self.reap_sign_ins(dead).await;
        if events.is_empty() {
            return;
        }
        tracing::warn!(
            node_id = dead,
            changes = events.len() / 4,
            complete,
            "reaped a dead node"
        );
        for event in events.chunks_exact(4) {
            let (kind, app_id, channel, user_id) = (&event[0], &event[1], &event[2], &event[3]);
            match kind.as_str() {
                "removed" => {
                    let frame = frames::member_removed(channel, user_id);
                    self.publish(app_id, channel, frame, None).await;
                    self.webhooks.emit(
                        app_id,
                        crate::webhooks::event::WebhookEvent::member_removed(channel, user_id),
                    );
                }
                // After its "removed": a peer member whose last socket was there.
                "peer" => self.peer_changed(app_id, channel, user_id, false),
                "vacated" if !channel.starts_with("#server-to-user-") => {
                    self.webhooks.emit(
                        app_id,
                        crate::webhooks::event::WebhookEvent::channel_vacated(channel),
                    );
                }
                _ => {}
            }
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `subscription_succeeded` presence data from the flat `user, info` list.
fn presence_data_from(flat: &[Value]) -> String {
    let members: BTreeMap<String, Option<Box<RawValue>>> = flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let user = text(&pair[0])?;
            let info = text(&pair[1]).and_then(|info| RawValue::from_string(info).ok());
            Some((user, info))
        })
        .collect();
    frames::presence_data(
        members
            .iter()
            .map(|(id, info)| (id.as_str(), info.as_deref())),
    )
}

impl RedisAdapter {
    /// An app's occupied channels of one shard group with their counts;
    /// `None` when Redis did not answer.
    async fn occupied_in_group(&self, app_id: &str, group: u16) -> Option<Vec<ChannelStats>> {
        let keys = &self.keys;
        self.run_in(Scope::Group(group), |mut connection| async move {
            let names: Vec<String> = connection
                .smembers(keys.app_channels(app_id, group))
                .await?;
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.hvals(keys.subs(app_id, name))
                    .hkeys(keys.members(app_id, name));
            }
            // No channel: no pipeline is sent, the list is empty.
            let counts: Vec<Vec<String>> = failure::query_pipeline(&pipe, &mut connection).await?;
            Ok(names
                .into_iter()
                .zip(counts.chunks_exact(2))
                .map(|(name, pair)| ChannelStats {
                    subscription_count: pair[0]
                        .iter()
                        .filter_map(|n| n.parse::<i64>().ok())
                        .sum::<i64>()
                        .max(0) as usize,
                    user_count: users_of(&pair[1]).len(),
                    name,
                })
                .filter(|stats| stats.subscription_count > 0)
                .collect::<Vec<_>>())
        })
        .await
    }
}

/// Distinct users from `node SEP user` fields.
fn users_of(fields: &[String]) -> BTreeSet<&str> {
    fields
        .iter()
        .filter_map(|field| field.split_once(SEP).map(|(_, user)| user))
        .collect()
}

#[async_trait]
impl Adapter for RedisAdapter {
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: ByteString,
        except: Option<&str>,
    ) -> FanOut {
        let report = self.node.deliver(app_id, channel, &frame, except);
        self.tell_other_nodes(
            self.keys.group(app_id, channel),
            &BusMessage::Publish {
                node: &self.node_id,
                app_id,
                channel,
                except: except.unwrap_or_default(),
                frame: &frame,
            },
        );
        report
    }

    async fn joined(
        &self,
        app_id: &str,
        channel: &str,
        local: &Subscribed,
        member: Option<MemberJoin<'_>>,
    ) -> Result<Joined, MemberLimit> {
        let mut invocation = self.channel_script(&self.scripts.join, app_id, channel);
        invocation
            .arg(u8::from(local.new_socket))
            .arg(member.map_or("", |m| m.user_id))
            .arg(
                member
                    .and_then(|m| m.user_info)
                    .map_or("null", |info| info.get()),
            )
            .arg(member.map_or(0, |m| m.max_members))
            .arg(u8::from(local.member_added))
            .arg(u8::from(self.webhooks.hold_back(app_id).is_some()))
            .arg(u8::from(member.is_some_and(|m| m.peer)));
        let result = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move {
                    invocation.invoke_async::<Vec<Value>>(&mut connection).await
                },
            )
            .await;
        let Some(result) = result else {
            return Ok(local_joined(local));
        };
        let total = result.first().map_or(0, int);
        if total < 0 {
            return Err(MemberLimit(member.map_or(0, |m| m.max_members)));
        }
        let presence_data = match (member, result.get(4)) {
            (Some(_), Some(Value::Array(flat))) => Some(presence_data_from(flat)),
            _ => local.presence_data.clone(),
        };
        let member_added = result.get(1).map_or(0, int) == 1;
        let reoccupied = result.get(2).map_or(0, int) == 1;
        let readded = result.get(3).map_or(0, int) == 1;
        let peers = match (member, result.get(5)) {
            (Some(m), Some(Value::Array(peers))) if m.peer => {
                let peers: BTreeSet<String> = peers.iter().filter_map(text).collect();
                Some(peers.into_iter().collect())
            }
            _ => None,
        };
        Ok(Joined {
            peers,
            occupied: local.new_socket && total == 1 && !reoccupied,
            member_added,
            member_added_webhook: member_added && !readded,
            subscription_count: total.max(0) as usize,
            presence_data,
        })
    }

    async fn left(
        &self,
        app_id: &str,
        channel: &str,
        local: &Unsubscribed,
        user_id: Option<&str>,
    ) -> Left {
        // User channels have no occupancy webhooks: nothing to hold.
        let hold = self
            .webhooks
            .hold_back(app_id)
            .filter(|_| !channel.starts_with("#server-to-user-"));
        let (removal_due, vacated_due) = match hold {
            Some(hold) => held::due(channel, hold, now_ms()),
            None => (0, 0),
        };
        let mut invocation = self.channel_script(&self.scripts.leave, app_id, channel);
        invocation
            .arg(user_id.unwrap_or_default())
            .arg(removal_due)
            .arg(vacated_due);
        let result = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move {
                    invocation
                        .invoke_async::<(i64, i64, i64)>(&mut connection)
                        .await
                },
            )
            .await;
        match result {
            Some((total, removed, held)) => Left {
                vacated: total <= 0 && held == 0,
                member_removed: removed == 1,
                member_removed_webhook: removed == 1 && held == 0,
                held: total <= 0 && held == 1,
                subscription_count: total.max(0) as usize,
            },
            None => local_left(local),
        }
    }

    async fn announce_counts(
        &self,
        app_id: &str,
        channels: &[(String, bool)],
        gap: Duration,
    ) -> Vec<CountSent> {
        self.announce(app_id, channels, gap).await
    }

    async fn cache_put(&self, app_id: &str, channel: &str, frame: ByteString, ttl: Duration) {
        if let Some(state) = self.node.app(app_id) {
            state.cache.put(channel, frame.clone());
        }
        let key = self.keys.cache(app_id, channel);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let value = frame.to_string();
        self.run_in(self.channel_scope(app_id, channel), |mut connection| async move {
            connection.pset_ex::<_, _, ()>(key, value, ttl_ms).await
        })
        .await;
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<(ByteString, Duration)> {
        let key = self.keys.cache(app_id, channel);
        let found = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move {
                    let mut pipe = redis::pipe();
                    pipe.get(&key).pttl(&key);
                    failure::query_pipeline::<(Option<String>, i64)>(&pipe, &mut connection).await
                },
            )
            .await;
        match found {
            Some((Some(frame), ttl_ms)) => Some((
                ByteString::from(frame),
                Duration::from_millis(ttl_ms.max(0) as u64),
            )),
            Some((None, _)) => None,
            None => self.node.app(app_id)?.cache.get(channel),
        }
    }

    fn sign_in_changed(&self, app_id: &str, user_id: &str, online: bool) {
        self.queue_sign_in(app_id, user_id, online);
    }

    async fn signed_in_elsewhere(&self, app_id: &str, user_ids: Vec<String>) -> Vec<String> {
        self.sign_ins_elsewhere(app_id, user_ids).await
    }

    fn peer_changed(&self, app_id: &str, channel: &str, user_id: &str, added: bool) {
        tell_peers_locally(&self.node, app_id, channel, user_id, added);
        // The presence channel's group: after its member frames.
        self.tell_other_nodes(
            self.keys.group(app_id, channel),
            &BusMessage::Peer {
                node: &self.node_id,
                app_id,
                added,
                channel,
                user_id,
            },
        );
    }

    async fn is_peer_member(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let key = self.keys.members(app_id, channel);
        let members = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move {
                    connection.hgetall::<_, Vec<(String, String)>>(key).await
                },
            )
            .await;
        match members {
            Some(members) => members.iter().any(|(field, member)| {
                member == "2"
                    && field
                        .split_once(SEP)
                        .is_some_and(|(_, user)| user == user_id)
            }),
            None => self
                .node
                .app(app_id)
                .is_some_and(|state| state.channels.is_peer_member(channel, user_id)),
        }
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        close_user_sockets(&self.node, app_id, user_id);
        // Node-wide: any group reaches every node; the user's own keeps a
        // user's terminations in order.
        self.tell_other_nodes(
            self.keys.group(app_id, user_id),
            &BusMessage::Terminate {
                node: &self.node_id,
                app_id,
                user_id,
            },
        );
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        let key = self.keys.subs(app_id, channel);
        let counts = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move { connection.hvals::<_, Vec<i64>>(key).await },
            )
            .await;
        match counts {
            Some(counts) => counts.iter().sum::<i64>().max(0) as usize,
            None => self
                .node
                .channels(app_id)
                .map_or(0, |c| c.subscription_count(channel)),
        }
    }

    async fn user_count(&self, app_id: &str, channel: &str) -> usize {
        self.member_ids(app_id, channel).await.len()
    }

    async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String> {
        let key = self.keys.members(app_id, channel);
        let fields = self
            .run_in(
                self.channel_scope(app_id, channel),
                |mut connection| async move { connection.hkeys::<_, Vec<String>>(key).await },
            )
            .await;
        match fields {
            Some(fields) => users_of(&fields).into_iter().map(str::to_owned).collect(),
            None => self
                .node
                .channels(app_id)
                .map_or_else(Vec::new, |c| c.member_ids(channel)),
        }
    }

    async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats> {
        // One read per shard group (each one slot), all at once; a group
        // Redis cannot answer is answered from this node's view.
        let groups = (0..self.keys.groups()).map(|group| async move {
            let stats = self.occupied_in_group(app_id, group).await;
            (group, stats)
        });
        let mut stats = Vec::new();
        let mut failed = BTreeSet::new();
        for (group, found) in join_all(groups).await {
            match found {
                Some(found) => stats.extend(found),
                None => {
                    failed.insert(group);
                }
            }
        }
        if !failed.is_empty() {
            let local = super::local::LocalAdapter::new(self.node.clone())
                .occupied_channels(app_id)
                .await;
            stats.extend(
                local
                    .into_iter()
                    .filter(|s| failed.contains(&self.keys.group(app_id, &s.name))),
            );
        }
        stats
    }

    async fn next_sequence(&self, app_id: &str, floor: u64) -> Option<u64> {
        let mut invocation = self.scripts.next_sequence.prepare_invoke();
        invocation.key(self.keys.sequence(app_id)).arg(floor);
        self.run(
            |mut connection| async move { invocation.invoke_async::<u64>(&mut connection).await },
        )
        .await
    }

    async fn claim_idempotency_key(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        window: Duration,
    ) -> KeyClaim {
        self.claim_key(app_id, key, token, window).await
    }

    async fn store_idempotent_answer(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        answer: &Answer,
    ) {
        self.store_answer(app_id, key, token, answer).await;
    }

    async fn release_idempotency_key(&self, app_id: &str, key: &str, token: ClaimToken) {
        self.release_key(app_id, key, token).await;
    }

    async fn close(&self) {
        // Every socket is gone: its users' `offline`s are due before the
        // node leaves (nobody reaps a node that left cleanly).
        self.resync_sign_ins().await;
        // What this node published last must still reach the others.
        self.outbox.flush().await;
        let (nodes, node) = (self.keys.nodes(), self.node_id.clone());
        self.run(|mut connection| async move { connection.zrem::<_, _, ()>(nodes, node).await })
            .await;
    }
}

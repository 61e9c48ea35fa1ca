//! The command connection: one redis-server ([`ConnectionManager`]) or a
//! Redis Cluster ([`ClusterConnection`], which follows MOVED/ASK and
//! topology changes), behind one [`redis::aio::ConnectionLike`] so every
//! command, pipeline and script call is written once.
//!
//! On a cluster the same connection carries the sharded pub/sub bus: it is
//! RESP3, `SSUBSCRIBE`s every group's bus channel, and the library's
//! subscription tracker subscribes again after a reconnection or a slot
//! move. The pushes come through a [`BoundedPushSender`]: a full queue drops
//! (counted), it never grows.

use crate::metrics::Metrics;
use redis::aio::{AsyncPushSender, ConnectionLike, ConnectionManager, SendError};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// Pushes (bus messages, subscription confirmations) waiting for the
/// listener before new ones are dropped.
pub const PUSH_CAPACITY: usize = 65_536;

/// Where the adapter's Redis lives (one per adapter: the variants' sizes
/// do not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Client {
    /// One redis-server.
    Single(redis::Client),
    /// A Redis Cluster (RESP3, pushes to the listener).
    Cluster(ClusterClient),
}

impl Client {
    /// A single-server client for `url`, or a cluster client for `seeds`
    /// whose pushes go to `pushes` (bounded: see [`BoundedPushSender`]).
    ///
    /// Errors: a URL the library cannot parse.
    pub fn open(
        url: &str,
        seeds: Option<Vec<String>>,
        pushes: BoundedPushSender,
        timeout: Duration,
    ) -> RedisResult<Client> {
        match seeds {
            None => Ok(Client::Single(redis::Client::open(url)?)),
            Some(seeds) => redis::cluster::ClusterClientBuilder::new(seeds)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map(Client::Cluster),
        }
    }

    /// Whether this is a Redis Cluster (sharded pub/sub, SPUBLISH).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    /// Connects (the connection then reconnects by itself).
    pub async fn connect(&self) -> RedisResult<Connection> {
        match self {
            Client::Single(client) => ConnectionManager::new(client.clone())
                .await
                .map(Connection::Single),
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

/// A command connection to one server or to a cluster.
#[derive(Clone)]
pub enum Connection {
    /// One redis-server.
    Single(ConnectionManager),
    /// A Redis Cluster: commands are routed by their first key's slot; a
    /// pipeline must stay within one slot (the library sends it whole to
    /// its first key's node), so callers split theirs by shard group.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The push sender given to the cluster client: a bounded queue filled
/// with `try_send`, so a listener that falls behind loses messages
/// (counted in `rusher_redis_bus_dropped_total`) instead of the process
/// growing without bound.
#[derive(Clone)]
pub struct BoundedPushSender {
    queue: mpsc::Sender<PushInfo>,
    metrics: Metrics,
}

impl BoundedPushSender {
    /// A sender and the receiver the listener drains.
    pub fn new(capacity: usize, metrics: Metrics) -> (Self, mpsc::Receiver<PushInfo>) {
        let (queue, pushes) = mpsc::channel(capacity);
        (BoundedPushSender { queue, metrics }, pushes)
    }
}

impl AsyncPushSender for BoundedPushSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.queue.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropped, not an error: the library must keep the
                // connection (an error would only be logged by it).
                self.metrics.redis_bus_dropped.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

//! Where a signed-in user's unacknowledged messages wait between two
//! connections, behind one small trait ([`ParkedStore`]) with two
//! implementations: this node's memory ([`super::parked::Parked`],
//! `store = "memory"`) and Redis (`store = "redis"`, in
//! `crate::adapter::redis::delivery`), which every node shares.
//!
//! [`Deliveries`] is what the hub holds: it picks the app's store, falls back
//! to this node's memory when Redis fails (fail open: the messages are kept
//! here and counted in `rusher_delivery_store_fallbacks_total`), and keeps
//! `rusher_delivery_pending` a count of what waits *on this node*.
//!
//! A shared store also keeps a live copy of each signed-in connection's
//! pending messages ([`ParkedStore::mirror`], written by the connection in
//! batches), owned by that connection, so they survive the death of the node
//! holding it: once that node stops heartbeating, the user's next connection
//! claims them like parked ones. Only the owner resends while it lives.

use super::parked::Parked;
use super::pending::{Entry, Expiry};
use crate::apps::App;
use crate::delivery::settings::DeliveryStore;
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store could not be reached (or refused the command) within the
/// adapter's operation timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What a claim took.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The messages of the claimed channels, for this connection alone.
    pub entries: Vec<Entry>,
    /// Messages found expired (and dropped) on the way.
    pub expired: usize,
    /// Some messages of these channels are held by another connection of the
    /// user on a node that looked alive: claim again after this long (by then
    /// a node that died has stopped looking alive).
    pub retry_after: Option<Duration>,
}

/// Where parked (and, for a shared store, live) messages are kept.
/// `socket_id` names the connection acting; messages are keyed per app and
/// user, at most `max_pending` per user, none kept past its `expires`.
#[async_trait]
pub trait ParkedStore: Send + Sync + 'static {
    /// Parks a closed connection's pending `entries` (oldest first) for the
    /// user, and forgets `gone`: ids this connection mirrored that are no
    /// longer pending (acknowledged or expired). Returns how many parked
    /// messages were dropped to stay within `max_pending`.
    async fn park(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        entries: Vec<Entry>,
        gone: Vec<Arc<str>>,
    ) -> Result<usize, Unavailable>;

    /// Takes the user's messages of `channels` that nobody else may resend:
    /// parked ones, and live ones of connections on nodes that died.
    /// Exactly one claim gets each message.
    async fn claim(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        channels: &[String],
        now: Instant,
    ) -> Result<Claimed, Unavailable>;

    /// Records a live connection's new pending `writes` and forgets its
    /// `gone` ids (see [`ParkedStore::park`]); how many parked messages were
    /// dropped to stay within `max_pending`. Only a shared store keeps them.
    async fn mirror(
        &self,
        _app: &App,
        _user_id: &str,
        _socket_id: &str,
        _writes: Vec<Entry>,
        _gone: Vec<Arc<str>>,
    ) -> Result<usize, Unavailable> {
        Ok(0)
    }
}

#[async_trait]
impl ParkedStore for Parked {
    async fn park(
        &self,
        app: &App,
        user_id: &str,
        _socket_id: &str,
        entries: Vec<Entry>,
        _gone: Vec<Arc<str>>,
    ) -> Result<usize, Unavailable> {
        Ok(Parked::park(
            self,
            &app.id,
            user_id,
            entries,
            app.delivery.max_pending,
        ))
    }

    async fn claim(
        &self,
        app: &App,
        user_id: &str,
        _socket_id: &str,
        channels: &[String],
        now: Instant,
    ) -> Result<Claimed, Unavailable> {
        let mut claimed = Claimed::default();
        for channel in channels {
            let (entries, expired) = Parked::claim(self, &app.id, user_id, channel, now);
            claimed.entries.extend(entries);
            claimed.expired += expired;
        }
        Ok(claimed)
    }
}

/// The hub's delivery stores: this node's memory, and the shared one when
/// the adapter offers it.
pub struct Deliveries {
    memory: Parked,
    shared: Option<Arc<dyn ParkedStore>>,
    metrics: Metrics,
}

impl Deliveries {
    /// Memory only, until [`Deliveries::with_shared`].
    pub fn new(metrics: Metrics) -> Self {
        Deliveries {
            memory: Parked::default(),
            shared: None,
            metrics,
        }
    }

    /// Uses `shared` for apps with `store = "redis"` or `"auto"` (set only
    /// with the Redis adapter).
    pub fn with_shared(mut self, shared: Arc<dyn ParkedStore>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The shared store, when the app uses one.
    fn shared(&self, app: &App) -> Option<&dyn ParkedStore> {
        match app.delivery.store {
            // The shared store exists only with the Redis adapter.
            DeliveryStore::Redis | DeliveryStore::Auto => self.shared.as_deref(),
            DeliveryStore::Memory => None,
        }
    }

    /// Whether signed-in connections of `app` should mirror their pending
    /// messages ([`Deliveries::mirror`]).
    pub fn mirrors(&self, app: &App) -> bool {
        self.shared(app).is_some()
    }

    /// Counts messages dropped in the shared store: they were not counted in
    /// this node's pending gauge.
    fn expired_elsewhere(&self, why: Expiry, n: usize) {
        if n > 0 {
            self.metrics
                .delivery_expired
                .with_label_values(&[why.label()])
                .inc_by(n as u64);
        }
    }

    /// Counts messages dropped from this node's pending gauge.
    fn expired_here(&self, why: Expiry, n: usize) {
        self.expired_elsewhere(why, n);
        if n > 0 {
            self.metrics.delivery_pending.sub(n as i64);
        }
    }

    fn fell_back(&self, what: &str) {
        self.metrics.delivery_store_fallbacks.inc();
        tracing::debug!(
            operation = what,
            "delivery store unavailable: this node's memory answers"
        );
    }

    /// See [`ParkedStore::park`]; the entries were counted pending here.
    pub async fn park(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        entries: Vec<Entry>,
        gone: Vec<Arc<str>>,
    ) {
        let count = entries.len();
        if let Some(shared) = self.shared(app) {
            match shared
                .park(app, user_id, socket_id, entries.clone(), gone)
                .await
            {
                Ok(dropped) => {
                    // They wait in the shared store now, not on this node.
                    self.metrics.delivery_pending.sub(count as i64);
                    self.expired_elsewhere(Expiry::Overflow, dropped);
                    tracing::debug!(app_id = %app.id, %user_id, count, dropped, "pending deliveries parked in the shared store");
                    return;
                }
                Err(Unavailable) => self.fell_back("park"),
            }
        }
        let dropped = Parked::park(
            &self.memory,
            &app.id,
            user_id,
            entries,
            app.delivery.max_pending,
        );
        tracing::debug!(app_id = %app.id, %user_id, count, dropped, "pending deliveries parked on this node");
        self.expired_here(Expiry::Overflow, dropped);
    }

    /// See [`ParkedStore::claim`]: this node's memory (which also holds what
    /// a failed shared store left here) and the shared store. The claimed
    /// entries count as pending here.
    pub async fn claim(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        channels: &[String],
    ) -> Claimed {
        let now = Instant::now();
        let mut claimed = Claimed::default();
        for channel in channels {
            let (entries, expired) = self.memory.claim(&app.id, user_id, channel, now);
            claimed.entries.extend(entries);
            claimed.expired += expired;
        }
        self.expired_here(Expiry::Ttl, claimed.expired);
        if let Some(shared) = self.shared(app) {
            match shared.claim(app, user_id, socket_id, channels, now).await {
                Ok(found) => {
                    self.metrics
                        .delivery_pending
                        .add(found.entries.len() as i64);
                    self.expired_elsewhere(Expiry::Ttl, found.expired);
                    claimed.entries.extend(found.entries);
                    claimed.expired += found.expired;
                    claimed.retry_after = found.retry_after;
                }
                Err(Unavailable) => self.fell_back("claim"),
            }
        }
        claimed
    }

    /// See [`ParkedStore::mirror`]. A failure only costs durability: the
    /// connection still holds and resends its messages.
    pub async fn mirror(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        writes: Vec<Entry>,
        gone: Vec<Arc<str>>,
    ) {
        let Some(shared) = self.shared(app) else {
            return;
        };
        match shared.mirror(app, user_id, socket_id, writes, gone).await {
            Ok(dropped) => self.expired_elsewhere(Expiry::Overflow, dropped),
            Err(Unavailable) => self.fell_back("mirror"),
        }
    }

    /// Drops this node's expired parked messages; how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let expired = self.memory.sweep(now);
        self.expired_here(Expiry::Ttl, expired);
        expired
    }
}

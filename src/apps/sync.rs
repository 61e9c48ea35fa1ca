//! Keeps the registry in step with the apps store on every node.
//!
//! A reload reads the whole store, validates each app exactly like a
//! config-file app (an invalid one is skipped, logged once and counted in
//! `rusher_apps_invalid_total`), and swaps the registry's tables only when
//! something changed. Reloads happen:
//! - after a write through this node's admin API (at once);
//! - on a MongoDB change stream event, where the server has change streams
//!   (a replica set or sharded cluster);
//! - on an invalidation published on Redis by another node's admin write
//!   (`adapter = "redis"`);
//! - every `apps_store.poll_interval_ms` (the safety net, and the only way
//!   on a standalone MongoDB without change streams or Redis).
//!
//! A failed read (MongoDB down) keeps the apps in use and counts
//! `rusher_apps_store_errors_total`.

use super::store::{AppStore, AppStoreError, MongoAppStore};
use super::AppRegistry;
use crate::config::{AppConfig, Config};
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// What has been applied, so an unchanged store changes nothing.
#[derive(Default)]
struct Applied {
    /// The valid stored apps last applied, serialized.
    fingerprint: Option<String>,
    /// Invalid stored apps already logged (id, reason).
    logged: HashSet<(String, String)>,
}

/// The store, the registry and how this node hears of changes.
pub struct AppsSync {
    store: Arc<dyn AppStore>,
    registry: Arc<AppRegistry>,
    config: Arc<Config>,
    metrics: Metrics,
    applied: Mutex<Applied>,
    error_log: ThrottledLog,
    /// Redis client and channel of the invalidations (`adapter = "redis"`).
    redis: Option<(redis::Client, String)>,
}

impl AppsSync {
    /// A sync of `registry` with `store`; `config` validates stored apps.
    pub fn new(
        store: Arc<dyn AppStore>,
        registry: Arc<AppRegistry>,
        config: Arc<Config>,
        metrics: Metrics,
    ) -> Self {
        let redis = (config.adapter == crate::config::AdapterKind::Redis && store.shared())
            .then(|| redis::Client::open(config.redis.url.as_str()).ok())
            .flatten()
            .map(|client| (client, format!("{}:apps-changed", config.redis.prefix)));
        AppsSync {
            store,
            registry,
            config,
            metrics,
            applied: Mutex::new(Applied::default()),
            error_log: ThrottledLog::new(10_000),
            redis,
        }
    }

    /// The store (for the admin API's writes).
    pub fn store(&self) -> &Arc<dyn AppStore> {
        &self.store
    }

    /// The registry it keeps.
    pub fn registry(&self) -> &Arc<AppRegistry> {
        &self.registry
    }

    /// The config stored apps are validated against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks one app like a config-file app (ids and keys unique is the
    /// registry's and the store's job).
    pub fn validate(&self, app: &AppConfig) -> Result<(), String> {
        self.config
            .validate_app(app, &|field| field.to_owned())
            .map_err(|error| match error {
                crate::config::ConfigError::Invalid { key, reason } => {
                    format!("invalid option `{key}`: {reason}")
                }
                other => other.to_string(),
            })
    }

    /// Reads the store and applies what changed.
    pub async fn reload(&self) -> Result<(), AppStoreError> {
        let mut applied = self.applied.lock().await;
        let stored = match self.store.list().await {
            Ok(stored) => stored,
            Err(error) => {
                self.metrics.apps_store_errors.inc();
                if let Some(suppressed) = self.error_log.ready() {
                    tracing::warn!(%error, suppressed, "cannot read the apps store: the apps in use stay");
                }
                return Err(error);
            }
        };
        let mut valid = Vec::new();
        let mut invalid = HashSet::new();
        for app in stored {
            let checked =
                app.map_err(|bad| (bad.id, bad.reason))
                    .and_then(|app| match self.validate(&app) {
                        Ok(()) => Ok(app),
                        Err(reason) => Err((app.id.clone(), reason)),
                    });
            match checked {
                Ok(app) => valid.push(app),
                Err(bad) => {
                    if !applied.logged.contains(&bad) {
                        self.metrics.apps_invalid.inc();
                        tracing::error!(app_id = %bad.0, reason = %bad.1, "stored app skipped: not a valid app");
                    }
                    invalid.insert(bad);
                }
            }
        }
        applied.logged = invalid;
        let fingerprint = serde_json::to_string(&valid).ok();
        if fingerprint.is_some() && fingerprint == applied.fingerprint {
            return Ok(());
        }
        applied.fingerprint = fingerprint;
        for skipped in self.registry.replace_stored(valid) {
            self.metrics.apps_invalid.inc();
            tracing::warn!(
                app_id = %skipped.id,
                taken = %skipped.taken,
                "stored app skipped: its {} belongs to another app (a config-file app wins)",
                skipped.taken
            );
        }
        for (source, count) in self.registry.counts() {
            self.metrics
                .apps
                .with_label_values(&[source.label()])
                .set(count as i64);
        }
        Ok(())
    }

    /// After a write through this node: reload now, and tell the other nodes.
    pub async fn changed(&self) {
        let _ = self.reload().await;
        let Some((client, channel)) = &self.redis else {
            return;
        };
        let publish = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg("1")
                .query_async::<i64>(&mut connection)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "apps invalidation not published: other nodes poll")
            }
            Err(_) => tracing::warn!("apps invalidation timed out: other nodes poll"),
        }
    }

    /// Starts the polling loop, the change stream watcher (MongoDB with
    /// change streams) and the Redis listener, as the store allows.
    pub fn start(self: &Arc<Self>, mongo: Option<Arc<MongoAppStore>>) {
        for (source, count) in self.registry.counts() {
            self.metrics
                .apps
                .with_label_values(&[source.label()])
                .set(count as i64);
        }
        if !self.store.shared() {
            return;
        }
        let poll = Duration::from_millis(self.config.apps_store.poll_interval_ms);
        let sync = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = sync.reload().await;
            }
        });
        if let Some(mongo) = mongo {
            tokio::spawn(watch_changes(self.clone(), mongo));
        }
        if let Some((client, channel)) = self.redis.clone() {
            tokio::spawn(listen_invalidations(self.clone(), client, channel));
        }
    }
}

/// Reloads on every change stream event; ends (polling goes on) when the
/// server has no change streams, and tries again after a lost stream.
async fn watch_changes(sync: Arc<AppsSync>, mongo: Arc<MongoAppStore>) {
    loop {
        let mut stream = match mongo.collection().watch().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::info!(%error, "apps store: no change streams on this MongoDB, polling every {} ms", sync.config.apps_store.poll_interval_ms);
                return;
            }
        };
        tracing::info!("apps store: watching the collection's change stream");
        while let Some(event) = stream.next().await {
            if event.is_err() {
                break;
            }
            let _ = sync.reload().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reloads when another node published an admin write on Redis.
async fn listen_invalidations(sync: Arc<AppsSync>, client: redis::Client, channel: String) {
    let mut wait = Duration::from_millis(200);
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                wait = Duration::from_millis(200);
                let mut messages = pubsub.on_message();
                while messages.next().await.is_some() {
                    let _ = sync.reload().await;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

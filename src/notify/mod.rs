//! Notifications to followers (pushi's "handlers"): an event published on a
//! channel is also sent to the HTTP callbacks, e-mail addresses and Web Push
//! subscriptions registered on that channel, and on `personal-{u}` of every
//! user `u` following it (README "Notifications").
//!
//! The publish path only calls [`Notifier::route`], which costs one map
//! lookup for an app without registrations and never waits: a bounded
//! queue takes the event (full → dropped and counted) and a router task
//! expands it into one job per target (each target once per event), queued
//! per handler kind on bounded lanes worked by at most `concurrency`
//! senders each. A handler is a [`Sender`]: [`web`] and [`email`] here,
//! Web Push plugs in as a third.
//!
//! Registrations are the store's, cached in the [`index`]: a registration
//! or removal is announced ([`crate::hub::invalidation`]) once stored, and
//! every node (this one too) reloads that channel's registrations from the
//! store; a full reload every 10 s is the safety net.
//!
//! - [`registration`]: what a registration is; the API's validation.
//! - [`settings`]: `[notifications]` and `[apps.notifications]`.
//! - [`index`]: the in-memory registrations, per app and channel.
//! - [`web`], [`email`], [`template`]: the handlers.
//! - [`web_push`] (with [`ece`], RFC 8291 / RFC 8188 `aes128gcm`, and
//!   [`vapid`], RFC 8292): the Web Push sender; [`push`]: its handler.

pub mod ece;
pub mod email;
pub mod index;
pub mod push;
pub mod registration;
pub mod settings;
pub mod template;
pub mod vapid;
pub mod web;
pub mod web_push;

use crate::adapter::Adapter;
use crate::apps::{App, AppRegistry};
use crate::hub::invalidation::{Change, Invalidations, Kind as ChangeKind, Received, Subscription};
use crate::hub::persistence::Persistence;
use crate::metrics::Metrics;
use crate::store::{now_ms, Store, StoreError};
use async_trait::async_trait;
use index::Index;
use registration::{Kind, Registration};
use serde_json::value::RawValue;
use settings::{Mode, NotificationsConfig};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// One published event, as every handler of it sees it.
#[derive(Debug)]
pub struct Notification {
    /// The app's id.
    pub app_id: String,
    /// The channel the event was published on.
    pub channel: String,
    /// The event name.
    pub event: String,
    /// The data as text: a JSON string payload as is, anything else as its
    /// JSON text (like the `client_event` webhook's `data`).
    pub data: String,
    /// The user who sent it (a client event of a signed-in or presence
    /// user), when known.
    pub sender_user_id: Option<String>,
    /// When it was published (unix ms).
    pub time_ms: u64,
}

/// How a [`Sender`] did with one notification to one target.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted by the receiver (retries included).
    Sent,
    /// Not delivered after its retries; the text says why.
    Failed(String),
    /// The target no longer exists (Web Push 404/410): the registration is deleted.
    Gone,
}

/// One handler kind's delivery: signs, encodes, retries as it sees fit.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// Delivers `notification` to `registration` of `app`.
    async fn send(
        &self,
        app: &App,
        notification: &Notification,
        registration: &Registration,
    ) -> Outcome;
}

/// The senders of each kind; a kind without one keeps its registrations
/// but sends nothing.
#[derive(Default, Clone)]
pub struct Senders {
    /// HTTP callbacks.
    pub web: Option<Arc<dyn Sender>>,
    /// E-mail (`None` while `[notifications.smtp] host` is empty).
    pub email: Option<Arc<dyn Sender>>,
    /// Web Push.
    pub web_push: Option<Arc<dyn Sender>>,
}

impl Senders {
    fn of(&self, kind: Kind) -> Option<&Arc<dyn Sender>> {
        match kind {
            Kind::Web => self.web.as_ref(),
            Kind::Email => self.email.as_ref(),
            Kind::WebPush => self.web_push.as_ref(),
        }
    }
}

/// An event waiting to be routed.
struct Routed {
    app: Arc<App>,
    notification: Arc<Notification>,
}

/// One notification to one target.
struct Job {
    app: Arc<App>,
    notification: Arc<Notification>,
    registration: Arc<Registration>,
    /// `offline` mode: checked just before sending.
    only_offline: bool,
}

/// Why a registration was refused by [`Notifier::register`].
#[derive(Debug)]
pub enum RegisterError {
    /// Over `max_per_channel` or `max_per_app` (HTTP 400).
    Limit(String),
    /// The kind has no sender configured (HTTP 400).
    NotConfigured(Kind),
    /// The store failed (HTTP 503).
    Store(StoreError),
}

/// The notification handlers: registrations, routing, lanes.
pub struct Notifier {
    index: Index,
    store: Arc<dyn Store>,
    apps: Arc<AppRegistry>,
    persistence: Option<Arc<Persistence>>,
    adapter: Arc<dyn Adapter>,
    senders: Senders,
    settings: NotificationsConfig,
    metrics: Metrics,
    routes: mpsc::Sender<Routed>,
    lanes: Vec<(Kind, mpsc::Sender<Job>)>,
    /// Where registrations and removals are announced to every node.
    invalidations: Arc<Invalidations>,
}

impl Notifier {
    /// Loads every app's registrations, then starts the router, one lane per
    /// kind with a sender, and the index refresher on the current runtime;
    /// registrations made anywhere arrive through `invalidations`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Arc<dyn Store>,
        apps: Arc<AppRegistry>,
        persistence: Option<Arc<Persistence>>,
        adapter: Arc<dyn Adapter>,
        senders: Senders,
        settings: NotificationsConfig,
        metrics: Metrics,
        invalidations: Arc<Invalidations>,
    ) -> Result<Arc<Self>, StoreError> {
        let (routes, routed) = mpsc::channel(settings.queue);
        let mut lanes = Vec::new();
        let mut receivers = Vec::new();
        for kind in Kind::ALL {
            if let Some(sender) = senders.of(kind) {
                let (jobs, queue) = mpsc::channel(settings.queue);
                lanes.push((kind, jobs));
                receivers.push((kind, sender.clone(), queue));
            }
        }
        let notifier = Arc::new(Notifier {
            index: Index::default(),
            store,
            apps,
            persistence,
            adapter,
            senders,
            settings,
            metrics,
            routes,
            lanes,
            invalidations: invalidations.clone(),
        });
        // Subscribed before the first load: a change stored meanwhile is
        // applied after it.
        let changes = invalidations.subscribe(ChangeKind::Registrations);
        notifier.reload().await?;
        tokio::spawn(router(notifier.clone(), routed));
        for (kind, sender, queue) in receivers {
            tokio::spawn(lane(notifier.clone(), kind, sender, queue));
        }
        tokio::spawn(refresher(notifier.clone(), changes));
        Ok(notifier)
    }

    /// Rebuilds the index from the store (other nodes may have changed it);
    /// on error the loaded registrations stay in use.
    async fn reload(&self) -> Result<(), StoreError> {
        for app in self.apps.all() {
            let registrations = self.store.registrations(&app.id).await?;
            self.index.replace(&app.id, registrations);
        }
        Ok(())
    }

    /// Reloads one channel's registrations from the store (a registration
    /// or removal made on some node).
    async fn reload_channel(&self, app_id: &str, channel: &str) -> Result<(), StoreError> {
        if self.apps.by_id(app_id).is_none_or(|app| app.id != app_id) {
            return Ok(());
        }
        let registrations = self.store.registrations_on(app_id, channel).await?;
        self.index.replace_channel(app_id, channel, registrations);
        Ok(())
    }

    /// Tells every node (this one too) that a channel's registrations changed.
    fn announce(&self, app_id: &str, channel: &str) {
        self.invalidations.announce(Change::Registrations {
            app_id: app_id.to_owned(),
            channel: channel.to_owned(),
        });
    }

    /// Called on the publish path of the node where the event entered (an
    /// HTTP API trigger or batch, a client event): never waits. An app
    /// without registrations costs one map lookup; a channel neither
    /// registered nor followed by a registered user, two.
    pub fn route(
        &self,
        app_id: &str,
        channel: &str,
        event: &str,
        data: &RawValue,
        sender_user_id: Option<&str>,
    ) {
        let (direct, personal) = self.index.interest(app_id, channel);
        let followed = || {
            personal
                && self
                    .persistence
                    .as_ref()
                    .is_some_and(|p| p.is_followed(app_id, channel))
        };
        if !direct && !followed() {
            return;
        }
        let Some(app) = self.apps.by_id(app_id) else {
            return;
        };
        let data =
            serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_owned());
        let notification = Arc::new(Notification {
            app_id: app.id.clone(),
            channel: channel.to_owned(),
            event: event.to_owned(),
            data,
            sender_user_id: sender_user_id.map(str::to_owned),
            time_ms: now_ms(),
        });
        if self.routes.try_send(Routed { app, notification }).is_err() {
            self.metrics
                .notifications_dropped
                .with_label_values(&["route"])
                .inc();
        }
    }

    /// The registrations of a channel, from the index.
    pub fn registrations(&self, app_id: &str, channel: &str) -> Vec<Arc<Registration>> {
        self.index.on_channel(app_id, channel)
    }

    /// Every registration of an app, from the store (what every node
    /// shares), for listings and deletions by target (pushi's API).
    pub async fn all(&self, app_id: &str) -> Result<Vec<Registration>, StoreError> {
        self.store.registrations(app_id).await
    }

    /// Stores and indexes a registration (idempotent); true when new.
    pub async fn register(
        &self,
        app_id: &str,
        registration: Registration,
    ) -> Result<bool, RegisterError> {
        if self.senders.of(registration.kind).is_none() {
            return Err(RegisterError::NotConfigured(registration.kind));
        }
        let exists = self.index.contains(app_id, &registration);
        if !exists {
            let (on_channel, on_app) = self.index.counts(app_id, &registration.channel);
            if on_channel >= self.settings.max_per_channel {
                return Err(RegisterError::Limit(format!(
                    "`{}` has {on_channel} registrations, the most allowed (notifications.max_per_channel)",
                    registration.channel
                )));
            }
            if on_app >= self.settings.max_per_app {
                return Err(RegisterError::Limit(format!(
                    "the app has {on_app} registrations, the most allowed (notifications.max_per_app)"
                )));
            }
        }
        let created = self
            .store
            .register(app_id, &registration)
            .await
            .map_err(RegisterError::Store)?;
        let channel = registration.channel.clone();
        self.index.insert(app_id, registration);
        self.announce(app_id, &channel);
        Ok(created)
    }

    /// Forgets a registration (idempotent); true when it existed.
    pub async fn unregister(
        &self,
        app_id: &str,
        registration: &Registration,
    ) -> Result<bool, StoreError> {
        let removed = self
            .store
            .unregister(
                app_id,
                &registration.channel,
                registration.kind,
                &registration.target,
            )
            .await?;
        let indexed = self.index.remove(app_id, registration);
        self.announce(app_id, &registration.channel);
        Ok(removed || indexed)
    }

    /// Whether nobody is connected to see `registration`'s events live,
    /// deployment-wide as far as the adapter counts subscriptions: for
    /// `personal-{u}`, no connection signed in as `u` (they all join
    /// `#server-to-user-{u}`) and none on `personal-{u}`.
    async fn is_offline(&self, app_id: &str, registration: &Registration) -> bool {
        if self
            .adapter
            .subscription_count(app_id, &registration.channel)
            .await
            > 0
        {
            return false;
        }
        match registration.user_id() {
            Some(user_id) => {
                let user_channel = format!("#server-to-user-{user_id}");
                self.adapter.subscription_count(app_id, &user_channel).await == 0
            }
            None => true,
        }
    }

    /// Expands one event into jobs: each target once (a registration on the
    /// event's channel first, then on its followers' personal channels),
    /// never to the sender's own personal channel (like pushi's `echo`
    /// off), skipping kinds the app turned `off`.
    fn expand(&self, routed: Routed) {
        let Routed { app, notification } = routed;
        let app_id = app.id.as_str();
        let mut channels = vec![notification.channel.clone()];
        if let Some(persistence) = &self.persistence {
            channels.extend(
                persistence
                    .followers_of(app_id, &notification.channel)
                    .iter()
                    .map(|user| format!("personal-{user}")),
            );
        }
        let mut seen: HashSet<(Kind, String)> = HashSet::new();
        for channel in &channels {
            for registration in self.index.on_channel(app_id, channel) {
                if registration.user_id().is_some()
                    && registration.user_id() == notification.sender_user_id.as_deref()
                {
                    continue;
                }
                let mode = app.notifications.mode(registration.kind);
                if mode == Mode::Off
                    || !seen.insert((registration.kind, registration.target.clone()))
                {
                    continue;
                }
                let Some((_, lane)) = self.lanes.iter().find(|(k, _)| *k == registration.kind)
                else {
                    continue;
                };
                let handler = registration.kind.as_str();
                let job = Job {
                    app: app.clone(),
                    notification: notification.clone(),
                    registration,
                    only_offline: mode == Mode::Offline,
                };
                match lane.try_send(job) {
                    Ok(()) => self
                        .metrics
                        .notifications_queued
                        .with_label_values(&[handler])
                        .inc(),
                    Err(_) => self
                        .metrics
                        .notifications_dropped
                        .with_label_values(&[handler])
                        .inc(),
                }
            }
        }
    }

    /// Sends one job and counts the outcome.
    async fn deliver(&self, sender: &dyn Sender, job: Job) {
        let handler = job.registration.kind.as_str();
        let app_id = job.app.id.as_str();
        if job.only_offline && !self.is_offline(app_id, &job.registration).await {
            tracing::debug!(channel = %job.registration.channel, handler, "recipient online: notification skipped");
            return;
        }
        match sender
            .send(&job.app, &job.notification, &job.registration)
            .await
        {
            Outcome::Sent => self
                .metrics
                .notifications_sent
                .with_label_values(&[handler])
                .inc(),
            Outcome::Failed(reason) => {
                self.metrics
                    .notifications_failed
                    .with_label_values(&[handler])
                    .inc();
                tracing::warn!(handler, target = %job.registration.target, reason, "notification not delivered");
            }
            Outcome::Gone => {
                self.metrics
                    .notifications_failed
                    .with_label_values(&[handler])
                    .inc();
                tracing::info!(handler, target = %job.registration.target, "target gone: registration deleted");
                if let Err(error) = self.unregister(app_id, &job.registration).await {
                    tracing::warn!(%error, "cannot delete a gone registration");
                }
            }
        }
    }
}

/// Turns routed events into jobs.
async fn router(notifier: Arc<Notifier>, mut routed: mpsc::Receiver<Routed>) {
    while let Some(event) = routed.recv().await {
        notifier.expand(event);
    }
}

/// One kind's lane: at most `concurrency` jobs in flight; the rest wait in
/// the bounded queue.
async fn lane(
    notifier: Arc<Notifier>,
    kind: Kind,
    sender: Arc<dyn Sender>,
    mut jobs: mpsc::Receiver<Job>,
) {
    let permits = Arc::new(Semaphore::new(notifier.settings.concurrency));
    let depth = notifier
        .metrics
        .notifications_queued
        .with_label_values(&[kind.as_str()]);
    while let Some(job) = jobs.recv().await {
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        depth.dec();
        let (notifier, sender) = (notifier.clone(), sender.clone());
        tokio::spawn(async move {
            notifier.deliver(sender.as_ref(), job).await;
            drop(permit);
        });
    }
}

/// Keeps the index the store's: applies each announced change (those of
/// other nodes and this node's own, in order), and reloads every
/// registration every 10 s and after changes were missed. One task, so a
/// reload never overwrites a newer change with an older read.
async fn refresher(notifier: Arc<Notifier>, mut changes: Subscription) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        let result = tokio::select! {
            _ = tick.tick() => notifier.reload().await,
            received = changes.next() => match received {
                Received::Change(Change::Registrations { app_id, channel }) => {
                    notifier.reload_channel(&app_id, &channel).await
                }
                Received::Change(_) => Ok(()),
                Received::Missed => {
                    tracing::warn!("registration changes came faster than they were applied: reloading every registration");
                    notifier.reload().await
                }
            },
        };
        if let Err(error) = result {
            tracing::warn!(%error, "cannot reload notification registrations; the loaded ones stay in use");
        }
    }
}

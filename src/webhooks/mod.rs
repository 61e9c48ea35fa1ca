//! Webhooks: signed, batched, retried, and never in the way of delivery.
//!
//! The hub calls [`Webhooks::emit`], which only tries to enqueue on a bounded
//! channel (a full queue drops and counts the event). A single background
//! loop ([`dispatcher`]) batches per app and endpoint and spawns bounded
//! sender tasks ([`sender`]) that retry with back-off.
//!
//! - [`event`]: the events and their fields.
//! - [`dispatcher`]: routing, filters, presence noise control, batching.
//! - [`sender`]: signing and retried delivery of one batch.

pub mod dispatcher;
pub mod event;
pub mod sender;

use crate::apps::AppRegistry;
use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use dispatcher::{Command, Dispatcher, Route};
use event::WebhookEvent;
use sender::Endpoint;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The hub's handle for emitting webhook events.
#[derive(Clone)]
pub struct Webhooks {
    commands: Option<mpsc::Sender<Command>>,
    /// The apps, whose `webhooks` say which events some endpoint wants
    /// (read per event: an app changed at runtime takes effect at once).
    apps: Arc<AppRegistry>,
    /// `member_removed_delay_ms` and `channel_vacated_delay_ms`.
    hold_back: HoldBack,
    metrics: Metrics,
}

/// How long leaves are held back before their webhooks are sent, so that a
/// rejoin within it (a page reload) cancels them ([`dispatcher`]; with Redis
/// the cluster holds them, see `adapter::redis::held`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldBack {
    /// `member_removed` is held this long.
    pub member_removed: Duration,
    /// `channel_vacated` is held this long (and behind its channel's removals).
    pub channel_vacated: Duration,
}

impl Webhooks {
    /// Webhooks that send nothing (no app has an endpoint).
    pub fn disabled(metrics: Metrics) -> Self {
        Webhooks {
            commands: None,
            apps: Arc::default(),
            hold_back: HoldBack::default(),
            metrics,
        }
    }

    /// Builds the routes from the apps' config and starts the dispatcher on
    /// the current runtime. Returns a disabled handle when nothing is
    /// configured and the apps cannot change (`dynamic` false); otherwise
    /// the routes follow every change of the registry.
    pub fn start(
        apps: &Arc<AppRegistry>,
        settings: &WebhookSettings,
        metrics: Metrics,
        dynamic: bool,
    ) -> Self {
        let initial = routes(apps);
        if initial.is_empty() && !dynamic {
            return Self::disabled(metrics);
        }
        let (tx, rx) = mpsc::channel(settings.queue);
        let dispatcher = Dispatcher::new(initial, settings.clone(), metrics.clone());
        tokio::spawn(dispatcher.run(rx));
        if dynamic {
            let (apps, commands) = (apps.clone(), tx.clone());
            let mut changes = apps.subscribe();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    if commands.send(Command::Routes(routes(&apps))).await.is_err() {
                        return;
                    }
                }
            });
        }
        Webhooks {
            commands: Some(tx),
            apps: apps.clone(),
            hold_back: HoldBack {
                member_removed: Duration::from_millis(settings.member_removed_delay_ms),
                channel_vacated: Duration::from_millis(settings.channel_vacated_delay_ms),
            },
            metrics,
        }
    }

    /// The hold-back of an app's leaves: `None` when the app has no
    /// receiver of `member_removed` or `channel_vacated` (nothing to hold).
    pub fn hold_back(&self, app_id: &str) -> Option<HoldBack> {
        (self.wants(app_id, "member_removed") || self.wants(app_id, "channel_vacated"))
            .then_some(self.hold_back)
    }

    /// Queues an event whose hold-back was served already (by the cluster):
    /// the dispatcher routes it without holding it again.
    pub fn emit_decided(&self, app_id: &str, event: WebhookEvent) {
        let Some(commands) = &self.commands else {
            return;
        };
        if !self.wants(app_id, event.name) {
            return;
        }
        if commands
            .try_send(Command::Decided(app_id.into(), event))
            .is_err()
        {
            self.metrics.webhooks_dropped.inc();
        }
    }

    /// Whether some endpoint of the app wants events of type `name`; lets
    /// the hub skip building events nobody receives.
    pub fn wants(&self, app_id: &str, name: &str) -> bool {
        self.apps
            .by_id(app_id)
            .filter(|app| app.id == app_id)
            .is_some_and(|app| {
                app.webhooks.iter().any(|webhook| {
                    webhook.event_types.is_empty() || webhook.event_types.iter().any(|t| t == name)
                })
            })
    }

    /// Shows the batches sent and failed to the consoles of `tap` (see
    /// [`crate::console::tap`]).
    pub fn attach_console(&self, tap: Arc<crate::console::tap::ConsoleTap>) {
        if let Some(commands) = &self.commands {
            // Sent as the hub is built, before any event: the queue has room.
            let _ = commands.try_send(Command::Console(tap));
        }
    }

    /// Queues an event without waiting; a full queue drops and counts it.
    pub fn emit(&self, app_id: &str, event: WebhookEvent) {
        let Some(commands) = &self.commands else {
            return;
        };
        if !self.wants(app_id, event.name) {
            return;
        }
        if commands
            .try_send(Command::Event(app_id.into(), event))
            .is_err()
        {
            self.metrics.webhooks_dropped.inc();
        }
    }

    /// Flushes pending events and waits for sends until `deadline`.
    pub async fn shutdown(&self, deadline: Instant) {
        let Some(commands) = &self.commands else {
            return;
        };
        let (done, finished) = oneshot::channel();
        if commands
            .send(Command::Shutdown(deadline, done))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout_at(deadline.into(), finished).await;
        }
    }
}

/// Every app's routes (its endpoints with their filters).
fn routes(apps: &AppRegistry) -> HashMap<String, Vec<Route>> {
    let mut routes: HashMap<String, Vec<Route>> = HashMap::new();
    for app in apps.all().filter(|app| !app.webhooks.is_empty()) {
        for webhook in &app.webhooks {
            routes.entry(app.id.clone()).or_default().push(Route {
                endpoint: Arc::new(Endpoint {
                    url: webhook.url.clone(),
                    headers: webhook.headers.clone(),
                    app_key: app.key.clone(),
                    app_secret: app.secret.clone(),
                }),
                event_types: webhook.event_types.iter().cloned().collect(),
                filter_prefix: webhook.filter_prefix.clone(),
            });
        }
    }
    routes
}

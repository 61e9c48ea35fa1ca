//! The Web Push handler: the [`Sender`] that turns one notification into
//! one [`web_push::send`] per registration, with the app's VAPID key, and
//! retries it under the notifications' retry policy (the webhooks' shared
//! [`retry`] loop).
//!
//! The payload is the HTTP callback's JSON body ([`super::web::body`]:
//! `app_id`, `channel`, `event`, `data`, `time_ms`, `registered_channel`,
//! `user_id`), so a service worker reads the same fields a backend does.
//! The push service's answer decides (RFC 8030 §5, README "Web Push"):
//! 2xx sent; 404/410 [`Outcome::Gone`] (the dispatcher deletes the
//! registration); 429/5xx/network retried, not before its `Retry-After`;
//! anything else failed at once.

use super::registration::Registration;
use super::vapid::Vapid;
use super::web_push::{self, SendOutcome, WebPushSubscription};
use super::{Notification, Outcome, Sender};
use crate::apps::App;
use crate::webhooks::sender::{retry, Attempt, RetryPolicy};
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest `Retry-After` honoured before the next attempt: a push
/// service asking for more gets the message on a later event instead of
/// holding one of the handler's `concurrency` slots.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One app's VAPID signer, kept while its key and subject stay the same
/// (it caches one signed JWT per push-service origin).
struct AppVapid {
    key: String,
    subject: Option<String>,
    vapid: Arc<Vapid>,
}

/// Sends Web Push notifications.
pub struct WebPushSender {
    client: reqwest::Client,
    policy: RetryPolicy,
    /// App id → its signer; rebuilt when the app's key or subject changes
    /// (apps change at runtime through the admin API).
    vapids: DashMap<String, AppVapid>,
}

impl WebPushSender {
    /// A sender retrying under `policy` (each request times out on its own
    /// after [`web_push::send`]'s limit).
    pub fn new(policy: RetryPolicy) -> Result<Self, String> {
        // A push service answers for itself (RFC 8030): a redirect is an
        // answer (failed), not a hop to follow (a 301/302 would turn the
        // POST into a bodiless GET whose 200 would count as delivered).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(WebPushSender {
            client,
            policy,
            vapids: DashMap::new(),
        })
    }

    /// The app's signer, or why it has none (no key, or one that no longer
    /// parses: keys are checked at startup and by the admin API).
    fn vapid(&self, app: &App) -> Result<Arc<Vapid>, String> {
        let Some(key) = app.vapid_private_key.as_deref() else {
            return Err("the app has no vapid_private_key: Web Push is not sent".into());
        };
        if let Some(cached) = self.vapids.get(&app.id) {
            if cached.key == key && cached.subject == app.vapid_subject {
                return Ok(cached.vapid.clone());
            }
        }
        let vapid = match Vapid::from_app(app) {
            Ok(Some(vapid)) => Arc::new(vapid),
            Ok(None) => return Err("the app has no vapid_private_key".into()),
            Err(error) => return Err(format!("the app's VAPID key is unusable: {error:?}")),
        };
        self.vapids.insert(
            app.id.clone(),
            AppVapid {
                key: key.to_owned(),
                subject: app.vapid_subject.clone(),
                vapid: vapid.clone(),
            },
        );
        Ok(vapid)
    }
}

#[async_trait]
impl Sender for WebPushSender {
    async fn send(
        &self,
        app: &App,
        notification: &Notification,
        registration: &Registration,
    ) -> Outcome {
        let vapid = match self.vapid(app) {
            Ok(vapid) => vapid,
            Err(reason) => return Outcome::Failed(reason),
        };
        let Some(keys) = &registration.keys else {
            return Outcome::Failed("a Web Push registration without keys".into());
        };
        let subscription = WebPushSubscription {
            endpoint: registration.target.clone(),
            p256dh: keys.p256dh.clone(),
            auth: keys.auth.clone(),
        };
        let payload = super::web::body(notification, registration);
        let gone = AtomicBool::new(false);
        let result = retry(
            self.policy,
            |_| async {
                match web_push::send(
                    &self.client,
                    &vapid,
                    &subscription,
                    payload.as_bytes(),
                    app.web_push_ttl_secs,
                    None,
                )
                .await
                {
                    SendOutcome::Delivered => Attempt::Done,
                    SendOutcome::Gone => {
                        gone.store(true, Ordering::Relaxed);
                        Attempt::GiveUp("the push service says the subscription is gone".into())
                    }
                    SendOutcome::Failed(reason) => Attempt::GiveUp(reason),
                    SendOutcome::Retry { reason, after } => {
                        if let Some(after) = after {
                            tokio::time::sleep(after.min(MAX_RETRY_AFTER)).await;
                        }
                        Attempt::Retry(reason)
                    }
                }
            },
            |attempt, reason| {
                tracing::debug!(endpoint = %subscription.endpoint, attempt, reason, "web push failed; retrying");
            },
        )
        .await;
        match result {
            Ok(()) => Outcome::Sent,
            Err(_) if gone.load(Ordering::Relaxed) => Outcome::Gone,
            Err(reason) => Outcome::Failed(reason),
        }
    }
}

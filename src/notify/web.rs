//! HTTP callbacks ("webs" in pushi): one signed JSON POST per notification,
//! signed and retried by the webhooks' own code
//! ([`crate::webhooks::sender`]): `X-Pusher-Key`, `X-Pusher-Signature` =
//! hex HMAC-SHA256(app secret, body); network errors and 5xx retried with
//! back-off, any other non-2xx answer final.
//!
//! The body is pushi's (`channel`, `event`, `data` as a string) plus what
//! a receiver needs to route it:
//! `{"app_id", "channel", "event", "data", "time_ms", "registered_channel",
//! "user_id"?}` — `registered_channel` is the channel the URL was
//! registered on, `user_id` its user when that is `personal-{user_id}`.

use super::registration::Registration;
use super::{Notification, Outcome, Sender};
use crate::apps::App;
use crate::protocol::auth::sign;
use crate::webhooks::sender::{post_signed, retry, Endpoint, RetryPolicy};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// Sends HTTP callbacks.
pub struct WebSender {
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl WebSender {
    /// A sender whose requests time out after `timeout`.
    pub fn new(timeout: std::time::Duration, policy: RetryPolicy) -> Result<Self, String> {
        // A redirect is the receiver's answer (final, failed), not a hop:
        // following a 301/302 would drop the signed body (POST becomes GET)
        // and count the redirect target's 200 as delivered.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(WebSender { client, policy })
    }
}

/// The JSON body of a callback (see the module documentation).
pub fn body(notification: &Notification, registration: &Registration) -> String {
    let mut body = serde_json::json!({
        "app_id": notification.app_id,
        "channel": notification.channel,
        "event": notification.event,
        "data": notification.data,
        "time_ms": notification.time_ms,
        "registered_channel": registration.channel,
    });
    if let Some(user_id) = registration.user_id() {
        body["user_id"] = user_id.into();
    }
    body.to_string()
}

#[async_trait]
impl Sender for WebSender {
    async fn send(
        &self,
        app: &App,
        notification: &Notification,
        registration: &Registration,
    ) -> Outcome {
        let endpoint = Endpoint {
            url: registration.target.clone(),
            headers: BTreeMap::new(),
            app_key: app.key.clone(),
            app_secret: app.secret.clone(),
        };
        let body = body(notification, registration);
        let signature = sign(&app.secret, &body);
        let result = retry(
            self.policy,
            |_| post_signed(&self.client, &endpoint, &body, &signature, false),
            |attempt, reason| {
                tracing::debug!(url = %endpoint.url, attempt, reason, "notification callback failed; retrying");
            },
        )
        .await;
        match result {
            Ok(()) => Outcome::Sent,
            Err(reason) => Outcome::Failed(reason),
        }
    }
}

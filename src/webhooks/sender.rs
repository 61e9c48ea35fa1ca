//! Sends one signed batch to one receiver, retrying with exponential back-off.

use crate::metrics::Metrics;
use crate::protocol::auth::sign;
use std::collections::BTreeMap;
use std::time::Duration;

/// A receiver of one app's webhooks.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to POST.
    pub url: String,
    /// Extra headers from the config.
    pub headers: BTreeMap<String, String>,
    /// The app key (`X-Pusher-Key`).
    pub app_key: String,
    /// The app secret that signs the body.
    pub app_secret: String,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

/// Posts `body` until a 2xx answer or the attempts run out; never panics.
pub async fn deliver(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: String,
    policy: RetryPolicy,
    metrics: &Metrics,
) {
    let signature = sign(&endpoint.app_secret, &body);
    let mut wait = policy.backoff;
    for attempt in 1..=policy.max_attempts {
        let mut request = client
            .post(&endpoint.url)
            .header("Content-Type", "application/json")
            .header("X-Pusher-Key", &endpoint.app_key)
            .header("X-Pusher-Signature", &signature);
        for (name, value) in &endpoint.headers {
            request = request.header(name, value);
        }
        match request.body(body.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                metrics.webhooks_sent.inc();
                return;
            }
            Ok(response) => {
                tracing::warn!(url = %endpoint.url, status = %response.status(), attempt, "webhook refused");
            }
            Err(error) => {
                tracing::warn!(url = %endpoint.url, %error, attempt, "webhook failed");
            }
        }
        if attempt < policy.max_attempts {
            metrics.webhooks_retried.inc();
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    metrics.webhooks_failed.inc();
    tracing::error!(
        url = %endpoint.url,
        attempts = policy.max_attempts,
        "webhook batch dropped after every attempt failed"
    );
}

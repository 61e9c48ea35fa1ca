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

/// How one attempt went, for [`retry`].
#[derive(Debug)]
pub enum Attempt {
    /// Done: nothing more to try.
    Done,
    /// Failed in a way a later attempt may fix (network error, 5xx); the text says why.
    Retry(String),
    /// Failed for good (e.g. a 4xx a retry cannot fix); the text says why.
    GiveUp(String),
}

/// Runs `attempt` until it is [`Attempt::Done`] or [`Attempt::GiveUp`], or
/// `policy.max_attempts` ran out, sleeping `policy.backoff` before the first
/// retry and twice the previous wait before each further one; `on_retry`
/// is called before each wait (to count it). `Err` carries the last reason.
/// Shared by webhooks and notification handlers (`crate::notify`).
pub async fn retry<F, Fut>(
    policy: RetryPolicy,
    mut attempt: F,
    mut on_retry: impl FnMut(u32, &str),
) -> Result<(), String>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut wait = policy.backoff;
    let mut last = String::from("no attempt made");
    for number in 1..=policy.max_attempts {
        match attempt(number).await {
            Attempt::Done => return Ok(()),
            Attempt::GiveUp(reason) => return Err(reason),
            Attempt::Retry(reason) => last = reason,
        }
        if number < policy.max_attempts {
            on_retry(number, &last);
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    Err(last)
}

/// POSTs `body` once to `endpoint`, signed like every rusher webhook:
/// `X-Pusher-Key` = the app key, `X-Pusher-Signature` = hex
/// HMAC-SHA256(app secret, body) (`signature`, computed once by the caller
/// with [`sign`]). A 2xx is [`Attempt::Done`]; a network error or a 5xx is
/// [`Attempt::Retry`]; any other status is [`Attempt::Retry`] when
/// `retry_4xx`, else [`Attempt::GiveUp`].
pub async fn post_signed(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &str,
    signature: &str,
    retry_4xx: bool,
) -> Attempt {
    let mut request = client
        .post(&endpoint.url)
        .header("Content-Type", "application/json")
        .header("X-Pusher-Key", &endpoint.app_key)
        .header("X-Pusher-Signature", signature);
    for (name, value) in &endpoint.headers {
        request = request.header(name, value);
    }
    match request.body(body.to_owned()).send().await {
        Ok(response) if response.status().is_success() => Attempt::Done,
        Ok(response) if response.status().is_server_error() || retry_4xx => {
            Attempt::Retry(format!("answered {}", response.status()))
        }
        Ok(response) => Attempt::GiveUp(format!("answered {}", response.status())),
        Err(error) => Attempt::Retry(error.to_string()),
    }
}

/// Posts `body` until a 2xx answer or the attempts run out; never panics.
/// Webhooks retry any non-2xx answer (a receiver may be mid-deploy).
/// `Err` carries the last attempt's failure.
pub async fn deliver(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: String,
    policy: RetryPolicy,
    metrics: &Metrics,
) -> Result<(), String> {
    let signature = sign(&endpoint.app_secret, &body);
    let outcome = retry(
        policy,
        |_| post_signed(client, endpoint, &body, &signature, true),
        |attempt, reason| {
            tracing::warn!(url = %endpoint.url, attempt, reason, "webhook failed");
            metrics.webhooks_retried.inc();
        },
    )
    .await;
    match &outcome {
        Ok(()) => metrics.webhooks_sent.inc(),
        Err(reason) => {
            metrics.webhooks_failed.inc();
            tracing::error!(
                url = %endpoint.url,
                attempts = policy.max_attempts,
                reason,
                "webhook batch dropped after every attempt failed"
            );
        }
    }
    outcome
}

//! `[apps.delivery]`: which channels get acknowledged delivery and how
//! retries are paced. Defaults follow the push gateway we learn from
//! (30 s ack timeout, back-off ×2.0, 3 retries, 24 h message TTL).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where pending deliveries of signed-in users are kept between connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStore {
    /// The default: `redis` when `adapter = "redis"` (several nodes behind
    /// a load balancer: a reconnect may land on any of them), else `memory`.
    #[default]
    Auto,
    /// This node's memory: a user's reconnect to the same node gets them.
    Memory,
    /// Redis (needs `adapter = "redis"`): a reconnect to any node gets them,
    /// and they survive the death of the node holding the connection.
    Redis,
}

/// One app's `[apps.delivery]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Off by default: frames carry no `message_id` and acks are refused.
    #[serde(default)]
    pub enabled: bool,
    /// Channel-name prefixes with acknowledged delivery; empty = every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Milliseconds before an unacknowledged message is first resent.
    #[serde(default = "d_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Each further wait is the previous one times this (≥ 1.0).
    #[serde(default = "d_retry_backoff")]
    pub retry_backoff: f64,
    /// Resends before a message is dropped as expired (0 = never resent).
    #[serde(default = "d_max_retries")]
    pub max_retries: u32,
    /// Seconds a message is kept at most, resends and reconnects included.
    #[serde(default = "d_message_ttl")]
    pub message_ttl: u64,
    /// Unacknowledged messages kept per connection (and per signed-in user
    /// between connections); beyond it the oldest is dropped as expired.
    #[serde(default = "d_max_pending")]
    pub max_pending: usize,
    /// Acknowledgement frames accepted per second per connection (a batch
    /// is one frame); beyond it `pusher:error` 4301 and the frame is dropped.
    #[serde(default = "d_ack_rate")]
    pub ack_rate: u32,
    /// `auto` (default), `memory` or `redis`.
    #[serde(default)]
    pub store: DeliveryStore,
}

fn d_ack_timeout_ms() -> u64 {
    30_000
}
fn d_retry_backoff() -> f64 {
    2.0
}
fn d_max_retries() -> u32 {
    3
}
fn d_message_ttl() -> u64 {
    86_400
}
fn d_max_pending() -> usize {
    1000
}
fn d_ack_rate() -> u32 {
    100
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: false,
            channels: Vec::new(),
            ack_timeout_ms: d_ack_timeout_ms(),
            retry_backoff: d_retry_backoff(),
            max_retries: d_max_retries(),
            message_ttl: d_message_ttl(),
            max_pending: d_max_pending(),
            ack_rate: d_ack_rate(),
            store: DeliveryStore::Auto,
        }
    }
}

impl DeliveryConfig {
    /// Whether events on `channel` carry a message id and wait for an ack.
    pub fn applies(&self, channel: &str) -> bool {
        self.enabled
            && (self.channels.is_empty() || self.channels.iter().any(|p| channel.starts_with(p)))
    }

    /// The retry policy these settings describe.
    pub fn policy(&self) -> super::pending::Policy {
        super::pending::Policy {
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            backoff: self.retry_backoff,
            max_retries: self.max_retries,
            ttl: Duration::from_secs(self.message_ttl),
            max_pending: self.max_pending,
        }
    }

    /// Checks the table; `Err((key under apps[i].delivery, reason))`.
    /// `redis_adapter`: whether `adapter = "redis"`.
    pub fn validate(&self, redis_adapter: bool) -> Result<(), (String, String)> {
        let err = |key: &str, reason: &str| Err((key.to_owned(), reason.to_owned()));
        for (field, value) in [
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("message_ttl", self.message_ttl),
            ("max_pending", self.max_pending as u64),
            ("ack_rate", u64::from(self.ack_rate)),
        ] {
            if value == 0 {
                return err(field, "must be greater than 0");
            }
        }
        if !(self.retry_backoff.is_finite() && self.retry_backoff >= 1.0) {
            return err("retry_backoff", "must be a number of at least 1.0");
        }
        if let Some(p) = self.channels.iter().position(String::is_empty) {
            return err(
                &format!("channels[{p}]"),
                "must not be empty (leave the list empty for every channel)",
            );
        }
        if self.store == DeliveryStore::Redis && !redis_adapter {
            return err("store", "\"redis\" needs adapter = \"redis\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> DeliveryConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn prefixes_select_channels_only_when_enabled() {
        let off = config("channels = ['orders-']");
        assert!(!off.applies("orders-1"));
        let on = config("enabled = true\nchannels = ['orders-', 'private-orders-']");
        assert!(on.applies("orders-1") && on.applies("private-orders-2"));
        assert!(!on.applies("news"));
        assert!(config("enabled = true").applies("anything"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |text: &str, redis: bool| config(text).validate(redis).unwrap_err().0;
        assert_eq!(key("ack_timeout_ms = 0", false), "ack_timeout_ms");
        assert_eq!(key("retry_backoff = 0.5", false), "retry_backoff");
        assert_eq!(key("max_pending = 0", false), "max_pending");
        assert_eq!(key("channels = ['a', '']", false), "channels[1]");
        assert_eq!(key("store = 'redis'", false), "store");
        assert!(config("store = 'redis'").validate(true).is_ok());
        assert!(config("").validate(false).is_ok());
    }

    #[test]
    fn the_default_store_follows_the_adapter() {
        // `auto` is valid with either adapter; the hub gives it the shared
        // store only when there is one (adapter = "redis").
        assert_eq!(config("").store, DeliveryStore::Auto);
        assert_eq!(config("store = 'auto'").store, DeliveryStore::Auto);
        assert!(config("store = 'auto'").validate(false).is_ok());
        assert!(config("store = 'auto'").validate(true).is_ok());
        assert_eq!(config("store = 'memory'").store, DeliveryStore::Memory);
    }
}

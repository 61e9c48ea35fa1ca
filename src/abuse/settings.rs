//! The `[limits]` section: caps on what a client address can cost before it
//! has proved anything (new connections, unfinished requests). Per-app caps
//! (`connection_rate`, `subscription_rate`) are `[[apps]]` options.

use super::client_ip::TrustedProxies;
use serde::Deserialize;
use std::time::Duration;

/// Server-wide abuse limits. Every cap: 0 = off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// client; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// New connections (any transport) a second from one client IP (IPv6:
    /// one /64); over it: HTTP 429 with `Retry-After`. 0 = off (default:
    /// behind a proxy not listed in `trusted_proxies` every client would
    /// share the proxy's budget).
    pub connection_rate_per_ip: u32,
    /// New connections one client IP may open at once before the rate applies.
    pub connection_burst_per_ip: u32,
    /// Client IPs whose connection rate is tracked at once; beyond that a
    /// new IP is not limited (and counted) until idle ones expire.
    pub max_tracked_ips: usize,
    /// Milliseconds a connection has to send its complete request head
    /// (and, kept alive, each next one); then 408 and closed. 0 = no limit.
    pub request_header_timeout_ms: u64,
    /// Connections accepted that have not completed a request head yet,
    /// on this node; over it a new connection is closed at once.
    pub max_half_open: usize,
    /// The same, per peer IP (trusted proxies are exempt); 0 = off (the
    /// default: behind a proxy or NAT every client shares one address).
    pub max_half_open_per_ip: usize,
    /// Open connections (any transport, requests in flight included) one
    /// worker thread serves at once; at the cap it stops accepting and new
    /// connections wait in the listen backlog (actix-web's `max_connections`,
    /// whose default 25,000 this keeps). Must be > 0.
    pub max_connections_per_worker: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            trusted_proxies: Vec::new(),
            connection_rate_per_ip: 0,
            connection_burst_per_ip: 20,
            max_tracked_ips: 100_000,
            request_header_timeout_ms: 5_000,
            max_half_open: 4_096,
            max_half_open_per_ip: 0,
            max_connections_per_worker: 25_000,
        }
    }
}

/// The longest request header timeout accepted: an hour (a longer one is
/// no limit, and `Instant` arithmetic must not overflow).
const MAX_HEADER_TIMEOUT_MS: u64 = 3_600_000;

impl LimitsConfig {
    /// Checks the values; the error is `(key under limits., reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.trusted_proxies()
            .map_err(|e| ("trusted_proxies", e.to_string()))?;
        if self.connection_rate_per_ip > 0 && self.connection_burst_per_ip == 0 {
            return Err((
                "connection_burst_per_ip",
                "must be at least 1 when connection_rate_per_ip is set".into(),
            ));
        }
        if self.connection_rate_per_ip > 0 && self.max_tracked_ips == 0 {
            return Err((
                "max_tracked_ips",
                "must be greater than 0 when connection_rate_per_ip is set".into(),
            ));
        }
        if self.max_connections_per_worker == 0 {
            return Err((
                "max_connections_per_worker",
                "must be greater than 0 (a worker would accept nothing)".into(),
            ));
        }
        if self.request_header_timeout_ms > MAX_HEADER_TIMEOUT_MS {
            return Err((
                "request_header_timeout_ms",
                format!("must be at most {MAX_HEADER_TIMEOUT_MS} (an hour)"),
            ));
        }
        Ok(())
    }

    /// The parsed `trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, super::client_ip::BadProxy> {
        TrustedProxies::parse(&self.trusted_proxies)
    }

    /// The request header timeout (zero: none).
    pub fn request_header_timeout(&self) -> Duration {
        Duration::from_millis(self.request_header_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let proxies = LimitsConfig {
            trusted_proxies: vec!["nope".into()],
            ..LimitsConfig::default()
        };
        assert_eq!(proxies.validate().unwrap_err().0, "trusted_proxies");
        let burst = LimitsConfig {
            connection_rate_per_ip: 5,
            connection_burst_per_ip: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(burst.validate().unwrap_err().0, "connection_burst_per_ip");
        let timeout = LimitsConfig {
            request_header_timeout_ms: u64::MAX,
            ..LimitsConfig::default()
        };
        assert_eq!(
            timeout.validate().unwrap_err().0,
            "request_header_timeout_ms"
        );
        let workers = LimitsConfig {
            max_connections_per_worker: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            workers.validate().unwrap_err().0,
            "max_connections_per_worker"
        );
        assert!(LimitsConfig::default().validate().is_ok());
    }
}

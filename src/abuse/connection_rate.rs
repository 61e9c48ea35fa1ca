//! New connections per second per client IP and per app, for every
//! transport's connection start (WebSocket upgrade, `xhr_streaming` /
//! `xhr_polling` session open, SSE stream open); not for HTTP API calls,
//! which have `max_api_requests_per_second`.
//!
//! A refusal is HTTP 429 with `Retry-After`, before any upgrade, actor or
//! hub admission: the cheapest answer under attack. pusher-js treats it as
//! a failed transport attempt: it tries its HTTP fallbacks (refused the same
//! way), reports `unavailable` after 10 s and tries the WebSocket again
//! 15 s after the first attempt; it does not retry in a loop. A WebSocket
//! closed with a 43xx code instead would stop pusher-js for good (it treats
//! 4300-4399 as "refused"), and 4100 would bring it back every second.
//!
//! The per-IP table is a sharded map (no global lock); a bucket that has
//! refilled is the same as none and is dropped by a sweep at most every
//! [`SWEEP_EVERY`]; at `max_tracked_ips` a new address is let through
//! untracked (counted in `rusher_limit_untracked_ips_total`) rather than
//! refused, so a flood of spoofed addresses cannot lock everyone out.
//!
//! With the Redis adapter both caps hold for the deployment: admissions are
//! reported to the other nodes and theirs are debited here (see
//! [`crate::usage`]); admission itself stays local.

use super::bucket::TokenBucket;
use super::client_ip::{limit_key, TrustedProxies};
use super::settings::LimitsConfig;
use crate::apps::{App, AppRegistry};
use crate::http::cors;
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use crate::usage::ClusterUsage;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use dashmap::DashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often idle per-IP buckets are swept out.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Which cap refused a connection (the `limit` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// `limits.connection_rate_per_ip`.
    PerIp,
    /// The app's `connection_rate`.
    PerApp,
}

impl RateLimit {
    /// The `limit` label in `rusher_limit_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            RateLimit::PerIp => "connection_rate_ip",
            RateLimit::PerApp => "connection_rate_app",
        }
    }
}

/// A refused connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The cap that refused it.
    pub limit: RateLimit,
    /// Until the next token, rounded up to whole seconds (at least 1).
    pub retry_after_secs: u64,
}

impl Refused {
    /// 429 with `Retry-After` and a JSON `{"error": ...}` a page on any
    /// origin can read (the xhr and SSE transports are cross-origin).
    pub fn response(&self, req: &HttpRequest) -> HttpResponse {
        let what = match self.limit {
            RateLimit::PerIp => "new connections from this address",
            RateLimit::PerApp => "new connections to this app",
        };
        let mut response = HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, self.retry_after_secs.to_string()))
            .json(serde_json::json!({
                "error": format!("Too many {what}; retry in {} s", self.retry_after_secs)
            }));
        cors::allow_response(req, &mut response);
        response
    }
}

struct IpBuckets {
    rate: u32,
    burst: u32,
    max: usize,
    buckets: DashMap<IpAddr, TokenBucket>,
    /// Milliseconds after `epoch` when the next sweep is due.
    next_sweep_ms: AtomicU64,
    epoch: Instant,
}

/// The connection-rate caps of a node.
pub struct ConnectionRate {
    proxies: TrustedProxies,
    per_ip: Option<IpBuckets>,
    /// Apps with a `connection_rate`, each with its bucket (one app's
    /// lock, held for a subtraction).
    /// Created on an app's first connection (apps added at runtime too).
    per_app: DashMap<String, Mutex<TokenBucket>>,
    metrics: Metrics,
    log: ThrottledLog,
    /// Where admissions are recorded for the other nodes (Redis adapter).
    usage: Option<Arc<ClusterUsage>>,
}

impl ConnectionRate {
    /// The caps of `limits` and of each app in `apps`.
    pub fn new(
        limits: &LimitsConfig,
        proxies: TrustedProxies,
        apps: &AppRegistry,
        metrics: Metrics,
    ) -> Self {
        let now = Instant::now();
        let per_ip = (limits.connection_rate_per_ip > 0).then(|| IpBuckets {
            rate: limits.connection_rate_per_ip,
            burst: limits.connection_burst_per_ip,
            max: limits.max_tracked_ips,
            buckets: DashMap::new(),
            next_sweep_ms: AtomicU64::new(0),
            epoch: now,
        });
        let per_app = apps
            .all()
            .filter(|app| app.connection_rate > 0)
            .map(|app| {
                (
                    app.id.clone(),
                    Mutex::new(TokenBucket::full(app.connection_burst, now)),
                )
            })
            .collect();
        ConnectionRate {
            proxies,
            per_ip,
            per_app,
            metrics,
            log: ThrottledLog::new(10_000),
            usage: None,
        }
    }

    /// Records admissions in `usage` for the other nodes (Redis adapter).
    pub fn with_usage(mut self, usage: Option<Arc<ClusterUsage>>) -> Self {
        self.usage = usage;
        self
    }

    /// The client address of `req` (see [`TrustedProxies::client_ip`]).
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok());
        self.proxies.client_ip(peer, forwarded)
    }

    /// Counts a new connection from `req`'s client IP; call first, before
    /// the app is looked up (unknown keys cost a token too).
    pub fn admit_ip(&self, req: &HttpRequest) -> Result<(), Refused> {
        let Some(table) = &self.per_ip else {
            return Ok(());
        };
        let ip = self.client_ip(req);
        let now = Instant::now();
        self.sweep_if_due(table, now);
        let key = limit_key(ip);
        let taken = match table.buckets.get_mut(&key) {
            Some(mut bucket) => bucket.take(table.rate, table.burst, now),
            None if table.buckets.len() >= table.max => {
                self.metrics.untracked_ips.inc();
                if let Some(suppressed) = self.log.ready() {
                    tracing::warn!(
                        tracked = table.buckets.len(),
                        suppressed,
                        "limits.max_tracked_ips reached: new client IPs are not rate limited until idle ones expire"
                    );
                }
                Ok(())
            }
            None => table
                .buckets
                .entry(key)
                .or_insert_with(|| TokenBucket::full(table.burst, now))
                .take(table.rate, table.burst, now),
        };
        if taken.is_ok() {
            if let Some(usage) = &self.usage {
                usage.admitted_ip(key);
            }
        }
        taken.map_err(|wait| self.refused(RateLimit::PerIp, wait, &ip.to_string()))
    }

    /// Takes `n` connections another node admitted from `ip` (a rate limit
    /// key) out of its bucket; an untracked address gets a bucket only
    /// while `max_tracked_ips` are not reached. Whether a bucket was debited.
    pub fn debit_ip(&self, ip: IpAddr, n: u64) -> bool {
        let Some(table) = &self.per_ip else {
            return false;
        };
        let now = Instant::now();
        let (rate, burst) = (table.rate, table.burst);
        match table.buckets.get_mut(&ip) {
            Some(mut bucket) => bucket.debit(n, rate, burst, now),
            None if table.buckets.len() >= table.max => return false,
            None => table
                .buckets
                .entry(ip)
                .or_insert_with(|| TokenBucket::full(burst, now))
                .debit(n, rate, burst, now),
        }
        true
    }

    /// Takes `n` connections another node admitted to `app` out of its
    /// bucket; false when the app has no `connection_rate`.
    pub fn debit_app(&self, app: &App, n: u64) -> bool {
        if app.connection_rate == 0 {
            return false;
        }
        let now = Instant::now();
        let bucket = self.app_bucket(app, now);
        bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .debit(n, app.connection_rate, app.connection_burst, now);
        true
    }

    /// The bucket of an app with a `connection_rate`, created full.
    fn app_bucket(
        &self,
        app: &App,
        now: Instant,
    ) -> dashmap::mapref::one::Ref<'_, String, Mutex<TokenBucket>> {
        match self.per_app.get(&app.id) {
            Some(bucket) => bucket,
            None => self
                .per_app
                .entry(app.id.clone())
                .or_insert_with(|| Mutex::new(TokenBucket::full(app.connection_burst, now)))
                .downgrade(),
        }
    }

    /// Forgets the buckets of apps no longer in `apps` (removed at runtime).
    pub fn retain_apps(&self, apps: &AppRegistry) {
        let ids = apps.ids();
        self.per_app.retain(|id, _| ids.contains(id));
    }

    /// Counts a new connection to `app` (after [`Self::admit_ip`]).
    pub fn admit_app(&self, app: &App) -> Result<(), Refused> {
        if app.connection_rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let taken = self
            .app_bucket(app, now)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(app.connection_rate, app.connection_burst, now);
        if taken.is_ok() {
            if let Some(usage) = &self.usage {
                usage.admitted_connection(&app.id);
            }
        }
        taken.map_err(|wait| self.refused(RateLimit::PerApp, wait, &app.id))
    }

    fn refused(&self, limit: RateLimit, wait: Duration, who: &str) -> Refused {
        self.metrics.limit_refused(limit.label());
        if let Some(suppressed) = self.log.ready() {
            tracing::warn!(
                limit = limit.label(),
                who,
                suppressed,
                "new connections refused with 429"
            );
        }
        Refused {
            limit,
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Drops buckets that have refilled (they say what a new one would),
    /// at most once per [`SWEEP_EVERY`], by whichever request sees it due.
    fn sweep_if_due(&self, table: &IpBuckets, now: Instant) {
        let now_ms = now.duration_since(table.epoch).as_millis() as u64;
        let due = table.next_sweep_ms.load(Ordering::Acquire);
        if now_ms < due
            || table
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now_ms + SWEEP_EVERY.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return;
        }
        let (rate, burst) = (table.rate, table.burst);
        table
            .buckets
            .retain(|_, bucket| !bucket.is_full(rate, burst, now));
    }

    /// Per-IP buckets tracked now (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_ip.as_ref().map_or(0, |table| table.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use actix_web::test::TestRequest;

    fn limits(rate: u32, burst: u32, max: usize) -> LimitsConfig {
        LimitsConfig {
            connection_rate_per_ip: rate,
            connection_burst_per_ip: burst,
            max_tracked_ips: max,
            ..LimitsConfig::default()
        }
    }

    fn from(ip: &str) -> HttpRequest {
        TestRequest::default()
            .peer_addr(format!("{ip}:1234").parse().unwrap())
            .to_http_request()
    }

    #[test]
    fn per_ip_burst_then_429_with_retry_after_and_other_ips_unaffected() {
        let rate = ConnectionRate::new(
            &limits(1, 2, 10),
            TrustedProxies::default(),
            &AppRegistry::default(),
            Metrics::new(),
        );
        assert!(rate.admit_ip(&from("1.1.1.1")).is_ok());
        assert!(rate.admit_ip(&from("1.1.1.1")).is_ok());
        let refused = rate.admit_ip(&from("1.1.1.1")).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                limit: RateLimit::PerIp,
                retry_after_secs: 1
            }
        );
        let response = refused.response(&from("1.1.1.1"));
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        assert!(rate.admit_ip(&from("2.2.2.2")).is_ok());
    }

    #[test]
    fn a_full_table_lets_new_ips_through_untracked() {
        let metrics = Metrics::new();
        let rate = ConnectionRate::new(
            &limits(1, 1, 2),
            TrustedProxies::default(),
            &AppRegistry::default(),
            metrics.clone(),
        );
        for ip in ["1.0.0.1", "1.0.0.2", "1.0.0.3", "1.0.0.4"] {
            assert!(rate.admit_ip(&from(ip)).is_ok());
        }
        assert_eq!(rate.tracked(), 2);
        assert_eq!(metrics.untracked_ips.get(), 2);
        // The tracked ones are still limited.
        assert!(rate.admit_ip(&from("1.0.0.1")).is_err());
    }

    #[test]
    fn other_nodes_admissions_are_debited_and_untracked_ips_stay_bounded() {
        let mut app = AppConfig::with_credentials("a", "ka", "sa");
        app.connection_rate = 1;
        app.connection_burst = 4;
        let apps = AppRegistry::new([app.clone()]);
        let app = apps.by_id("a").unwrap();
        let rate = ConnectionRate::new(
            &limits(1, 4, 2),
            TrustedProxies::default(),
            &apps,
            Metrics::new(),
        );
        assert!(rate.debit_app(&app, 3));
        assert!(rate.admit_app(&app).is_ok());
        assert!(rate.admit_app(&app).is_err(), "4 of 4 taken across nodes");
        let ip: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(rate.debit_ip(ip, 4));
        assert!(rate.admit_ip(&from("1.1.1.1")).is_err());
        assert!(rate.debit_ip("2.2.2.2".parse().unwrap(), 1));
        assert!(!rate.debit_ip("3.3.3.3".parse().unwrap(), 1), "table full");
        assert_eq!(rate.tracked(), 2);
    }

    #[test]
    fn zero_is_off_and_apps_have_their_own_bucket() {
        let mut limited = AppConfig::with_credentials("a", "ka", "sa");
        limited.connection_rate = 1;
        limited.connection_burst = 1;
        let free = AppConfig::with_credentials("b", "kb", "sb");
        let apps = AppRegistry::new([limited.clone(), free.clone()]);
        let rate = ConnectionRate::new(
            &limits(0, 1, 1),
            TrustedProxies::default(),
            &apps,
            Metrics::new(),
        );
        for _ in 0..100 {
            assert!(rate.admit_ip(&from("1.1.1.1")).is_ok());
            assert!(rate.admit_app(&free).is_ok());
        }
        assert!(rate.admit_app(&limited).is_ok());
        assert_eq!(
            rate.admit_app(&limited).unwrap_err().limit,
            RateLimit::PerApp
        );
    }
}

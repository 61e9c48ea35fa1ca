//! Limits that hold for the whole deployment, not per node (`adapter =
//! "redis"`): an app's `max_connections` and `max_unauthorized_connections`,
//! its `connection_rate`, its `max_api_requests_per_second`, and
//! `limits.connection_rate_per_ip`.
//!
//! How: **usage sharing over the bus**. Every `redis.usage_interval_ms`,
//! and only when something changed since its last report (or, to stay
//! counted, once per `redis.heartbeat_secs` while it has connections open),
//! a node sends one [`report::Report`] on the bus: per app its open
//! connections (authorized and not) and what it admitted since the last
//! report (new connections, API requests); per client address the new
//! connections it admitted (the busiest 1000). A receiving node keeps each
//! other node's last open counts ([`remote::RemoteNodes`], dropped when the
//! node has not reported for `redis.node_timeout_secs` or is reaped) and:
//! (a) admits a connection only while its own count plus the other nodes'
//! is under the cap; (b) takes the connections the others admitted out of
//! its own token buckets (per app, per address; a bucket may go down to
//! `-burst`, so the deployment's total rate holds); (c) adds the others'
//! API requests to its current one-second window.
//!
//! Why this and not a shared counter in Redis (an `INCR` per connection or
//! request, as a Redis rate limiter would do): admission then stays a read
//! of this node's atomics and maps, with no Redis round trip on the
//! connection or publish path and nothing that waits when Redis is slow or
//! down (the node then limits with what it knows, as before). Asking the
//! other nodes at admission (soketi, sockudo) costs a round trip too. The
//! price is a bounded approximation: within one report interval, nodes
//! that have not heard of each other's admissions yet can together admit,
//! beyond a cap, up to what each admits in that interval.
//!
//! The local adapter (one node) has no [`ClusterUsage`]: nothing is
//! recorded and no report is sent.
//!
//! - [`report`]: a report and its wire form.
//! - [`remote`]: the other nodes' last counts, and the room left under a cap.

pub mod remote;
pub mod report;

use crate::abuse::ConnectionRate;
use crate::apps::AppRegistry;
use crate::hub::node::Node;
use crate::hub::rate::ApiRateLimit;
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use remote::{OpenConnections, RemoteNodes};
use report::{AppUsage, Report};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Client addresses recorded between two reports; a new address beyond
/// it is not recorded (counted as dropped), so a flood of spoofed
/// addresses costs bounded memory.
const MAX_PENDING_IPS: usize = 4 * report::MAX_IPS;

/// This node's usage since its last report, and the other nodes' last.
pub struct ClusterUsage {
    apps: Arc<AppRegistry>,
    node_timeout: Duration,
    /// New connections admitted per app since the last report (apps with a
    /// `connection_rate` only).
    connections: DashMap<String, AtomicU64>,
    /// HTTP API requests admitted per app since the last report (apps with
    /// a `max_api_requests_per_second` only).
    api_requests: DashMap<String, AtomicU64>,
    /// New connections admitted per client address (rate limit key) since
    /// the last report (with `limits.connection_rate_per_ip` only).
    ips: DashMap<IpAddr, AtomicU64>,
    /// Addresses not recorded since the last report ([`MAX_PENDING_IPS`]).
    ips_unrecorded: AtomicU64,
    /// The other nodes' last counts: touched by the bus listener and the
    /// report task only, never on admission.
    remote: Mutex<RemoteNodes>,
    /// Their sums per app, swapped in after each change: what admission reads.
    remote_open: ArcSwap<HashMap<String, OpenConnections>>,
    connection_rate: OnceLock<Weak<ConnectionRate>>,
    api_rate: OnceLock<Weak<ApiRateLimit>>,
    metrics: Metrics,
    log: ThrottledLog,
}

/// Adds `n` to `key`'s count; a new key only while `max` are not reached
/// (false then).
fn bump<K: Hash + Eq + Clone>(map: &DashMap<K, AtomicU64>, key: &K, max: usize) -> bool {
    if let Some(count) = map.get(key) {
        count.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    if map.len() >= max {
        return false;
    }
    map.entry(key.clone())
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
    true
}

/// Takes every count out of `map`; keys counted nothing since the last
/// time are dropped (a key still in use is kept, so its next count needs no
/// insert). `retain` holds each shard's lock, so no count is lost.
fn drain<K: Hash + Eq + Clone>(map: &DashMap<K, AtomicU64>) -> Vec<(K, u64)> {
    let mut taken = Vec::new();
    map.retain(|key, count| match count.swap(0, Ordering::Relaxed) {
        0 => false,
        n => {
            taken.push((key.clone(), n));
            true
        }
    });
    taken
}

impl ClusterUsage {
    /// Usage sharing for the apps of `apps`; other nodes are forgotten after
    /// `node_timeout` without a report.
    pub fn new(apps: Arc<AppRegistry>, node_timeout: Duration, metrics: Metrics) -> Self {
        ClusterUsage {
            apps,
            node_timeout,
            connections: DashMap::new(),
            api_requests: DashMap::new(),
            ips: DashMap::new(),
            ips_unrecorded: AtomicU64::new(0),
            remote: Mutex::new(RemoteNodes::default()),
            remote_open: ArcSwap::from_pointee(HashMap::new()),
            connection_rate: OnceLock::new(),
            api_rate: OnceLock::new(),
            metrics,
            log: ThrottledLog::new(10_000),
        }
    }

    /// The connection-rate buckets the other nodes' admissions are taken
    /// from (weak: they hold this usage too).
    pub fn attach_connection_rate(&self, rate: &Arc<ConnectionRate>) {
        let _ = self.connection_rate.set(Arc::downgrade(rate));
    }

    /// The API request windows the other nodes' requests are added to.
    pub fn attach_api_rate(&self, rate: &Arc<ApiRateLimit>) {
        let _ = self.api_rate.set(Arc::downgrade(rate));
    }

    /// Connections of `app_id` open on the other nodes (one map read).
    pub fn remote_open(&self, app_id: &str) -> OpenConnections {
        self.remote_open
            .load()
            .get(app_id)
            .copied()
            .unwrap_or_default()
    }

    /// This node admitted a new connection to `app_id` (`connection_rate`).
    pub fn admitted_connection(&self, app_id: &str) {
        if let Some(count) = self.connections.get(app_id) {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            // Bounded by the registry: only apps with a connection_rate get here.
            bump(&self.connections, &app_id.to_owned(), usize::MAX);
        }
    }

    /// This node admitted an HTTP API request of `app_id`.
    pub fn admitted_api_request(&self, app_id: &str) {
        if let Some(count) = self.api_requests.get(app_id) {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            bump(&self.api_requests, &app_id.to_owned(), usize::MAX);
        }
    }

    /// This node admitted a new connection from `ip` (its rate limit key).
    pub fn admitted_ip(&self, ip: IpAddr) {
        if !bump(&self.ips, &ip, MAX_PENDING_IPS) {
            self.ips_unrecorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This node's report now: its open connections (from `node`) and what
    /// it admitted since the last call.
    pub fn take_report(&self, node: &Node) -> Report {
        let mut apps: BTreeMap<String, AppUsage> = BTreeMap::new();
        for app_id in node.app_ids() {
            let Some(state) = node.existing(&app_id) else {
                continue;
            };
            let unauthorized = state.channels.unauthorized_count();
            let authorized = state
                .channels
                .connection_count()
                .saturating_sub(unauthorized);
            if authorized > 0 || unauthorized > 0 {
                apps.insert(
                    app_id.clone(),
                    AppUsage(app_id, authorized, unauthorized, 0, 0),
                );
            }
        }
        for (app_id, n) in drain(&self.connections) {
            apps.entry(app_id.clone())
                .or_insert_with(|| AppUsage(app_id, 0, 0, 0, 0))
                .3 = n;
        }
        for (app_id, n) in drain(&self.api_requests) {
            apps.entry(app_id.clone())
                .or_insert_with(|| AppUsage(app_id, 0, 0, 0, 0))
                .4 = n;
        }
        let mut report = Report {
            apps: apps.into_values().collect(),
            ips: drain(&self.ips),
            ips_dropped: self.ips_unrecorded.swap(0, Ordering::Relaxed),
        };
        report.keep_busiest_ips();
        self.metrics.usage_ips_dropped.inc_by(report.ips_dropped);
        report
    }

    /// Counts another node's report (its wire form): its open connections
    /// replace its previous ones, its admissions are taken from this
    /// node's buckets and windows. Unreadable: logged, counted, ignored.
    pub fn apply(&self, node_id: &str, text: &str, now: Instant) {
        let report = match report::Report::decode(text) {
            Ok(report) => report,
            Err(error) => {
                self.metrics.usage_reports_invalid.inc();
                if let Some(suppressed) = self.log.ready() {
                    tracing::warn!(node_id, %error, suppressed, "usage report ignored");
                }
                return;
            }
        };
        self.metrics.usage_reports_received.inc();
        let connection_rate = self.connection_rate.get().and_then(Weak::upgrade);
        let api_rate = self.api_rate.get().and_then(Weak::upgrade);
        let mut open = HashMap::new();
        for AppUsage(app_id, authorized, unauthorized, connections, api_requests) in report.apps {
            // Apps this node does not serve have nothing to limit here.
            let Some(app) = self.apps.by_id(&app_id).filter(|app| app.id == app_id) else {
                continue;
            };
            if let (Some(rate), true) = (&connection_rate, connections > 0) {
                if rate.debit_app(&app, connections) {
                    self.remote_admitted("connections", connections);
                }
            }
            if let (Some(rate), true) = (&api_rate, api_requests > 0) {
                if rate.add_remote(&app.id, app.max_api_requests_per_second, api_requests) {
                    self.remote_admitted("api_requests", api_requests);
                }
            }
            if authorized > 0 || unauthorized > 0 {
                open.insert(
                    app_id,
                    OpenConnections {
                        authorized,
                        unauthorized,
                    },
                );
            }
        }
        if let Some(rate) = &connection_rate {
            for (ip, n) in report.ips {
                if rate.debit_ip(ip, n) {
                    self.remote_admitted("ip_connections", n);
                }
            }
        }
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        if !remote.update(node_id, open, now) {
            if let Some(suppressed) = self.log.ready() {
                tracing::warn!(
                    node_id,
                    suppressed,
                    "usage of more than {} other nodes: this one is not counted",
                    remote::MAX_NODES
                );
            }
            return;
        }
        self.publish(&remote);
    }

    fn remote_admitted(&self, kind: &str, n: u64) {
        self.metrics
            .usage_remote_admitted
            .with_label_values(&[kind])
            .inc_by(n);
    }

    /// Forgets the nodes that have not reported for `redis.node_timeout_secs`.
    pub fn expire(&self, now: Instant) {
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        if remote.expire(now, self.node_timeout) {
            self.publish(&remote);
        }
    }

    /// Forgets a node reaped as dead.
    pub fn forget(&self, node_id: &str) {
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        if remote.forget(node_id) {
            self.publish(&remote);
        }
    }

    /// Swaps in the sums admission reads.
    fn publish(&self, remote: &RemoteNodes) {
        self.remote_open.store(Arc::new(remote.sums()));
        self.metrics.usage_nodes.set(remote.len() as i64);
    }
}

/// Decides when a node sends its report: when it admitted something, when
/// its open connections changed since the last report sent, and once per
/// `refresh` while it has connections open (so the others, which forget a
/// node silent for `redis.node_timeout_secs`, keep counting them).
#[derive(Debug)]
pub struct Reporter {
    refresh: Duration,
    /// Open counts (app, authorized, unauthorized) of the last report sent.
    last_open: Vec<(String, u64, u64)>,
    last_sent: Option<Instant>,
}

impl Reporter {
    /// A reporter refreshing every `refresh` (less than the node timeout).
    pub fn new(refresh: Duration) -> Self {
        Reporter {
            refresh,
            last_open: Vec::new(),
            last_sent: None,
        }
    }

    /// Whether `report` is to be sent at `now` (then recorded as sent).
    pub fn due(&mut self, report: &Report, now: Instant) -> bool {
        let open: Vec<(String, u64, u64)> = report
            .apps
            .iter()
            .filter(|usage| usage.1 > 0 || usage.2 > 0)
            .map(|usage| (usage.0.clone(), usage.1, usage.2))
            .collect();
        let admitted = !report.ips.is_empty()
            || report.ips_dropped > 0
            || report.apps.iter().any(|usage| usage.3 > 0 || usage.4 > 0);
        let stale = !open.is_empty()
            && self
                .last_sent
                .is_none_or(|at| now.saturating_duration_since(at) >= self.refresh);
        if !(admitted || stale || open != self.last_open) {
            return false;
        }
        self.last_open = open;
        self.last_sent = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_addresses_are_bounded() {
        let usage = ClusterUsage::new(
            Arc::new(AppRegistry::default()),
            Duration::from_secs(10),
            Metrics::new(),
        );
        usage.admitted_connection("a");
        usage.admitted_connection("a");
        usage.admitted_api_request("b");
        for n in 0..MAX_PENDING_IPS as u32 + 3 {
            usage.admitted_ip(IpAddr::from(n.to_be_bytes()));
        }
        let node = Node::default();
        let report = usage.take_report(&node);
        assert_eq!(
            report.apps,
            vec![
                AppUsage("a".into(), 0, 0, 2, 0),
                AppUsage("b".into(), 0, 0, 0, 1)
            ]
        );
        assert_eq!(report.ips.len(), report::MAX_IPS);
        assert_eq!(
            report.ips_dropped,
            (MAX_PENDING_IPS - report::MAX_IPS + 3) as u64
        );
        assert!(usage.take_report(&node).is_empty(), "taken once");
    }

    #[test]
    fn a_report_is_sent_on_change_and_refreshed_while_connections_are_open() {
        let t0 = Instant::now();
        let mut reporter = Reporter::new(Duration::from_secs(2));
        assert!(!reporter.due(&Report::default(), t0), "nothing to say");
        let open = Report {
            apps: vec![AppUsage("a".into(), 2, 0, 0, 0)],
            ..Report::default()
        };
        assert!(reporter.due(&open, t0));
        assert!(!reporter.due(&open, t0 + Duration::from_millis(100)));
        assert!(reporter.due(&open, t0 + Duration::from_secs(2)), "refresh");
        let admitted = Report {
            apps: vec![AppUsage("a".into(), 2, 0, 1, 0)],
            ..Report::default()
        };
        assert!(reporter.due(&admitted, t0 + Duration::from_millis(2100)));
        assert!(
            reporter.due(&Report::default(), t0 + Duration::from_millis(2200)),
            "closed"
        );
        assert!(!reporter.due(&Report::default(), t0 + Duration::from_secs(60)));
    }
}

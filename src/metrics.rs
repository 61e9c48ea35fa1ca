//! Prometheus metrics for operators, served on `/metrics`.
//!
//! README.md's metrics table (section "Operations") documents every metric
//! registered here; a unit test below compares the two both ways.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::cell::RefCell;
use std::sync::Arc;

/// What a registered metric is, as README documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    /// Full metric name, e.g. `rusher_connections_total`.
    pub name: &'static str,
    /// Prometheus type: `counter` or `gauge`.
    pub kind: &'static str,
    /// Label names, in order (empty for a plain metric).
    pub labels: Vec<&'static str>,
}

/// Every metric the server records, shared: a clone is one reference count,
/// not a copy of every handle (the accept path and the API middleware
/// clone it per connection and per request).
#[derive(Clone)]
pub struct Metrics(Arc<MetricHandles>);

impl std::ops::Deref for Metrics {
    type Target = MetricHandles;

    fn deref(&self) -> &MetricHandles {
        &self.0
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        Metrics(Arc::new(MetricHandles::build()))
    }
}

/// The handles of every metric (reached through [`Metrics`]).
pub struct MetricHandles {
    registry: Registry,
    /// Every metric registered, in registration order. A labelled metric
    /// shows on `/metrics` only after its first use; this list has it from
    /// the start.
    catalog: Arc<[MetricInfo]>,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Connections refused at the handshake, by Pusher error code.
    pub connections_refused: IntCounterVec,
    /// Open connections of apps with `authorized_connections` that have not
    /// signed in or subscribed to a signed channel yet.
    pub unauthorized_connections: IntGauge,
    /// Connections closed with 4009 because they did not authorize within
    /// their app's `authorization_timeout`.
    pub authorization_timeouts: IntCounter,
    /// Connections, requests and frames refused by an abuse limit, by
    /// `limit`: `connection_rate_ip`, `connection_rate_app` (HTTP 429),
    /// `half_open`, `half_open_ip` (closed at accept),
    /// `request_header_timeout` (closed by the timeout), `subscription_rate`
    /// (`pusher:subscribe`/`unsubscribe` refused with 4301).
    pub limit_refusals: IntCounterVec,
    /// `limit_refusals{limit="subscription_rate"}`, resolved once: a
    /// subscribe flood counts every frame, and a labelled lookup takes the
    /// vector's lock each time.
    pub subscription_refusals: IntCounter,
    /// Accepted connections that have not completed a request head yet.
    pub half_open_connections: IntGauge,
    /// New client IPs not rate limited because `limits.max_tracked_ips` was reached.
    pub untracked_ips: IntCounter,
    /// Open sessions by transport (`ws`, `xhr_streaming`, `xhr_polling`, `sse`).
    pub transport_sessions: IntGaugeVec,
    /// Frames by transport and direction (`out` to clients, `in` from them).
    pub transport_frames: IntCounterVec,
    /// Frames queued to connections (one per recipient).
    pub frames_sent: IntCounter,
    /// Events published (HTTP API and client events), one per channel.
    pub events_published: IntCounter,
    /// `pusher_internal:subscription_count` announcements this node made
    /// (one per channel and send, whatever the number of subscribers).
    pub subscription_count_frames: IntCounter,
    /// Connections closed because their outgoing queue was full (4100).
    pub slow_client_disconnects: IntCounter,
    /// HTTP API requests by route and status.
    pub http_requests: IntCounterVec,
    /// Webhook batches a receiver accepted.
    pub webhooks_sent: IntCounter,
    /// Webhook attempts that failed and were retried.
    pub webhooks_retried: IntCounter,
    /// Webhook batches dropped after every attempt failed.
    pub webhooks_failed: IntCounter,
    /// Webhook events dropped because the queue or backlog was full.
    pub webhooks_dropped: IntCounter,
    /// Notifications a receiver accepted, by `handler` (`web`, `email`, `web_push`).
    pub notifications_sent: IntCounterVec,
    /// Notifications not delivered after their retries, by `handler`.
    pub notifications_failed: IntCounterVec,
    /// Notifications dropped because a queue was full, by `handler`
    /// (`route`: events dropped before routing).
    pub notifications_dropped: IntCounterVec,
    /// Notifications waiting in a handler's queue, by `handler`.
    pub notifications_queued: IntGaugeVec,

    /// Apps served, by `source` (`config`, `store`).
    pub apps: IntGaugeVec,
    /// Admin API requests by `result` (`ok`, `unauthorized`, `invalid`,
    /// `not_found`, `conflict`, `unavailable`, `off`).
    pub admin_requests: IntCounterVec,
    /// Console logins by `result` (`ok`, `refused`, `limited`).
    pub console_logins: IntCounterVec,
    /// Console events sent to consoles on other nodes (Redis adapter).
    pub console_forwarded: IntCounter,
    /// Console events for other nodes dropped: the bus outbox was full.
    pub console_forward_dropped: IntCounter,
    /// Apps a console on another node watches now (this node forwards their events).
    pub console_remote_watched: IntGauge,
    /// Reads of the apps store that failed (the apps in use stay).
    pub apps_store_errors: IntCounter,
    /// Stored apps left out: not a valid app, or id or key taken by another.
    pub apps_invalid: IntCounter,
    /// Redis operations that failed or timed out (the node then answered alone).
    pub redis_errors: IntCounter,
    /// Bus messages to the other nodes dropped (Redis failed, or the outbox was full).
    pub redis_bus_dropped: IntCounter,
    /// Shard groups whose Redis shard does not answer now (all of them on
    /// one redis-server that is down); see `adapter::redis::health`.
    pub redis_unhealthy_groups: IntGauge,
    /// Shard groups this node re-announced its share of after an outage
    /// (one per group and resync).
    pub redis_resynced_groups: IntCounter,
    /// Usage reports this node sent to the others (`adapter = "redis"`,
    /// see `usage/`).
    pub usage_reports_sent: IntCounter,
    /// Usage reports of other nodes this node counted.
    pub usage_reports_received: IntCounter,
    /// Usage reports of other nodes that could not be read (ignored).
    pub usage_reports_invalid: IntCounter,
    /// Client addresses left out of this node's usage reports (beyond the
    /// busiest 1000 of a report, or its table of them full): the other
    /// nodes do not count those connections against the per-IP rate.
    pub usage_ips_dropped: IntCounter,
    /// What other nodes admitted and this node counted against its own
    /// limits, by `kind`: `connections` (an app's `connection_rate`),
    /// `ip_connections` (`limits.connection_rate_per_ip`), `api_requests`.
    pub usage_remote_admitted: IntCounterVec,
    /// Other nodes whose open connections count against this node's
    /// `max_connections` (reported within `redis.node_timeout_secs`).
    pub usage_nodes: IntGauge,
    /// HTTP session requests relayed between nodes, by kind: `send`/`attach`
    /// (relayed from here and answered), `served_send`/`served_attach`
    /// (relayed here), `timeout` (no owner answered), `busy` (over the cap).
    pub xhr_relayed: IntCounterVec,
    /// Store operations that failed.
    pub store_errors: IntCounter,
    /// Messages not stored because the write queue was full.
    pub store_dropped: IntCounter,
    /// Channels with a history on this node (set on scrape and sweep).
    pub history_channels: IntGauge,
    /// Events kept in channel histories on this node (set on scrape and sweep).
    pub history_events: IntGauge,
    /// Recoveries (`since`, or a signed-in user's position) that replayed what the client missed.
    pub history_recoveries: IntCounter,
    /// Recoveries (`since`, or a signed-in user's position) answered with `pusher:recovery_failed`.
    pub history_recovery_failed: IntCounter,
    /// History writes that waited for their store (Redis, or MongoDB for long retention).
    pub history_writes_queued: IntCounter,
    /// History writes sent again after their store failed.
    pub history_writes_retried: IntCounter,
    /// History writes dropped because their queue was full.
    pub history_writes_dropped: IntCounter,
    /// Publishes with an idempotency key (one per event or batch item), by
    /// result: `first` (claimed and published), `repeat` (answered from the
    /// first, not delivered), `busy` (the first was still publishing: 503),
    /// `released` (the request failed or was dropped after claiming).
    pub idempotent_publishes: IntCounterVec,
    /// Idempotency keys dropped from a full table before their window ended.
    pub idempotency_evictions: IntCounter,
    /// Idempotency claims Redis could not answer: this node's table decided.
    pub idempotency_fail_open: IntCounter,
    /// Signed-in users with recovery positions on this node (set on scrape and sweep).
    pub recovery_users: IntGauge,
    /// Recovery positions (socket, channel) kept on this node (set on scrape and sweep).
    pub recovery_positions: IntGauge,
    /// Positions not kept: `recovery_users` or the per-user limit reached.
    pub recovery_refused: IntCounter,
    /// Probes answered by a client, confirming what it received.
    pub recovery_confirmations: IntCounter,
    /// Signed-in recoveries answered from this node's positions because the
    /// shared (Redis) positions could not be read.
    pub recovery_fail_open: IntCounter,
    /// Acknowledged-delivery messages the client acknowledged.
    pub delivery_acked: IntCounter,
    /// Acknowledged-delivery messages resent (after a timeout, or to a
    /// signed-in user's new connection).
    pub delivery_retried: IntCounter,
    /// Acknowledged-delivery messages dropped unacknowledged, by reason
    /// (`retries`, `ttl`, `overflow`, `closed`).
    pub delivery_expired: IntCounterVec,
    /// Acknowledged-delivery messages waiting for an ack on this node
    /// (in connections and parked for signed-in users).
    pub delivery_pending: IntGauge,
    /// Operations of the Redis delivery store (`store = "redis"`) that failed:
    /// this node's memory kept or answered instead (fail open).
    pub delivery_store_fallbacks: IntCounter,
    /// Certificate reloads (`[server.tls]`, SIGHUP or file change), by
    /// result: `ok` (new handshakes get the new certificate) or `error`
    /// (the previous one is still served).
    pub tls_reloads: IntCounterVec,
    /// When the served TLS certificate expires, in Unix seconds (0 without TLS).
    pub tls_certificate_expiry: IntGauge,
}

impl MetricHandles {
    /// Creates and registers every metric.
    fn build() -> Self {
        let registry = Registry::new();
        let catalog = RefCell::new(Vec::new());
        let record = |name: &'static str, kind: &'static str, labels: &[&'static str]| {
            catalog.borrow_mut().push(MetricInfo {
                name,
                kind,
                labels: labels.to_vec(),
            });
        };
        let gauge = |name: &'static str, help: &str| {
            let metric = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            record(name, "gauge", &[]);
            metric
        };
        let counter = |name: &'static str, help: &str| {
            let metric = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            record(name, "counter", &[]);
            metric
        };
        let gauge_vec = |name: &'static str, help: &str, labels: &[&'static str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            record(name, "gauge", labels);
            metric
        };
        let counter_vec = |name: &'static str, help: &str, labels: &[&'static str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            record(name, "counter", labels);
            metric
        };
        let limit_refusals = counter_vec(
            "rusher_limit_refusals_total",
            "Connections, requests and frames refused by an abuse limit, by limit",
            &["limit"],
        );
        let subscription_refusals = limit_refusals.with_label_values(&["subscription_rate"]);
        MetricHandles {
            limit_refusals,
            subscription_refusals,
            connections: gauge("rusher_connections", "Open WebSocket connections"),
            connections_total: counter(
                "rusher_connections_total",
                "WebSocket connections accepted since start",
            ),
            connections_refused: counter_vec(
                "rusher_connections_refused_total",
                "Connections refused at the handshake (or at authorization over quota), by Pusher error code",
                &["code"],
            ),
            unauthorized_connections: gauge(
                "rusher_unauthorized_connections",
                "Open connections of apps with authorized_connections not authorized yet",
            ),
            authorization_timeouts: counter(
                "rusher_authorization_timeouts_total",
                "Connections closed with 4009 because they did not authorize within authorization_timeout",
            ),
            half_open_connections: gauge(
                "rusher_half_open_connections",
                "Accepted connections that have not completed a request head yet",
            ),
            untracked_ips: counter(
                "rusher_limit_untracked_ips_total",
                "New client IPs not rate limited because limits.max_tracked_ips was reached",
            ),
            transport_sessions: gauge_vec(
                "rusher_transport_sessions",
                "Open sessions by transport",
                &["transport"],
            ),
            transport_frames: counter_vec(
                "rusher_transport_frames_total",
                "Frames written to clients (out) and read from them (in), by transport",
                &["transport", "direction"],
            ),
            frames_sent: counter(
                "rusher_frames_sent_total",
                "Frames queued to connections, one per recipient",
            ),
            events_published: counter(
                "rusher_events_published_total",
                "Events published, one per channel",
            ),
            subscription_count_frames: counter(
                "rusher_subscription_counts_sent_total",
                "Subscription counts this node sent to a channel's subscribers, one per channel and send",
            ),
            slow_client_disconnects: counter(
                "rusher_slow_client_disconnects_total",
                "Connections closed with 4100 because their outgoing queue was full",
            ),
            http_requests: counter_vec(
                "rusher_http_requests_total",
                "HTTP API requests by route and status",
                &["route", "status"],
            ),
            webhooks_sent: counter(
                "rusher_webhooks_sent_total",
                "Webhook batches a receiver accepted",
            ),
            webhooks_retried: counter(
                "rusher_webhooks_retried_total",
                "Webhook attempts that failed and were retried",
            ),
            webhooks_failed: counter(
                "rusher_webhooks_failed_total",
                "Webhook batches dropped after every attempt failed",
            ),
            webhooks_dropped: counter(
                "rusher_webhooks_dropped_total",
                "Webhook events dropped because the queue or backlog was full",
            ),
            notifications_sent: counter_vec(
                "rusher_notifications_sent_total",
                "Notifications a receiver accepted, by handler",
                &["handler"],
            ),
            notifications_failed: counter_vec(
                "rusher_notifications_failed_total",
                "Notifications not delivered after their retries, by handler",
                &["handler"],
            ),
            notifications_dropped: counter_vec(
                "rusher_notifications_dropped_total",
                "Notifications dropped because a queue was full, by handler",
                &["handler"],
            ),
            notifications_queued: gauge_vec(
                "rusher_notifications_queued",
                "Notifications waiting in a handler's queue, by handler",
                &["handler"],
            ),
            apps: gauge_vec("rusher_apps", "Apps served, by source", &["source"]),
            admin_requests: counter_vec(
                "rusher_admin_requests_total",
                "Admin API requests by result",
                &["result"],
            ),
            console_logins: counter_vec(
                "rusher_console_logins_total",
                "Console logins by result",
                &["result"],
            ),
            console_forwarded: counter(
                "rusher_console_forwarded_total",
                "Console events sent to consoles on other nodes",
            ),
            console_forward_dropped: counter(
                "rusher_console_forward_dropped_total",
                "Console events for other nodes dropped because the bus outbox was full",
            ),
            console_remote_watched: gauge(
                "rusher_console_remote_watched_apps",
                "Apps a console on another node watches (their events are forwarded)",
            ),
            apps_store_errors: counter(
                "rusher_apps_store_errors_total",
                "Reads of the apps store that failed",
            ),
            apps_invalid: counter(
                "rusher_apps_invalid_total",
                "Stored apps left out: invalid, or their id or key is taken",
            ),
            redis_errors: counter(
                "rusher_redis_errors_total",
                "Redis operations that failed or timed out",
            ),
            redis_bus_dropped: counter(
                "rusher_redis_bus_dropped_total",
                "Bus messages to the other nodes dropped because Redis failed or the outbox was full",
            ),
            redis_unhealthy_groups: gauge(
                "rusher_redis_unhealthy_groups",
                "Shard groups whose Redis shard does not answer now",
            ),
            redis_resynced_groups: counter(
                "rusher_redis_resynced_groups_total",
                "Shard groups this node re-announced its share of after an outage",
            ),
            usage_reports_sent: counter(
                "rusher_usage_reports_sent_total",
                "Usage reports this node sent to the other nodes",
            ),
            usage_reports_received: counter(
                "rusher_usage_reports_received_total",
                "Usage reports of other nodes counted by this node",
            ),
            usage_reports_invalid: counter(
                "rusher_usage_reports_invalid_total",
                "Usage reports of other nodes that could not be read",
            ),
            usage_ips_dropped: counter(
                "rusher_usage_ips_dropped_total",
                "Client addresses left out of this node's usage reports",
            ),
            usage_remote_admitted: counter_vec(
                "rusher_usage_remote_admitted_total",
                "Connections and API requests other nodes admitted, counted against this node's limits, by kind",
                &["kind"],
            ),
            usage_nodes: gauge(
                "rusher_usage_nodes",
                "Other nodes whose open connections count against this node's limits",
            ),
            xhr_relayed: counter_vec(
                "rusher_xhr_relayed_total",
                "HTTP session requests relayed between nodes, by kind",
                &["kind"],
            ),
            store_errors: counter("rusher_store_errors_total", "Store operations that failed"),
            store_dropped: counter(
                "rusher_store_dropped_total",
                "Messages not stored because the write queue was full",
            ),
            history_channels: gauge(
                "rusher_history_channels",
                "Channels with a history on this node",
            ),
            history_events: gauge(
                "rusher_history_events",
                "Events kept in channel histories on this node",
            ),
            history_recoveries: counter(
                "rusher_history_recoveries_total",
                "Recoveries (since, or a signed-in user's position) that replayed the missed events",
            ),
            history_recovery_failed: counter(
                "rusher_history_recovery_failed_total",
                "Recoveries (since, or a signed-in user's position) answered with pusher:recovery_failed",
            ),
            recovery_users: gauge(
                "rusher_recovery_users",
                "Signed-in users with recovery positions on this node",
            ),
            recovery_positions: gauge(
                "rusher_recovery_positions",
                "Recovery positions (socket, channel) kept on this node",
            ),
            recovery_refused: counter(
                "rusher_recovery_refused_total",
                "Recovery positions not kept because of recovery_users or the per-user limit",
            ),
            recovery_confirmations: counter(
                "rusher_recovery_confirmations_total",
                "Probes answered by a client, confirming the events it received",
            ),
            recovery_fail_open: counter(
                "rusher_recovery_fail_open_total",
                "Signed-in recoveries that used this node's positions because Redis could not be read",
            ),
            history_writes_queued: counter(
                "rusher_history_writes_queued_total",
                "History writes that waited because their store (Redis, or MongoDB for long retention) was unreachable",
            ),
            history_writes_retried: counter(
                "rusher_history_writes_retried_total",
                "History writes sent again after their store (Redis or MongoDB) failed",
            ),
            history_writes_dropped: counter(
                "rusher_history_writes_dropped_total",
                "History writes dropped because their queue (redis.history_retry_queue or store.write_queue) was full",
            ),
            idempotent_publishes: counter_vec(
                "rusher_idempotent_publishes_total",
                "Publishes with an idempotency key, by result (first, repeat, busy, released)",
                &["result"],
            ),
            idempotency_evictions: counter(
                "rusher_idempotency_evictions_total",
                "Idempotency keys evicted from a full table before their window ended",
            ),
            idempotency_fail_open: counter(
                "rusher_idempotency_fail_open_total",
                "Idempotency claims Redis could not answer, decided by this node's table",
            ),
            delivery_acked: counter(
                "rusher_delivery_acked_total",
                "Acknowledged-delivery messages the client acknowledged",
            ),
            delivery_retried: counter(
                "rusher_delivery_retried_total",
                "Acknowledged-delivery messages resent",
            ),
            delivery_expired: counter_vec(
                "rusher_delivery_expired_total",
                "Acknowledged-delivery messages dropped unacknowledged, by reason",
                &["reason"],
            ),
            delivery_pending: gauge(
                "rusher_delivery_pending",
                "Acknowledged-delivery messages waiting for an ack on this node",
            ),
            delivery_store_fallbacks: counter(
                "rusher_delivery_store_fallbacks_total",
                "Redis delivery-store operations that failed, answered from this node's memory",
            ),
            tls_reloads: counter_vec(
                "rusher_tls_reloads_total",
                "TLS certificate reloads (SIGHUP or file change) by result: ok, or error (the previous certificate is still served)",
                &["result"],
            ),
            tls_certificate_expiry: gauge(
                "rusher_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires, in Unix seconds (0 without TLS)",
            ),
            // Last: every metric above is registered and recorded by now.
            registry,
            catalog: catalog.into_inner().into(),
        }
    }

    /// Every registered metric with its type and labels, in registration order.
    pub fn catalog(&self) -> &[MetricInfo] {
        &self.catalog
    }

    /// Counts a connection refused at admission with Pusher `code`, whatever
    /// the transport (`rusher_connections_refused_total{code}`).
    pub fn connection_refused(&self, code: u16) {
        self.connections_refused
            .with_label_values(&[&code.to_string()])
            .inc();
    }

    /// Counts one refusal by the abuse limit `limit` (a label of
    /// `rusher_limit_refusals_total`).
    pub fn limit_refused(&self, limit: &str) {
        self.limit_refusals.with_label_values(&[limit]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_registered_metrics() {
        let metrics = Metrics::new();
        metrics.connections_total.inc();
        let text = metrics.render();
        assert!(text.contains("rusher_connections_total 1"), "{text}");
        assert!(text.contains("rusher_frames_sent_total 0"), "{text}");
    }

    /// The rows of README's metrics table: (name, labels, type).
    fn readme_metrics() -> Vec<(String, Vec<String>, String)> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Operations")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_else(|| panic!("README.md has no \"## Operations\" section"));
        section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
                let metric = cells.first()?.trim().strip_prefix("`rusher_")?;
                let metric = format!("rusher_{}", metric.strip_suffix('`')?);
                let (name, labels) = match metric.split_once('{') {
                    Some((name, labels)) => (
                        name.to_owned(),
                        labels
                            .trim_end_matches('}')
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .collect(),
                    ),
                    None => (metric, Vec::new()),
                };
                Some((name, labels, cells.get(1)?.trim().to_owned()))
            })
            .collect()
    }

    #[test]
    fn readme_metrics_table_matches_the_registry_both_ways() {
        let documented = readme_metrics();
        assert!(!documented.is_empty(), "no metrics table found in README");
        let registered = Metrics::new().catalog().to_vec();
        for metric in &registered {
            let row = documented
                .iter()
                .find(|(name, _, _)| name == metric.name)
                .unwrap_or_else(|| panic!("`{}` is not in README's metrics table", metric.name));
            assert_eq!(row.2, metric.kind, "README type of `{}`", metric.name);
            assert_eq!(row.1, metric.labels, "README labels of `{}`", metric.name);
        }
        for (name, _, _) in &documented {
            assert!(
                registered.iter().any(|m| m.name == name),
                "README documents `{name}`, which is not registered"
            );
        }
        // The catalog is what the registry exposes once labelled metrics are used.
        let metrics = Metrics::new();
        metrics
            .connections_refused
            .with_label_values(&["4001"])
            .inc();
        metrics
            .http_requests
            .with_label_values(&["/x", "200"])
            .inc();
        metrics
            .idempotent_publishes
            .with_label_values(&["first"])
            .inc();
        metrics
            .delivery_expired
            .with_label_values(&["retries"])
            .inc();
        metrics.transport_sessions.with_label_values(&["ws"]).inc();
        metrics.limit_refused("half_open");
        metrics
            .transport_frames
            .with_label_values(&["ws", "out"])
            .inc();
        metrics.tls_reloads.with_label_values(&["ok"]).inc();
        for labelled in [
            &metrics.notifications_sent,
            &metrics.notifications_failed,
            &metrics.notifications_dropped,
        ] {
            labelled.with_label_values(&["web"]).inc();
        }
        metrics
            .notifications_queued
            .with_label_values(&["web"])
            .set(0);

        metrics.apps.with_label_values(&["config"]).set(1);
        metrics.admin_requests.with_label_values(&["ok"]).inc();
        metrics.console_logins.with_label_values(&["ok"]).inc();
        metrics
            .usage_remote_admitted
            .with_label_values(&["connections"])
            .inc();
        metrics.xhr_relayed.with_label_values(&["send"]).inc();
        let exposed: Vec<String> = metrics
            .registry
            .gather()
            .iter()
            .map(|family| family.get_name().to_owned())
            .collect();
        let mut names: Vec<String> = registered.iter().map(|m| m.name.to_owned()).collect();
        names.sort();
        let mut exposed_sorted = exposed.clone();
        exposed_sorted.sort();
        assert_eq!(names, exposed_sorted);
    }
}

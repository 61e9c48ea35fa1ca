//! Prometheus metrics for operators, served on `/metrics`.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the server records.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Connections refused at the handshake, by Pusher error code.
    pub connections_refused: IntCounterVec,
    /// Frames queued to connections (one per recipient).
    pub frames_sent: IntCounter,
    /// Events published (HTTP API and client events), one per channel.
    pub events_published: IntCounter,
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
    /// Redis operations that failed or timed out (the node then answered alone).
    pub redis_errors: IntCounter,
    /// Bus messages to the other nodes dropped (Redis failed, or the outbox was full).
    pub redis_bus_dropped: IntCounter,
    /// Store operations that failed.
    pub store_errors: IntCounter,
    /// Messages not stored because the write queue was full.
    pub store_dropped: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            metric
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(metric.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            metric
        };
        Metrics {
            connections: gauge("rusher_connections", "Open WebSocket connections"),
            connections_total: counter(
                "rusher_connections_total",
                "WebSocket connections accepted since start",
            ),
            connections_refused: counter_vec(
                "rusher_connections_refused_total",
                "Connections refused at the handshake, by Pusher error code",
                &["code"],
            ),
            frames_sent: counter(
                "rusher_frames_sent_total",
                "Frames queued to connections, one per recipient",
            ),
            events_published: counter(
                "rusher_events_published_total",
                "Events published, one per channel",
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
            redis_errors: counter(
                "rusher_redis_errors_total",
                "Redis operations that failed or timed out",
            ),
            redis_bus_dropped: counter(
                "rusher_redis_bus_dropped_total",
                "Bus messages to the other nodes dropped because Redis failed or the outbox was full",
            ),
            store_errors: counter("rusher_store_errors_total", "Store operations that failed"),
            store_dropped: counter(
                "rusher_store_dropped_total",
                "Messages not stored because the write queue was full",
            ),
            registry,
        }
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
}
